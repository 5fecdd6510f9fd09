"""The encoder interface shared by every backbone: a pooled feature and its token map."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class EncoderOutput(NamedTuple):
    """Output of an encoder.

    Attributes:
        pooled: The pooled feature h. Shape: (B, C).
        tokens: The token map before pooling (spatial positions for images, points for
            point clouds), or None when the caller did not request it. Shape: (B, T, C).
    """

    pooled: Tensor
    tokens: Tensor | None


class Encoder(nn.Module):
    """Base class of the encoders.

    A subclass sets ``out_dim`` (the width C = d_h of the pooled feature and of each
    token) and implements ``forward_tokens`` and ``pool``. ``forward`` checks the
    input, computes the tokens and pools them, so the pooled feature is always a
    function of the returned tokens.
    """

    out_dim: int

    def forward(self, x: Tensor, return_tokens: bool = False) -> EncoderOutput:
        """Encode a batch into the pooled feature and, on request, the token map.

        Args:
            x: Images (B, C_in, H, W) or point clouds (B, P, C_in), float.
            return_tokens: Also return the token map (needed by the attention masker).

        Returns:
            EncoderOutput with pooled (B, C) and tokens (B, T, C) or None.

        Raises:
            ValueError: ``x`` does not have the shape this encoder expects.
        """
        self.check_input(x)
        tokens = self.forward_tokens(x)
        pooled = self.pool(tokens)
        return EncoderOutput(pooled=pooled, tokens=tokens if return_tokens else None)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError when ``x`` does not have the expected shape."""
        raise NotImplementedError

    def forward_tokens(self, x: Tensor) -> Tensor:
        """Compute the token map. Shape: (B, T, C)."""
        raise NotImplementedError

    def pool(self, tokens: Tensor) -> Tensor:
        """Pool the token map (B, T, C) into the feature h (B, C)."""
        raise NotImplementedError


def check_image_batch(x: Tensor, in_channels: int) -> None:
    """Raise ValueError unless ``x`` is a float image batch of shape (B, in_channels, H, W)."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"expected images of shape (B, {in_channels}, H, W), got {tuple(x.shape)}; "
            f"set EncoderConfig.in_channels to the number of image channels"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point image batch, got dtype {x.dtype}; "
            f"apply the evaluation or augmentation transform first"
        )
