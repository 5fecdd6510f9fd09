"""ModelNet40 point clouds from the resampled layout ``modelnet40_normal_resampled``.

Layout: ``modelnet40_shape_names.txt`` (the 40 class names, one per line, in label order),
``modelnet40_train.txt`` and ``modelnet40_test.txt`` (one shape id per line, such as
``night_stand_0001``), and one text file per shape, ``<class>/<shape id>.txt``, whose rows
are ``x,y,z,nx,ny,nz``. Only the coordinates are kept.

Point sampling (project choice): the first ``num_points`` rows of each file are used, because
the resampled files store uniformly resampled surface points, so any prefix covers the
shape. Each cloud is then centred on its mean and scaled into the unit sphere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hmlc_core.data.dataset import HierarchicalDataset, Split
from hmlc_core.data.errors import DataError
from hmlc_core.data.hierarchy import Hierarchy
from hmlc_core.data.locate import find_dataset_dir

NAME = "modelnet40"
FOLDER = "modelnet40_normal_resampled"
SHAPE_NAMES_FILE = "modelnet40_shape_names.txt"
LEVEL_NAMES = ("group", "class")

# Two-level grouping of the 40 classes (project choice, not from a published source):
# nine groups by function and typical geometry.
GROUP_OF_CLASS: dict[str, str] = {
    **dict.fromkeys(("bed", "bench", "chair", "sofa", "stool"), "seating_and_beds"),
    **dict.fromkeys(
        ("bookshelf", "desk", "dresser", "night_stand", "table", "tv_stand", "wardrobe"),
        "tables_and_storage",
    ),
    **dict.fromkeys(("bottle", "bowl", "cup", "flower_pot", "glass_box", "vase"), "containers"),
    **dict.fromkeys(("airplane", "car"), "vehicles"),
    **dict.fromkeys(("keyboard", "laptop", "monitor", "radio", "xbox"), "electronics"),
    **dict.fromkeys(("bathtub", "range_hood", "sink", "toilet"), "bathroom_and_kitchen"),
    **dict.fromkeys(("curtain", "door", "mantel", "stairs", "tent"), "architecture"),
    **dict.fromkeys(("guitar", "piano"), "musical_instruments"),
    **dict.fromkeys(("cone", "lamp", "person", "plant"), "other"),
}
GROUP_NAMES = (
    "seating_and_beds", "tables_and_storage", "containers", "vehicles", "electronics",
    "bathroom_and_kitchen", "architecture", "musical_instruments", "other",
)  # fmt: skip

_HOW_TO_SUPPLY = (
    "Extract modelnet40_normal_resampled.zip (the resampled ModelNet40 of PointNet++) into "
    "that folder; there is no automatic download."
)


def load_modelnet40(
    data_dir: str | os.PathLike[str] | None, split: Split, num_points: int = 1024
) -> HierarchicalDataset:
    """Load the official train or test split of ModelNet40 as point clouds.

    Args:
        data_dir: folder that contains ``modelnet40_normal_resampled`` (or is that folder).
        split: "train" or "test".
        num_points: points kept per shape (the first rows of each file).

    Returns:
        Point clouds (N, num_points, 3) float32 with (N, 2) paths (group, class).

    Raises:
        DataNotFoundError: the list files are missing.
        DataError: a shape file is missing, short or malformed, a class is not one of the
            40 ModelNet40 classes, or the lists are empty.
    """
    if split not in ("train", "test"):
        raise DataError(f"ModelNet40 has official splits train and test, got '{split}'")
    if num_points < 1:
        raise DataError(f"num_points must be >= 1, got {num_points}")
    list_name = f"modelnet40_{split}.txt"
    required = (SHAPE_NAMES_FILE, list_name)
    folder = find_dataset_dir(NAME, data_dir, (FOLDER,), required, _HOW_TO_SUPPLY)
    class_names = _read_lines(folder / SHAPE_NAMES_FILE)
    hierarchy = build_hierarchy(class_names, folder / SHAPE_NAMES_FILE)
    class_index = {name: i for i, name in enumerate(class_names)}
    shape_ids = _read_lines(folder / list_name)
    if not shape_ids:
        raise DataError(f"{folder / list_name}: the shape list is empty")
    clouds = np.empty((len(shape_ids), num_points, 3), dtype=np.float32)
    fine = np.empty(len(shape_ids), dtype=np.int64)
    for row, shape_id in enumerate(shape_ids):
        class_name = shape_id.rsplit("_", 1)[0]
        if class_name not in class_index:
            raise DataError(
                f"{folder / list_name}: shape '{shape_id}' belongs to class '{class_name}', "
                f"which is not in {SHAPE_NAMES_FILE}"
            )
        fine[row] = class_index[class_name]
        points = read_shape(folder / class_name / f"{shape_id}.txt", num_points)
        clouds[row] = normalize_cloud(points)
    return HierarchicalDataset(
        name=NAME,
        modality="points",
        inputs=torch.from_numpy(clouds),
        paths=hierarchy.paths_from_fine(torch.from_numpy(fine)),
        hierarchy=hierarchy,
        split=split,
    )


def build_hierarchy(class_names: list[str], source: Path | str = SHAPE_NAMES_FILE) -> Hierarchy:
    """Build the (group, class) hierarchy for the class names in label order.

    Raises:
        DataError: a class name has no group, so the file is not ModelNet40's list.
    """
    unknown = [name for name in class_names if name not in GROUP_OF_CLASS]
    if unknown:
        raise DataError(
            f"{source}: class '{unknown[0]}' is not one of the 40 ModelNet40 classes, so it "
            "has no group"
        )
    used_groups = {GROUP_OF_CLASS[name] for name in class_names}
    groups = tuple(group for group in GROUP_NAMES if group in used_groups)
    parent_of = {name: GROUP_OF_CLASS[name] for name in class_names}
    return Hierarchy.from_parent_names(LEVEL_NAMES, (groups, tuple(class_names)), (parent_of,))


def read_shape(path: Path, num_points: int) -> np.ndarray:
    """Read the first ``num_points`` coordinates of one shape file.

    Shape:
        return: (num_points, 3) float32.

    Raises:
        DataError: the file is missing, has fewer rows, or a row is not six numbers.
    """
    points = np.empty((num_points, 3), dtype=np.float32)
    try:
        with path.open("r") as handle:
            for row in range(num_points):
                line = handle.readline()
                if not line:
                    raise DataError(
                        f"{path}: contains {row} points, fewer than the {num_points} requested; "
                        "the file is truncated, or lower num_points"
                    )
                points[row] = _parse_row(line, path, row)
    except FileNotFoundError as error:
        raise DataError(
            f"{path}: shape file not found, although the shape list names it"
        ) from error
    return points


def _parse_row(line: str, path: Path, row: int) -> tuple[float, float, float]:
    values = line.strip().split(",")
    try:
        if len(values) != 6:
            raise ValueError(f"{len(values)} values")
        x, y, z = (float(v) for v in values[:3])
        for v in values[3:]:
            float(v)
    except ValueError as error:
        raise DataError(
            f"{path}: row {row + 1} is '{line.strip()[:80]}', expected six comma-separated "
            f"numbers x,y,z,nx,ny,nz ({error})"
        ) from error
    if not all(np.isfinite((x, y, z))):
        raise DataError(f"{path}: row {row + 1} contains a non-finite coordinate")
    return x, y, z


def normalize_cloud(points: np.ndarray) -> np.ndarray:
    """Centre a cloud on its mean and scale it so the farthest point lies on the unit sphere.

    Shape:
        points: (P, 3). return: (P, 3) float32.
    """
    centred = points - points.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred**2).sum(axis=1)).max())
    return (centred / radius if radius > 0 else centred).astype(np.float32)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text file ({error})") from error
    return [line.strip() for line in text.splitlines() if line.strip()]
