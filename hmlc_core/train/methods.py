"""The loss of each training method, computed from one step's model outputs.

Shape letters: N images on this worker, V = 2 views, D embedding width, L levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from hmlc_core.losses import hierarchical_loss_terms, imbalance_weights, supcon_loss
from hmlc_core.models import overlap_penalty
from hmlc_core.train.config import MethodConfig


@dataclasses.dataclass(frozen=True)
class LossTerms:
    """The training loss of one step and the parts that are logged.

    Attributes:
        loss: The scalar that is minimised (keeps its graph).
        level_losses: Raw per-level contrastive losses, detached, keyed by 0-based level.
            SupCon has only the finest level.
        overlap: The A-HMLC overlap penalty before weighting (detached), or None.
    """

    loss: Tensor
    level_losses: dict[int, Tensor]
    overlap: Tensor | None = None


@dataclasses.dataclass(frozen=True)
class LossContext:
    """Per-run inputs of the loss that do not change between steps.

    Attributes:
        level_weights: lambda_l, coarsest first. Shape: (L,).
        class_counts: Training-set count of every class, one tensor per level.
        gather_distributed: Compute the loss over the global batch of all workers.
    """

    level_weights: Tensor
    class_counts: Sequence[Tensor]
    gather_distributed: bool


def method_loss(
    config: MethodConfig,
    z: Tensor,
    paths: Tensor,
    context: LossContext,
    hard_masks: Tensor | None = None,
    soft_masks: Tensor | None = None,
) -> LossTerms:
    """Compute the loss of ``config.method`` for one batch.

    supcon uses the finest level only. hmc and hmce use all levels on the shared z.
    g_hmlc adds the hard masks, a_hmlc the soft masks and ``overlap_penalty`` times
    the mask overlap. With ``config.beta > 0`` anchors are weighted by the imbalance
    weights of the global batch (computed from the gathered label paths, so the
    weights do not depend on how the batch is split over workers).

    Args:
        config: The method and its hyperparameters.
        z: Embeddings of both views. Shape: (N, V, D).
        paths: Label paths, column 0 coarsest. Shape: (N, L).
        context: Level weights, class counts and the distributed flag.
        hard_masks: G-HMLC masks, required for g_hmlc. Shape: (L, D).
        soft_masks: A-HMLC masks, required for a_hmlc. Shape: (N, V, L, D).

    Returns:
        The loss and its logged parts.

    Raises:
        ValueError: the masks the method needs are missing.
    """
    weights = _anchor_weights(config.beta, paths, context)
    if config.method == "supcon":
        finest = paths.shape[1] - 1
        column = None if weights is None else weights[:, finest]
        loss = supcon_loss(
            z, paths[:, finest], config.temperature, column, context.gather_distributed
        )
        return LossTerms(loss=loss, level_losses={finest: loss.detach()})
    masks = _method_masks(config.method, hard_masks, soft_masks)
    terms = hierarchical_loss_terms(
        z,
        paths,
        temperature=config.temperature,
        level_weights=context.level_weights,
        constraint=config.resolved_constraint,  # type: ignore[arg-type]
        masks=masks,
        anchor_weights=weights,
        gather_distributed=context.gather_distributed,
    )
    level_losses = {level: value.detach() for level, value in enumerate(terms.level_losses)}
    if config.method != "a_hmlc" or soft_masks is None:
        return LossTerms(loss=terms.loss, level_losses=level_losses)
    # soft_masks: (N, V, L, D) -> (N * V, L, D), one mask set per sample.
    overlap = overlap_penalty(soft_masks.flatten(0, 1).float())
    loss = terms.loss + config.overlap_penalty * overlap
    return LossTerms(loss=loss, level_losses=level_losses, overlap=overlap.detach())


def _method_masks(method: str, hard_masks: Tensor | None, soft_masks: Tensor | None) -> Tensor | None:
    if method == "g_hmlc":
        if hard_masks is None:
            raise ValueError("g_hmlc needs hard masks (L, D); pass all ones before the first fit")
        return hard_masks
    if method == "a_hmlc":
        if soft_masks is None:
            raise ValueError(
                "a_hmlc needs soft masks (N, V, L, D); build the model with an attention masker"
            )
        return soft_masks
    return None


def _anchor_weights(beta: float, paths: Tensor, context: LossContext) -> Tensor | None:
    """Return the imbalance weights of this worker's images, normalised over the global batch.

    Shape:
        paths: (N, L); output: (N, L) or None when beta is 0.
    """
    if beta == 0:
        return None
    if not (context.gather_distributed and dist.is_available() and dist.is_initialized()):
        return imbalance_weights(paths, context.class_counts, beta)
    world_size, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(paths) for _ in range(world_size)]
    dist.all_gather(parts, paths.contiguous())
    weights = imbalance_weights(torch.cat(parts), context.class_counts, beta)
    count = paths.shape[0]
    return weights[rank * count : (rank + 1) * count]
