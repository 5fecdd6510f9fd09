"""Encoder configuration and construction for every supported backbone."""

from __future__ import annotations

import dataclasses
from typing import Literal

from hmlc_core.config import ConfigBase, require
from hmlc_core.models.base import Encoder, EncoderOutput
from hmlc_core.models.pointnet import PointNetEncoder
from hmlc_core.models.resnet import ResNetEncoder
from hmlc_core.models.small_cnn import SmallCNNEncoder

__all__ = ["Encoder", "EncoderConfig", "EncoderOutput", "build_encoder"]

EncoderName = Literal["resnet18", "resnet50", "small_cnn", "pointnet"]

# Feature width C of each backbone when EncoderConfig.width is None. The ResNet
# widths are fixed by torchvision's architecture (512 * block expansion).
DEFAULT_WIDTHS: dict[str, int] = {
    "resnet18": 512,
    "resnet50": 2048,
    "small_cnn": 128,
    "pointnet": 1024,
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig(ConfigBase):
    """Configuration of the encoder f.

    Attributes:
        name: Backbone: "resnet18" or "resnet50" (CIFAR stem), "small_cnn" (28x28
            grayscale images) or "pointnet" (point clouds).
        in_channels: Image channels (3 for RGB, 1 for grayscale) or values per point
            (3 for xyz coordinates).
        width: Feature width C (= d_h) of small_cnn and pointnet; None selects the
            default (small_cnn 128, pointnet 1024). Must stay None for the ResNets,
            whose width is fixed (512 and 2048).
    """

    name: EncoderName = "resnet18"
    in_channels: int = 3
    width: int | None = None

    def validate(self) -> None:
        require(
            self.name in DEFAULT_WIDTHS,
            f"EncoderConfig.name={self.name!r} is not supported; "
            f"valid names are {sorted(DEFAULT_WIDTHS)}",
        )
        require(
            isinstance(self.in_channels, int) and self.in_channels >= 1,
            f"EncoderConfig.in_channels={self.in_channels!r} is invalid; it must be an int >= 1",
        )
        if self.width is None:
            return
        require(
            self.name in ("small_cnn", "pointnet"),
            f"EncoderConfig.width={self.width!r} is invalid for {self.name}, whose width is "
            f"fixed at {DEFAULT_WIDTHS[self.name]}; leave width unset (None)",
        )
        if self.name == "small_cnn":
            require(
                isinstance(self.width, int) and self.width >= 4 and self.width % 4 == 0,
                f"EncoderConfig.width={self.width!r} is invalid for small_cnn; "
                f"it must be a positive multiple of 4",
            )
        else:
            require(
                isinstance(self.width, int) and self.width >= 1,
                f"EncoderConfig.width={self.width!r} is invalid for pointnet; "
                f"it must be an int >= 1",
            )

    @property
    def out_dim(self) -> int:
        """Feature width C (= d_h) of the encoder this config builds."""
        return DEFAULT_WIDTHS[self.name] if self.width is None else self.width


def build_encoder(config: EncoderConfig) -> Encoder:
    """Build the randomly initialised encoder that ``config`` describes.

    Returns:
        An ``Encoder`` (an ``nn.Module``) whose ``out_dim`` equals ``config.out_dim``.
    """
    encoder: Encoder
    if config.name in ("resnet18", "resnet50"):
        encoder = ResNetEncoder(config.name, in_channels=config.in_channels)
    elif config.name == "small_cnn":
        encoder = SmallCNNEncoder(in_channels=config.in_channels, width=config.out_dim)
    else:
        encoder = PointNetEncoder(in_channels=config.in_channels, width=config.out_dim)
    return encoder
