"""Tests of the encoders: shapes, token maps, pooling and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmlc_core.config import ConfigError
from hmlc_core.models import (
    EncoderConfig,
    PointNetEncoder,
    ResNetEncoder,
    SmallCNNEncoder,
    build_encoder,
)


def _images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=generator)


@pytest.fixture(scope="module")
def resnet18() -> ResNetEncoder:
    """One ResNet-18 shared by the tests of this file, since building it takes a while."""
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="resnet18", in_channels=3))
    assert isinstance(encoder, ResNetEncoder)
    return encoder


def test_resnet18_cifar_stem_shapes(resnet18: ResNetEncoder) -> None:
    encoder = resnet18
    assert isinstance(encoder, ResNetEncoder)
    conv1 = encoder.stem[0]
    assert conv1.kernel_size == (3, 3)
    assert conv1.stride == (1, 1)
    assert conv1.padding == (1, 1)
    assert not any(isinstance(module, nn.MaxPool2d) for module in encoder.modules())

    out = encoder(_images(2, 3, 32), return_tokens=True)
    assert encoder.out_dim == 512
    assert out.pooled.shape == (2, 512)
    assert out.tokens is not None
    assert out.tokens.shape == (2, 16, 512)  # 32x32 -> 4x4 final map


def test_resnet_tokens_match_feature_map(resnet18: ResNetEncoder) -> None:
    encoder = resnet18
    x = _images(2, 3, 32)
    out = encoder(x, return_tokens=True)
    feature_map = encoder.feature_map(x)
    assert feature_map.shape == (2, 512, 4, 4)
    # Token t is the position (t // 4, t % 4) of the map (row-major order).
    assert torch.allclose(out.tokens[:, 5], feature_map[:, :, 1, 1], atol=1e-6)
    assert torch.allclose(out.tokens[:, 14], feature_map[:, :, 3, 2], atol=1e-6)
    expected_pooled = nn.functional.adaptive_avg_pool2d(feature_map, 1).flatten(1)
    assert torch.allclose(out.pooled, expected_pooled, atol=1e-5)
    assert torch.allclose(out.pooled, out.tokens.mean(dim=1), atol=1e-5)


def test_resnet18_without_tokens(resnet18: ResNetEncoder) -> None:
    out = resnet18(_images(2, 3, 32))
    assert out.tokens is None
    assert out.pooled.shape == (2, 512)


def test_resnet18_grayscale_input() -> None:
    encoder = build_encoder(EncoderConfig(name="resnet18", in_channels=1))
    out = encoder(_images(2, 1, 32), return_tokens=True)
    assert encoder.stem[0].in_channels == 1
    assert out.pooled.shape == (2, 512)
    assert out.tokens.shape == (2, 16, 512)


def test_resnet50_shapes_eval() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="resnet50")).eval()
    with torch.no_grad():
        out = encoder(_images(1, 3, 32), return_tokens=True)
    assert encoder.out_dim == 2048
    assert out.pooled.shape == (1, 2048)
    assert out.tokens.shape == (1, 16, 2048)
    assert torch.allclose(out.pooled, out.tokens.mean(dim=1), atol=1e-5)


def test_small_cnn_shapes_and_pooling() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="small_cnn", in_channels=1))
    assert isinstance(encoder, SmallCNNEncoder)
    x = _images(2, 1, 28)
    out = encoder(x, return_tokens=True)
    assert encoder.out_dim == 128
    assert out.pooled.shape == (2, 128)
    assert out.tokens.shape == (2, 49, 128)  # 28x28 -> 7x7
    feature_map = encoder.feature_map(x)
    assert torch.allclose(out.tokens[:, 10], feature_map[:, :, 1, 3], atol=1e-6)
    assert torch.allclose(out.pooled, feature_map.mean(dim=(2, 3)), atol=1e-5)


def test_small_cnn_custom_width_and_cifar_size() -> None:
    encoder = build_encoder(EncoderConfig(name="small_cnn", in_channels=3, width=64))
    out = encoder(_images(2, 3, 32), return_tokens=True)
    assert encoder.out_dim == 64
    assert out.tokens.shape == (2, 64, 64)  # 32x32 -> 8x8


def test_small_cnn_backward_reaches_first_conv() -> None:
    encoder = build_encoder(EncoderConfig(name="small_cnn", in_channels=1))
    encoder(_images(4, 1, 28)).pooled.sum().backward()
    first_conv = encoder.layers[0]
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0


def test_pointnet_shapes_and_max_pool() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="pointnet"))
    assert isinstance(encoder, PointNetEncoder)
    points = torch.randn(2, 256, 3)
    out = encoder(points, return_tokens=True)
    assert encoder.out_dim == 1024
    assert out.pooled.shape == (2, 1024)
    assert out.tokens.shape == (2, 256, 1024)
    assert torch.equal(out.pooled, out.tokens.max(dim=1).values)


def test_pointnet_tokens_are_per_point() -> None:
    # In eval mode each token depends only on its own point.
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="pointnet", width=32)).eval()
    points = torch.randn(2, 16, 3)
    with torch.no_grad():
        tokens = encoder(points, return_tokens=True).tokens
        single = encoder(points[:, 7:8], return_tokens=True).tokens
    assert torch.allclose(tokens[:, 7:8], single, atol=1e-6)


def test_pointnet_permutation_invariance() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="pointnet", width=64)).eval()
    points = torch.randn(3, 128, 3)
    permutation = torch.randperm(128)
    with torch.no_grad():
        out = encoder(points, return_tokens=True)
        permuted = encoder(points[:, permutation], return_tokens=True)
    assert torch.allclose(out.pooled, permuted.pooled, atol=1e-6)
    assert torch.allclose(out.tokens[:, permutation], permuted.tokens, atol=1e-6)


def test_pointnet_train_mode_backward() -> None:
    encoder = build_encoder(EncoderConfig(name="pointnet", width=64))
    encoder(torch.randn(2, 64, 3)).pooled.sum().backward()
    assert encoder.point_mlp[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", 512), ("resnet50", 2048), ("small_cnn", 128), ("pointnet", 1024)],
)
def test_encoder_config_out_dim(name: str, expected: int) -> None:
    assert EncoderConfig(name=name).out_dim == expected


def test_encoder_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="name='vit'"):
        EncoderConfig(name="vit")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="in_channels=0"):
        EncoderConfig(name="resnet18", in_channels=0)
    with pytest.raises(ConfigError, match="fixed at 512"):
        EncoderConfig(name="resnet18", width=256)
    with pytest.raises(ConfigError, match="multiple of 4"):
        EncoderConfig(name="small_cnn", width=30)
    with pytest.raises(ConfigError, match="width=0"):
        EncoderConfig(name="pointnet", width=0)


def test_encoder_config_from_dict() -> None:
    config = EncoderConfig.from_dict({"name": "pointnet", "in_channels": 3, "width": 256})
    assert config == EncoderConfig(name="pointnet", in_channels=3, width=256)
    assert EncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown key"):
        EncoderConfig.from_dict({"name": "pointnet", "widht": 256})


def test_encoders_reject_wrong_input_shape(resnet18: ResNetEncoder) -> None:
    resnet = resnet18
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(2, 1, 32, 32\)"):
        resnet(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        resnet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    pointnet = build_encoder(EncoderConfig(name="pointnet", width=8))
    with pytest.raises(ValueError, match=r"\(B, P, 3\), got \(2, 3, 64\)"):
        pointnet(torch.zeros(2, 3, 64))
