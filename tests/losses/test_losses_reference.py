"""Vectorised losses against plain-loop references written from the formulas.

The references loop over anchors, positives and denominator terms in Python
float64, with no max subtraction and no class sums:

    loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )
    loss_l = sum_i w_il loss_il / sum_i w_il over anchors with a positive at level l
    HMCE:    loss_l <- max(loss_l, max_{k > l} loss_k)
    total  = sum_l lambda_l loss_l / sum_l lambda_l,  lambda_l = exp(1 / (L - l + 1)), l 1-based
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from hmlc_core.losses import hierarchical_loss_terms, supcon_loss

GRID_IMAGES = (1, 3, 8)
GRID_VIEWS = (1, 2, 3)
GRID_WIDTHS = (2, 16)
GRID_LEVELS = (1, 2, 3)
GRID_TEMPERATURES = (0.05, 0.5, 1.0)


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _dot(left: list[float], right: list[float]) -> float:
    return sum(a * b for a, b in zip(left, right))


def _level_vectors(features, masks, level: int) -> list[list[float]]:
    """Return z_l of every sample, ordered image-major (n * V + v)."""
    num_images, num_views, width = features.shape
    values = features.tolist()
    vectors = []
    for n in range(num_images):
        for v in range(num_views):
            z = _normalize(values[n][v])
            if masks is not None and masks.dim() == 2:
                z = _normalize([z[d] * float(masks[level, d]) for d in range(width)])
            elif masks is not None:
                z = _normalize([z[d] * float(masks[n, v, level, d]) for d in range(width)])
            vectors.append(z)
    return vectors


def reference_level_losses(
    features: Tensor,
    paths: Tensor,
    temperature: float,
    masks: Tensor | None = None,
    anchor_weights: Tensor | None = None,
) -> list[float]:
    """Return loss_l for every level by looping over anchors and positives."""
    num_images, num_views, _ = features.shape
    num_levels = paths.shape[1]
    sample_paths = [tuple(paths[n].tolist()) for n in range(num_images) for _ in range(num_views)]
    sample_images = [n for n in range(num_images) for _ in range(num_views)]
    num_samples = len(sample_paths)
    losses = []
    for level in range(num_levels):
        z = _level_vectors(features, masks, level)
        weighted_sum, weight_total = 0.0, 0.0
        for i in range(num_samples):
            positives = [
                p
                for p in range(num_samples)
                if p != i and sample_paths[p][: level + 1] == sample_paths[i][: level + 1]
            ]
            if not positives:
                continue
            denominator = sum(
                math.exp(_dot(z[i], z[a]) / temperature) for a in range(num_samples) if a != i
            )
            log_probs = [
                math.log(math.exp(_dot(z[i], z[p]) / temperature) / denominator) for p in positives
            ]
            loss_i = -sum(log_probs) / len(positives)
            weight = 1.0
            if anchor_weights is not None:
                weight = float(anchor_weights[sample_images[i], level])
            weighted_sum += weight * loss_i
            weight_total += weight
        losses.append(weighted_sum / weight_total if weight_total > 0 else 0.0)
    return losses


def reference_total(
    level_losses: list[float], constraint: str, level_weights: list[float] | None = None
) -> tuple[float, list[float]]:
    num_levels = len(level_losses)
    if constraint == "max":
        constrained = [max(level_losses[level:]) for level in range(num_levels)]
    else:
        constrained = list(level_losses)
    if level_weights is None:
        level_weights = [math.exp(1.0 / (num_levels - level)) for level in range(num_levels)]
    total = sum(w * c for w, c in zip(level_weights, constrained)) / sum(level_weights)
    return total, constrained


def make_batch(
    num_images: int, num_views: int, width: int, num_levels: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Return float64 features (N, V, D) and label paths (N, L) with 2 branches per level.

    Fine labels reuse the values 0 and 1 under every parent, so only the
    prefix distinguishes the classes.
    """
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_images, num_views, width, generator=generator, dtype=torch.float64)
    paths = torch.randint(0, 2, (num_images, num_levels), generator=generator)
    return features, paths


def make_hard_masks(num_levels: int, width: int, seed: int) -> Tensor:
    """Return random 0/1 masks (L, D) with at least one 1 per level."""
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(num_levels, width, generator=generator) < 0.5).double()
    masks[torch.arange(num_levels), torch.arange(num_levels) % width] = 1.0
    return masks


