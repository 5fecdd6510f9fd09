"""SupCon loss: a hand-computed value, edge cases, invariances, precision and input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from hmlc_core.losses import supcon_loss


def unit_vectors_at(degrees: list[float]) -> Tensor:
    """Return 2-D unit vectors at the given angles as features (N, 1, 2), float64."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180.0
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=1).unsqueeze(1)


def random_batch(
    num_images: int = 6, num_views: int = 2, width: int = 8, seed: int = 0
) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_images, num_views, width, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (num_images,), generator=generator)
    return features, labels


def test_supcon_hand_computed_value() -> None:
    # Four images, one view each, at 0, 60, 180 and 270 degrees, labels [0, 0, 1, 1],
    # t = 0.5. Cosines: z0.z1 = 1/2, z0.z2 = -1, z0.z3 = 0, z1.z2 = -1/2,
    # z1.z3 = -sqrt(3)/2, z2.z3 = 0, so the logits z_i.z_j / t are
    # 1, -2, 0, -1, -sqrt(3), 0. Each anchor has exactly one positive:
    #   anchor 0 (positive 1): log(e^1 + e^-2 + e^0)       - 1
    #   anchor 1 (positive 0): log(e^1 + e^-1 + e^-sqrt3)  - 1
    #   anchor 2 (positive 3): log(e^-2 + e^-1 + e^0)      - 0
    #   anchor 3 (positive 2): log(e^0 + e^-sqrt3 + e^0)   - 0
    sqrt3 = math.sqrt(3.0)
    per_anchor = [
        math.log(math.e + math.exp(-2) + 1) - 1,
        math.log(math.e + math.exp(-1) + math.exp(-sqrt3)) - 1,
        math.log(math.exp(-2) + math.exp(-1) + 1),
        math.log(2 + math.exp(-sqrt3)),
    ]
    expected = sum(per_anchor) / 4
    assert expected == pytest.approx(0.4293005156283366, abs=1e-15)

    features = unit_vectors_at([0.0, 60.0, 180.0, 270.0])
    labels = torch.tensor([0, 0, 1, 1])
    loss = supcon_loss(features, labels, temperature=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_supcon_two_views_one_image_is_zero() -> None:
    # With one image in two views, each view's only other sample is its positive,
    # so the softmax puts probability 1 on it and the loss is exactly log 1 = 0.
    features = torch.randn(1, 2, 5, dtype=torch.float64)
    loss = supcon_loss(features, torch.tensor([3]), temperature=0.2)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_supcon_gradcheck_float64() -> None:
    features, labels = random_batch(num_images=4, num_views=2, width=3)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: supcon_loss(x, labels, 0.3), (features,))


def test_supcon_gradcheck_with_weights() -> None:
    features, labels = random_batch(num_images=4, num_views=2, width=3, seed=1)
    features.requires_grad_(True)
    weights = torch.tensor([0.5, 2.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: supcon_loss(x, labels, 0.3, weights=weights), (features,)
    )


def test_supcon_no_positive_anchor_contributes_nothing() -> None:
    # One view, labels [0, 0, 1]: image 2 has no positive. The loss must equal the
    # mean over anchors 0 and 1 only, computed from their own terms.
    features = unit_vectors_at([0.0, 90.0, 200.0])
    labels = torch.tensor([0, 0, 1])
    loss = supcon_loss(features, labels, temperature=1.0)
    z = features[:, 0]
    logits = z @ z.T
    anchor_terms = []
    for anchor, positive in ((0, 1), (1, 0)):
        others = [a for a in range(3) if a != anchor]
        log_denominator = torch.logsumexp(logits[anchor, others], dim=0)
        anchor_terms.append((log_denominator - logits[anchor, positive]).item())
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(sum(anchor_terms) / 2, abs=1e-12)


def test_supcon_no_positive_gradient_is_finite() -> None:
    features = torch.randn(5, 1, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2, 3])
    supcon_loss(features, labels).backward()
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize("num_images, num_views", [(1, 1), (4, 1)])
def test_supcon_all_anchors_without_positive(num_images: int, num_views: int) -> None:
    features = torch.randn(num_images, num_views, 4, requires_grad=True)
    labels = torch.arange(num_images)
    loss = supcon_loss(features, labels)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert features.grad is not None
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_supcon_zero_weights_return_zero_with_grad() -> None:
    features, labels = random_batch()
    features.requires_grad_(True)
    loss = supcon_loss(features, labels, weights=torch.zeros(6, dtype=torch.float64))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_supcon_weights_normalisation() -> None:
    # Equal weights give the plain mean, and scaling all weights changes nothing.
    features, labels = random_batch(seed=2)
    plain = supcon_loss(features, labels)
    ones = supcon_loss(features, labels, weights=torch.ones(6, dtype=torch.float64))
    scaled = supcon_loss(features, labels, weights=torch.full((6,), 7.5, dtype=torch.float64))
    assert ones.item() == pytest.approx(plain.item(), rel=1e-12)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-12)


