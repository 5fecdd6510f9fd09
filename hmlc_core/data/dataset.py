"""The in-memory dataset every loader returns: inputs, label paths and their hierarchy."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor

from hmlc_core.data.errors import DataError
from hmlc_core.data.hierarchy import Hierarchy

Modality = Literal["image", "points"]
Split = Literal["train", "val", "test"]


# eq=False: comparing tensors elementwise has no single truth value, so compare by identity.
@dataclasses.dataclass(frozen=True, eq=False)
class HierarchicalDataset:
    """A whole split held in memory as tensors, with the label path of every sample.

    Attributes:
        name: dataset name ("cifar100", "fashion-mnist", "modelnet40", "folder").
        modality: "image" or "points".
        inputs: uint8 images or float32 point clouds.
        paths: label paths, column 0 coarsest.
        hierarchy: the label tree the paths belong to.
        split: "train", "val" or "test". Training and model selection code can check it,
            so a test split passed by mistake fails loudly (see :meth:`require_split`).
        mean: per-channel mean of the images in [0, 1] units, used for normalisation.
            Empty for point clouds. Images built without mean and std get 0.5 for both,
            which maps [0, 1] to [-1, 1].
        std: per-channel standard deviation, same units. Empty for point clouds.

    Shape:
        inputs: (N, C, H, W) uint8 for images, (N, P, 3) float32 for points.
        paths: (N, L) int64.

    Raises:
        DataError: the inputs and paths disagree in length, dtype or shape.
    """

    name: str
    modality: Modality
    inputs: Tensor
    paths: Tensor
    hierarchy: Hierarchy
    split: Split = "train"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self._validate_inputs()
        if self.paths.dtype != torch.long or self.paths.dim() != 2:
            raise DataError(
                f"{self.name}: paths must be int64 of shape (N, L), got {self.paths.dtype} "
                f"{tuple(self.paths.shape)}"
            )
        if self.paths.shape[0] != self.inputs.shape[0]:
            raise DataError(
                f"{self.name}: {self.inputs.shape[0]} inputs but {self.paths.shape[0]} label paths"
            )
        if self.paths.shape[1] != self.hierarchy.num_levels:
            raise DataError(
                f"{self.name}: paths have {self.paths.shape[1]} levels but the hierarchy has "
                f"{self.hierarchy.num_levels}"
            )
        if self.split not in ("train", "val", "test"):
            raise DataError(f"{self.name}: split must be train, val or test, got '{self.split}'")

    def _validate_inputs(self) -> None:
        if self.modality == "image":
            if self.inputs.dtype != torch.uint8 or self.inputs.dim() != 4:
                raise DataError(
                    f"{self.name}: images must be uint8 of shape (N, C, H, W), got "
                    f"{self.inputs.dtype} {tuple(self.inputs.shape)}"
                )
            channels = self.inputs.shape[1]
            if not self.mean and not self.std:
                object.__setattr__(self, "mean", (0.5,) * channels)
                object.__setattr__(self, "std", (0.5,) * channels)
            if len(self.mean) != channels or len(self.std) != channels:
                raise DataError(
                    f"{self.name}: mean and std need one value per channel ({channels}), got "
                    f"{self.mean} and {self.std}"
                )
        elif self.modality == "points":
            if self.inputs.dtype != torch.float32 or self.inputs.dim() != 3:
                raise DataError(
                    f"{self.name}: point clouds must be float32 of shape (N, P, 3), got "
                    f"{self.inputs.dtype} {tuple(self.inputs.shape)}"
                )
            if self.inputs.shape[2] != 3:
                raise DataError(
                    f"{self.name}: points need 3 coordinates, got {self.inputs.shape[2]}"
                )
        else:
            raise DataError(f"{self.name}: modality must be image or points, got {self.modality}")

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    @property
    def fine_labels(self) -> Tensor:
        """Finest-level labels. Shape: (N,) int64."""
        return self.paths[:, -1]

    def class_counts(self) -> list[Tensor]:
        """Count samples per class at every level (the inputs of the imbalance weights).

        Shape:
            return: L tensors, entry l of shape (num_classes(l),) int64.
        """
        return self.hierarchy.class_counts(self.paths)

    def subset(
        self, indices: Tensor | Sequence[int], split: Split | None = None
    ) -> HierarchicalDataset:
        """Return the samples at ``indices`` (copied), optionally under a new split name.

        Shape:
            indices: (M,) integer.
        """
        index = torch.as_tensor(indices, dtype=torch.long, device=self.inputs.device)
        return dataclasses.replace(
            self,
            inputs=self.inputs[index],
            paths=self.paths[index.to(self.paths.device)],
            split=split or self.split,
        )

    def to(self, device: torch.device | str) -> HierarchicalDataset:
        """Return the dataset with inputs and paths on ``device``."""
        return dataclasses.replace(self, inputs=self.inputs.to(device), paths=self.paths.to(device))

    def require_split(self, *allowed: Split) -> None:
        """Raise unless this dataset's split is one of ``allowed``.

        Raises:
            DataError: e.g. the test split reaches code that selects hyperparameters.
        """
        if self.split not in allowed:
            raise DataError(
                f"{self.name}: expected a {' or '.join(allowed)} split, got the {self.split} "
                "split; load validation data with load_splits and keep load_test_split for "
                "the final evaluation"
            )

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (inputs, paths) batches, in a seeded random order when ``shuffle`` is set.

        With ``world_size`` > 1, every worker draws the same order (seed its generator
        identically) and takes every ``world_size``-th sample from position ``rank``. The
        last ``len(self) % world_size`` samples of the order are dropped, so all workers get
        the same number of samples.

        Shape:
            yields: inputs (B, ...) as stored and paths (B, L).

        Raises:
            DataError: batch_size < 1, or rank is outside [0, world_size).
        """
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, world_size={world_size}), got {rank}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order[: n - n % world_size][rank::world_size]
        count = len(order)
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            yield (
                self.inputs[index.to(self.inputs.device)],
                self.paths[index.to(self.paths.device)],
            )
