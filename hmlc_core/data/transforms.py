"""The callables training and evaluation apply to batches: two augmented views, or one plain view.

Both work on whole batches on the batch's device, so a training loop on the GPU moves
uint8 images there once and augments them there.
"""

from __future__ import annotations

import dataclasses
from typing import Union

import torch
from torch import Tensor

from hmlc_core.data import cifar100, fashion_mnist, folder
from hmlc_core.data.dataset import HierarchicalDataset, Modality
from hmlc_core.data.image_augment import ImageAugmentationConfig, augment_images, grayscale_recipe
from hmlc_core.data.point_augment import PointAugmentationConfig, augment_points

AugmentationConfig = Union[ImageAugmentationConfig, PointAugmentationConfig]

# Modality and normalisation statistics of the built-in datasets, for callers that have a
# dataset name but no loaded dataset.
_DATASET_SPECS: dict[str, tuple[Modality, tuple[float, ...], tuple[float, ...]]] = {
    "cifar100": ("image", cifar100.MEAN, cifar100.STD),
    "fashion-mnist": ("image", fashion_mnist.MEAN, fashion_mnist.STD),
    "folder": ("image", folder.MEAN, folder.STD),
    "modelnet40": ("points", (), ()),
}


@dataclasses.dataclass(frozen=True)
class Normalize:
    """Per-channel normalisation of float images in [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: Tensor) -> Tensor:
        """Return (images - mean) / std. Shape: images (B, C, H, W) or (B, V, C, H, W)."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
        return (images - mean) / std


class TwoViewAugmentation:
    """Turns a batch into two independently augmented, normalised views per sample.

    Call it as ``views = augment(batch, generator)``.

    Shape:
        images: batch (B, C, H, W) uint8 -> views (B, 2, C, S, S) float32.
        points: batch (B, P, 3) float -> views (B, 2, P, 3) float32.
    """

    def __init__(
        self,
        modality: Modality,
        config: AugmentationConfig,
        normalize: Normalize | None = None,
    ) -> None:
        expected = ImageAugmentationConfig if modality == "image" else PointAugmentationConfig
        if not isinstance(config, expected):
            raise TypeError(
                f"{modality} augmentation needs a {expected.__name__}, got {type(config).__name__}"
            )
        if modality == "image" and normalize is None:
            raise ValueError("image augmentation needs the dataset's normalisation (mean and std)")
        self.modality = modality
        self.config = config
        self.normalize = normalize

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return two augmented views of every sample, drawn from ``generator``."""
        size = batch.shape[0]
        doubled = torch.cat([batch, batch])
        if self.modality == "image":
            assert isinstance(self.config, ImageAugmentationConfig) and self.normalize is not None
            views = self.normalize(augment_images(doubled, self.config, generator))
        else:
            assert isinstance(self.config, PointAugmentationConfig)
            views = augment_points(doubled, self.config, generator)
        # (2B, ...) -> (2, B, ...) -> (B, 2, ...): row i contains both views of sample i.
        return views.view(2, size, *views.shape[1:]).transpose(0, 1).contiguous()


class EvalTransform:
    """Turns a batch into one unaugmented float view: normalised images, or points as float32.

    Shape:
        images: (B, C, H, W) uint8 -> (B, C, H, W) float32. points: (B, P, 3) -> (B, P, 3).
    """

    def __init__(self, modality: Modality, normalize: Normalize | None = None) -> None:
        if modality == "image" and normalize is None:
            raise ValueError("the image eval transform needs the dataset's normalisation")
        self.modality = modality
        self.normalize = normalize

    def __call__(self, batch: Tensor) -> Tensor:
        """Return the plain view of every sample."""
        if self.modality == "points":
            return batch.float()
        assert self.normalize is not None
        images = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        return self.normalize(images)


def _spec(dataset: HierarchicalDataset | str) -> tuple[Modality, Normalize | None, int]:
    """Return modality, normalisation and channel count of a dataset or a built-in name."""
    if isinstance(dataset, HierarchicalDataset):
        channels = int(dataset.inputs.shape[1]) if dataset.modality == "image" else 3
        normalize = Normalize(dataset.mean, dataset.std) if dataset.modality == "image" else None
        return dataset.modality, normalize, channels
    if dataset not in _DATASET_SPECS:
        raise ValueError(f"unknown dataset '{dataset}'; expected one of {sorted(_DATASET_SPECS)}")
    modality, mean, std = _DATASET_SPECS[dataset]
    normalize = Normalize(mean, std) if modality == "image" else None
    return modality, normalize, len(mean) if modality == "image" else 3


def default_augmentation_config(dataset: HierarchicalDataset | str) -> AugmentationConfig:
    """Return the default recipe: SupCon's CIFAR recipe for RGB, its grayscale variant for
    one-channel images, and :class:`PointAugmentationConfig` for point clouds."""
    modality, _, channels = _spec(dataset)
    if modality == "points":
        return PointAugmentationConfig()
    return ImageAugmentationConfig() if channels == 3 else grayscale_recipe()


def build_two_view_augmentation(
    dataset: HierarchicalDataset | str, config: AugmentationConfig | None = None
) -> TwoViewAugmentation:
    """Build the two-view training augmentation for a loaded dataset or a built-in name.

    Args:
        dataset: a loaded dataset (its modality, channels and mean/std are used) or one of
            "cifar100", "fashion-mnist", "modelnet40", "folder".
        config: the recipe; default :func:`default_augmentation_config`.
    """
    modality, normalize, _ = _spec(dataset)
    return TwoViewAugmentation(modality, config or default_augmentation_config(dataset), normalize)


def build_eval_transform(dataset: HierarchicalDataset | str) -> EvalTransform:
    """Build the unaugmented transform used for feature extraction and probes."""
    modality, normalize, _ = _spec(dataset)
    return EvalTransform(modality, normalize)
