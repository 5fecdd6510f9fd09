"""PointNet encoder for point clouds: a shared per-point MLP followed by a max-pool."""

from __future__ import annotations

from torch import Tensor, nn

from hmlc_core.models.base import Encoder


class PointNetEncoder(Encoder):
    """The PointNet feature extractor of Qi et al. (CVPR 2017) without T-Nets.

    Every point goes through the same MLP in_channels -> 64 -> 128 -> width, each
    layer a 1x1 ``Conv1d`` with BatchNorm and ReLU. The pooled feature is the maximum
    over points, so it does not depend on the order of the points. The input and
    feature transform networks (T-Nets) of the original PointNet are left out (a
    project choice) to keep the encoder small and cheap to train. The tokens are the
    per-point features.

    Shape:
        x: (B, P, in_channels) point coordinates.
        tokens: (B, P, width).
        pooled: (B, width).
    """

    def __init__(self, in_channels: int = 3, width: int = 1024) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"pointnet width must be at least 1, got {width}")
        self.in_channels = in_channels
        self.out_dim = width
        layers: list[nn.Module] = []
        for layer_in, layer_out in [(in_channels, 64), (64, 128), (128, width)]:
            layers += [
                nn.Conv1d(layer_in, layer_out, kernel_size=1, bias=False),
                nn.BatchNorm1d(layer_out),
                nn.ReLU(inplace=True),
            ]
        self.point_mlp = nn.Sequential(*layers)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[2] != self.in_channels:
            raise ValueError(
                f"expected point clouds of shape (B, P, {self.in_channels}), "
                f"got {tuple(x.shape)}; set EncoderConfig.in_channels to the number "
                f"of values per point"
            )
        if not x.is_floating_point():
            raise ValueError(f"expected floating-point points, got dtype {x.dtype}")

    def forward_tokens(self, x: Tensor) -> Tensor:
        # (B, P, C_in) -> (B, C_in, P) -> (B, C, P) -> (B, P, C)
        return self.point_mlp(x.transpose(1, 2)).transpose(1, 2)

    def pool(self, tokens: Tensor) -> Tensor:
        return tokens.amax(dim=1)
