"""Tests of the G-HMLC feature identification (Fisher ratios, mixture, hard masks)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from hmlc_core.config import ConfigError
from hmlc_core.losses.feature_identification import (
    GMMMaskConfig,
    GMMMaskResult,
    MaskFallbackWarning,
    MixtureFactory,
    fisher_ratios,
    fit_gmm_masks,
)

BLOCK = 8  # planted dimensions per level


def planted_embeddings(
    num_samples: int = 2000, dim: int = 32, num_levels: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build embeddings whose dimension block l carries only the level-l split.

    Each level splits every parent class in two by one random bit. Block l
    (dimensions l*BLOCK .. (l+1)*BLOCK-1) is shifted by +-2 according to the bit of
    level l, so its within-parent class means differ but its coarser-level class
    means are all 0. The remaining dimensions are standard normal noise.
    """
    generator = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (num_samples, num_levels), generator=generator)
    z = torch.randn(num_samples, dim, generator=generator)
    for level in range(num_levels):
        block = slice(level * BLOCK, (level + 1) * BLOCK)
        z[:, block] += 2.0 * (2 * bits[:, level : level + 1] - 1).float()
    # Level-l class = the bits of levels 0..l read as a binary number.
    powers = 2 ** torch.arange(num_levels - 1, -1, -1)
    columns = [
        (bits[:, : level + 1] * powers[num_levels - 1 - level :]).sum(1)
        for level in range(num_levels)
    ]
    labels = torch.stack(columns, dim=1)
    return z, labels


def planted_dims(level: int) -> torch.Tensor:
    return torch.arange(level * BLOCK, (level + 1) * BLOCK)


def fisher_loop_reference(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    num_samples, dim = z.shape
    result = np.zeros((labels.shape[1], dim))
    for level in range(labels.shape[1]):
        for d in range(dim):
            column = z[:, d]
            mean = column.mean()
            total = ((column - mean) ** 2).mean()
            if total == 0:
                continue
            between = 0.0
            for cls in np.unique(labels[:, level]):
                members = column[labels[:, level] == cls]
                between += len(members) * (members.mean() - mean) ** 2
            result[level, d] = between / num_samples / total
    return result


# ---------------------------------------------------------------- config


def test_config_defaults_valid() -> None:
    config = GMMMaskConfig()
    assert config.n_components == 3
    assert config.covariance_type == "diag"
    assert config.reg_covar == 1e-6
    assert GMMMaskConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_components", 0),
        ("n_components", True),
        ("covariance_type", "banded"),
        ("reg_covar", 0.0),
        ("reg_covar", float("nan")),
        ("max_retries", -1),
        ("min_mask_size", 0),
        ("seed", -1),
        ("seed", 2**32),
        ("max_iter", 0),
        ("n_init", 0),
    ],
)
def test_config_rejects_invalid_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        GMMMaskConfig(**{field: value})


def test_config_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match="n_component"):
        GMMMaskConfig.from_dict({"n_component": 3})


@pytest.mark.parametrize(
    ("num_levels", "dim", "expected"), [(2, 128, 16), (3, 32, 4), (2, 32, 4), (2, 2, 2)]
)
def test_default_min_mask_size(num_levels: int, dim: int, expected: int) -> None:
    assert GMMMaskConfig().resolve_min_mask_size(num_levels, dim) == expected


# ---------------------------------------------------------------- fisher ratios


def test_fisher_hand_computed_two_classes() -> None:
    # Column 0: values 0, 2 | 4, 6. Mean 3, total variance (9+1+1+9)/4 = 5,
    # class means 1 and 5, between variance (2*4 + 2*4)/4 = 4, so F = 0.8.
    # Column 1 is constant (F = 0). Column 2 has equal class means (F = 0).
    # Level 1 puts every sample in its own class, so F = 1 where the column varies.
    z = torch.tensor([[0.0, 1.0, 1.0], [2.0, 1.0, -1.0], [4.0, 1.0, 1.0], [6.0, 1.0, -1.0]])
    labels = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]])
    expected = torch.tensor([[0.8, 0.0, 0.0], [1.0, 0.0, 1.0]])
    torch.testing.assert_close(fisher_ratios(z, labels), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_matches_loop_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(60, 7, generator=generator) * torch.linspace(0.1, 3.0, 7)
    z[:, 3] = 0.25  # a constant dimension
    labels = torch.stack(
        [
            torch.randint(0, 2, (60,), generator=generator),
            torch.randint(-3, 9, (60,), generator=generator),  # non-contiguous ids
            torch.full((60,), 7),  # a single class
        ],
        dim=1,
    )
    reference = fisher_loop_reference(z.double().numpy(), labels.numpy())
    result = fisher_ratios(z, labels)
    assert result.shape == (3, 7)
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), reference, rtol=1e-5, atol=1e-7)
    assert torch.all(result[:, 3] == 0)
    assert torch.all(result[2] == 0)


