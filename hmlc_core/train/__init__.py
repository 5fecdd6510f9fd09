"""Pretraining on Ray Train V2: run configuration, per-worker loop, checkpoints, trainer.

Import Ray-dependent names from their modules (``hmlc_core.train.trainer``,
``hmlc_core.train.worker``); this package only re-exports the configuration, so that
importing it does not import Ray.
"""

from hmlc_core.train.config import (
    MethodConfig,
    OptimConfig,
    RunConfig,
    ScalingSettings,
    default_run_config,
)

__all__ = ["MethodConfig", "OptimConfig", "RunConfig", "ScalingSettings", "default_run_config"]
