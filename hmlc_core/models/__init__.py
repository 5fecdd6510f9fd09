"""Encoders, projection head, A-HMLC attention masker and the contrastive model (pure PyTorch)."""

from hmlc_core.models.attention import (
    AttentionMasker,
    AttentionMaskerConfig,
    overlap_penalty,
    valid_attention_heads,
)
from hmlc_core.models.base import Encoder, EncoderOutput
from hmlc_core.models.encoders import EncoderConfig, build_encoder
from hmlc_core.models.heads import ProjectionHead
from hmlc_core.models.model import ContrastiveModel, ModelConfig, ModelOutput, build_model
from hmlc_core.models.pointnet import PointNetEncoder
from hmlc_core.models.resnet import ResNetEncoder
from hmlc_core.models.small_cnn import SmallCNNEncoder

__all__ = [
    "AttentionMasker",
    "AttentionMaskerConfig",
    "ContrastiveModel",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "ModelConfig",
    "ModelOutput",
    "PointNetEncoder",
    "ProjectionHead",
    "ResNetEncoder",
    "SmallCNNEncoder",
    "build_encoder",
    "build_model",
    "overlap_penalty",
    "valid_attention_heads",
]
