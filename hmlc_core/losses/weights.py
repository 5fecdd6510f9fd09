"""Level weights and class-imbalance anchor weights for the hierarchical losses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def default_level_weights(num_levels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Return the default HMC level weights lambda_l = exp(1 / (L - l + 1)).

    With 1-based levels l = 1 (coarsest) .. L (finest), the finest level gets
    weight e and coarser levels get less. This is exp(1/k) with k = 1 at the
    finest level, as in the reference code of Zhang et al. (CVPR 2022).

    Args:
        num_levels: number of hierarchy levels L (at least 1).
        dtype: floating dtype of the result.

    Returns:
        Level weights, coarsest level first.

    Shape:
        - output: (L,)

    Raises:
        ValueError: num_levels is not a positive integer.
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive integer, got {num_levels!r}")
    distance_from_finest = torch.arange(num_levels, 0, -1, dtype=torch.float64)
    return torch.exp(1.0 / distance_from_finest).to(dtype)


def imbalance_weights(labels: Tensor, class_counts: Sequence[Tensor], beta: float) -> Tensor:
    """Weight each anchor by n_l(c)^(-beta), normalised to mean 1 per level over the batch.

    n_l(c) is the training-set count of the level-l class c of the image. Rare
    classes at a level get larger weights, which counters the imbalance of the
    higher levels. beta = 0 gives all ones. This weighting is a project choice
    for G-HMLC and A-HMLC, not a formula published with those methods.

    The mean is taken over this batch only: with several workers each worker
    normalises its own part of the global batch.

    Args:
        labels: class index per image and level, level 0 coarsest. Level-l
            entries index ``class_counts[l]``.
        class_counts: one tensor per level, ``class_counts[l][c]`` the training
            count of class c at level l. Every class present in ``labels`` must
            have a positive count.
        beta: exponent, at least 0 (the search uses [0, 1]).

    Returns:
        float32 anchor weights on the device of ``labels``.

    Shape:
        - labels: (N, L)
        - class_counts[l]: (C_l,)
        - output: (N, L)

    Raises:
        ValueError: beta is negative or not finite, shapes disagree, a label is
            out of range, or a class in the batch has a count of zero.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}; use 0 to turn the weighting off")
    if labels.dim() != 2 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of shape (N, L), got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    num_levels = labels.shape[1]
    if len(class_counts) != num_levels:
        raise ValueError(
            f"class_counts must hold one tensor per level ({num_levels}), got {len(class_counts)}"
        )
    columns = [
        _level_weights(labels[:, level], class_counts[level], beta, level)
        for level in range(num_levels)
    ]
    return torch.stack(columns, dim=1)


def _level_weights(level_labels: Tensor, counts: Tensor, beta: float, level: int) -> Tensor:
    """Return n(c)^-beta / mean for one level's labels (N,)."""
    counts = torch.as_tensor(counts, device=level_labels.device)
    if counts.dim() != 1:
        raise ValueError(
            f"class_counts[{level}] must be 1-D (one count per class), "
            f"got shape {tuple(counts.shape)}"
        )
    if level_labels.numel() > 0:
        low, high = int(level_labels.min()), int(level_labels.max())
        if low < 0 or high >= counts.numel():
            raise ValueError(
                f"labels at level {level} must lie in [0, {counts.numel() - 1}] to index "
                f"class_counts[{level}], got values in [{low}, {high}]"
            )
    batch_counts = counts[level_labels].to(torch.float64)
    if bool((batch_counts <= 0).any()):
        raise ValueError(
            f"class_counts[{level}] is zero or negative for a class present in the batch; "
            "counts must come from the training split that the labels are drawn from"
        )
    weights = batch_counts.pow(-beta)
    return (weights / weights.mean()).to(torch.float32)
