"""Hierarchical losses (HMC, HMCE, hard and soft masks): values, gradients, edge cases, checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from hmlc_core.losses import (
    apply_constraint,
    default_level_weights,
    hierarchical_loss,
    hierarchical_loss_terms,
    supcon_loss,
)


def unit_vectors_at(degrees: list[float]) -> Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180.0
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=1).unsqueeze(1)


def random_batch(
    num_images: int = 6, num_views: int = 2, width: int = 6, num_levels: int = 2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Return float64 features (N, V, D) and label paths (N, L) with 2 branches per level."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_images, num_views, width, generator=generator, dtype=torch.float64)
    paths = torch.randint(0, 2, (num_images, num_levels), generator=generator)
    return features, paths


def test_hierarchical_hand_computed_values() -> None:
    # Features at 0, 60, 180, 270 degrees, t = 0.5, so the logits z_i.z_j / t are
    # 01: 1, 02: -2, 03: 0, 12: -1, 13: -sqrt(3), 23: 0.
    # Paths [0,0], [0,1], [0,1], [1,2]. Denominators over a != i:
    #   D0 = e^1 + e^-2 + e^0,  D1 = e^1 + e^-1 + e^-sqrt3,  D2 = e^-2 + e^-1 + e^0.
    # Level 1 (coarse): images 0, 1, 2 are positives of each other, image 3 has none.
    #   anchor 0: log D0 - (1 + -2)/2,  anchor 1: log D1 - (1 + -1)/2,  anchor 2: log D2 - (-2 + -1)/2
    # Level 2 (fine): only images 1 and 2 are positives (logit -1).
    #   anchor 1: log D1 + 1,  anchor 2: log D2 + 1
    sqrt3 = math.sqrt(3.0)
    log_d0 = math.log(math.e + math.exp(-2) + 1)
    log_d1 = math.log(math.e + math.exp(-1) + math.exp(-sqrt3))
    log_d2 = math.log(math.exp(-2) + math.exp(-1) + 1)
    coarse = ((log_d0 + 0.5) + log_d1 + (log_d2 + 1.5)) / 3
    fine = ((log_d1 + 1) + (log_d2 + 1)) / 2
    lambdas = (math.exp(1 / 2), math.exp(1))  # exp(1 / (L - l + 1)) for l = 1, 2
    hmc = (lambdas[0] * coarse + lambdas[1] * fine) / sum(lambdas)
    # fine > coarse here, so HMCE raises the coarse loss to the fine loss.
    hmce = fine
    assert coarse == pytest.approx(1.6464301582049068, abs=1e-14)
    assert fine == pytest.approx(1.795139128923267, abs=1e-14)
    assert hmc == pytest.approx(1.7389954446619733, abs=1e-14)

    features = unit_vectors_at([0.0, 60.0, 180.0, 270.0])
    paths = torch.tensor([[0, 0], [0, 1], [0, 1], [1, 2]])
    output = hierarchical_loss_terms(features, paths, temperature=0.5)
    assert output.level_losses.tolist() == pytest.approx([coarse, fine], abs=1e-12)
    assert output.loss.item() == pytest.approx(hmc, abs=1e-12)
    constrained = hierarchical_loss_terms(features, paths, temperature=0.5, constraint="max")
    assert constrained.constrained_level_losses.tolist() == pytest.approx([fine, fine], abs=1e-12)
    assert constrained.loss.item() == pytest.approx(hmce, abs=1e-12)


def test_apply_constraint_reverse_cummax() -> None:
    losses = torch.tensor([1.0, 3.0, 2.0, 0.5])
    assert apply_constraint(losses, "max").tolist() == [3.0, 3.0, 2.0, 0.5]
    assert apply_constraint(losses, "none").tolist() == [1.0, 3.0, 2.0, 0.5]


def test_default_level_weights_values() -> None:
    assert default_level_weights(3).tolist() == pytest.approx(
        [math.exp(1 / 3), math.exp(1 / 2), math.e], rel=1e-7
    )
    assert default_level_weights(1).tolist() == pytest.approx([math.e], rel=1e-7)
    assert default_level_weights(2, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="num_levels"):
        default_level_weights(0)


@pytest.mark.parametrize("constraint", ["none", "max"])
def test_one_level_equals_supcon_exactly(constraint: str) -> None:
    features, paths = random_batch(num_images=9, num_views=3, num_levels=1, seed=1)
    features = features.float()
    weights = torch.rand(9)
    expected = supcon_loss(features, paths[:, 0], 0.2, weights=weights)
    for labels in (paths, paths[:, 0]):
        actual = hierarchical_loss(
            features, labels, 0.2, constraint=constraint, anchor_weights=weights
        )
        assert torch.equal(actual, expected)


def test_all_ones_hard_masks_equal_no_masks() -> None:
    features, paths = random_batch(num_levels=3, seed=2)
    plain = hierarchical_loss_terms(features, paths, 0.3, constraint="max")
    ones = hierarchical_loss_terms(
        features, paths, 0.3, constraint="max", masks=torch.ones(3, 6, dtype=torch.bool)
    )
    soft_ones = hierarchical_loss_terms(
        features, paths, 0.3, constraint="max", masks=torch.ones(6, 2, 3, 6, dtype=torch.float64)
    )
    assert torch.allclose(ones.level_losses, plain.level_losses, rtol=1e-12)
    assert torch.allclose(soft_ones.level_losses, plain.level_losses, rtol=1e-12)


def test_bool_and_float_hard_masks_agree() -> None:
    features, paths = random_batch(num_levels=2, seed=3)
    masks = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    as_bool = hierarchical_loss(features, paths, 0.3, constraint="max", masks=masks)
    as_float = hierarchical_loss(features, paths, 0.3, constraint="max", masks=masks.double())
    assert as_bool.item() == pytest.approx(as_float.item(), rel=1e-12)


def test_hard_mask_selects_dimensions() -> None:
    # With a mask that keeps dimensions 0..2, the level loss equals SupCon on
    # those dimensions alone.
    features, paths = random_batch(num_levels=1, seed=4)
    masks = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    masked = hierarchical_loss(features, paths, 0.3, masks=masks)
    normalised = torch.nn.functional.normalize(features, dim=-1)
    assert masked.item() == pytest.approx(
        supcon_loss(normalised[..., :3], paths[:, 0], 0.3).item(), rel=1e-12
    )


GRADCHECK_VARIANTS = ["hmc", "hmce", "hard_masks", "soft_masks", "anchor_weights"]


@pytest.mark.parametrize("variant", GRADCHECK_VARIANTS)
def test_hierarchical_gradcheck_float64(variant: str) -> None:
    features, paths = random_batch(num_images=4, num_views=2, width=4, num_levels=3, seed=5)
    features.requires_grad_(True)
    generator = torch.Generator().manual_seed(6)
    kwargs: dict = {"constraint": "none" if variant == "hmc" else "max"}
    inputs: tuple[Tensor, ...] = (features,)
    if variant == "hard_masks":
        kwargs["masks"] = torch.tensor(
            [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.float64
        )
    elif variant == "anchor_weights":
        kwargs["anchor_weights"] = torch.rand(4, 3, generator=generator, dtype=torch.float64)
    if variant == "soft_masks":
        soft = torch.rand(4, 2, 3, 4, generator=generator, dtype=torch.float64) * 0.8 + 0.1
        inputs = (features, soft.requires_grad_(True))

        def loss_fn(x: Tensor, m: Tensor) -> Tensor:
            return hierarchical_loss(x, paths, 0.4, masks=m, **kwargs)
    else:

        def loss_fn(x: Tensor) -> Tensor:  # type: ignore[misc]
            return hierarchical_loss(x, paths, 0.4, **kwargs)

    assert torch.autograd.gradcheck(loss_fn, inputs)


def test_hierarchical_level_terms_gradcheck() -> None:
    features, paths = random_batch(num_images=4, num_views=2, width=3, num_levels=2, seed=7)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: hierarchical_loss_terms(x, paths, 0.5).level_losses, (features,)
    )


def test_hierarchical_permutation_invariance() -> None:
    features, paths = random_batch(num_images=8, num_views=2, num_levels=3, seed=8)
    soft = torch.rand(8, 2, 3, 6, dtype=torch.float64) + 0.1
    weights = torch.rand(8, 3, dtype=torch.float64)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    for masks in (None, soft):
        original = hierarchical_loss_terms(
            features, paths, 0.2, constraint="max", masks=masks, anchor_weights=weights
        )
        permuted = hierarchical_loss_terms(
            features[order],
            paths[order],
            0.2,
            constraint="max",
            masks=None if masks is None else masks[order],
            anchor_weights=weights[order],
        )
        assert torch.allclose(permuted.level_losses, original.level_losses, rtol=1e-12)


def test_hierarchical_relabelling_invariance() -> None:
    # Any injective relabelling per level keeps the same positives.
    features, paths = random_batch(num_images=10, num_levels=3, seed=9)
    relabelled = torch.stack(
        [paths[:, 0] * 5 + 11, 1 - paths[:, 1], paths[:, 2] - 100], dim=1
    )
    original = hierarchical_loss_terms(features, paths, 0.2)
    other = hierarchical_loss_terms(features, relabelled, 0.2)
    assert torch.allclose(other.level_losses, original.level_losses, rtol=1e-12)


def test_prefix_separates_reused_fine_labels() -> None:
    # Images 0 and 1 share fine label 0 but have different parents: they are
    # not positives at the fine level, so image 0 has no fine positive (V = 1).
    features = unit_vectors_at([0.0, 10.0, 100.0, 110.0])
    paths = torch.tensor([[0, 0], [1, 0], [1, 5], [1, 5]])
    fine_loss = hierarchical_loss_terms(features, paths, 0.5).level_losses[1]
    flat_fine = supcon_loss(features, torch.tensor([0, 1, 2, 2]), 0.5)
    assert fine_loss.item() == pytest.approx(flat_fine.item(), rel=1e-12)


def test_hierarchical_normalises_features_and_soft_masks() -> None:
    features, paths = random_batch(num_levels=2, seed=10)
    soft = torch.rand(6, 2, 2, 6, dtype=torch.float64) + 0.1
    scale = torch.rand(6, 2, 1, dtype=torch.float64) * 5 + 0.1
    mask_scale = torch.rand(6, 2, 2, 1, dtype=torch.float64) * 5 + 0.1
    normalised = torch.nn.functional.normalize(features, dim=-1)
    for masks, scaled_masks in ((None, None), (soft, soft * mask_scale)):
        reference = hierarchical_loss(normalised, paths, 0.2, constraint="max", masks=masks)
        scaled = hierarchical_loss(features * scale, paths, 0.2, constraint="max", masks=scaled_masks)
        assert scaled.item() == pytest.approx(reference.item(), rel=1e-12)


def test_level_without_positives_is_zero() -> None:
    # Every image has its own fine class and V = 1, so the fine level has no
    # positive: its loss is 0 and HMCE leaves the coarse level unchanged.
    features = torch.randn(4, 1, 3, dtype=torch.float64)
    paths = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]])
    output = hierarchical_loss_terms(features, paths, 0.5, constraint="max")
    assert output.level_losses[1].item() == 0.0
    assert output.level_losses[0].item() > 0.0
    assert torch.equal(output.constrained_level_losses, output.level_losses)


@pytest.mark.parametrize("masks_kind", ["none", "hard", "soft"])
def test_hierarchical_no_positive_batch_zero_with_grad(masks_kind: str) -> None:
    features = torch.randn(3, 1, 4, requires_grad=True)
    paths = torch.tensor([[0, 0], [1, 1], [2, 2]])
    masks = {
        "none": None,
        "hard": torch.ones(2, 4),
        "soft": torch.rand(3, 1, 2, 4, requires_grad=True),
    }[masks_kind]
    loss = hierarchical_loss(features, paths, constraint="max", masks=masks)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_hierarchical_single_sample_is_zero() -> None:
    features = torch.randn(1, 1, 4, requires_grad=True)
    loss = hierarchical_loss(features, torch.tensor([[0, 0]]), masks=torch.rand(1, 1, 2, 4))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize("masks_kind", ["none", "hard", "soft"])
def test_hierarchical_bfloat16_result_float32(masks_kind: str) -> None:
    features, paths = random_batch(num_images=16, num_views=2, width=16, num_levels=2, seed=11)
    masks = {
        "none": None,
        "hard": (torch.rand(2, 16) < 0.5).float(),
        "soft": torch.rand(16, 2, 2, 16) + 0.1,
    }[masks_kind]
    low = features.bfloat16()
    low_masks = None if masks is None else masks.bfloat16()
    output = hierarchical_loss_terms(low, paths, 0.1, constraint="max", masks=low_masks)
    upcast = hierarchical_loss_terms(
        low.float(), paths, 0.1, constraint="max", masks=None if masks is None else low_masks.float()
    )
    full = hierarchical_loss_terms(features.float(), paths, 0.1, constraint="max", masks=masks)
    assert output.loss.dtype == torch.float32
    assert output.level_losses.dtype == torch.float32
    assert output.loss.item() == pytest.approx(upcast.loss.item(), rel=1e-6)
    assert output.loss.item() == pytest.approx(full.loss.item(), rel=3e-2)


def test_level_weights_combination() -> None:
    features, paths = random_batch(num_levels=3, seed=12)
    output = hierarchical_loss_terms(features, paths, 0.2, level_weights=[0.0, 0.0, 1.0])
    assert output.loss.item() == pytest.approx(output.level_losses[2].item(), rel=1e-12)
    scaled = hierarchical_loss(features, paths, 0.2, level_weights=torch.tensor([2.0, 4.0, 6.0]))
    unscaled = hierarchical_loss(features, paths, 0.2, level_weights=(1.0, 2.0, 3.0))
    assert scaled.item() == pytest.approx(unscaled.item(), rel=1e-12)


BAD_INPUTS = [
    ({"features": torch.randn(4, 8)}, "features"),
    ({"labels": torch.zeros(4, 2)}, "labels"),
    ({"labels": torch.zeros(5, 2, dtype=torch.long)}, "labels"),
    ({"labels": torch.zeros(4, 2, 1, dtype=torch.long)}, "labels"),
    ({"labels": torch.zeros(4, 0, dtype=torch.long)}, "labels"),
    ({"temperature": 0}, "temperature"),
    ({"constraint": "min"}, "constraint"),
    ({"level_weights": [1.0]}, "level_weights"),
    ({"level_weights": [1.0, -1.0]}, "level_weights"),
    ({"level_weights": [0.0, 0.0]}, "level_weights"),
    ({"masks": torch.ones(3, 8)}, "masks"),
    ({"masks": torch.ones(2, 7)}, "masks"),
    ({"masks": torch.ones(4, 2, 3, 8)}, "masks"),
    ({"masks": torch.ones(4, 2, 8)}, "masks"),
    ({"masks": torch.ones(2, 8, dtype=torch.long)}, "masks"),
    ({"anchor_weights": torch.ones(4, 3)}, "anchor_weights"),
    ({"anchor_weights": torch.ones(3)}, "anchor_weights"),
    ({"anchor_weights": -torch.ones(4, 2)}, "anchor_weights"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_hierarchical_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {
        "features": torch.randn(4, 2, 8),
        "labels": torch.zeros(4, 2, dtype=torch.long),
        "temperature": 0.1,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        hierarchical_loss_terms(**arguments)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("masks_kind", ["none", "hard", "soft"])
def test_hierarchical_cuda_matches_cpu(masks_kind: str) -> None:
    features, paths = random_batch(num_images=16, num_views=2, width=8, num_levels=2, seed=13)
    features = features.float()
    masks = {
        "none": None,
        "hard": (torch.rand(2, 8) < 0.5).float(),
        "soft": torch.rand(16, 2, 2, 8) + 0.1,
    }[masks_kind]
    expected = hierarchical_loss(features, paths, 0.1, constraint="max", masks=masks)
    cuda_masks = None if masks is None else masks.cuda()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        actual = hierarchical_loss(
            features.cuda(), paths.cuda(), 0.1, constraint="max", masks=cuda_masks
        )
    assert actual.device.type == "cuda"
    assert actual.dtype == torch.float32
    assert actual.item() == pytest.approx(expected.item(), rel=1e-4)
