"""The data config and the two entry points: ``load_splits`` (train and validation) and
``load_test_split`` (final evaluation only).

The test split has its own function and is never returned by ``load_splits``, so code
that selects hyperparameters cannot reach it by accident. Every returned dataset carries
its split name ("train", "val", "test") for checks such as
:meth:`HierarchicalDataset.require_split`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from hmlc_core.config import ConfigBase, require
from hmlc_core.data.cifar100 import load_cifar100
from hmlc_core.data.dataset import HierarchicalDataset, Split
from hmlc_core.data.fashion_mnist import load_fashion_mnist
from hmlc_core.data.folder import load_image_folder
from hmlc_core.data.modelnet40 import load_modelnet40
from hmlc_core.data.splits import long_tail_indices, stratified_split

DATASET_NAMES = ("cifar100", "fashion-mnist", "modelnet40", "folder")
DOWNLOADABLE = ("cifar100", "fashion-mnist")


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigBase):
    """Dataset choice, file location and split settings.

    Attributes:
        name: "cifar100", "fashion-mnist", "modelnet40" or "folder" (your own images).
        data_dir: folder searched first for the files; then the HMLC_DATA_DIR environment
            variable, ~/.cache/hmlc/data and a system location (see hmlc_core.data.locate).
            For "folder" it is the image folder, which contains train.csv and test.csv by default.
        download: fetch missing files through torchvision (cifar100 and fashion-mnist).
        val_fraction: share of each fine class of the official training split held out
            for validation, in (0, 1).
        split_seed: seed of the validation split.
        long_tail_rho: imbalance factor (largest / smallest fine class) of a long-tailed
            training split, >= 1; None keeps the official class sizes.
        long_tail_seed: seed that chooses which training samples the long tail keeps.
        num_points: points per ModelNet40 shape.
        csv_path: label CSV of the training images ("folder" only; default
            <data_dir>/train.csv).
        test_csv_path: label CSV of the test images ("folder" only; default
            <data_dir>/test.csv).
        image_size: side length, in pixels, that "folder" images are resized to.
    """

    name: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    long_tail_rho: float | None = None
    long_tail_seed: int = 0
    num_points: int = 1024
    csv_path: str | None = None
    test_csv_path: str | None = None
    image_size: int = 32

    def validate(self) -> None:
        require(
            self.name in DATASET_NAMES,
            f"DataConfig.name is '{self.name}'; expected one of {DATASET_NAMES}",
        )
        require(
            isinstance(self.val_fraction, (int, float)) and 0.0 < self.val_fraction < 1.0,
            f"DataConfig.val_fraction is {self.val_fraction}; expected a number in (0, 1)",
        )
        require(
            self.long_tail_rho is None
            or (math.isfinite(self.long_tail_rho) and self.long_tail_rho >= 1.0),
            f"DataConfig.long_tail_rho is {self.long_tail_rho}; expected None or a finite "
            "number >= 1 (largest over smallest class size)",
        )
        require(self.num_points >= 1, f"DataConfig.num_points is {self.num_points}; expected >= 1")
        require(self.image_size >= 1, f"DataConfig.image_size is {self.image_size}; expected >= 1")
        require(
            not self.download or self.name in DOWNLOADABLE,
            f"DataConfig.download is set for '{self.name}', but only {DOWNLOADABLE} can be "
            "downloaded; place the files in data_dir and set download to false",
        )
        require(
            self.name != "folder" or self.data_dir is not None or self.csv_path is not None,
            "DataConfig.name is 'folder' but data_dir and csv_path are both unset; set "
            "csv_path to the training label CSV",
        )


@dataclasses.dataclass(frozen=True)
class TrainValSplits:
    """The training split and the validation split carved from the official training set."""

    train: HierarchicalDataset
    val: HierarchicalDataset


def load_official_split(config: DataConfig, split: Split) -> HierarchicalDataset:
    """Load an official split ("train" or "test") of the configured dataset, unchanged."""
    if config.name == "cifar100":
        return load_cifar100(config.data_dir, split, download=config.download)
    if config.name == "fashion-mnist":
        return load_fashion_mnist(config.data_dir, split, download=config.download)
    if config.name == "modelnet40":
        return load_modelnet40(config.data_dir, split, num_points=config.num_points)
    train_csv, test_csv = _folder_csvs(config)
    return load_image_folder(
        train_csv, split, test_csv=test_csv, image_dir=config.data_dir, image_size=config.image_size
    )


def _folder_csvs(config: DataConfig) -> tuple[Path, Path | None]:
    base = Path(config.data_dir) if config.data_dir is not None else None
    if config.csv_path is not None:
        train_csv = Path(config.csv_path)
    else:
        assert base is not None, "DataConfig.validate requires data_dir or csv_path"
        train_csv = base / "train.csv"
    if config.test_csv_path is not None:
        return train_csv, Path(config.test_csv_path)
    return train_csv, (base / "test.csv") if base is not None else None


def load_splits(config: DataConfig) -> TrainValSplits:
    """Load the training and validation splits; the test split is never returned.

    The validation split is carved from the official training split first, stratified
    by fine class. A long-tailed variant then subsamples only the remaining training
    part, so validation keeps the balanced class profile of the official test split
    (project choice).

    Raises:
        DataNotFoundError: the dataset files are missing.
        DataError: a file is invalid, or a split cannot be formed.
    """
    official = load_official_split(config, "train")
    train_index, val_index = stratified_split(
        official.fine_labels, config.val_fraction, config.split_seed
    )
    train = official.subset(train_index, split="train")
    val = official.subset(val_index, split="val")
    if config.long_tail_rho is not None:
        keep = long_tail_indices(
            train.fine_labels,
            train.hierarchy.num_classes(-1),
            config.long_tail_rho,
            config.long_tail_seed,
        )
        train = train.subset(keep)
    return TrainValSplits(train=train, val=val)


def load_test_split(config: DataConfig) -> HierarchicalDataset:
    """Load the official test split, for the final evaluation of a chosen configuration only.

    It is never long-tailed, so results compare with the balanced test sets of the
    literature.
    """
    return load_official_split(config, "test")
