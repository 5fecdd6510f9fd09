"""Projection head g that maps the pooled feature h to the contrastive embedding."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Two-layer MLP in_dim -> hidden_dim -> out_dim: Linear, ReLU, Linear.

    The head has no BatchNorm. This is a project choice, because the method
    describes only an MLP d_h -> d_h -> D. It returns the unnormalised g(h), and the
    caller L2-normalises it.

    Args:
        in_dim: Width d_h of the pooled feature.
        hidden_dim: Width of the hidden layer; None uses ``in_dim``.
        out_dim: Embedding width D.

    Raises:
        ValueError: A width is smaller than 1.

    Shape:
        h: (B, in_dim).
        output: (B, out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        for name, value in [("in_dim", in_dim), ("hidden_dim", hidden), ("out_dim", out_dim)]:
            if value < 1:
                raise ValueError(f"ProjectionHead {name}={value} is invalid; it must be >= 1")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        """Project the pooled feature. Shape: (B, in_dim) -> (B, out_dim)."""
        return self.layers(h)