def test_supcon_weights_with_zero_entry() -> None:
    # Scaling the non-zero weights changes nothing, and the zero weight changes the mean.
    features, labels = random_batch(num_images=5, seed=3)
    weights = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    weighted = supcon_loss(features, labels, temperature=0.4, weights=weights)
    boosted = supcon_loss(
        features, labels, temperature=0.4, weights=torch.tensor([0.0, 2.0, 2.0, 2.0, 2.0])
    )
    assert weighted.item() == pytest.approx(boosted.item(), rel=1e-6)
    assert weighted.item() != pytest.approx(supcon_loss(features, labels, 0.4).item(), rel=1e-6)


def test_supcon_batch_permutation_invariance() -> None:
    features, labels = random_batch(num_images=7, num_views=3, seed=4)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    original = supcon_loss(features, labels, 0.2)
    permuted = supcon_loss(features[order], labels[order], 0.2)
    assert permuted.item() == pytest.approx(original.item(), rel=1e-12)


def test_supcon_view_permutation_invariance() -> None:
    features, labels = random_batch(num_images=5, num_views=3, seed=5)
    original = supcon_loss(features, labels, 0.2)
    swapped = supcon_loss(features[:, [2, 0, 1]], labels, 0.2)
    assert swapped.item() == pytest.approx(original.item(), rel=1e-12)


def test_supcon_relabelling_invariance() -> None:
    features, labels = random_batch(num_images=8, seed=6)
    relabelled = torch.tensor([17, -4, 1000])[labels]
    original = supcon_loss(features, labels, 0.2)
    assert supcon_loss(features, relabelled, 0.2).item() == pytest.approx(original.item(), rel=1e-12)


def test_supcon_normalises_features() -> None:
    features, labels = random_batch(seed=7)
    scales = torch.rand(6, 2, 1, dtype=torch.float64) * 10 + 0.01
    normalised = torch.nn.functional.normalize(features, dim=-1)
    unnormalised_loss = supcon_loss(features * scales, labels, 0.1)
    assert unnormalised_loss.item() == pytest.approx(supcon_loss(normalised, labels, 0.1).item(), rel=1e-12)


def test_supcon_stable_at_low_temperature() -> None:
    # The two views of each image are almost equal, so at t = 0.01 their logit
    # is close to 100 and exp(100) overflows float32 (max about 3.4e38) unless
    # the row maximum is subtracted. The loss must stay finite and match float64.
    base, labels = random_batch(num_images=8, num_views=1, width=4, seed=8)
    noise = torch.randn(8, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    features = base + 1e-3 * noise
    features32 = features.float().requires_grad_(True)
    loss32 = supcon_loss(features32, labels, temperature=0.01)
    loss32.backward()
    loss64 = supcon_loss(features, labels, temperature=0.01)
    assert torch.isfinite(loss32)
    assert torch.isfinite(features32.grad).all()
    assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_supcon_low_precision_computed_in_float32(dtype: torch.dtype) -> None:
    features, labels = random_batch(num_images=16, num_views=2, width=32, seed=9)
    low = features.to(dtype).requires_grad_(True)
    loss = supcon_loss(low, labels, 0.1)
    assert loss.dtype == torch.float32
    # The input is rounded to the low dtype but the arithmetic is float32.
    upcast = supcon_loss(low.detach().float(), labels, 0.1)
    assert loss.item() == pytest.approx(upcast.item(), rel=1e-6)
    assert loss.item() == pytest.approx(supcon_loss(features.float(), labels, 0.1).item(), rel=2e-2)
    loss.backward()
    assert low.grad.dtype == dtype
    assert torch.isfinite(low.grad.float()).all()


def test_supcon_autocast_does_not_lower_precision() -> None:
    features, labels = random_batch(num_images=8, seed=10)
    features = features.float()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = supcon_loss(features, labels, 0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(supcon_loss(features, labels, 0.1).item(), rel=1e-6)


def test_supcon_float64_stays_float64() -> None:
    features, labels = random_batch()
    assert supcon_loss(features, labels).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"features": torch.randn(4, 8)}, "features"),
        ({"features": torch.randint(0, 3, (4, 2, 8))}, "features"),
        ({"features": torch.randn(0, 2, 8)}, "features"),
        ({"labels": torch.zeros(4)}, "labels"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, "labels"),
        ({"labels": torch.zeros(4, 2, dtype=torch.long)}, "labels"),
        ({"labels": torch.zeros(4, dtype=torch.bool)}, "labels"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "0.1"}, "temperature"),
        ({"weights": torch.ones(3)}, "weights"),
        ({"weights": torch.ones(4, dtype=torch.long)}, "weights"),
        ({"weights": torch.tensor([1.0, -1.0, 1.0, 1.0])}, "weights"),
        ({"weights": torch.tensor([1.0, float("inf"), 1.0, 1.0])}, "weights"),
    ],
)
def test_supcon_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {
        "features": torch.randn(4, 2, 8),
        "labels": torch.zeros(4, dtype=torch.long),
        "temperature": 0.1,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        supcon_loss(**arguments)
