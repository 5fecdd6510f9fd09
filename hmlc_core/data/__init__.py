"""Hierarchical datasets, their label trees, honest splits and batched two-view augmentation.

Entry points: :func:`load_splits` (train and validation, never test),
:func:`load_test_split` (final evaluation only), :func:`build_two_view_augmentation` and
:func:`build_eval_transform`.
"""

from hmlc_core.data.cifar100 import load_cifar100
from hmlc_core.data.dataset import HierarchicalDataset, Modality, Split
from hmlc_core.data.errors import DataError, DataNotFoundError, HierarchyError
from hmlc_core.data.fashion_mnist import load_fashion_mnist
from hmlc_core.data.folder import load_image_folder
from hmlc_core.data.hierarchy import Hierarchy
from hmlc_core.data.image_augment import (
    ImageAugmentationConfig,
    ImageAugmentationParams,
    augment_images,
    grayscale_recipe,
    sample_image_params,
)
from hmlc_core.data.loading import (
    DataConfig,
    TrainValSplits,
    load_official_split,
    load_splits,
    load_test_split,
)
from hmlc_core.data.modelnet40 import load_modelnet40
from hmlc_core.data.point_augment import PointAugmentationConfig, augment_points
from hmlc_core.data.splits import long_tail_counts, long_tail_indices, stratified_split
from hmlc_core.data.transforms import (
    EvalTransform,
    TwoViewAugmentation,
    build_eval_transform,
    build_two_view_augmentation,
    default_augmentation_config,
)

__all__ = [
    "DataConfig",
    "DataError",
    "DataNotFoundError",
    "EvalTransform",
    "HierarchicalDataset",
    "Hierarchy",
    "HierarchyError",
    "ImageAugmentationConfig",
    "ImageAugmentationParams",
    "Modality",
    "PointAugmentationConfig",
    "Split",
    "TrainValSplits",
    "TwoViewAugmentation",
    "augment_images",
    "augment_points",
    "build_eval_transform",
    "build_two_view_augmentation",
    "default_augmentation_config",
    "grayscale_recipe",
    "load_cifar100",
    "load_fashion_mnist",
    "load_image_folder",
    "load_modelnet40",
    "load_official_split",
    "load_splits",
    "load_test_split",
    "long_tail_counts",
    "long_tail_indices",
    "sample_image_params",
    "stratified_split",
]
