"""Batched point-cloud augmentation: rotation about the vertical axis, scaling and jitter."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from hmlc_core.config import ConfigBase, require


@dataclasses.dataclass(frozen=True)
class PointAugmentationConfig(ConfigBase):
    """Parameters of the two-view point-cloud recipe (project choice).

    Each view is rotated about the vertical axis by a uniform angle, scaled uniformly
    by one factor per cloud, and every point is moved by clipped Gaussian noise.

    Attributes:
        rotate: rotate by an angle drawn uniformly from [0, 2 pi).
        up_axis: index of the vertical coordinate (1 = y, the up axis of
            modelnet40_normal_resampled).
        scale_range: range of the per-cloud scale factor.
        jitter_sigma: standard deviation of the per-point noise, in unit-sphere units.
        jitter_clip: bound on the absolute noise per coordinate.
    """

    rotate: bool = True
    up_axis: int = 1
    scale_range: tuple[float, float] = (0.8, 1.25)
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05

    def validate(self) -> None:
        require(self.up_axis in (0, 1, 2), f"up_axis is {self.up_axis}; expected 0, 1 or 2")
        low, high = self.scale_range
        require(0.0 < low <= high, f"scale_range is {self.scale_range}; expected 0 < low <= high")
        require(self.jitter_sigma >= 0.0, f"jitter_sigma is {self.jitter_sigma}; expected >= 0")
        require(self.jitter_clip >= 0.0, f"jitter_clip is {self.jitter_clip}; expected >= 0")


def rotation_about_axis(angles: Tensor, axis: int) -> Tensor:
    """Return rotation matrices about coordinate ``axis`` (right-handed).

    Shape:
        angles: (B,) radians. return: (B, 3, 3).
    """
    cos, sin = torch.cos(angles), torch.sin(angles)
    first, second = [a for a in range(3) if a != axis]
    if axis == 1:
        # About y the right-handed order of the other two axes is (z, x).
        first, second = second, first
    matrices = torch.zeros(len(angles), 3, 3, dtype=angles.dtype, device=angles.device)
    matrices[:, axis, axis] = 1.0
    matrices[:, first, first] = cos
    matrices[:, first, second] = -sin
    matrices[:, second, first] = sin
    matrices[:, second, second] = cos
    return matrices


def augment_points(
    points: Tensor, config: PointAugmentationConfig, generator: torch.Generator | None = None
) -> Tensor:
    """Augment one view of every cloud in a batch.

    Random numbers are drawn on the generator's device (the CPU without one) and moved
    to the points' device, so a seed gives the same views on CPU and GPU.

    Shape:
        points: (B, P, 3). return: (B, P, 3) float32 on the points' device.
    """
    batch, num_points, _ = points.shape
    device = generator.device if generator is not None else torch.device("cpu")
    x = points.float()
    if config.rotate:
        angles = 2 * math.pi * torch.rand(batch, generator=generator, device=device)
        rotation = rotation_about_axis(angles, config.up_axis).to(x.device)
        x = torch.einsum("bij,bpj->bpi", rotation, x)
    low, high = config.scale_range
    scale = low + (high - low) * torch.rand(batch, generator=generator, device=device)
    x = x * scale.to(x.device).view(-1, 1, 1)
    if config.jitter_sigma > 0:
        noise = torch.randn(batch, num_points, 3, generator=generator, device=device)
        noise = (config.jitter_sigma * noise).clamp(-config.jitter_clip, config.jitter_clip)
        x = x + noise.to(x.device)
    return x
