"""Tests of the ModelNet40 loader on a small fixture in the modelnet40_normal_resampled layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hmlc_core.data import (
    DataConfig,
    DataError,
    DataNotFoundError,
    load_modelnet40,
    load_splits,
    load_test_split,
)
from hmlc_core.data import locate
from hmlc_core.data.modelnet40 import GROUP_NAMES, GROUP_OF_CLASS

# The 40 class names in the order of modelnet40_shape_names.txt.
SHAPE_NAMES = (
    "airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door "
    "dresser flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand "
    "person piano plant radio range_hood sink sofa stairs stool table tent toilet tv_stand "
    "vase wardrobe xbox"
).split()
ROWS_PER_FILE = 80


@pytest.fixture(autouse=True)
def isolated_search_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(locate.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(locate, "DEFAULT_DATA_DIR", tmp_path / "default-data-dir")


def _write_shape(path: Path, points: np.ndarray) -> None:
    normals = np.tile([0.0, 1.0, 0.0], (len(points), 1))
    rows = np.concatenate([points, normals], axis=1)
    path.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in rows) + "\n")


def write_modelnet40(
    folder: Path, classes: tuple[str, ...] = ("airplane", "night_stand", "xbox")
) -> Path:
    """Write the layout with two train shapes and one test shape for each of ``classes``.

    Shape k of a class has points at x = k + offset, so tests can recognise it.
    """
    root = folder / "modelnet40_normal_resampled"
    root.mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(SHAPE_NAMES) + "\n")
    rng = np.random.default_rng(0)
    train_ids, test_ids = [], []
    for name in classes:
        (root / name).mkdir()
        for number in (1, 2, 3):
            shape_id = f"{name}_{number:04d}"
            points = rng.normal(size=(ROWS_PER_FILE, 3))
            _write_shape(root / name / f"{shape_id}.txt", points)
            (train_ids if number < 3 else test_ids).append(shape_id)
    (root / "modelnet40_train.txt").write_text("\n".join(train_ids) + "\n")
    (root / "modelnet40_test.txt").write_text("\n".join(test_ids) + "\n")
    return root


def test_grouping_covers_all_forty_classes() -> None:
    assert sorted(GROUP_OF_CLASS) == sorted(SHAPE_NAMES)
    assert set(GROUP_OF_CLASS.values()) == set(GROUP_NAMES)
    assert GROUP_OF_CLASS["night_stand"] == "tables_and_storage"
    assert GROUP_OF_CLASS["airplane"] == "vehicles"


def test_fixture_loads_labels_and_groups(tmp_path: Path) -> None:
    write_modelnet40(tmp_path)
    train = load_modelnet40(tmp_path, "train", num_points=64)
    assert train.inputs.shape == (6, 64, 3)
    assert train.inputs.dtype == torch.float32
    assert train.modality == "points"
    assert train.hierarchy.classes_per_level == (9, 40)
    names = [train.hierarchy.path_names(p) for p in train.paths.tolist()]
    assert names[0] == ("vehicles", "airplane")
    assert names[2] == ("tables_and_storage", "night_stand")
    assert names[5] == ("electronics", "xbox")
    assert train.fine_labels.tolist() == [0, 0, 23, 23, 39, 39]
    assert len(load_modelnet40(tmp_path, "test", num_points=64)) == 3


def test_clouds_centred_in_unit_sphere(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path)
    train = load_modelnet40(root, "train", num_points=64)
    radius = train.inputs.norm(dim=2).max(dim=1).values
    assert torch.allclose(radius, torch.ones(6), atol=1e-5)
    assert train.inputs.mean(dim=1).abs().max() < 1e-5


def test_keeps_first_rows(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path, classes=("airplane",))
    points = np.arange(ROWS_PER_FILE * 3, dtype=np.float64).reshape(-1, 3) % 17
    _write_shape(root / "airplane" / "airplane_0001.txt", points)
    cloud = load_modelnet40(root, "train", num_points=10).inputs[0].double()
    centred = points[:10] - points[:10].mean(axis=0)
    expected = centred / np.linalg.norm(centred, axis=1).max()
    assert np.allclose(cloud.numpy(), expected, atol=1e-6)


def test_default_num_points_is_1024(tmp_path: Path) -> None:
    write_modelnet40(tmp_path, classes=("bed",))
    with pytest.raises(DataError, match="bed_0001.txt: contains 80 points, fewer than the 1024"):
        load_modelnet40(tmp_path, "train")


def test_malformed_row_named(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path)
    target = root / "xbox" / "xbox_0002.txt"
    lines = target.read_text().splitlines()
    lines[4] = "0.1,0.2,abc,0,1,0"
    target.write_text("\n".join(lines))
    with pytest.raises(DataError, match="xbox_0002.txt: row 5 is '0.1,0.2,abc,0,1,0'"):
        load_modelnet40(root, "train", num_points=64)


def test_three_column_row_named(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path)
    (root / "xbox" / "xbox_0003.txt").write_text("0.1,0.2,0.3\n" * 100)
    with pytest.raises(DataError, match="xbox_0003.txt: row 1 .* expected six"):
        load_modelnet40(root, "test", num_points=64)


def test_missing_shape_file_named(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path)
    (root / "airplane" / "airplane_0002.txt").unlink()
    with pytest.raises(DataError, match="airplane_0002.txt: shape file not found"):
        load_modelnet40(root, "train", num_points=64)


def test_unknown_class_in_list_named(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path)
    (root / "modelnet40_test.txt").write_text("spaceship_0001\n")
    expected = "modelnet40_test.txt: shape 'spaceship_0001' belongs to class 'spaceship'"
    with pytest.raises(DataError, match=expected):
        load_modelnet40(root, "test", num_points=64)


def test_foreign_shape_names_rejected(tmp_path: Path) -> None:
    root = write_modelnet40(tmp_path)
    (root / "modelnet40_shape_names.txt").write_text("airplane\nspaceship\n")
    expected = "modelnet40_shape_names.txt: class 'spaceship' is not one of the 40"
    with pytest.raises(DataError, match=expected):
        load_modelnet40(root, "train", num_points=64)


def test_missing_layout_lists_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_modelnet40(tmp_path / "empty", "train")
    message = str(info.value)
    assert str(tmp_path / "empty" / "modelnet40_normal_resampled") in message
    assert "modelnet40_shape_names.txt" in message


def test_splits_through_data_config(tmp_path: Path) -> None:
    write_modelnet40(tmp_path)
    config = DataConfig(name="modelnet40", data_dir=str(tmp_path), num_points=32, val_fraction=0.5)
    splits = load_splits(config)
    assert splits.train.inputs.shape == (3, 32, 3)
    assert splits.val.inputs.shape == (3, 32, 3)
    assert sorted(splits.val.fine_labels.tolist()) == [0, 23, 39]
    test_split = load_test_split(config)
    assert test_split.fine_labels.tolist() == [0, 23, 39]
