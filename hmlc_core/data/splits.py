"""Validation splits and long-tailed subsampling, both pure functions of labels and a seed.

Neither depends on the process, the worker rank or the machine: the same labels, fraction
and seed give the same indices everywhere, so every worker of a distributed run agrees.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hmlc_core.data.errors import DataError


def stratified_split(fine: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split sample indices into train and validation parts, stratified by fine class.

    Each class c with n_c samples gives round(val_fraction * n_c) samples to validation,
    at least one when n_c >= 2 and never all of them, chosen by a seeded permutation.

    Args:
        fine: fine labels of the official training split.
        val_fraction: share of each class that goes to validation, in (0, 1).
        seed: seed of the permutation.

    Shape:
        fine: (N,) integer. return: (train indices (N - M,), validation indices (M,)),
        both int64 and sorted.

    Raises:
        DataError: val_fraction is outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    fine = torch.as_tensor(fine).long().cpu()
    generator = torch.Generator().manual_seed(seed)
    train_parts: list[Tensor] = []
    val_parts: list[Tensor] = []
    for label in torch.unique(fine).tolist():
        members = (fine == label).nonzero().squeeze(1)
        shuffled = members[torch.randperm(len(members), generator=generator)]
        n_val = _validation_count(len(members), val_fraction)
        val_parts.append(shuffled[:n_val])
        train_parts.append(shuffled[n_val:])
    train = torch.sort(torch.cat(train_parts)).values
    val = torch.sort(torch.cat(val_parts)).values
    return train, val


def _validation_count(class_size: int, val_fraction: float) -> int:
    if class_size < 2:
        return 0
    return min(max(1, round(val_fraction * class_size)), class_size - 1)


def long_tail_counts(class_sizes: Tensor, rho: float) -> Tensor:
    """Return the per-class sample counts of an exponential long-tailed profile.

    Class c (by label order) keeps n_c = floor(n_max * rho ** (-c / (C - 1))) samples,
    where n_max is the largest class size, capped at the samples the class has and at
    least one. The largest-to-smallest ratio is therefore rho (up to rounding) when
    every class starts with n_max samples.

    Shape:
        class_sizes: (C,) integer. return: (C,) int64.

    Raises:
        DataError: rho < 1.
    """
    if rho < 1.0:
        raise DataError(f"long-tail imbalance factor rho must be >= 1, got {rho}")
    class_sizes = torch.as_tensor(class_sizes).long()
    num_classes = len(class_sizes)
    n_max = int(class_sizes.max())
    ranks = torch.arange(num_classes, dtype=torch.float64)
    exponent = -ranks / max(num_classes - 1, 1)
    rho_tensor = torch.tensor(float(rho), dtype=torch.float64)
    profile = torch.floor(n_max * torch.pow(rho_tensor, exponent))
    return torch.minimum(profile.long().clamp_min(1), class_sizes)


def long_tail_indices(fine: Tensor, num_classes: int, rho: float, seed: int) -> Tensor:
    """Choose a seeded long-tailed subset of sample indices (see :func:`long_tail_counts`).

    Shape:
        fine: (N,) integer. return: (M,) int64 sorted indices into ``fine``.

    Raises:
        DataError: rho < 1, or a class has no sample.
    """
    fine = torch.as_tensor(fine).long().cpu()
    sizes = torch.bincount(fine, minlength=num_classes)
    if (sizes == 0).any():
        missing = int((sizes == 0).nonzero()[0])
        raise DataError(f"fine class {missing} has no training sample, so it cannot be long-tailed")
    counts = long_tail_counts(sizes, rho)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[Tensor] = []
    for label in range(num_classes):
        members = (fine == label).nonzero().squeeze(1)
        choice = torch.randperm(len(members), generator=generator)[: int(counts[label])]
        chosen.append(members[choice])
    return torch.sort(torch.cat(chosen)).values
