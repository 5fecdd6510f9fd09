"""ResNet-18 and ResNet-50 with the CIFAR stem, built from torchvision's definitions."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import Tensor, nn

from hmlc_core.models.base import Encoder, check_image_batch

_TORCHVISION_RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
}


class ResNetEncoder(Encoder):
    """A torchvision ResNet with the CIFAR stem and no classifier.

    The stem is a 3x3 convolution with stride 1 and padding 1 and no max-pool, so a
    32x32 image keeps full resolution until ``layer2`` and ends as a 4x4 map. The
    tokens are the positions of the final feature map in row-major order, and the
    pooled feature is their mean (global average pooling). The weights are randomly
    initialised (torchvision's initialisation; no pretrained weights).

    Shape:
        x: (B, in_channels, H, W).
        tokens: (B, H/8 * W/8, C) with C = 512 (resnet18) or 2048 (resnet50).
        pooled: (B, C).
    """

    def __init__(self, name: str, in_channels: int = 3) -> None:
        super().__init__()
        if name not in _TORCHVISION_RESNETS:
            raise ValueError(
                f"unknown ResNet {name!r}; valid names are {sorted(_TORCHVISION_RESNETS)}"
            )
        net = _TORCHVISION_RESNETS[name](weights=None)
        conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        # Same initialisation as torchvision gives its own convolutions.
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        self.in_channels = in_channels
        self.stem = nn.Sequential(conv1, net.bn1, net.relu)
        self.stages = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_dim = net.fc.in_features

    def check_input(self, x: Tensor) -> None:
        check_image_batch(x, self.in_channels)

    def feature_map(self, x: Tensor) -> Tensor:
        """Compute the final feature map. Shape: (B, in_channels, H, W) -> (B, C, H/8, W/8)."""
        return self.stages(self.stem(x))

    def forward_tokens(self, x: Tensor) -> Tensor:
        # (B, C, h, w) -> (B, h*w, C)
        return self.feature_map(x).flatten(2).transpose(1, 2)

    def pool(self, tokens: Tensor) -> Tensor:
        return tokens.mean(dim=1)
