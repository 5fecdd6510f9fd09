"""A small convolutional encoder for 28x28 grayscale images that trains quickly on CPU."""

from __future__ import annotations

from torch import Tensor, nn

from hmlc_core.models.base import Encoder, check_image_batch


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNNEncoder(Encoder):
    """Four 3x3 convolution blocks with BatchNorm and ReLU (a project choice).

    The block widths are width / 4, width / 2, width and width, and a 2x2 max-pool
    follows each of the first two blocks. A 28x28 image ends as a 7x7 map (49
    tokens) and a 32x32 image as an 8x8 map. The pooled feature is the mean of the
    tokens. At the default width 128 a 28x28 image costs about 15 M multiply-adds.

    Shape:
        x: (B, in_channels, H, W).
        tokens: (B, (H // 4) * (W // 4), width).
        pooled: (B, width).
    """

    def __init__(self, in_channels: int = 1, width: int = 128) -> None:
        super().__init__()
        if width < 4 or width % 4 != 0:
            raise ValueError(f"small_cnn width must be a positive multiple of 4, got {width}")
        quarter, half = width // 4, width // 2
        self.in_channels = in_channels
        self.out_dim = width
        self.layers = nn.Sequential(
            *_conv_bn_relu(in_channels, quarter),
            nn.MaxPool2d(2),
            *_conv_bn_relu(quarter, half),
            nn.MaxPool2d(2),
            *_conv_bn_relu(half, width),
            *_conv_bn_relu(width, width),
        )

    def check_input(self, x: Tensor) -> None:
        check_image_batch(x, self.in_channels)

    def feature_map(self, x: Tensor) -> Tensor:
        """Compute the final feature map. Shape: (B, in_channels, H, W) -> (B, C, H/4, W/4)."""
        return self.layers(x)

    def forward_tokens(self, x: Tensor) -> Tensor:
        # (B, C, h, w) -> (B, h*w, C)
        return self.feature_map(x).flatten(2).transpose(1, 2)

    def pool(self, tokens: Tensor) -> Tensor:
        return tokens.mean(dim=1)
