"""Tests of the CIFAR-100 loader on fixtures written in the official cifar-100-python layout."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmlc_core.data import DataError, DataNotFoundError, load_cifar100
from hmlc_core.data import locate

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
IMAGE_DIR = SHARED_DATA / "cifar100-test-first20"
HIERARCHY_FILE = SHARED_DATA / "cifar100_hierarchy.json"
needs_shared_data = pytest.mark.skipif(
    not IMAGE_DIR.is_dir() or not HIERARCHY_FILE.is_file(),
    reason=f"shared CIFAR-100 sample images not found in {SHARED_DATA}",
)


@pytest.fixture(autouse=True)
def isolated_search_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's HMLC_DATA_DIR and ~/.cache out of the search order."""
    monkeypatch.delenv(locate.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(locate, "DEFAULT_DATA_DIR", tmp_path / "default-data-dir")


def _official_names() -> dict:
    return json.loads(HIERARCHY_FILE.read_text())


def _real_test_images() -> tuple[np.ndarray, np.ndarray]:
    """Return the 20 shared images (20, 3, 32, 32) uint8 and their fine labels, in test order."""
    files = sorted(IMAGE_DIR.glob("cifar100_*.png"))
    fine = np.array([int(re.match(r"cifar100_\d+_(\d+)\.png", f.name).group(1)) for f in files])
    images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])
    return images, fine


def _write_pickle(path: Path, content: dict) -> None:
    # Byte-string keys and protocol 2, as in the Python 2 files of the official archive.
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


def write_cifar100(
    folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Path:
    """Write train, test and meta files from (uint8 images (N, 3, 32, 32), fine labels) pairs."""
    names = _official_names()
    fine_to_coarse = np.array(names["fine_to_coarse"])
    root = folder / "cifar-100-python"
    root.mkdir(parents=True)
    for split, (images, fine) in (("train", train), ("test", test)):
        _write_pickle(
            root / split,
            {
                b"batch_label": f"{split} fixture".encode(),
                b"filenames": [f"{i}.png".encode() for i in range(len(fine))],
                b"fine_labels": [int(f) for f in fine],
                b"coarse_labels": [int(fine_to_coarse[f]) for f in fine],
                # Rows of 1,024 red, 1,024 green, then 1,024 blue values.
                b"data": images.reshape(len(images), -1),
            },
        )
    _write_pickle(
        root / "meta",
        {
            b"fine_label_names": [n.encode() for n in names["fine_label_names"]],
            b"coarse_label_names": [n.encode() for n in names["coarse_label_names"]],
        },
    )
    return root


def _one_per_class() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8), np.arange(100)


@pytest.fixture
def small_fixture(tmp_path: Path) -> Path:
    return write_cifar100(tmp_path, _one_per_class(), _real_test_images())


@needs_shared_data
def test_real_images_round_trip(small_fixture: Path) -> None:
    images, fine = _real_test_images()
    test_split = load_cifar100(small_fixture.parent, "test")
    assert test_split.inputs.shape == (20, 3, 32, 32)
    assert test_split.inputs.dtype == torch.uint8
    assert torch.equal(test_split.inputs, torch.from_numpy(images))
    assert test_split.fine_labels.tolist() == fine.tolist()
    assert test_split.split == "test"


@needs_shared_data
def test_fine_and_coarse_labels(small_fixture: Path) -> None:
    names = _official_names()
    test_split = load_cifar100(small_fixture, "test")
    hierarchy = test_split.hierarchy
    assert hierarchy.classes_per_level == (20, 100)
    assert hierarchy.class_names[1] == tuple(names["fine_label_names"])
    assert hierarchy.class_names[0] == tuple(names["coarse_label_names"])
    # Test image 0 is class 49 (mountain), superclass 10 (large natural outdoor scenes).
    assert test_split.paths[0].tolist() == [10, 49]
    assert hierarchy.path_names([10, 49]) == ("large_natural_outdoor_scenes", "mountain")
    expected_coarse = [names["fine_to_coarse"][f] for f in test_split.fine_labels.tolist()]
    assert test_split.paths[:, 0].tolist() == expected_coarse


