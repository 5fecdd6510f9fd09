"""A-HMLC soft masks: one learnable attention query per hierarchy level.

The mechanics here are a project choice. The A-HMLC description (Ott et al.,
arXiv 2510.00837) states only that one attention head per level yields soft masks
over the embedding dimensions.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from hmlc_core.config import ConfigBase, require


def valid_attention_heads(channels: int) -> list[int]:
    """Return the head counts that divide ``channels``, in increasing order.

    Multi-head attention splits the C channels evenly over the heads, so only these
    counts are valid for a token width of ``channels``. A search space can draw
    ``AttentionMaskerConfig.num_heads`` from this list.

    Raises:
        ValueError: ``channels`` is smaller than 1.
    """
    if channels < 1:
        raise ValueError(f"channels={channels} is invalid; it must be >= 1")
    return [heads for heads in range(1, channels + 1) if channels % heads == 0]


@dataclasses.dataclass(frozen=True)
class AttentionMaskerConfig(ConfigBase):
    """Configuration of the A-HMLC attention masker.

    Attributes:
        num_levels: Number L of hierarchy levels, one query and one mask per level.
        channels: Token width C; must equal the encoder's ``out_dim``.
        out_dim: Mask width D; must equal the projection head's output width.
        num_heads: Attention heads; must divide ``channels``.
        mask_temperature: t_mask > 0 that divides the mask logits before the
            sigmoid. Lower values give masks closer to 0/1.
    """

    num_levels: int
    channels: int
    out_dim: int = 128
    num_heads: int = 4
    mask_temperature: float = 1.0

    def validate(self) -> None:
        for name in ("num_levels", "channels", "out_dim", "num_heads"):
            value = getattr(self, name)
            require(
                isinstance(value, int) and value >= 1,
                f"AttentionMaskerConfig.{name}={value!r} is invalid; it must be an int >= 1",
            )
        require(
            self.channels % self.num_heads == 0,
            f"AttentionMaskerConfig.num_heads={self.num_heads} does not divide "
            f"channels={self.channels}; valid num_heads for {self.channels} channels "
            f"are {valid_attention_heads(self.channels)}",
        )
        require(
            isinstance(self.mask_temperature, (int, float))
            and math.isfinite(self.mask_temperature)
            and self.mask_temperature > 0,
            f"AttentionMaskerConfig.mask_temperature={self.mask_temperature!r} is invalid; "
            f"it must be a finite number > 0",
        )


class AttentionMasker(nn.Module):
    """Per-level soft masks over the embedding dimensions from the encoder's tokens.

    For each level l a learnable query q_l (C) attends over the token map T with
    multi-head attention and gives u_l (C). A per-level linear map W_l: C -> D then
    gives the soft mask m_l = sigmoid((W_l u_l + b_l) / t_mask), in (0, 1)^D for
    every sample. Two further details are project choices. The tokens pass through a
    LayerNorm before the attention, so the mask logits do not depend on the
    encoder's feature scale. The tokens carry no positional encoding, so the
    attention pools by content and the masks do not depend on the token order.

    The attention equals ``nn.MultiheadAttention`` with a zero key bias (a key bias
    adds the same score to every token, so the softmax cancels it). It is computed
    without projecting every token: W_k is folded into the queries, and when
    L * H < C the tokens are averaged before W_v is applied. This costs about
    L * H * T * C multiply-adds per sample in place of 2 * T * C^2, which matters
    for PointNet (T = 1024 points, C = 1024).

    Shape:
        tokens: (B, T, C).
        output: (B, L, D), values in (0, 1).

    Einsum letters: b batch, t token, l level, h head, e channel within a head
    (C / H), c channel (C), d embedding dimension (D).
    """

    def __init__(self, config: AttentionMaskerConfig) -> None:
        super().__init__()
        levels, channels, dims = config.num_levels, config.channels, config.out_dim
        self.config = config
        self.token_norm = nn.LayerNorm(channels)
        # Queries start at the scale of the normalised tokens.
        self.queries = nn.Parameter(torch.randn(levels, channels))
        self.query_proj = nn.Linear(channels, channels)
        self.key_proj = nn.Linear(channels, channels, bias=False)
        self.value_proj = nn.Linear(channels, channels)
        self.out_proj = nn.Linear(channels, channels)
        for projection in (self.query_proj, self.key_proj, self.value_proj):
            # The initialisation nn.MultiheadAttention gives its input projections.
            nn.init.xavier_uniform_(projection.weight)
            if projection.bias is not None:
                nn.init.zeros_(projection.bias)
        # W_l for all levels at once, initialised like nn.Linear's weight.
        bound = 1.0 / math.sqrt(channels)
        self.level_weight = nn.Parameter(
            torch.empty(levels, channels, dims).uniform_(-bound, bound)
        )
        self.level_bias = nn.Parameter(torch.zeros(levels, dims))

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 3 or tokens.shape[2] != self.config.channels:
            raise ValueError(
                f"expected tokens of shape (B, T, {self.config.channels}), got "
                f"{tuple(tokens.shape)}; AttentionMaskerConfig.channels must equal the "
                f"encoder's out_dim"
            )

    def _head_weight(self, projection: nn.Linear) -> Tensor:
        """Split a projection weight by head. Shape: (C, C) -> (H, C / H, C)."""
        heads, channels = self.config.num_heads, self.config.channels
        return projection.weight.view(heads, channels // heads, channels)

    def _attention_weights(self, keys: Tensor) -> Tensor:
        """Softmax attention of every level and head over the tokens.

        Shape: keys (B, T, C) -> (B, L, H, T), each row summing to 1.
        """
        levels, channels = self.queries.shape
        heads = self.config.num_heads
        head_dim = channels // heads
        queries = self.query_proj(self.queries).view(levels, heads, head_dim)
        # q_h . (W_k,h k) = (W_k,h^T q_h) . k, so the keys themselves are never projected.
        folded = torch.einsum("lhe,hec->lhc", queries, self._head_weight(self.key_proj))
        scores = torch.einsum("btc,lhc->blht", keys, folded) / math.sqrt(head_dim)
        return scores.softmax(dim=-1)

    def _attend_values(self, keys: Tensor, weights: Tensor) -> Tensor:
        """Weighted sum of the projected values. Shape: (B, T, C), (B, L, H, T) -> (B, L, C)."""
        batch, tokens_per_sample, channels = keys.shape
        levels, heads = weights.shape[1], weights.shape[2]
        if levels * heads < channels:
            # The weights of each row sum to 1, so the value bias passes through unchanged.
            averaged = torch.einsum("blht,btc->blhc", weights, keys)
            values = torch.einsum("blhc,hec->blhe", averaged, self._head_weight(self.value_proj))
            values = values + self.value_proj.bias.view(heads, channels // heads)
        else:
            projected = self.value_proj(keys).view(batch, tokens_per_sample, heads, -1)
            values = torch.einsum("blht,bthe->blhe", weights, projected)
        return values.reshape(batch, levels, channels)

    def level_features(
        self, tokens: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend with every level's query over the tokens.

        Returns:
            u (B, L, C), and when ``need_weights`` the attention weights averaged over
            heads (B, L, T), each row summing to 1; otherwise None.

        Raises:
            ValueError: ``tokens`` is not (B, T, channels).
        """
        self._check_tokens(tokens)
        keys = self.token_norm(tokens)
        weights = self._attention_weights(keys)
        features = self.out_proj(self._attend_values(keys, weights))
        return features, weights.mean(dim=2) if need_weights else None

    def forward(self, tokens: Tensor) -> Tensor:
        """Compute the soft masks. Shape: (B, T, C) -> (B, L, D), values in (0, 1).

        Raises:
            ValueError: ``tokens`` is not (B, T, channels).
        """
        features, _ = self.level_features(tokens)
        logits = torch.einsum("blc,lcd->bld", features, self.level_weight)
        return torch.sigmoid((logits + self.level_bias) / self.config.mask_temperature)


def overlap_penalty(masks: Tensor) -> Tensor:
    """Compute the mean overlap of the masks of different levels.

    The value is the mean over ordered level pairs l != k and over the batch of
    <m_l, m_k> / D. It is 0 for a single level, 1 for masks of all ones, and 0 for
    masks with disjoint supports.

    Args:
        masks: Soft masks in [0, 1]. Shape: (B, L, D).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: ``masks`` is not three-dimensional.
    """
    if masks.dim() != 3:
        raise ValueError(f"expected masks of shape (B, L, D), got {tuple(masks.shape)}")
    _, levels, dims = masks.shape
    if levels < 2:
        return masks.new_zeros(())
    gram = torch.einsum("bld,bkd->blk", masks, masks) / dims
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (off_diagonal / (levels * (levels - 1))).mean()
