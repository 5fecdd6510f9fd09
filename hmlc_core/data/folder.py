"""Your own images: a folder of image files plus a CSV of file names and label paths.

CSV layout: a header ``filename,<level 1>,<level 2>,...`` (coarsest level first) and one
row per image, for example ``img_001.png,animal,dog``. The header names become the level
names. File names are relative to the image folder (default: the CSV's folder).

The hierarchy comes from the training CSV: class names at each level are sorted, and
each class's parent is the one its rows name. Class names must be unique within a level,
so a class listed under two parents is an error. The test CSV is read through the same
hierarchy, and a label it does not know is an error.

Images are converted to RGB and resized to ``image_size`` x ``image_size`` with bilinear
resampling. Normalisation uses the ImageNet channel statistics (project choice: most
user photographs resemble ImageNet's, and fixed constants keep train and test aligned).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hmlc_core.data.dataset import HierarchicalDataset, Split
from hmlc_core.data.errors import DataError, DataNotFoundError
from hmlc_core.data.hierarchy import Hierarchy

NAME = "folder"
FILENAME_COLUMN = "filename"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LabelTable:
    """The rows of one label CSV.

    Shape:
        labels: one tuple of L class names per row.
    """

    path: Path
    level_names: tuple[str, ...]
    filenames: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]


def read_label_csv(path: Path) -> LabelTable:
    """Read and check a ``filename,<level 1>,...`` CSV.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the header is wrong, a row has the wrong number of fields or an empty
            label, or the file has no rows.
    """
    if not path.is_file():
        raise DataNotFoundError(
            f"label CSV {path} not found; set csv_path (and test_csv_path) to files with the "
            f"header '{FILENAME_COLUMN},<level 1>,<level 2>,...'"
        )
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise DataError(f"{path}: the CSV is empty")
    header = [name.strip() for name in rows[0]]
    if len(header) < 2 or header[0] != FILENAME_COLUMN:
        raise DataError(
            f"{path}: header is {header}; expected '{FILENAME_COLUMN}' followed by one column "
            "per level, coarsest first"
        )
    filenames: list[str] = []
    labels: list[tuple[str, ...]] = []
    for line, row in enumerate(rows[1:], start=2):
        fields = [field.strip() for field in row]
        if len(fields) != len(header) or not all(fields):
            raise DataError(
                f"{path}: line {line} is {row}; expected {len(header)} non-empty fields "
                f"({', '.join(header)})"
            )
        filenames.append(fields[0])
        labels.append(tuple(fields[1:]))
    if not labels:
        raise DataError(f"{path}: the CSV has a header but no rows")
    return LabelTable(path, tuple(header[1:]), tuple(filenames), tuple(labels))


def hierarchy_from_table(table: LabelTable) -> Hierarchy:
    """Build the hierarchy from the label paths of a CSV (sorted class names per level).

    Raises:
        HierarchyError: a class has two parents, naming the class and both parents.
    """
    class_names = [
        tuple(sorted({row[level] for row in table.labels}))
        for level in range(len(table.level_names))
    ]
    paths = paths_from_table(table, class_names)
    return Hierarchy.from_paths(table.level_names, class_names, paths, source=str(table.path))


def paths_from_table(
    table: LabelTable, class_names: Sequence[tuple[str, ...]]
) -> torch.Tensor:
    """Turn the CSV's label names into indices.

    Shape:
        return: (N, L) int64.

    Raises:
        DataError: a label is not a class of its level.
    """
    index = [{name: i for i, name in enumerate(names)} for names in class_names]
    paths = torch.empty(len(table.labels), len(table.level_names), dtype=torch.long)
    for row, labels in enumerate(table.labels):
        for level, label in enumerate(labels):
            if label not in index[level]:
                raise DataError(
                    f"{table.path}: row {row + 2} ({table.filenames[row]}) has label '{label}' at "
                    f"level '{table.level_names[level]}', which the training CSV does not define"
                )
            paths[row, level] = index[level][label]
    return paths


def load_image(path: Path, image_size: int) -> np.ndarray:
    """Read one image as RGB, resized to a square.

    Shape:
        return: (3, image_size, image_size) uint8.

    Raises:
        DataError: the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except FileNotFoundError as error:
        raise DataError(f"{path}: image file not found, although the label CSV lists it") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(
            f"{path}: not a readable image ({error}); the file is corrupt or truncated"
        ) from error
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(
    train_csv: str | os.PathLike[str],
    split: Split,
    test_csv: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    image_size: int = 32,
) -> HierarchicalDataset:
    """Load the train or test split of an image folder described by label CSVs.

    Args:
        train_csv: CSV of the training images; it defines the hierarchy.
        split: "train" reads ``train_csv``; "test" reads ``test_csv``.
        test_csv: CSV of the test images (needed for the test split).
        image_dir: folder the file names are relative to (default: each CSV's folder).
        image_size: side length images are resized to, in pixels.

    Returns:
        Images (N, 3, image_size, image_size) uint8 with (N, L) paths.

    Raises:
        DataNotFoundError: a CSV is missing.
        DataError: a CSV or image is invalid, or a label is outside the hierarchy.
    """
    if split not in ("train", "test"):
        raise DataError(f"an image folder has splits train and test, got '{split}'")
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    train_table = read_label_csv(Path(train_csv))
    hierarchy = hierarchy_from_table(train_table)
    table = train_table
    if split == "test":
        if test_csv is None:
            raise DataNotFoundError("the test split of a folder dataset needs test_csv_path")
        table = read_label_csv(Path(test_csv))
        if table.level_names != train_table.level_names:
            raise DataError(
                f"{table.path}: level columns {table.level_names} differ from the training CSV's "
                f"{train_table.level_names}"
            )
    paths = paths_from_table(table, hierarchy.class_names)
    hierarchy.check_paths(paths, source=str(table.path))
    root = Path(image_dir) if image_dir is not None else table.path.parent
    images = np.stack([load_image(root / name, image_size) for name in table.filenames])
    return HierarchicalDataset(
        name=NAME,
        modality="image",
        inputs=torch.from_numpy(images),
        paths=paths,
        hierarchy=hierarchy,
        split=split,
        mean=MEAN,
        std=STD,
    )
