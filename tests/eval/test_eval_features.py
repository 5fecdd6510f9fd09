"""Tests of batched feature extraction."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from hmlc_core.eval import extract_features


@dataclass
class _Output:
    pooled: torch.Tensor
    z: torch.Tensor


class _TinyEncoder(nn.Module):
    """Conv + batch norm + dropout, so train and eval mode give different outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> _Output:
        pooled = self.dropout(self.norm(self.conv(x)).relu().mean(dim=(2, 3)))
        return _Output(pooled=pooled, z=self.head(pooled))


class _WithFeatures(_TinyEncoder):
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).amax(dim=(2, 3))


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    return (batch.float() / 255.0 - 0.5) / 0.25


def _images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, 1, 6, 6), generator=generator, dtype=torch.uint8)


def test_extract_matches_manual_eval_forward():
    torch.manual_seed(0)
    model = _TinyEncoder()
    model.norm.running_mean.uniform_(-0.5, 0.5)  # eval-mode batch norm differs from batch stats
    images = _images(10)
    sizes: list[int] = []

    def transform(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(batch.shape[0])
        assert batch.dtype == torch.uint8
        return _normalise(batch)

    features = extract_features(model, images, transform, batch_size=4)

    model.eval()
    with torch.no_grad():
        expected = model(_normalise(images)).pooled
    assert sizes == [4, 4, 2]
    assert features.shape == (10, 4)
    assert features.dtype == torch.float32
    assert not features.requires_grad
    torch.testing.assert_close(features, expected)


def test_extract_restores_training_modes():
    model = _TinyEncoder()
    model.train()
    model.dropout.eval()  # a mixed state must come back exactly

    extract_features(model, _images(3), _normalise, batch_size=2)

    assert model.training
    assert model.conv.training
    assert model.norm.training
    assert not model.dropout.training


def test_extract_restores_mode_after_error():
    model = _TinyEncoder()
    model.train()

    def failing(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("transform failed")

    with pytest.raises(RuntimeError, match="transform failed"):
        extract_features(model, _images(3), failing)
    assert model.training
    assert model.norm.training


def test_extract_prefers_features_method():
    torch.manual_seed(1)
    model = _WithFeatures()
    images = _images(5)

    features = extract_features(model, images, _normalise, batch_size=3)

    with torch.no_grad():
        expected = model.conv(_normalise(images)).amax(dim=(2, 3))
    torch.testing.assert_close(features, expected)


def test_extract_accepts_plain_tensor_output():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    images = _images(7)

    features = extract_features(model, images, None, batch_size=5)

    with torch.no_grad():
        expected = model(images.float())
    torch.testing.assert_close(features, expected)


def test_extract_rejects_spatial_output():
    model = nn.Conv2d(1, 2, kernel_size=1)
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        extract_features(model, _images(2), _normalise)


def test_extract_rejects_invalid_arguments():
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    with pytest.raises(ValueError, match="batch_size=0"):
        extract_features(model, _images(2), None, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        extract_features(model, _images(0), None)
