"""CIFAR-100 from the official ``cifar-100-python`` pickle files.

The folder contains ``train``, ``test`` and ``meta``. Each split file is a dict with
``data``, ``fine_labels`` and ``coarse_labels``. The ``data`` array is (N, 3072) uint8:
each row contains the 1,024 red, then green, then blue values of a 32x32 image. The
``meta`` file contains ``fine_label_names`` and ``coarse_label_names``. The files were
written by Python 2, so keys and names may come back as bytes, and both forms are accepted.

The two-level hierarchy (20 superclasses over 100 classes) is read from the labels of the
``train`` file itself, and the labels of the ``test`` file are checked against it.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hmlc_core.data.dataset import HierarchicalDataset, Split
from hmlc_core.data.errors import DataError
from hmlc_core.data.hierarchy import Hierarchy
from hmlc_core.data.locate import download_root, find_dataset_dir

logger = logging.getLogger(__name__)

NAME = "cifar100"
FOLDER = "cifar-100-python"
LEVEL_NAMES = ("superclass", "class")
# The per-channel mean and standard deviation of the training images (in [0, 1] units)
# that CIFAR-100 training code commonly uses; this project did not recompute them.
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
IMAGE_SHAPE = (3, 32, 32)

# Globals a CIFAR-100 pickle may reference: numpy array reconstruction, and the codec
# call that Python 3 writes for bytes under pickle protocol 2. Anything else is rejected,
# so a tampered file cannot run code while it is read.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}

_HOW_TO_SUPPLY = (
    "Download and extract cifar-100-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html into that folder, or pass download=True "
    "(--download on the command lines) to fetch it through torchvision."
)


def load_cifar100(
    data_dir: str | os.PathLike[str] | None, split: Split, download: bool = False
) -> HierarchicalDataset:
    """Load the official train or test split of CIFAR-100.

    Args:
        data_dir: folder that contains ``cifar-100-python`` (or is that folder); see
            :mod:`hmlc_core.data.locate` for the search order when it is missing.
        split: "train" or "test".
        download: fetch the archive through torchvision when no folder contains the files.
            Without it, nothing opens a network connection.

    Returns:
        Images (N, 3, 32, 32) uint8 with (N, 2) paths (superclass, class).

    Raises:
        DataNotFoundError: the files are missing and ``download`` is off.
        DataError: a file is corrupt, truncated or laid out differently.
    """
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-100 has official splits train and test, got '{split}'")
    folder = _locate(data_dir, download)
    hierarchy, train_data = _read_hierarchy(folder)
    data = train_data if split == "train" else _read_split(folder / "test")
    images, paths = _images_and_paths(data, folder / split, hierarchy)
    return HierarchicalDataset(
        name=NAME,
        modality="image",
        inputs=images,
        paths=paths,
        hierarchy=hierarchy,
        split=split,
        mean=MEAN,
        std=STD,
    )


def _locate(data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    required = ("train", "test", "meta")
    try:
        return find_dataset_dir(NAME, data_dir, (FOLDER,), required, _HOW_TO_SUPPLY)
    except FileNotFoundError:
        if not download:
            raise
    # NOTE: the tests run offline, so this download branch has not been run by them.
    root = download_root(data_dir)
    logger.info("downloading CIFAR-100 into %s through torchvision", root)
    from torchvision.datasets import CIFAR100

    CIFAR100(str(root), train=True, download=True)
    return find_dataset_dir(NAME, root, (FOLDER,), required, _HOW_TO_SUPPLY)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """Read a CIFAR pickle into a dict with str keys."""
    try:
        with path.open("rb") as handle:
            content = _RestrictedUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataError(
            f"{path}: not a readable CIFAR-100 pickle ({type(error).__name__}: {error}); the "
            "file is corrupt or truncated, so extract cifar-100-python.tar.gz again"
        ) from error
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a dict, found {type(content).__name__}")
    return {_to_str(key): value for key, value in content.items()}


def _to_str(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _require_keys(content: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    missing = [key for key in keys if key not in content]
    if missing:
        raise DataError(
            f"{path}: missing key(s) {missing} of the cifar-100-python layout; found "
            f"{sorted(content)}"
        )


def _read_split(path: Path) -> dict[str, Any]:
    content = _unpickle(path)
    _require_keys(content, ("data", "fine_labels", "coarse_labels"), path)
    return content


def _read_names(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    content = _unpickle(path)
    _require_keys(content, ("fine_label_names", "coarse_label_names"), path)
    fine = tuple(str(_to_str(n)) for n in content["fine_label_names"])
    coarse = tuple(str(_to_str(n)) for n in content["coarse_label_names"])
    return coarse, fine


def _label_paths(data: dict[str, Any], path: Path) -> torch.Tensor:
    coarse = np.asarray(data["coarse_labels"])
    fine = np.asarray(data["fine_labels"])
    if coarse.ndim != 1 or coarse.shape != fine.shape or not np.issubdtype(fine.dtype, np.integer):
        raise DataError(
            f"{path}: fine_labels and coarse_labels must be integer lists of equal length, got "
            f"shapes {fine.shape} and {coarse.shape}"
        )
    return torch.from_numpy(np.stack([coarse, fine], axis=1).astype(np.int64))


def _read_hierarchy(folder: Path) -> tuple[Hierarchy, dict[str, Any]]:
    """Build the hierarchy from ``meta`` names and ``train`` labels.

    Returns:
        The hierarchy and the content of the ``train`` file.
    """
    coarse_names, fine_names = _read_names(folder / "meta")
    train = _read_split(folder / "train")
    hierarchy = Hierarchy.from_paths(
        LEVEL_NAMES,
        (coarse_names, fine_names),
        _label_paths(train, folder / "train"),
        source=str(folder / "train"),
    )
    return hierarchy, train


def _images_and_paths(
    data: dict[str, Any], path: Path, hierarchy: Hierarchy
) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = np.asarray(data["data"])
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise DataError(
            f"{path}: data must be uint8 rows of 3072 values (3x32x32), got {pixels.dtype} "
            f"{pixels.shape}"
        )
    paths = _label_paths(data, path)
    if len(paths) != len(pixels):
        raise DataError(f"{path}: {len(pixels)} images but {len(paths)} labels")
    hierarchy.check_paths(paths, source=str(path))
    images = torch.from_numpy(pixels.reshape(-1, *IMAGE_SHAPE).copy())
    return images, paths
