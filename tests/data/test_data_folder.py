"""Tests of the image-folder dataset: a CSV of file names and label paths defines everything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmlc_core.data import (
    DataConfig,
    DataError,
    DataNotFoundError,
    HierarchyError,
    load_image_folder,
    load_splits,
    load_test_split,
)

TRAIN_ROWS = [
    ("a.png", "animal", "dog", (200, 0, 0)),
    ("b.png", "animal", "cat", (0, 200, 0)),
    ("c.png", "plant", "oak", (0, 0, 200)),
    ("d.png", "animal", "dog", (100, 100, 0)),
    ("e.png", "plant", "oak", (0, 100, 100)),
    ("f.png", "animal", "cat", (50, 50, 50)),
]


def write_folder(
    folder: Path, rows=TRAIN_ROWS, csv_name: str = "train.csv", size: int = 12
) -> Path:
    """Write one solid-colour image per row and the CSV ``filename,kingdom,species``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filename,kingdom,species"]
    for name, coarse, fine, colour in rows:
        Image.new("RGB", (size, size + 4), colour).save(folder / name)
        lines.append(f"{name},{coarse},{fine}")
    csv_path = folder / csv_name
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def test_hierarchy_built_from_csv(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    train = load_image_folder(csv_path, "train", image_size=8)
    hierarchy = train.hierarchy
    assert hierarchy.level_names == ("kingdom", "species")
    assert hierarchy.class_names == (("animal", "plant"), ("cat", "dog", "oak"))
    assert hierarchy.parents == ((), (0, 0, 1))
    assert train.paths.tolist() == [[0, 1], [0, 0], [1, 2], [0, 1], [1, 2], [0, 0]]


def test_images_resized_rgb(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    train = load_image_folder(csv_path, "train", image_size=8)
    assert train.inputs.shape == (6, 3, 8, 8)
    assert train.inputs.dtype == torch.uint8
    assert train.inputs[0, :, 3, 3].tolist() == [200, 0, 0]
    assert train.inputs[2, :, 0, 0].tolist() == [0, 0, 200]


def test_grayscale_file_converted_to_rgb(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    Image.new("L", (5, 5), 90).save(tmp_path / "a.png")
    train = load_image_folder(csv_path, "train", image_size=4)
    assert train.inputs[0].unique().tolist() == [90]


def test_child_with_two_parents_named(tmp_path: Path) -> None:
    rows = [*TRAIN_ROWS, ("g.png", "plant", "cat", (1, 2, 3))]
    csv_path = write_folder(tmp_path, rows)
    with pytest.raises(HierarchyError, match="class 'cat' .* two parents, 'animal' and 'plant'"):
        load_image_folder(csv_path, "train")


def test_test_split_reads_train_hierarchy(tmp_path: Path) -> None:
    write_folder(tmp_path)
    write_folder(tmp_path, [("t1.png", "plant", "oak", (9, 9, 9))], csv_name="test.csv")
    config = DataConfig(name="folder", data_dir=str(tmp_path), image_size=8)
    test_split = load_test_split(config)
    assert test_split.split == "test"
    assert test_split.paths.tolist() == [[1, 2]]
    assert test_split.hierarchy.classes_per_level == (2, 3)


def test_test_label_outside_hierarchy_named(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    test_csv = write_folder(tmp_path, [("t1.png", "plant", "pine", (9, 9, 9))], csv_name="test.csv")
    expected = "test.csv: row 2 \\(t1.png\\) has label 'pine' at level 'species'"
    with pytest.raises(DataError, match=expected):
        load_image_folder(csv_path, "test", test_csv=test_csv)


def test_test_path_disagreeing_with_tree_named(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    test_csv = write_folder(tmp_path, [("t1.png", "plant", "dog", (9, 9, 9))], csv_name="test.csv")
    with pytest.raises(HierarchyError, match="test.csv: row 0 has path \\[1, 1\\]"):
        load_image_folder(csv_path, "test", test_csv=test_csv)


def test_bad_header_named(tmp_path: Path) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("file,kingdom\na.png,animal\n")
    with pytest.raises(DataError, match="train.csv: header is \\['file', 'kingdom'\\]"):
        load_image_folder(csv_path, "train")


def test_short_row_named(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    csv_path.write_text(csv_path.read_text() + "z.png,animal\n")
    with pytest.raises(DataError, match="train.csv: line 8 is \\['z.png', 'animal'\\]"):
        load_image_folder(csv_path, "train")


def test_corrupt_image_named(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    data = (tmp_path / "c.png").read_bytes()
    (tmp_path / "c.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="c.png: not a readable image"):
        load_image_folder(csv_path, "train")


def test_missing_image_named(tmp_path: Path) -> None:
    csv_path = write_folder(tmp_path)
    (tmp_path / "e.png").unlink()
    with pytest.raises(DataError, match="e.png: image file not found"):
        load_image_folder(csv_path, "train")


def test_missing_csv_explained(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="label CSV .*train.csv not found"):
        load_splits(DataConfig(name="folder", data_dir=str(tmp_path)))


def test_folder_splits_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        coarse, fine = ("animal", ("cat", "dog")[i % 2]) if i % 3 else ("plant", "oak")
        rows.append((f"{i}.png", coarse, fine, tuple(rng.integers(0, 255, 3).tolist())))
    csv_path = write_folder(tmp_path / "images", rows, size=6)
    config = DataConfig(name="folder", csv_path=str(csv_path), val_fraction=0.2, image_size=6)
    splits = load_splits(config)
    assert len(splits.train) + len(splits.val) == 30
    assert splits.val.class_counts()[1].tolist() == [2, 2, 2]
