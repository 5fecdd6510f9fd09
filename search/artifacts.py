"""Numbers a researcher opens next to a trial's metrics, computed from its final checkpoint.

- G-HMLC: the hard masks in use at the end of training, a (levels x dimensions) matrix.
- A-HMLC: the soft masks averaged over validation images, also (levels x dimensions).
- Every method: the per-level confusion summary of a linear probe on the validation split.

The probe here is refitted from the checkpoint with the run's probe settings and subset
sizes, on subsets drawn with this module's own seed offsets.
NOTE: those subsets differ from the ones the training loop drew, so the summary's
accuracies can differ slightly from the run's ``val/probe_acc``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from hmlc_core.data import load_splits
from hmlc_core.models import build_model
from hmlc_core.train.checkpoint import load_checkpoint
from hmlc_core.train.config import RunConfig
from hmlc_core.train.evaluation import dataset_features, fit_probe
from hmlc_core.train.loop import model_config_for
from hmlc_core.train.sharding import fixed_subset

SOFT_MASK_IMAGES = 512
_PROBE_TRAIN_SEED_OFFSET = 7919
_PROBE_VAL_SEED_OFFSET = 7927
_SOFT_MASK_SEED_OFFSET = 7933


@dataclasses.dataclass
class TrialArtifacts:
    """Mask matrices and probe confusion summary of one trial.

    Attributes:
        level_names: hierarchy level names, coarsest first.
        gmm_masks: G-HMLC hard masks, or None for other methods. Shape: (L, D).
        soft_masks_mean: A-HMLC soft masks averaged over validation images, or None.
            Shape: (L, D).
        confusion: per-level probe confusion summaries (``ProbeResult.confusion_summary``
            on the validation subset), coarsest first.
        val_features: pooled encoder features of that validation subset, on the CPU.
            Shape: (N, C).
        val_paths: label paths of the same images. Shape: (N, L).
        hierarchy: the dataset's label hierarchy (class names for plot legends).
    """

    level_names: tuple[str, ...]
    gmm_masks: list[list[float]] | None
    soft_masks_mean: list[list[float]] | None
    confusion: list[dict[str, Any]]
    val_features: torch.Tensor
    val_paths: torch.Tensor
    hierarchy: Any


def compute_trial_artifacts(checkpoint_dir: str | Path, run: RunConfig, device: str = "cpu") -> TrialArtifacts:
    """Load a trial's final checkpoint and compute its mask matrices and confusion summary."""
    state = load_checkpoint(checkpoint_dir)
    splits = load_splits(run.data)
    hierarchy = splits.train.hierarchy
    target = torch.device(device)
    model = build_model(model_config_for(run, hierarchy.num_levels))
    model.load_state_dict(state.model)
    model.to(target).eval()
    gmm_masks = state.masks.float().tolist() if state.masks is not None else None
    soft = mean_soft_masks(model, splits.val, run, target) if model.masker is not None else None
    confusion, val_features, val_paths = probe_confusion(model, splits.train, splits.val, run, target)
    return TrialArtifacts(
        level_names=tuple(hierarchy.level_names),
        gmm_masks=gmm_masks,
        soft_masks_mean=soft,
        confusion=confusion,
        val_features=val_features,
        val_paths=val_paths,
        hierarchy=hierarchy,
    )


def mean_soft_masks(model: Any, val: Any, run: RunConfig, device: torch.device) -> list[list[float]]:
    """Average the A-HMLC soft masks over up to 512 validation images.

    Shape:
        output: (L, D) as nested lists.
    """
    from hmlc_core.data import build_eval_transform

    index = fixed_subset(len(val), SOFT_MASK_IMAGES, run.seed + _SOFT_MASK_SEED_OFFSET)
    subset = val.subset(index)
    transform = build_eval_transform(subset)
    sums: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(subset), run.eval_batch_size):
            batch = transform(subset.inputs[start : start + run.eval_batch_size].to(device))
            masks = model(batch).soft_masks  # (B, L, D)
            batch_sum = masks.sum(dim=0)
            sums = batch_sum if sums is None else sums + batch_sum
    assert sums is not None
    return (sums / len(subset)).cpu().tolist()


def probe_confusion(
    model: Any, train: Any, val: Any, run: RunConfig, device: torch.device
) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor]:
    """Fit the run's linear probe and summarise its validation errors per level.

    Returns:
        The per-level confusion summaries, and the validation features (N, C) and label
        paths (N, L) they were computed on, both on the CPU.
    """
    train_index = fixed_subset(len(train), run.probe_train_size, run.seed + _PROBE_TRAIN_SEED_OFFSET)
    val_index = fixed_subset(len(val), run.probe_val_size, run.seed + _PROBE_VAL_SEED_OFFSET)
    probe_train, probe_val = train.subset(train_index), val.subset(val_index)
    probe, _ = fit_probe(model, probe_train, probe_val, run.probe, run.eval_batch_size, device)
    features = dataset_features(model, probe_val, run.eval_batch_size, device)
    target = run.probe.device or str(device)
    confusion = probe.confusion_summary(
        features.to(target),
        probe_val.paths.to(target),
        class_names=probe_val.hierarchy.class_names,
    )
    return confusion, features.cpu(), probe_val.paths.cpu()
