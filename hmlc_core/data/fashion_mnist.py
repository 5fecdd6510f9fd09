"""Fashion-MNIST from the original IDX files, with a three-level hierarchy.

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each gzip-compressed (``.gz``) or plain. Debian's
``dataset-fashion-mnist`` package installs the gzip files in
``/usr/share/datasets/fashion-mnist``, which is searched last.

The hierarchy follows Seo and Shin, "Hierarchical convolutional neural networks for
fashion image classification", Expert Systems with Applications 116 (2019). Level 1 is
Clothes or Goods. Level 2 splits Clothes into Tops, Bottoms, Dresses and Outers, and Goods
into Accessories and Shoes. Level 3 contains the ten Fashion-MNIST classes.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from hmlc_core.data.dataset import HierarchicalDataset, Split
from hmlc_core.data.errors import DataError
from hmlc_core.data.hierarchy import Hierarchy
from hmlc_core.data.locate import download_root, find_dataset_dir

NAME = "fashion-mnist"
# Mean and standard deviation of the 60,000 training images in [0, 1] units, checked
# against the real files by tests/data/test_data_fashion_mnist.py.
MEAN = (0.2860,)
STD = (0.3530,)

LEVEL_NAMES = ("category", "group", "class")
FINE_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
GROUP_OF_CLASS = {
    "T-shirt/top": "Tops", "Pullover": "Tops", "Shirt": "Tops", "Trouser": "Bottoms",
    "Dress": "Dresses", "Coat": "Outers", "Bag": "Accessories",
    "Sandal": "Shoes", "Sneaker": "Shoes", "Ankle boot": "Shoes",
}  # fmt: skip
CATEGORY_OF_GROUP = {
    "Tops": "Clothes", "Bottoms": "Clothes", "Dresses": "Clothes", "Outers": "Clothes",
    "Accessories": "Goods", "Shoes": "Goods",
}  # fmt: skip
HIERARCHY = Hierarchy.from_parent_names(
    LEVEL_NAMES,
    (
        ("Clothes", "Goods"),
        ("Tops", "Bottoms", "Dresses", "Outers", "Accessories", "Shoes"),
        FINE_NAMES,
    ),
    (CATEGORY_OF_GROUP, GROUP_OF_CLASS),
)

_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08
_HOW_TO_SUPPLY = (
    "Install Debian's dataset-fashion-mnist package, copy the four *-ubyte.gz files from "
    "https://github.com/zalandoresearch/fashion-mnist into that folder, or pass "
    "download=True (--download on the command lines) to fetch them through torchvision."
)


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None, split: Split, download: bool = False
) -> HierarchicalDataset:
    """Load the official train or test split of Fashion-MNIST.

    Args:
        data_dir: folder that contains the IDX files; see :mod:`hmlc_core.data.locate`.
        split: "train" (60,000 images) or "test" (10,000 images).
        download: fetch the files through torchvision when no folder contains them.

    Returns:
        Images (N, 1, 28, 28) uint8 with (N, 3) paths (category, group, class).

    Raises:
        DataNotFoundError: the files are missing and ``download`` is off.
        DataError: a file is corrupt, truncated, or its header or labels are invalid.
    """
    if split not in _PREFIX:
        raise DataError(f"Fashion-MNIST has official splits train and test, got '{split}'")
    folder = _locate(data_dir, download)
    prefix = _PREFIX[split]
    image_file = _existing(folder, f"{prefix}-images-idx3-ubyte")
    label_file = _existing(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_file, expected_dims=3)
    labels = read_idx(label_file, expected_dims=1)
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} contains {len(images)} images but {label_file} contains "
            f"{len(labels)} labels"
        )
    if labels.size and labels.max() >= len(FINE_NAMES):
        raise DataError(
            f"{label_file}: label {int(labels.max())} is outside the {len(FINE_NAMES)} classes"
        )
    fine = torch.from_numpy(labels.astype(np.int64))
    return HierarchicalDataset(
        name=NAME,
        modality="image",
        inputs=torch.from_numpy(images.copy()).unsqueeze(1),
        paths=HIERARCHY.paths_from_fine(fine),
        hierarchy=HIERARCHY,
        split=split,
        mean=MEAN,
        std=STD,
    )


def _required_files() -> list[tuple[str, str]]:
    names = [
        f"{prefix}-{kind}"
        for prefix in _PREFIX.values()
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]
    return [(name + ".gz", name) for name in names]


def _locate(data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    subfolders = ("fashion-mnist", "FashionMNIST/raw")
    try:
        return find_dataset_dir(NAME, data_dir, subfolders, _required_files(), _HOW_TO_SUPPLY)
    except FileNotFoundError:
        if not download:
            raise
    from torchvision.datasets import FashionMNIST

    root = download_root(data_dir)
    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)
    return find_dataset_dir(NAME, root, subfolders, _required_files(), _HOW_TO_SUPPLY)


def _existing(folder: Path, name: str) -> Path:
    compressed = folder / (name + ".gz")
    return compressed if compressed.is_file() else folder / name


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Read an unsigned-byte IDX file, gzip-compressed when its name ends in ``.gz``.

    Raises:
        DataError: the file is truncated, not gzip, or its header does not describe
            ``expected_dims`` unsigned-byte dimensions matching its length.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: cannot decompress ({type(error).__name__}: {error}); the file is "
            "corrupt or truncated, so fetch it again"
        ) from error
    return _parse_idx(raw, path, expected_dims)


def _parse_idx(raw: bytes, path: Path, expected_dims: int) -> np.ndarray:
    header_size = 4 + 4 * expected_dims
    if len(raw) < header_size:
        raise DataError(f"{path}: {len(raw)} bytes is shorter than the IDX header")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != _IDX_UBYTE or ndim != expected_dims:
        raise DataError(
            f"{path}: invalid IDX header (magic {raw[:4].hex()}); expected unsigned bytes "
            f"with {expected_dims} dimension(s), magic 000008{expected_dims:02x}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(shape))
    if len(raw) != expected_size:
        raise DataError(
            f"{path}: header announces shape {shape} ({expected_size} bytes) but the file "
            f"contains {len(raw)} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)
