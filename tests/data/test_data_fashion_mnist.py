"""Tests of the Fashion-MNIST loader on the real IDX files, and of its error messages."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hmlc_core.data import DataError, DataNotFoundError, HierarchicalDataset, load_fashion_mnist
from hmlc_core.data import locate

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
needs_real_data = pytest.mark.skipif(
    not all((SYSTEM_DIR / name).is_file() for name in FILES),
    reason=f"real Fashion-MNIST not installed in {SYSTEM_DIR} (Debian: dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def isolated_search_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's HMLC_DATA_DIR and ~/.cache out of the search order."""
    monkeypatch.delenv(locate.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(locate, "DEFAULT_DATA_DIR", tmp_path / "default-data-dir")


@pytest.fixture(scope="module")
def real_train() -> HierarchicalDataset:
    return load_fashion_mnist(SYSTEM_DIR, "train")


@pytest.fixture(scope="module")
def real_test() -> HierarchicalDataset:
    return load_fashion_mnist(SYSTEM_DIR, "test")


@needs_real_data
def test_real_split_sizes(real_train: HierarchicalDataset, real_test: HierarchicalDataset) -> None:
    assert real_train.inputs.shape == (60000, 1, 28, 28)
    assert real_test.inputs.shape == (10000, 1, 28, 28)
    assert real_train.inputs.dtype == torch.uint8
    assert real_train.paths.shape == (60000, 3)
    assert real_train.split == "train"
    assert real_test.split == "test"


@needs_real_data
def test_real_class_counts(real_train: HierarchicalDataset, real_test: HierarchicalDataset) -> None:
    category, group, fine = real_train.class_counts()
    assert fine.tolist() == [6000] * 10
    assert group.tolist() == [18000, 6000, 6000, 6000, 6000, 18000]
    assert category.tolist() == [36000, 24000]
    assert real_test.class_counts()[2].tolist() == [1000] * 10


@needs_real_data
def test_real_hierarchy_levels(real_train: HierarchicalDataset) -> None:
    hierarchy = real_train.hierarchy
    assert hierarchy.level_names == ("category", "group", "class")
    assert hierarchy.classes_per_level == (2, 6, 10)
    assert hierarchy.class_names[0] == ("Clothes", "Goods")


@needs_real_data
@pytest.mark.parametrize(
    ("fine_name", "expected"),
    [
        ("Ankle boot", ("Goods", "Shoes", "Ankle boot")),
        ("T-shirt/top", ("Clothes", "Tops", "T-shirt/top")),
        ("Trouser", ("Clothes", "Bottoms", "Trouser")),
        ("Coat", ("Clothes", "Outers", "Coat")),
        ("Bag", ("Goods", "Accessories", "Bag")),
        ("Sandal", ("Goods", "Shoes", "Sandal")),
    ],
)
def test_real_paths_spot_check(
    real_train: HierarchicalDataset, fine_name: str, expected: tuple[str, ...]
) -> None:
    fine_index = real_train.hierarchy.class_names[2].index(fine_name)
    rows = (real_train.fine_labels == fine_index).nonzero().squeeze(1)
    first_row = int(rows[0])
    assert real_train.hierarchy.path_names(real_train.paths[first_row].tolist()) == expected
    # Every row of that class carries the same path.
    assert (real_train.paths[rows] == real_train.paths[first_row]).all()


@needs_real_data
def test_real_first_label_is_ankle_boot(real_train: HierarchicalDataset) -> None:
    # The first training image of Fashion-MNIST is labelled 9, Ankle boot.
    assert real_train.paths[0].tolist() == [1, 5, 9]


@needs_real_data
def test_real_pixel_statistics(real_train: HierarchicalDataset) -> None:
    pixels = real_train.inputs.float() / 255.0
    assert pixels.mean().item() == pytest.approx(real_train.mean[0], abs=1e-3)
    assert pixels.std().item() == pytest.approx(real_train.std[0], abs=1e-3)


@needs_real_data
def test_system_location_found_without_data_dir(tmp_path: Path) -> None:
    test_split = load_fashion_mnist(None, "test")
    assert len(test_split) == 10000


def _copy_real_files(folder: Path) -> None:
    """Copy the real test-split files and write empty but valid training files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES[2:]:
        shutil.copyfile(SYSTEM_DIR / name, folder / name)
    with gzip.open(folder / FILES[0], "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + bytes(4) + (28).to_bytes(4, "big") * 2)
    _write_idx_labels(folder / FILES[1], np.zeros(0))


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    header = bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big")
    with gzip.open(path, "wb") as handle:
        handle.write(header + labels.astype(np.uint8).tobytes())


@needs_real_data
def test_explicit_dir_wins_over_system(tmp_path: Path) -> None:
    folder = tmp_path / "fmnist"
    _copy_real_files(folder)
    _write_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", np.full(10000, 3))
    test_split = load_fashion_mnist(folder, "test")
    assert test_split.fine_labels.unique().tolist() == [3]


@needs_real_data
def test_environment_variable_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "env" / "fashion-mnist"
    _copy_real_files(folder)
    _write_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", np.full(10000, 7))
    monkeypatch.setenv(locate.DATA_DIR_ENV, str(tmp_path / "env"))
    assert load_fashion_mnist(None, "test").fine_labels.unique().tolist() == [7]


@needs_real_data
def test_truncated_gzip_names_file(tmp_path: Path) -> None:
    _copy_real_files(tmp_path)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:50000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot decompress"):
        load_fashion_mnist(tmp_path, "test")


@needs_real_data
def test_wrong_magic_names_file(tmp_path: Path) -> None:
    _copy_real_files(tmp_path)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + bytes(16))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: invalid IDX header"):
        load_fashion_mnist(tmp_path, "test")


@needs_real_data
def test_short_payload_names_file(tmp_path: Path) -> None:
    _copy_real_files(tmp_path)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (10000).to_bytes(4, "big") + bytes(100))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: header announces shape"):
        load_fashion_mnist(tmp_path, "test")


@needs_real_data
def test_label_outside_hierarchy_names_file(tmp_path: Path) -> None:
    _copy_real_files(tmp_path)
    _write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10000, 10))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: label 10 is outside"):
        load_fashion_mnist(tmp_path, "test")


@needs_real_data
def test_image_label_count_mismatch(tmp_path: Path) -> None:
    _copy_real_files(tmp_path)
    _write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10))
    with pytest.raises(DataError, match="10000 images but .* 10 labels"):
        load_fashion_mnist(tmp_path, "test")


def test_missing_files_list_searched_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(locate.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "system",))
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(tmp_path / "explicit", "train")
    message = str(info.value)
    assert str(tmp_path / "explicit") in message
    assert str(tmp_path / "default-data-dir") in message
    assert str(tmp_path / "system") in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "download=True" in message
    assert isinstance(info.value, FileNotFoundError)
