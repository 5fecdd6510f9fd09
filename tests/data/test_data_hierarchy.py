"""Tests of the Hierarchy tree: validation errors, label paths and class counts."""

from __future__ import annotations

import pytest
import torch

from hmlc_core.data import Hierarchy, HierarchyError

# A three-level toy tree: animal > {mammal > {dog, cat}, bird > {owl}}, plant > {tree > {oak}}.
LEVELS = ("kingdom", "group", "species")
NAMES = (("animal", "plant"), ("mammal", "bird", "tree"), ("dog", "cat", "owl", "oak"))
PARENTS = ((), (0, 0, 1), (0, 0, 1, 2))


def toy() -> Hierarchy:
    return Hierarchy(LEVELS, NAMES, PARENTS)


def test_paths_from_fine_walks_up() -> None:
    paths = toy().paths_from_fine(torch.tensor([0, 1, 2, 3, 2]))
    expected = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [0, 1, 2]])
    assert paths.dtype == torch.long
    assert torch.equal(paths, expected)


def test_class_counts_per_level() -> None:
    hierarchy = toy()
    counts = hierarchy.class_counts(hierarchy.paths_from_fine(torch.tensor([0, 0, 1, 3])))
    assert [c.tolist() for c in counts] == [[3, 1], [3, 0, 1], [2, 1, 0, 1]]


def test_sizes_and_names() -> None:
    hierarchy = toy()
    assert hierarchy.num_levels == 3
    assert hierarchy.classes_per_level == (2, 3, 4)
    assert hierarchy.num_classes(-1) == 4
    assert hierarchy.path_names([1, 2, 3]) == ("plant", "tree", "oak")


def test_parent_out_of_range_names_class() -> None:
    with pytest.raises(HierarchyError, match="class 'oak' .* parent index 5"):
        Hierarchy(LEVELS, NAMES, ((), (0, 0, 1), (0, 0, 1, 5)))


def test_missing_parent_entry_rejected() -> None:
    with pytest.raises(HierarchyError, match="4 classes but 3 parent entries"):
        Hierarchy(LEVELS, NAMES, ((), (0, 0, 1), (0, 0, 1)))


def test_childless_coarse_class_rejected() -> None:
    with pytest.raises(HierarchyError, match="class 'tree' .* has no child"):
        Hierarchy(LEVELS, NAMES, ((), (0, 0, 1), (0, 0, 1, 1)))


def test_duplicate_class_name_rejected() -> None:
    names = (("animal", "plant"), ("mammal", "bird", "tree"), ("dog", "dog", "owl", "oak"))
    with pytest.raises(HierarchyError, match="class 'dog' appears twice"):
        Hierarchy(LEVELS, names, PARENTS)


def test_coarsest_level_with_parents_rejected() -> None:
    with pytest.raises(HierarchyError, match="parents\\[0\\] must be empty"):
        Hierarchy(LEVELS, NAMES, ((0, 0), (0, 0, 1), (0, 0, 1, 2)))


def test_from_paths_two_parents_names_both() -> None:
    paths = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [1, 2, 2]])
    with pytest.raises(HierarchyError, match="'owl' .* two parents, 'bird' and 'tree'"):
        Hierarchy.from_paths(LEVELS, NAMES, paths, source="labels.csv")


def test_from_paths_recovers_tree() -> None:
    paths = toy().paths_from_fine(torch.tensor([3, 2, 1, 0]))
    assert Hierarchy.from_paths(LEVELS, NAMES, paths) == toy()


def test_from_paths_unseen_class_rejected() -> None:
    paths = toy().paths_from_fine(torch.tensor([0, 1, 2]))
    with pytest.raises(HierarchyError, match="class 'tree' at level 'group' never occurs"):
        Hierarchy.from_paths(LEVELS, NAMES, paths)


def test_from_parent_names_unknown_parent() -> None:
    with pytest.raises(HierarchyError, match="'owl' .* names parent 'fish'"):
        Hierarchy.from_parent_names(
            LEVELS,
            NAMES,
            (
                {"mammal": "animal", "bird": "animal", "tree": "plant"},
                {"dog": "mammal", "cat": "mammal", "owl": "fish", "oak": "tree"},
            ),
        )


def test_fine_label_out_of_range() -> None:
    with pytest.raises(HierarchyError, match="fine label 4 is outside the 4 classes"):
        toy().paths_from_fine(torch.tensor([0, 4]))


def test_check_paths_detects_inconsistent_row() -> None:
    hierarchy = toy()
    hierarchy.check_paths(hierarchy.paths_from_fine(torch.arange(4)))
    with pytest.raises(HierarchyError, match="train.csv: row 1 has path \\[1, 2, 0\\]"):
        hierarchy.check_paths(torch.tensor([[0, 0, 0], [1, 2, 0]]), source="train.csv")
    with pytest.raises(HierarchyError, match="row 0 has label 7 at level 'group'"):
        hierarchy.check_paths(torch.tensor([[0, 7, 0]]))