def test_fisher_constant_dims_zero_not_nan() -> None:
    z = torch.full((10, 4), 0.1)  # 0.1 is inexact in binary, so the mean may round
    labels = torch.arange(10).remainder(2).unsqueeze(1)
    result = fisher_ratios(z, labels)
    assert torch.equal(result, torch.zeros(1, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_fisher_rejects_non_finite(bad: float) -> None:
    z = torch.randn(20, 4)
    z[3, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        fisher_ratios(z, torch.zeros(20, 1, dtype=torch.long))


def test_fisher_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="unsqueeze"):
        fisher_ratios(torch.randn(20, 4), torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        fisher_ratios(torch.randn(20, 4), torch.zeros(20, 1))
    with pytest.raises(ValueError, match="20 samples but labels contain 19"):
        fisher_ratios(torch.randn(20, 4), torch.zeros(19, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 samples"):
        fisher_ratios(torch.randn(1, 4), torch.zeros(1, 1, dtype=torch.long))


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("num_levels", "n_components", "covariance_type"),
    [(2, 3, "diag"), (2, 3, "full"), (3, 4, "diag"), (3, 4, "full"), (3, 4, "spherical")],
)
def test_masks_recover_planted_dims(
    num_levels: int, n_components: int, covariance_type: str
) -> None:
    z, labels = planted_embeddings(num_levels=num_levels)
    config = GMMMaskConfig(n_components=n_components, covariance_type=covariance_type)
    result = fit_gmm_masks(z, labels, config)

    assert isinstance(result, GMMMaskResult)
    assert not result.fell_back
    assert result.masks.shape == (num_levels, 32)
    assert result.masks.dtype == torch.float32
    assert set(result.masks.unique().tolist()) <= {0.0, 1.0}
    assert result.component_levels.shape == (n_components,)
    assert set(result.component_levels.tolist()) == set(range(num_levels))
    assert result.reg_covar_used == config.reg_covar
    for level in range(num_levels):
        recall = result.masks[level, planted_dims(level)].mean().item()
        assert recall >= 0.9, f"level {level}: recall {recall}"
        for other in range(num_levels):
            if other != level:
                leaked = result.masks[level, planted_dims(other)].sum().item()
                assert leaked == 0, f"level {level} mask holds dims planted for level {other}"


def test_masks_deterministic_under_seed() -> None:
    z, labels = planted_embeddings(num_levels=3, seed=4)
    config = GMMMaskConfig(n_components=5, seed=11)
    first = fit_gmm_masks(z, labels, config)
    second = fit_gmm_masks(z.clone(), labels.clone(), config)
    assert torch.equal(first.masks, second.masks)
    assert torch.equal(first.fisher, second.fisher)
    assert torch.equal(first.component_levels, second.component_levels)


def kmeans_initialisation(
    z: torch.Tensor, labels: torch.Tensor, n_components: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return diag-mixture weights, means and precisions from k-means on the descriptors."""
    descriptors = fisher_ratios(z, labels).T.double().numpy()
    assignment = KMeans(n_clusters=n_components, n_init=1, random_state=0).fit_predict(descriptors)
    weights = np.bincount(assignment, minlength=n_components) / len(assignment)
    means = np.stack([descriptors[assignment == k].mean(0) for k in range(n_components)])
    variances = np.stack([descriptors[assignment == k].var(0) for k in range(n_components)])
    return weights, means, 1.0 / (variances + 1e-6)


def test_masks_independent_of_component_order() -> None:
    z, labels = planted_embeddings(num_levels=3, seed=2)
    n_components = 4
    weights, means, precisions = kmeans_initialisation(z, labels, n_components)
    config = GMMMaskConfig(n_components=n_components)
    built: list[GaussianMixture] = []

    def factory_for(order: tuple[int, ...]) -> MixtureFactory:
        index = list(order)

        def build(k: int, reg_covar: float) -> GaussianMixture:
            mixture = GaussianMixture(
                k,
                covariance_type="diag",
                reg_covar=reg_covar,
                random_state=0,
                weights_init=weights[index],
                means_init=means[index],
                precisions_init=precisions[index],
            )
            built.append(mixture)
            return mixture

        return build

    orders = list(itertools.permutations(range(n_components)))[::5]  # 5 of the 24 orders
    results = [fit_gmm_masks(z, labels, config, mixture_factory=factory_for(o)) for o in orders]

    # The fitted mixtures store their components in different orders ...
    assert not all(np.array_equal(m.means_, built[0].means_) for m in built[1:])
    # ... but hold the same set of components, and the masks do not change.
    for mixture in built[1:]:
        np.testing.assert_allclose(
            np.sort(mixture.means_, axis=0), np.sort(built[0].means_, axis=0), atol=1e-9
        )
    for result in results[1:]:
        assert torch.equal(result.masks, results[0].masks)
        assert torch.equal(result.component_levels, results[0].component_levels)
    for level in range(3):
        assert results[0].masks[level, planted_dims(level)].mean().item() >= 0.9


def test_min_mask_size_fills_highest_fisher_dims() -> None:
    z, labels = planted_embeddings(num_levels=2)
    plain = fit_gmm_masks(z, labels, GMMMaskConfig(min_mask_size=1))
    filled = fit_gmm_masks(z, labels, GMMMaskConfig(min_mask_size=12))
    # Without the fill, level 0 contains exactly its 8 planted dimensions.
    assert plain.masks[0].sum().item() == BLOCK
    assert filled.masks[0].sum().item() == 12

    added = (filled.masks[0] - plain.masks[0]).nonzero().flatten()
    assert added.numel() == 4
    outside = (plain.masks[0] == 0).nonzero().flatten()
    top_outside = outside[filled.fisher[0, outside].argsort(descending=True, stable=True)[:4]]
    assert set(added.tolist()) == set(top_outside.tolist())
    # Level 1 was already larger than 12 and keeps its mask. The added dims overlap it.
    assert torch.equal(filled.masks[1], plain.masks[1])
    assert int((filled.masks.sum(0) == 2).sum()) == 4


def test_min_mask_size_above_width_raises() -> None:
    z, labels = planted_embeddings(num_levels=2)
    with pytest.raises(ValueError, match="min_mask_size=40 exceeds the embedding width D=32"):
        fit_gmm_masks(z, labels, GMMMaskConfig(min_mask_size=40))


def test_fewer_components_than_levels_raises() -> None:
    z, labels = planted_embeddings(num_levels=3)
    with pytest.raises(ValueError, match=r"n_components=2 .* levels L=3"):
        fit_gmm_masks(z, labels, GMMMaskConfig(n_components=2))


def test_more_components_than_dims_clamped() -> None:
    z, labels = planted_embeddings(num_samples=500, dim=6, num_levels=2)
    with pytest.warns(UserWarning, match="n_components=9 exceeds the 6 points"):
        result = fit_gmm_masks(z, labels, GMMMaskConfig(n_components=9))
    assert not result.fell_back
    assert result.component_levels.shape == (6,)
    assert result.masks.shape == (2, 6)
    assert result.masks.sum(1).min().item() >= 4  # default minimum min(6, max(4, 0))


def test_one_class_level_gets_zero_fisher_row() -> None:
    z, labels = planted_embeddings(num_levels=2)
    labels[:, 0] = 3  # the whole buffer is one coarse class
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskFallbackWarning)
        result = fit_gmm_masks(z, labels, GMMMaskConfig())
    assert not result.fell_back
    assert torch.all(result.fisher[0] == 0)
    assert result.masks[1, planted_dims(1)].mean().item() >= 0.9
    assert result.masks[0].sum().item() >= 4


def test_all_zero_fisher_falls_back() -> None:
    z, _ = planted_embeddings(num_levels=2)
    labels = torch.zeros(z.shape[0], 2, dtype=torch.long)
    previous = torch.zeros(2, 32)
    previous[0, :5] = 1
    previous[1, 5:] = 1
    with pytest.warns(MaskFallbackWarning, match="every Fisher ratio is 0"):
        result = fit_gmm_masks(z, labels, GMMMaskConfig(), previous_masks=previous.bool())
    assert result.fell_back
    assert torch.equal(result.masks, previous)
    assert result.component_levels.numel() == 0


def collinear_descriptor_buffer() -> tuple[torch.Tensor, torch.Tensor]:
    """Three levels with the same partition, so every s_d lies on the line F0 = F1 = F2.

    Each component's full covariance is then rank one. With a reg_covar far below
    float64 resolution, its Cholesky factorisation fails in scikit-learn (1.9.1 on
    this data, checked by the fallback test).
    """
    z, labels = planted_embeddings(num_levels=2, seed=3)
    fine = labels[:, 1]
    return z, torch.stack([fine, fine, fine], dim=1)


def test_ill_conditioned_retries_then_succeeds() -> None:
    z, labels = collinear_descriptor_buffer()
    config = GMMMaskConfig(covariance_type="full", reg_covar=1e-30, max_retries=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskFallbackWarning)
        result = fit_gmm_masks(z, labels, config)
    assert not result.fell_back
    assert 1e-30 < result.reg_covar_used <= 1e-12
    exponent = np.log10(result.reg_covar_used / 1e-30)
    assert exponent == pytest.approx(round(exponent), abs=1e-9)  # a power-of-10 step


def test_ill_conditioned_falls_back_to_previous() -> None:
    z, labels = collinear_descriptor_buffer()
    config = GMMMaskConfig(covariance_type="full", reg_covar=1e-30, max_retries=2)
    previous = (torch.arange(3 * 32).reshape(3, 32) % 3 == 0).float()
    with pytest.warns(MaskFallbackWarning, match="ill-defined empirical covariance"):
        result = fit_gmm_masks(z, labels, config, previous_masks=previous)
    assert result.fell_back
    assert torch.equal(result.masks, previous)
    assert result.reg_covar_used == pytest.approx(1e-28)
    assert result.fisher.shape == (3, 32)

    with pytest.warns(MaskFallbackWarning, match="failed 3 time"):
        default = fit_gmm_masks(z, labels, config)
    assert torch.equal(default.masks, torch.ones(3, 32))


def test_other_mixture_errors_propagate() -> None:
    z, labels = planted_embeddings(num_levels=2)

    def wrong_shape_init(k: int, reg_covar: float) -> GaussianMixture:
        return GaussianMixture(k, reg_covar=reg_covar, means_init=np.zeros((k, 5)))

    with pytest.raises(ValueError, match="means"):
        fit_gmm_masks(z, labels, GMMMaskConfig(), mixture_factory=wrong_shape_init)


def test_previous_masks_validated() -> None:
    z, labels = planted_embeddings(num_levels=2)
    with pytest.raises(ValueError, match=r"\(L, D\) = \(2, 32\)"):
        fit_gmm_masks(z, labels, GMMMaskConfig(), previous_masks=torch.ones(3, 32))
    with pytest.raises(ValueError, match="only 0 and 1"):
        fit_gmm_masks(z, labels, GMMMaskConfig(), previous_masks=torch.full((2, 32), 0.5))


def test_masks_non_finite_embeddings_raise() -> None:
    z, labels = planted_embeddings(num_levels=2)
    z[10, 3] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        fit_gmm_masks(z, labels, GMMMaskConfig())


def test_masks_float64_input_matches_float32() -> None:
    z, labels = planted_embeddings(num_levels=2)
    single = fit_gmm_masks(z, labels, GMMMaskConfig())
    double = fit_gmm_masks(z.double(), labels, GMMMaskConfig())
    assert double.masks.dtype == torch.float32
    assert torch.equal(single.masks, double.masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_masks_follow_cuda_device() -> None:
    z, labels = planted_embeddings(num_levels=2)
    cpu = fit_gmm_masks(z, labels, GMMMaskConfig())
    cuda = fit_gmm_masks(z.cuda(), labels.cuda(), GMMMaskConfig())
    assert cuda.masks.device.type == "cuda"
    assert cuda.fisher.device.type == "cuda"
    assert cuda.masks.dtype == torch.float32
    assert torch.equal(cuda.masks.cpu(), cpu.masks)
    torch.testing.assert_close(cuda.fisher.cpu(), cpu.fisher, rtol=1e-6, atol=1e-7)