def grid_cases():
    return itertools.product(GRID_IMAGES, GRID_VIEWS, GRID_WIDTHS, GRID_LEVELS)


@pytest.mark.parametrize("temperature", GRID_TEMPERATURES)
def test_supcon_matches_loop_reference(temperature: float) -> None:
    for seed, (num_images, num_views, width, num_levels) in enumerate(grid_cases()):
        features, paths = make_batch(num_images, num_views, width, num_levels, seed)
        fine = paths[:, -1:]
        expected = reference_level_losses(features, fine, temperature)[0]
        actual = supcon_loss(features, fine[:, 0], temperature)
        case = f"N={num_images} V={num_views} D={width} t={temperature}"
        assert actual.item() == pytest.approx(expected, rel=1e-10, abs=1e-12), case


@pytest.mark.parametrize("temperature", GRID_TEMPERATURES)
def test_supcon_weights_match_loop_reference(temperature: float) -> None:
    for seed, (num_images, num_views, width, _) in enumerate(grid_cases()):
        features, paths = make_batch(num_images, num_views, width, 1, seed)
        generator = torch.Generator().manual_seed(seed + 1000)
        weights = torch.rand(num_images, generator=generator, dtype=torch.float64) + 0.1
        expected = reference_level_losses(features, paths, temperature, anchor_weights=weights[:, None])
        actual = supcon_loss(features, paths[:, 0], temperature, weights=weights)
        case = f"N={num_images} V={num_views} D={width} t={temperature}"
        assert actual.item() == pytest.approx(expected[0], rel=1e-10, abs=1e-12), case


@pytest.mark.parametrize(
    "variant", ["hmc", "hmce", "hard_masks", "soft_masks", "anchor_weights", "level_weights"]
)
@pytest.mark.parametrize("temperature", GRID_TEMPERATURES)
def test_hierarchical_matches_loop_reference(variant: str, temperature: float) -> None:
    for seed, (num_images, num_views, width, num_levels) in enumerate(grid_cases()):
        features, paths = make_batch(num_images, num_views, width, num_levels, seed)
        generator = torch.Generator().manual_seed(seed + 2000)
        constraint = "none" if variant in ("hmc", "level_weights") else "max"
        masks = anchor_weights = level_weights = None
        if variant == "hard_masks":
            masks = make_hard_masks(num_levels, width, seed)
        elif variant == "soft_masks":
            masks = torch.rand(num_images, num_views, num_levels, width, generator=generator)
            masks = masks.double() * 0.9 + 0.1
        elif variant == "anchor_weights":
            anchor_weights = torch.rand(num_images, num_levels, generator=generator).double()
        elif variant == "level_weights":
            level_weights = (torch.rand(num_levels, generator=generator).double() + 0.1).tolist()

        raw = reference_level_losses(features, paths, temperature, masks, anchor_weights)
        total, constrained = reference_total(raw, constraint, level_weights)
        output = hierarchical_loss_terms(
            features,
            paths,
            temperature,
            level_weights=level_weights,
            constraint=constraint,
            masks=masks,
            anchor_weights=anchor_weights,
        )
        case = f"{variant} N={num_images} V={num_views} D={width} L={num_levels} t={temperature}"
        assert output.loss.item() == pytest.approx(total, rel=1e-10, abs=1e-12), case
        assert output.level_losses.tolist() == pytest.approx(raw, rel=1e-10, abs=1e-12), case
        assert output.constrained_level_losses.tolist() == pytest.approx(
            constrained, rel=1e-10, abs=1e-12
        ), case


def test_reference_grid_has_anchors_without_positives() -> None:
    """The grid must exercise anchors that have no positive next to ones that do."""
    mixed_cases = 0
    for seed, (num_images, num_views, width, num_levels) in enumerate(grid_cases()):
        _, paths = make_batch(num_images, num_views, width, num_levels, seed)
        rows = [tuple(row) for row in paths.tolist()]
        has_positive = [num_views > 1 or rows.count(row) > 1 for row in rows]
        mixed_cases += any(has_positive) and not all(has_positive)
    assert mixed_cases >= 3
