"""Class-imbalance anchor weights n_l(c)^-beta, normalised to mean 1 per level."""

from __future__ import annotations

import pytest
import torch

from hmlc_core.losses import hierarchical_loss, imbalance_weights

COUNTS = [torch.tensor([100, 25]), torch.tensor([50, 50, 16, 9])]
LABELS = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3], [0, 0]])


def test_imbalance_weights_hand_computed() -> None:
    # beta = 0.5: level 0 counts (100, 100, 25, 25, 100) give 1/10, 1/10, 1/5, 1/5, 1/10,
    # mean 0.7/5 = 0.14, so weights (5/7, 5/7, 10/7, 10/7, 5/7).
    # Level 1 counts (50, 50, 16, 9, 50) give 1/sqrt(50) x3, 1/4, 1/3.
    weights = imbalance_weights(LABELS, COUNTS, beta=0.5)
    assert weights.shape == (5, 2)
    assert weights.dtype == torch.float32
    assert weights[:, 0].tolist() == pytest.approx([5 / 7, 5 / 7, 10 / 7, 10 / 7, 5 / 7], rel=1e-6)
    raw = [50**-0.5, 50**-0.5, 0.25, 1 / 3, 50**-0.5]
    mean = sum(raw) / 5
    assert weights[:, 1].tolist() == pytest.approx([r / mean for r in raw], rel=1e-6)


def test_imbalance_weights_mean_one_per_level() -> None:
    weights = imbalance_weights(LABELS, COUNTS, beta=0.8)
    assert weights.mean(dim=0).tolist() == pytest.approx([1.0, 1.0], rel=1e-6)


def test_imbalance_weights_beta_zero_all_ones() -> None:
    weights = imbalance_weights(LABELS, COUNTS, beta=0.0)
    assert torch.equal(weights, torch.ones(5, 2))


def test_imbalance_weights_rare_class_weighs_more() -> None:
    weights = imbalance_weights(LABELS, COUNTS, beta=1.0)
    assert weights[3, 1] > weights[2, 1] > weights[0, 1]


def test_imbalance_weights_feed_hierarchical_loss() -> None:
    features = torch.randn(5, 2, 4, dtype=torch.float64)
    weights = imbalance_weights(LABELS, COUNTS, beta=0.5)
    loss = hierarchical_loss(features, LABELS, anchor_weights=weights, constraint="max")
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "labels, counts, beta, message",
    [
        (LABELS, COUNTS, -0.1, "beta"),
        (LABELS, COUNTS, float("nan"), "beta"),
        (LABELS, COUNTS[:1], 0.5, "class_counts"),
        (LABELS[:, 0], COUNTS, 0.5, "labels"),
        (LABELS.float(), COUNTS, 0.5, "labels"),
        (torch.tensor([[0, 4]]), COUNTS, 0.5, "labels at level 1"),
        (torch.tensor([[-1, 0]]), COUNTS, 0.5, "labels at level 0"),
        (LABELS, [torch.tensor([100, 0]), COUNTS[1]], 0.5, "class_counts"),
        (LABELS, [torch.ones(2, 2), COUNTS[1]], 0.5, "class_counts"),
    ],
)
def test_imbalance_weights_rejects_bad_input(labels, counts, beta, message) -> None:
    with pytest.raises(ValueError, match=message):
        imbalance_weights(labels, counts, beta)