@needs_shared_data
def test_every_superclass_has_five_classes(small_fixture: Path) -> None:
    train = load_cifar100(small_fixture, "train")
    assert torch.bincount(torch.tensor(train.hierarchy.parents[1])).tolist() == [5] * 20
    assert train.mean == pytest.approx((0.5071, 0.4865, 0.4409))


@needs_shared_data
def test_full_size_layout(tmp_path: Path) -> None:
    fine_train = np.arange(50000) % 100
    fine_test = np.arange(10000) % 100
    train_images = np.zeros((50000, 3, 32, 32), dtype=np.uint8)
    train_images[:, 1] = 7  # green plane
    write_cifar100(
        tmp_path,
        (train_images, fine_train),
        (np.zeros((10000, 3, 32, 32), dtype=np.uint8), fine_test),
    )
    train = load_cifar100(tmp_path, "train")
    assert train.inputs.shape == (50000, 3, 32, 32)
    assert train.inputs.nbytes == 153_600_000
    coarse_counts, fine_counts = train.class_counts()
    assert fine_counts.tolist() == [500] * 100
    assert coarse_counts.tolist() == [2500] * 20
    assert train.inputs[123, 1].unique().tolist() == [7]
    assert train.inputs[123, 0].unique().tolist() == [0]
    test_split = load_cifar100(tmp_path, "test")
    assert test_split.class_counts()[1].tolist() == [100] * 100


def test_missing_files_explain_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_cifar100(tmp_path / "nowhere", "train")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in message
    assert str(tmp_path / "default-data-dir") in message
    assert "download=True" in message
    assert "--download" in message


@needs_shared_data
def test_truncated_file_named(small_fixture: Path) -> None:
    target = small_fixture / "test"
    target.write_bytes(target.read_bytes()[:-500])
    expected = f"{re.escape(str(target))}: not a readable CIFAR-100 pickle"
    with pytest.raises(DataError, match=expected):
        load_cifar100(small_fixture, "test")


@needs_shared_data
def test_wrong_layout_named(small_fixture: Path) -> None:
    content = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    _write_pickle(small_fixture / "test", content)
    expected = r"test: missing key\(s\) \['fine_labels', 'coarse_labels'\]"
    with pytest.raises(DataError, match=expected):
        load_cifar100(small_fixture, "test")


@needs_shared_data
def test_wrong_image_width_named(small_fixture: Path) -> None:
    _write_pickle(
        small_fixture / "test",
        {b"data": np.zeros((2, 1024), np.uint8), b"fine_labels": [0, 1], b"coarse_labels": [4, 1]},
    )
    with pytest.raises(DataError, match="test: data must be uint8 rows of 3072 values"):
        load_cifar100(small_fixture, "test")


@needs_shared_data
def test_label_outside_hierarchy_named(small_fixture: Path) -> None:
    # Fine class 0 (apple) belongs to superclass 4 in the training file, not 3.
    _write_pickle(
        small_fixture / "test",
        {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0], b"coarse_labels": [3]},
    )
    with pytest.raises(DataError, match=r"test: row 0 has path \[3, 0\]"):
        load_cifar100(small_fixture, "test")


@needs_shared_data
def test_inconsistent_training_superclass_named(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path, _one_per_class(), _real_test_images())
    images, fine = _one_per_class()
    content = {
        b"data": np.concatenate([images, images[:1]]).reshape(101, -1),
        b"fine_labels": [*fine.tolist(), 0],
        b"coarse_labels": [*(_official_names()["fine_to_coarse"]), 7],
    }
    _write_pickle(root / "train", content)
    with pytest.raises(DataError, match="class 'apple' .* two parents"):
        load_cifar100(tmp_path, "test")


@needs_shared_data
def test_foreign_pickle_object_rejected(small_fixture: Path) -> None:
    with (small_fixture / "meta").open("wb") as handle:
        pickle.dump({"fine_label_names": os.getcwd}, handle, protocol=2)
    expected = "meta: not a readable CIFAR-100 pickle .*unexpected object"
    with pytest.raises(DataError, match=expected):
        load_cifar100(small_fixture, "train")
