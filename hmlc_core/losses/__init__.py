"""Contrastive losses: SupCon, HMC, HMCE and the masked G-HMLC / A-HMLC variants.

All losses are pure functions of tensors; distributed gathering is an explicit
``gather_distributed`` argument and a no-op without a process group.
"""

from hmlc_core.losses.distributed import gather_with_grad
from hmlc_core.losses.feature_identification import (
    GMMMaskConfig,
    GMMMaskResult,
    MaskFallbackWarning,
    fisher_ratios,
    fit_gmm_masks,
)
from hmlc_core.losses.hierarchical import (
    HierarchicalLossOutput,
    apply_constraint,
    hierarchical_loss,
    hierarchical_loss_terms,
)
from hmlc_core.losses.supcon import supcon_loss
from hmlc_core.losses.weights import default_level_weights, imbalance_weights

__all__ = [
    "GMMMaskConfig",
    "GMMMaskResult",
    "MaskFallbackWarning",
    "fisher_ratios",
    "fit_gmm_masks",
    "HierarchicalLossOutput",
    "apply_constraint",
    "default_level_weights",
    "gather_with_grad",
    "hierarchical_loss",
    "hierarchical_loss_terms",
    "imbalance_weights",
    "supcon_loss",
]
