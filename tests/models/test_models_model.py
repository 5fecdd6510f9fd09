"""Tests of the projection head, ModelConfig and the contrastive model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmlc_core.config import ConfigError
from hmlc_core.models import (
    AttentionMasker,
    AttentionMaskerConfig,
    ContrastiveModel,
    EncoderConfig,
    ModelConfig,
    ProjectionHead,
    build_encoder,
    build_model,
)

SMALL_CNN = EncoderConfig(name="small_cnn", in_channels=1, width=32)


def test_projection_head_shapes_and_layers() -> None:
    head = ProjectionHead(64, out_dim=16)
    layers = list(head.layers)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features) == (64, 64)
    assert (layers[2].in_features, layers[2].out_features) == (64, 16)
    assert head(torch.randn(3, 64)).shape == (3, 16)


def test_projection_head_hidden_dim_and_value() -> None:
    head = ProjectionHead(4, hidden_dim=2, out_dim=1)
    with torch.no_grad():
        head.layers[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]]))
        head.layers[0].bias.zero_()
        head.layers[2].weight.copy_(torch.tensor([[2.0, 3.0]]))
        head.layers[2].bias.fill_(0.5)
    h = torch.tensor([[1.0, 2.0, 0.0, 0.0], [-1.0, -2.0, 0.0, 0.0]])
    # Hidden: relu([1, -2]) = [1, 0] and relu([-1, 2]) = [0, 2]; output 2*a + 3*b + 0.5.
    assert torch.equal(head(h), torch.tensor([[2.5], [6.5]]))


def test_projection_head_rejects_zero_width() -> None:
    with pytest.raises(ValueError, match="out_dim=0"):
        ProjectionHead(8, out_dim=0)


def test_model_without_attention() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=SMALL_CNN, projection_dim=16))
    assert model.masker is None
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    assert out.pooled.shape == (3, 32)
    assert out.z.shape == (3, 16)
    assert out.soft_masks is None
    assert torch.allclose(out.z.norm(dim=1), torch.ones(3), atol=1e-6)


def test_model_with_attention_matches_parts() -> None:
    torch.manual_seed(0)
    config = ModelConfig(encoder=SMALL_CNN, projection_dim=16).with_attention(
        num_levels=3, num_heads=2, mask_temperature=0.5
    )
    model = build_model(config).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
        encoded = model.encoder(x, return_tokens=True)
        expected_z = nn.functional.normalize(model.head(encoded.pooled), dim=1)
        expected_masks = model.masker(encoded.tokens)
    assert out.soft_masks is not None
    assert out.soft_masks.shape == (2, 3, 16)
    assert torch.allclose(out.pooled, encoded.pooled)
    assert torch.allclose(out.z, expected_z, atol=1e-6)
    assert torch.allclose(out.soft_masks, expected_masks, atol=1e-6)
    assert torch.allclose(out.z.norm(dim=1), torch.ones(2), atol=1e-6)


def test_model_features_equal_pooled() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=SMALL_CNN, projection_dim=16).with_attention(2)).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.features(x), model(x).pooled)


def test_model_backward_reaches_every_parameter() -> None:
    # Every parameter must take part in the loss, or DDP would need find_unused_parameters.
    torch.manual_seed(0)
    config = ModelConfig(
        encoder=EncoderConfig(name="pointnet", width=16), projection_dim=8
    ).with_attention(num_levels=2, num_heads=4)
    model = build_model(config)
    out = model(torch.randn(2, 32, 3))
    z_term = (out.z * torch.randn_like(out.z)).sum()
    mask_term = (out.soft_masks * torch.randn_like(out.soft_masks)).sum()
    (z_term + mask_term).backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == []


def test_model_rejects_mismatched_head() -> None:
    encoder = build_encoder(SMALL_CNN)
    with pytest.raises(ValueError, match="in_dim=64 does not match encoder out_dim=32"):
        ContrastiveModel(encoder, ProjectionHead(64))


def test_model_rejects_mismatched_masker() -> None:
    encoder = build_encoder(SMALL_CNN)
    masker = AttentionMasker(AttentionMaskerConfig(num_levels=2, channels=32, out_dim=8))
    with pytest.raises(ValueError, match="head out_dim=16"):
        ContrastiveModel(encoder, ProjectionHead(32, out_dim=16), masker)


def test_model_config_round_trip() -> None:
    plain = ModelConfig(encoder=SMALL_CNN, projection_dim=64, hidden_dim=48)
    assert ModelConfig.from_dict(plain.to_dict()) == plain
    with_attention = plain.with_attention(num_levels=3, num_heads=4, mask_temperature=0.5)
    values = with_attention.to_dict()
    assert values["attention"] == {
        "num_levels": 3, "channels": 32, "out_dim": 64, "num_heads": 4, "mask_temperature": 0.5,
    }
    restored = ModelConfig.from_dict(values)
    assert restored == with_attention
    assert isinstance(restored.attention, AttentionMaskerConfig)
    assert isinstance(restored.encoder, EncoderConfig)


def test_model_config_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['projection'\]"):
        ModelConfig.from_dict({"encoder": {"name": "small_cnn"}, "projection": 64})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nmae'\]"):
        ModelConfig.from_dict({"encoder": {"nmae": "small_cnn"}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['heads'\]"):
        ModelConfig.from_dict(
            {"encoder": {"name": "small_cnn"}, "attention": {"num_levels": 2, "heads": 4}}
        )


def test_model_config_attention_must_fit_encoder_and_head() -> None:
    with pytest.raises(ConfigError, match="channels=64 does not match the width 32"):
        ModelConfig(
            encoder=SMALL_CNN,
            projection_dim=16,
            attention=AttentionMaskerConfig(num_levels=2, channels=64, out_dim=16),
        )
    with pytest.raises(ConfigError, match="out_dim=128 does not match projection_dim=16"):
        ModelConfig(
            encoder=SMALL_CNN,
            projection_dim=16,
            attention=AttentionMaskerConfig(num_levels=2, channels=32, out_dim=128),
        )


def test_model_config_rejects_bad_dims() -> None:
    with pytest.raises(ConfigError, match="projection_dim=0"):
        ModelConfig(encoder=SMALL_CNN, projection_dim=0)
    with pytest.raises(ConfigError, match="hidden_dim=-1"):
        ModelConfig(encoder=SMALL_CNN, hidden_dim=-1)
