"""Hierarchical multi-label contrastive losses: HMC, HMCE, G-HMLC and A-HMLC.

HMC and HMCE follow Zhang et al., "Use All The Labels: A Hierarchical
Multi-Label Contrastive Learning Framework", CVPR 2022. At level l (0-based
here, 0 coarsest) two samples are positives when their label paths agree on
levels 0..l. loss_l is SupCon with those positives, averaged over the anchors
that have one. All 2N samples take part at every level; the reference code
instead drops label paths already seen at a coarser level, and this project
does not reproduce that (project choice).

- HMC: sum_l lambda_l * loss_l / sum_l lambda_l.
- HMCE: before weighting, loss_l <- max(loss_l, max_{k > l} loss_k), so a
  coarser level's loss is at least every finer level's loss.

G-HMLC and A-HMLC (Ott et al., arXiv 2510.00837) use level-specific features
z_l = normalize(z * m_l): a hard 0/1 mask per level (G-HMLC) or a soft mask per
sample and level (A-HMLC). How the masks enter the loss is a project choice.

Shape letters: N images, V views, B = N * V samples, D feature width, L levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hmlc_core.losses.distributed import distributed_world_size, gather_with_grad
from hmlc_core.losses.supcon import (
    autocast_disabled,
    check_anchor_weights,
    check_features,
    check_labels,
    check_temperature,
    gather_batch,
    level_losses,
    normalize_views,
    repeat_views,
    to_compute_dtype,
)
from hmlc_core.losses.weights import default_level_weights

Constraint = Literal["none", "max"]
_CONSTRAINTS = ("none", "max")


@dataclasses.dataclass(frozen=True)
class HierarchicalLossOutput:
    """The combined hierarchical loss and its per-level parts (all keep their graph).

    Attributes:
        loss: sum_l lambda_l * constrained_level_losses[l] / sum_l lambda_l.
        level_losses: SupCon loss of every level before the constraint.
        constrained_level_losses: after the HMCE max constraint; equal to
            ``level_losses`` for constraint "none".

    Shape:
        - loss: ()
        - level_losses: (L,)
        - constrained_level_losses: (L,)
    """

    loss: Tensor
    level_losses: Tensor
    constrained_level_losses: Tensor


def hierarchical_loss(
    features: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    level_weights: Sequence[float] | Tensor | None = None,
    constraint: Constraint = "none",
    masks: Tensor | None = None,
    anchor_weights: Tensor | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    """Compute the combined hierarchical loss; see :func:`hierarchical_loss_terms`.

    Shape:
        - output: ()
    """
    return hierarchical_loss_terms(
        features,
        labels,
        temperature=temperature,
        level_weights=level_weights,
        constraint=constraint,
        masks=masks,
        anchor_weights=anchor_weights,
        gather_distributed=gather_distributed,
    ).loss


def hierarchical_loss_terms(
    features: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    level_weights: Sequence[float] | Tensor | None = None,
    constraint: Constraint = "none",
    masks: Tensor | None = None,
    anchor_weights: Tensor | None = None,
    gather_distributed: bool = False,
) -> HierarchicalLossOutput:
    """Compute the hierarchical contrastive loss and its per-level terms.

    The function L2-normalises ``features`` along D itself. Level l's loss is
    the SupCon loss of :func:`hmlc_core.losses.supcon_loss` with positives that
    share the label path on levels 0..l, as the weighted mean

        loss_l = sum_i w_il * loss_il / sum_i w_il,   sums over anchors with a positive at l,

    with w_il = ``anchor_weights[n, l]`` for both views of image n (1 when not
    given), and 0 when no anchor has a positive at level l. With one level and
    no masks the result equals :func:`supcon_loss` exactly.

    Masks select level-specific features, z_l = normalize(z * m_l):

    - None: all levels share z, and the similarity matrix and its
      log-normaliser are computed once for all levels (HMC, HMCE).
    - (L, D) hard masks, the same for every sample (G-HMLC). They are not
      gathered across ranks and must be equal on all ranks.
    - (N, V, L, D) soft masks per view and level (A-HMLC). Gradients flow
      into them.

    float16 and bfloat16 inputs are computed in float32 (autocast is turned off
    inside) and the outputs are float32.

    Args:
        features: projections of V views of N images, any norm.
        labels: integer label paths, column 0 the coarsest level. A 1-D tensor
            is a one-level hierarchy.
        temperature: softmax temperature t > 0.
        level_weights: lambda_l >= 0 with a positive sum; None gives
            :func:`default_level_weights`.
        constraint: "none" (HMC) or "max" (HMCE and the masked variants).
        masks: None, hard masks or soft masks, as above (bool or float).
        anchor_weights: optional non-negative weight per image, shared by all
            levels (N,) or per level (N, L), e.g. from :func:`imbalance_weights`.
        gather_distributed: gather features, labels, soft masks and anchor
            weights from all ranks and compute the loss over the global batch
            on every rank. A no-op when no ``torch.distributed`` process group
            is initialised.

    Returns:
        :class:`HierarchicalLossOutput`, float32 for float16/bfloat16 inputs and
        otherwise in the dtype of ``features``.

    Shape:
        - features: (N, V, D)
        - labels: (N, L) or (N,)
        - level_weights: (L,)
        - masks: (L, D) or (N, V, L, D)
        - anchor_weights: (N,) or (N, L)

    Raises:
        ValueError: an argument has the wrong shape, dtype or value.
    """
    check_temperature(temperature)
    check_features(features)
    if constraint not in _CONSTRAINTS:
        raise ValueError(f"constraint must be one of {_CONSTRAINTS}, got {constraint!r}")
    num_images, num_views, width = features.shape
    paths = check_labels(labels, num_images, device=features.device, allow_levels=True)
    paths = paths.reshape(num_images, -1)
    num_levels = paths.shape[1]
    lambdas = _check_level_weights(level_weights, num_levels)
    _check_masks(masks, num_images, num_views, num_levels, width)
    weights = check_anchor_weights(
        anchor_weights, num_images, num_levels, features, name="anchor_weights"
    )

    with autocast_disabled(features.device):
        features = to_compute_dtype(features)
        soft_masks = _soft_masks(masks, features)
        if gather_distributed:
            features, paths, weights = gather_batch(features, paths, weights)
            soft_masks = _gather_soft_masks(soft_masks)
        level_features = _level_features(features, masks, soft_masks)
        sample_weights = None if weights is None else repeat_views(weights, num_views)
        raw = level_losses(level_features, repeat_views(paths, num_views), temperature, sample_weights)
        constrained = apply_constraint(raw, constraint)
        lambdas = lambdas.to(device=raw.device, dtype=raw.dtype)
        loss = (lambdas * constrained).sum() / lambdas.sum()
    return HierarchicalLossOutput(loss=loss, level_losses=raw, constrained_level_losses=constrained)


def apply_constraint(level_losses: Tensor, constraint: Constraint) -> Tensor:
    """Apply the HMCE constraint loss_l <- max(loss_l, max_{k > l} loss_k) for "max".

    This is a reverse cumulative maximum from the finest level (last) to the
    coarsest (first). "none" returns the losses unchanged.

    Shape:
        - level_losses: (L,)
        - output: (L,)
    """
    if constraint == "none":
        return level_losses
    if constraint != "max":
        raise ValueError(f"constraint must be one of {_CONSTRAINTS}, got {constraint!r}")
    finest_first = torch.flip(level_losses, dims=(0,))
    return torch.flip(torch.cummax(finest_first, dim=0).values, dims=(0,))


def _level_features(features: Tensor, masks: Tensor | None, soft_masks: Tensor | None) -> Tensor:
    """Return the normalised samples each level compares.

    Shape:
        - features: (N, V, D)
        - masks: None, (L, D) hard, or (N, V, L, D) soft (then ``soft_masks`` is set)
        - output: (1, B, D) without masks, otherwise (L, B, D)
    """
    samples = normalize_views(features)
    if masks is None:
        return samples.unsqueeze(0)
    if soft_masks is not None:
        num_images, num_views, num_levels, width = soft_masks.shape
        per_sample = soft_masks.reshape(num_images * num_views, num_levels, width)
        return F.normalize(samples.unsqueeze(0) * per_sample.transpose(0, 1), dim=-1)
    hard = masks.to(device=samples.device, dtype=samples.dtype)
    return F.normalize(samples.unsqueeze(0) * hard.unsqueeze(1), dim=-1)


def _soft_masks(masks: Tensor | None, features: Tensor) -> Tensor | None:
    """Return (N, V, L, D) soft masks in the compute dtype, or None for no or hard masks."""
    if masks is None or masks.dim() != 4:
        return None
    return masks.to(device=features.device, dtype=features.dtype)


def _gather_soft_masks(soft_masks: Tensor | None) -> Tensor | None:
    if soft_masks is None or distributed_world_size() == 1:
        return soft_masks
    return gather_with_grad(soft_masks)


def _check_level_weights(level_weights: Sequence[float] | Tensor | None, num_levels: int) -> Tensor:
    """Validate lambda_l and return them as a float64 tensor (L,)."""
    if level_weights is None:
        return default_level_weights(num_levels, dtype=torch.float64)
    values = torch.as_tensor(level_weights, dtype=torch.float64).detach().cpu()
    if values.shape != (num_levels,):
        raise ValueError(
            f"level_weights must hold one weight per level ({num_levels}), "
            f"got shape {tuple(values.shape)}"
        )
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()) or values.sum() <= 0:
        raise ValueError(
            f"level_weights must be finite, >= 0 and not all 0, got {values.tolist()}"
        )
    return values


def _check_masks(
    masks: Tensor | None, num_images: int, num_views: int, num_levels: int, width: int
) -> None:
    if masks is None:
        return
    if not isinstance(masks, Tensor) or not (masks.dtype.is_floating_point or masks.dtype == torch.bool):
        kind = masks.dtype if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks must be a bool or floating-point tensor, got {kind}")
    hard_shape = (num_levels, width)
    soft_shape = (num_images, num_views, num_levels, width)
    if tuple(masks.shape) not in (hard_shape, soft_shape):
        raise ValueError(
            f"masks must have shape {hard_shape} (hard, one per level) or {soft_shape} "
            f"(soft, per view and level), got shape {tuple(masks.shape)}"
        )

