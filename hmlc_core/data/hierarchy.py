"""Label hierarchies: level names, class names per level and the parent of every class.

Levels are 0-based inside the code, level 0 the coarsest. A label path is one row of a
LongTensor (N, L) whose column l is the class index at level l.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from hmlc_core.data.errors import HierarchyError


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """A label tree, validated at construction.

    Attributes:
        level_names: one name per level, coarsest first.
        class_names: for every level, the class names in label-index order. Names are
            unique within a level.
        parents: ``parents[l][c]`` is the index of the parent (at level ``l - 1``) of class
            ``c`` at level ``l``, for ``l >= 1``. ``parents[0]`` is empty.

    Raises:
        HierarchyError: the levels disagree in number, a name repeats within a level, a
            parent index is out of range, or a class above the finest level has no child.
    """

    level_names: tuple[str, ...]
    class_names: tuple[tuple[str, ...], ...]
    parents: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_names", tuple(self.level_names))
        object.__setattr__(self, "class_names", tuple(tuple(n) for n in self.class_names))
        object.__setattr__(self, "parents", tuple(tuple(int(p) for p in ps) for ps in self.parents))
        self._validate_shape()
        for level in range(1, self.num_levels):
            self._validate_parents(level)

    def _validate_shape(self) -> None:
        if not self.level_names:
            raise HierarchyError("a hierarchy needs at least one level; level_names is empty")
        if len(set(self.level_names)) != len(self.level_names):
            raise HierarchyError(f"level names must be unique, got {self.level_names}")
        if len(self.class_names) != self.num_levels or len(self.parents) != self.num_levels:
            raise HierarchyError(
                f"{self.num_levels} level names but {len(self.class_names)} class-name lists and "
                f"{len(self.parents)} parent lists; give one of each per level"
            )
        if self.parents[0]:
            raise HierarchyError(
                f"the coarsest level '{self.level_names[0]}' has no parents, so parents[0] "
                f"must be empty, got {len(self.parents[0])} entries"
            )
        for level, names in enumerate(self.class_names):
            if not names:
                raise HierarchyError(f"level '{self.level_names[level]}' has no classes")
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise HierarchyError(
                        f"class '{name}' appears twice at level '{self.level_names[level]}'; "
                        "class names must be unique within a level"
                    )
                seen.add(name)

    def _validate_parents(self, level: int) -> None:
        names = self.class_names[level]
        parent_names = self.class_names[level - 1]
        parents = self.parents[level]
        if len(parents) != len(names):
            raise HierarchyError(
                f"level '{self.level_names[level]}' has {len(names)} classes but "
                f"{len(parents)} parent entries; every class needs exactly one parent"
            )
        for name, parent in zip(names, parents):
            if not 0 <= parent < len(parent_names):
                raise HierarchyError(
                    f"class '{name}' at level '{self.level_names[level]}' has parent index "
                    f"{parent}, outside the {len(parent_names)} classes of level "
                    f"'{self.level_names[level - 1]}'"
                )
        childless = sorted(set(range(len(parent_names))) - set(parents))
        if childless:
            raise HierarchyError(
                f"class '{parent_names[childless[0]]}' at level '{self.level_names[level - 1]}' "
                f"has no child at level '{self.level_names[level]}'; remove it or give it a child"
            )

    @classmethod
    def from_parent_names(
        cls,
        level_names: Sequence[str],
        class_names: Sequence[Sequence[str]],
        parent_of: Sequence[Mapping[str, str]],
    ) -> Hierarchy:
        """Build a hierarchy from the parent name of every class.

        Args:
            level_names: level names, coarsest first.
            class_names: class names per level, in label-index order.
            parent_of: for every level below the coarsest (``len(level_names) - 1``
                mappings), a mapping from class name to its parent's name.

        Raises:
            HierarchyError: a class has no parent entry, or names a parent that does not
                exist at the level above.
        """
        if len(parent_of) != len(level_names) - 1:
            raise HierarchyError(
                f"parent_of needs one mapping per level below the coarsest "
                f"({len(level_names) - 1}), got {len(parent_of)}"
            )
        parents: list[tuple[int, ...]] = [()]
        for level in range(1, len(level_names)):
            index_above = {name: i for i, name in enumerate(class_names[level - 1])}
            mapping = parent_of[level - 1]
            row: list[int] = []
            for name in class_names[level]:
                if name not in mapping:
                    raise HierarchyError(
                        f"class '{name}' at level '{level_names[level]}' has no parent"
                    )
                if mapping[name] not in index_above:
                    raise HierarchyError(
                        f"class '{name}' at level '{level_names[level]}' names parent "
                        f"'{mapping[name]}', which is not a class of level "
                        f"'{level_names[level - 1]}'"
                    )
                row.append(index_above[mapping[name]])
            parents.append(tuple(row))
        return cls(tuple(level_names), tuple(tuple(n) for n in class_names), tuple(parents))

    @classmethod
    def from_paths(
        cls,
        level_names: Sequence[str],
        class_names: Sequence[Sequence[str]],
        paths: Tensor,
        source: str = "the label paths",
    ) -> Hierarchy:
        """Infer the parent of every class from observed label paths.

        Args:
            level_names: level names, coarsest first.
            class_names: class names per level, in label-index order.
            paths: observed label paths; every class below the coarsest level must occur.
            source: what the paths were read from, used in error messages (a file name).

        Shape:
            paths: (N, L) integer, column 0 coarsest.

        Raises:
            HierarchyError: a class occurs under two different parents, a class never
                occurs, or a label is outside its level's classes.
        """
        num_levels = len(level_names)
        paths = _check_path_tensor(paths, num_levels, source)
        parents: list[tuple[int, ...]] = [()]
        for level in range(1, num_levels):
            parents.append(
                _infer_parents(level_names, class_names, paths, level, source)
            )
        return cls(tuple(level_names), tuple(tuple(n) for n in class_names), tuple(parents))

    @property
    def num_levels(self) -> int:
        """Number of levels L."""
        return len(self.level_names)

    def num_classes(self, level: int) -> int:
        """Return the number of classes at ``level`` (0 = coarsest, -1 = finest)."""
        return len(self.class_names[level])

    @property
    def classes_per_level(self) -> tuple[int, ...]:
        """Number of classes at every level, coarsest first."""
        return tuple(len(names) for names in self.class_names)

    def fine_to_path_table(self) -> Tensor:
        """Return the label path of every fine class.

        Shape:
            return: (C_fine, L) int64; row c is the path of fine class c.
        """
        fine = torch.arange(self.num_classes(-1))
        table = torch.empty(len(fine), self.num_levels, dtype=torch.long)
        table[:, -1] = fine
        for level in range(self.num_levels - 1, 0, -1):
            parent_index = torch.tensor(self.parents[level], dtype=torch.long)
            table[:, level - 1] = parent_index[table[:, level]]
        return table

    def paths_from_fine(self, fine: Tensor) -> Tensor:
        """Turn fine labels into full label paths.

        Args:
            fine: fine-class indices.

        Shape:
            fine: (N,) integer. return: (N, L) int64 on the device of ``fine``.

        Raises:
            HierarchyError: a label is outside ``[0, num_classes(-1))``.
        """
        fine = torch.as_tensor(fine)
        if fine.dim() != 1:
            raise HierarchyError(f"fine labels must have shape (N,), got {tuple(fine.shape)}")
        fine = fine.long()
        num_fine = self.num_classes(-1)
        if fine.numel() and (int(fine.min()) < 0 or int(fine.max()) >= num_fine):
            bad = int(fine[(fine < 0) | (fine >= num_fine)][0])
            raise HierarchyError(
                f"fine label {bad} is outside the {num_fine} classes of level "
                f"'{self.level_names[-1]}'"
            )
        return self.fine_to_path_table().to(fine.device)[fine]

    def check_paths(self, paths: Tensor, source: str = "the label paths") -> None:
        """Check that every row is a valid path of this hierarchy.

        Shape:
            paths: (N, L) integer.

        Raises:
            HierarchyError: a label is out of range or a row disagrees with the tree,
                naming ``source`` and the first offending row.
        """
        paths = _check_path_tensor(paths, self.num_levels, source)
        for level, count in enumerate(self.classes_per_level):
            column = paths[:, level]
            bad = ((column < 0) | (column >= count)).nonzero()
            if len(bad):
                row = int(bad[0])
                raise HierarchyError(
                    f"{source}: row {row} has label {int(column[row])} at level "
                    f"'{self.level_names[level]}', outside its {count} classes"
                )
        expected = self.fine_to_path_table().to(paths.device)[paths[:, -1]]
        mismatch = (expected != paths).any(dim=1).nonzero()
        if len(mismatch):
            row = int(mismatch[0])
            raise HierarchyError(
                f"{source}: row {row} has path {paths[row].tolist()}, but fine class "
                f"'{self.class_names[-1][int(paths[row, -1])]}' belongs to path "
                f"{expected[row].tolist()}"
            )

    def class_counts(self, paths: Tensor) -> list[Tensor]:
        """Count the samples of every class at every level.

        Shape:
            paths: (N, L) integer. return: L tensors, entry l of shape
            (num_classes(l),) int64 on the device of ``paths``.
        """
        paths = _check_path_tensor(paths, self.num_levels, "the label paths")
        return [
            torch.bincount(paths[:, level], minlength=count)
            for level, count in enumerate(self.classes_per_level)
        ]

    def path_names(self, path: Sequence[int]) -> tuple[str, ...]:
        """Return the class names along one label path, coarsest first."""
        return tuple(self.class_names[level][int(c)] for level, c in enumerate(path))


def _check_path_tensor(paths: Tensor, num_levels: int, source: str) -> Tensor:
    paths = torch.as_tensor(paths)
    if paths.dim() != 2 or paths.shape[1] != num_levels:
        raise HierarchyError(
            f"{source}: label paths must have shape (N, {num_levels}), got {tuple(paths.shape)}"
        )
    if paths.dtype.is_floating_point or paths.dtype == torch.bool:
        raise HierarchyError(f"{source}: label paths must be integers, got {paths.dtype}")
    return paths.long()


def _infer_parents(
    level_names: Sequence[str],
    class_names: Sequence[Sequence[str]],
    paths: Tensor,
    level: int,
    source: str,
) -> tuple[int, ...]:
    """Return the parent index of every class at ``level`` seen in ``paths``."""
    names, names_above = class_names[level], class_names[level - 1]
    for lvl, count in ((level, len(names)), (level - 1, len(names_above))):
        column = paths[:, lvl]
        if len(column) and (int(column.min()) < 0 or int(column.max()) >= count):
            bad = int(column[(column < 0) | (column >= count)][0])
            raise HierarchyError(
                f"{source}: label {bad} at level '{level_names[lvl]}' is outside its "
                f"{count} classes"
            )
    pairs = torch.unique(paths[:, [level, level - 1]], dim=0)
    parents = [-1] * len(names)
    for child, parent in pairs.tolist():
        if parents[child] not in (-1, parent):
            raise HierarchyError(
                f"{source}: class '{names[child]}' at level '{level_names[level]}' has two "
                f"parents, '{names_above[parents[child]]}' and '{names_above[parent]}'; "
                "every class needs exactly one parent"
            )
        parents[child] = parent
    if -1 in parents:
        missing = names[parents.index(-1)]
        raise HierarchyError(
            f"{source}: class '{missing}' at level '{level_names[level]}' never occurs, so "
            "its parent is unknown; every class must occur at least once"
        )
    return tuple(parents)
