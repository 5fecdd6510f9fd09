"""Tests of the A-HMLC attention masker and the overlap penalty."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from hmlc_core.config import ConfigError
from hmlc_core.models import (
    AttentionMasker,
    AttentionMaskerConfig,
    overlap_penalty,
    valid_attention_heads,
)


def _masker(levels: int = 3, channels: int = 16, dims: int = 8, heads: int = 4,
            temperature: float = 1.0, seed: int = 0) -> AttentionMasker:
    torch.manual_seed(seed)
    config = AttentionMaskerConfig(
        num_levels=levels, channels=channels, out_dim=dims, num_heads=heads,
        mask_temperature=temperature,
    )
    return AttentionMasker(config)


def _reference_masks(masker: AttentionMasker, tokens: Tensor) -> Tensor:
    """Soft masks computed with a loop over samples, levels and heads."""
    config = masker.config
    channels, heads = config.channels, config.num_heads
    head_dim = channels // heads
    keys_in = F.layer_norm(tokens, (channels,), masker.token_norm.weight, masker.token_norm.bias)
    masks = torch.empty(tokens.shape[0], config.num_levels, config.out_dim, dtype=tokens.dtype)
    for b in range(tokens.shape[0]):
        keys = masker.key_proj(keys_in[b])  # (T, C)
        values = masker.value_proj(keys_in[b])
        for level in range(config.num_levels):
            query = masker.query_proj(masker.queries[level])  # (C,)
            head_outputs = []
            for h in range(heads):
                part = slice(h * head_dim, (h + 1) * head_dim)
                scores = keys[:, part] @ query[part] / math.sqrt(head_dim)  # (T,)
                head_outputs.append(torch.softmax(scores, dim=0) @ values[:, part])
            u = masker.out_proj(torch.cat(head_outputs))  # (C,)
            logits = u @ masker.level_weight[level] + masker.level_bias[level]  # (D,)
            masks[b, level] = torch.sigmoid(logits / config.mask_temperature)
    return masks


def _randomise_biases(masker: AttentionMasker) -> None:
    # Non-zero biases, so the references check that each one is applied.
    with torch.no_grad():
        for bias in (masker.level_bias, masker.token_norm.bias, masker.query_proj.bias,
                     masker.value_proj.bias, masker.out_proj.bias):
            bias.normal_()


def test_masker_shape_and_range() -> None:
    masker = _masker(levels=3, channels=16, dims=8)
    masks = masker(torch.randn(2, 10, 16))
    assert masks.shape == (2, 3, 8)
    assert bool((masks > 0).all())
    assert bool((masks < 1).all())


# With 3 levels and 16 channels, 1 and 4 heads take the path that averages the
# tokens before the value projection, and 16 heads the path that projects every token.
@pytest.mark.parametrize(("heads", "temperature"), [(1, 1.0), (4, 0.5), (16, 2.0)])
def test_masker_matches_loop_reference(heads: int, temperature: float) -> None:
    masker = _masker(levels=3, channels=16, dims=8, heads=heads, temperature=temperature)
    _randomise_biases(masker)
    tokens = torch.randn(2, 7, 16) * 3 + 1
    with torch.no_grad():
        expected = _reference_masks(masker, tokens)
        actual = masker(tokens)
    assert torch.allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("heads", [1, 4, 16])
def test_masker_matches_torch_multihead_attention(heads: int) -> None:
    masker = _masker(levels=3, channels=16, heads=heads)
    _randomise_biases(masker)
    attention = torch.nn.MultiheadAttention(16, heads, batch_first=True)
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.cat(
            [masker.query_proj.weight, masker.key_proj.weight, masker.value_proj.weight]
        ))
        zero_key_bias = torch.zeros(16)
        attention.in_proj_bias.copy_(torch.cat(
            [masker.query_proj.bias, zero_key_bias, masker.value_proj.bias]
        ))
        attention.out_proj.load_state_dict(masker.out_proj.state_dict())
    tokens = torch.randn(2, 9, 16)
    with torch.no_grad():
        features, weights = masker.level_features(tokens, need_weights=True)
        keys = masker.token_norm(tokens)
        queries = masker.queries.unsqueeze(0).expand(2, -1, -1)
        expected, expected_weights = attention(queries, keys, keys, need_weights=True)
    assert torch.allclose(features, expected, atol=1e-5)
    assert torch.allclose(weights, expected_weights, atol=1e-6)


def test_masker_temperature_scales_logits() -> None:
    tokens = torch.randn(2, 5, 16)
    warm = _masker(temperature=1.0, seed=3)
    cold = _masker(temperature=0.25, seed=3)
    with torch.no_grad():
        warm_logits = torch.logit(warm(tokens).double())
        cold_logits = torch.logit(cold(tokens).double())
    assert torch.allclose(cold_logits, 4 * warm_logits, atol=1e-3)


def test_masker_token_order_invariance() -> None:
    masker = _masker()
    tokens = torch.randn(2, 12, 16)
    permutation = torch.randperm(12)
    with torch.no_grad():
        assert torch.allclose(masker(tokens), masker(tokens[:, permutation]), atol=1e-6)


def test_masker_levels_use_own_query() -> None:
    masker = _masker(levels=3)
    tokens = torch.randn(2, 6, 16)
    with torch.no_grad():
        before = masker(tokens)
        masker.queries[1].add_(1.0)
        after = masker(tokens)
    assert torch.equal(before[:, 0], after[:, 0])
    assert torch.equal(before[:, 2], after[:, 2])
    assert not torch.allclose(before[:, 1], after[:, 1])


def test_masker_gradients_reach_queries_and_weights() -> None:
    masker = _masker(levels=3)
    tokens = torch.randn(2, 6, 16, requires_grad=True)
    masks = masker(tokens)
    (masks * torch.randn_like(masks)).sum().backward()
    for name in ("queries", "level_weight", "level_bias"):
        grad = getattr(masker, name).grad
        assert grad is not None, name
        # Every level's slice receives a gradient.
        assert bool((grad.flatten(1).abs().sum(dim=1) > 0).all()), name
    for projection in (masker.query_proj, masker.key_proj, masker.value_proj, masker.out_proj):
        assert projection.weight.grad.abs().sum() > 0
    assert tokens.grad.abs().sum() > 0


@pytest.mark.parametrize("heads", [2, 8])
def test_masker_gradcheck_float64(heads: int) -> None:
    masker = _masker(levels=2, channels=8, dims=4, heads=heads).double()
    tokens = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(masker, (tokens,))


def test_masker_attention_weights_sum_to_one() -> None:
    masker = _masker(levels=3)
    _, weights = masker.level_features(torch.randn(2, 9, 16), need_weights=True)
    assert weights.shape == (2, 3, 9)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 3), atol=1e-6)


def test_masker_rejects_wrong_token_width() -> None:
    masker = _masker(channels=16)
    with pytest.raises(ValueError, match=r"\(B, T, 16\), got \(2, 5, 8\)"):
        masker(torch.randn(2, 5, 8))


def test_masker_config_heads_must_divide_channels() -> None:
    with pytest.raises(ConfigError) as info:
        AttentionMaskerConfig(num_levels=2, channels=12, num_heads=5)
    message = str(info.value)
    assert "num_heads=5" in message
    assert "channels=12" in message
    assert "[1, 2, 3, 4, 6, 12]" in message


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
def test_masker_config_rejects_bad_temperature(temperature: float) -> None:
    with pytest.raises(ConfigError, match="mask_temperature"):
        AttentionMaskerConfig(num_levels=2, channels=8, mask_temperature=temperature)


def test_masker_config_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="num_levels=0"):
        AttentionMaskerConfig(num_levels=0, channels=8)
    with pytest.raises(ConfigError, match="out_dim=0"):
        AttentionMaskerConfig(num_levels=2, channels=8, out_dim=0)


def test_valid_attention_heads() -> None:
    assert valid_attention_heads(1) == [1]
    assert valid_attention_heads(12) == [1, 2, 3, 4, 6, 12]
    assert valid_attention_heads(512) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    with pytest.raises(ValueError, match="channels=0"):
        valid_attention_heads(0)


def test_overlap_penalty_ones_is_one() -> None:
    assert overlap_penalty(torch.ones(2, 3, 8)).item() == pytest.approx(1.0)


def test_overlap_penalty_disjoint_is_zero() -> None:
    masks = torch.zeros(2, 3, 6)
    masks[:, 0, 0:2] = 1.0
    masks[:, 1, 2:4] = 1.0
    masks[:, 2, 4:6] = 1.0
    assert overlap_penalty(masks).item() == 0.0


def test_overlap_penalty_hand_computed() -> None:
    # One sample, L = 2, D = 4: <m_0, m_1> = 0.5*1 + 1*0.5 + 0 + 0 = 1.0, / D = 0.25.
    # Second sample: <m_0, m_1> = 4 * 0.5 * 0.5 = 1.0, / D = 0.25. Batch mean 0.25.
    first = torch.tensor([[0.5, 1.0, 0.0, 1.0], [1.0, 0.5, 1.0, 0.0]])
    second = torch.full((2, 4), 0.5)
    masks = torch.stack([first, second])
    assert overlap_penalty(masks).item() == pytest.approx(0.25)
    # Three levels, <m_l, m_k> / D per pair: (0, 1) 2/4, (0, 2) 1/4, (1, 2) 0.
    # Mean over the 3 pairs: 0.75 / 3 = 0.25.
    three = torch.tensor([[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    assert overlap_penalty(three).item() == pytest.approx(0.25)


def test_overlap_penalty_matches_loop() -> None:
    torch.manual_seed(0)
    masks = torch.rand(3, 4, 5, dtype=torch.float64)
    batch, levels, dims = masks.shape
    total = 0.0
    for b in range(batch):
        for first in range(levels):
            for second in range(levels):
                if first != second:
                    total += float(masks[b, first] @ masks[b, second]) / dims
    expected = total / (batch * levels * (levels - 1))
    assert overlap_penalty(masks).item() == pytest.approx(expected, rel=1e-12)


def test_overlap_penalty_single_level_and_shape_error() -> None:
    assert overlap_penalty(torch.rand(2, 1, 8)).item() == 0.0
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        overlap_penalty(torch.rand(2, 8))


def test_overlap_penalty_gradcheck() -> None:
    masks = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(overlap_penalty, (masks,))
