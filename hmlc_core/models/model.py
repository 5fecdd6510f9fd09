"""The contrastive model: encoder f, projection head g and the optional A-HMLC masker."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from hmlc_core.config import ConfigBase, require
from hmlc_core.models.attention import AttentionMasker, AttentionMaskerConfig
from hmlc_core.models.encoders import Encoder, EncoderConfig, build_encoder
from hmlc_core.models.heads import ProjectionHead


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigBase):
    """Configuration of the contrastive model.

    Attributes:
        encoder: The encoder f.
        projection_dim: Embedding width D of z.
        hidden_dim: Hidden width of the projection head; None uses the encoder width d_h.
        attention: The A-HMLC masker, or None for every other method. Its
            ``channels`` must equal the encoder width and its ``out_dim`` must equal
            ``projection_dim``; ``with_attention`` fills both.
    """

    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    projection_dim: int = 128
    hidden_dim: int | None = None
    attention: AttentionMaskerConfig | None = None

    def validate(self) -> None:
        require(
            isinstance(self.encoder, EncoderConfig),
            f"ModelConfig.encoder must be an EncoderConfig, got {type(self.encoder).__name__}",
        )
        require(
            isinstance(self.projection_dim, int) and self.projection_dim >= 1,
            f"ModelConfig.projection_dim={self.projection_dim!r} is invalid; "
            f"it must be an int >= 1",
        )
        require(
            self.hidden_dim is None or (isinstance(self.hidden_dim, int) and self.hidden_dim >= 1),
            f"ModelConfig.hidden_dim={self.hidden_dim!r} is invalid; "
            f"it must be None or an int >= 1",
        )
        if self.attention is not None:
            self._validate_attention(self.attention)

    def _validate_attention(self, attention: AttentionMaskerConfig) -> None:
        require(
            isinstance(attention, AttentionMaskerConfig),
            f"ModelConfig.attention must be an AttentionMaskerConfig or None, "
            f"got {type(attention).__name__}",
        )
        require(
            attention.channels == self.encoder.out_dim,
            f"ModelConfig.attention.channels={attention.channels} does not match the width "
            f"{self.encoder.out_dim} of encoder {self.encoder.name}; set channels to "
            f"{self.encoder.out_dim}",
        )
        require(
            attention.out_dim == self.projection_dim,
            f"ModelConfig.attention.out_dim={attention.out_dim} does not match "
            f"projection_dim={self.projection_dim}; set both to the same value",
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build the config from a mapping; ``attention`` may be a mapping or None.

        Raises:
            ConfigError: A key is unknown or a value is invalid, also in nested configs.
        """
        values = dict(values)
        # ConfigBase.from_dict recurses only into fields typed as a plain config
        # class, not into an optional one such as ``attention``.
        if isinstance(values.get("attention"), Mapping):
            values["attention"] = AttentionMaskerConfig.from_dict(values["attention"])
        return super().from_dict(values)

    def with_attention(
        self, num_levels: int, num_heads: int = 4, mask_temperature: float = 1.0
    ) -> ModelConfig:
        """Return a copy with an attention masker sized to the encoder and the head."""
        attention = AttentionMaskerConfig(
            num_levels=num_levels,
            channels=self.encoder.out_dim,
            out_dim=self.projection_dim,
            num_heads=num_heads,
            mask_temperature=mask_temperature,
        )
        return self.replace(attention=attention)


class ModelOutput(NamedTuple):
    """Output of the contrastive model.

    Attributes:
        pooled: Pooled encoder feature h (used by the linear probe). Shape: (B, C).
        z: L2-normalised embedding g(h) / ||g(h)||. Shape: (B, D).
        soft_masks: A-HMLC soft masks, or None without a masker. Shape: (B, L, D).
    """

    pooled: Tensor
    z: Tensor
    soft_masks: Tensor | None


class ContrastiveModel(nn.Module):
    """Encoder f, projection head g and, for A-HMLC, the attention masker.

    Attributes:
        encoder: The encoder f.
        head: The projection head g.
        masker: The attention masker, or None.
    """

    def __init__(
        self, encoder: Encoder, head: ProjectionHead, masker: AttentionMasker | None = None
    ) -> None:
        super().__init__()
        if head.in_dim != encoder.out_dim:
            raise ValueError(
                f"projection head in_dim={head.in_dim} does not match "
                f"encoder out_dim={encoder.out_dim}; build the head with in_dim=encoder.out_dim"
            )
        if masker is not None:
            _check_masker_fits(masker.config, encoder.out_dim, head.out_dim)
        self.encoder = encoder
        self.head = head
        self.masker = masker

    def forward(self, x: Tensor) -> ModelOutput:
        """Encode, project and normalise a batch, and add the soft masks when a masker exists.

        The encoder returns its token map only when a masker needs it.

        Shape:
            x: (B, C_in, H, W) images or (B, P, C_in) point clouds.
            output: pooled (B, C), z (B, D), soft_masks (B, L, D) or None.
        """
        encoded = self.encoder(x, return_tokens=self.masker is not None)
        z = F.normalize(self.head(encoded.pooled), dim=1)
        soft_masks = None
        if self.masker is not None:
            soft_masks = self.masker(encoded.tokens)
        return ModelOutput(pooled=encoded.pooled, z=z, soft_masks=soft_masks)

    def features(self, x: Tensor) -> Tensor:
        """Compute the pooled feature h for the linear probe. Shape: (B, ...) -> (B, C)."""
        return self.encoder(x).pooled


def _check_masker_fits(config: AttentionMaskerConfig, channels: int, dims: int) -> None:
    if config.channels != channels or config.out_dim != dims:
        raise ValueError(
            f"attention masker (channels={config.channels}, out_dim={config.out_dim}) does not "
            f"fit encoder out_dim={channels} and head out_dim={dims}; build it with "
            f"ModelConfig.with_attention"
        )


def build_model(config: ModelConfig) -> ContrastiveModel:
    """Build the randomly initialised model that ``config`` describes."""
    encoder = build_encoder(config.encoder)
    head = ProjectionHead(encoder.out_dim, config.hidden_dim, config.projection_dim)
    masker = None if config.attention is None else AttentionMasker(config.attention)
    return ContrastiveModel(encoder, head, masker)
