"""Driver side: build the Ray Train TorchTrainer for a run, run it, and probe a checkpoint."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from hmlc_core.data import load_splits
from hmlc_core.models import build_model
from hmlc_core.train.checkpoint import load_model_state
from hmlc_core.train.config import RunConfig, ScalingSettings
from hmlc_core.train.loop import model_config_for, probe_model
from hmlc_core.train.worker import RESUME_KEY, RUN_KEY, train_loop_per_worker


def ray_scaling_config(settings: ScalingSettings) -> ScalingConfig:
    """Translate ScalingSettings into Ray Train's ScalingConfig."""
    resources = {"CPU": float(settings.cpus_per_worker)}
    if settings.use_gpu:
        resources["GPU"] = float(settings.gpus_per_worker)
    return ScalingConfig(
        num_workers=settings.num_workers,
        use_gpu=settings.use_gpu,
        resources_per_worker=resources,
    )


def build_trainer(
    run: RunConfig,
    *,
    storage_path: str,
    name: str,
    callbacks: Sequence[ray.train.UserCallback] | None = None,
    resume_checkpoint: Checkpoint | str | os.PathLike[str] | None = None,
    failure_max: int = 0,
    num_to_keep: int | None = 2,
    train_loop: Callable[[dict[str, Any]], None] | None = None,
    extra_loop_config: Mapping[str, Any] | None = None,
) -> TorchTrainer:
    """Build the TorchTrainer that pretrains ``run``.

    Workers use gloo on CPU and NCCL on GPU. Ray Train V2 restores the latest
    checkpoint of a run whose ``storage_path`` and ``name`` already exist, so starting
    a trainer again under the same name continues that run. ``resume_checkpoint``
    starts a new run from a checkpoint instead.

    Args:
        run: The run's configuration.
        storage_path: Folder (or URI) where Ray stores results and checkpoints.
        name: Run name; the run's folder is ``storage_path/name``.
        callbacks: Ray Train ``UserCallback``s, called on the driver after every report.
        resume_checkpoint: A checkpoint (or its folder) to start from when the run has
            none of its own.
        failure_max: Worker-group failures to recover from, each time from the latest
            checkpoint.
        num_to_keep: Most recent checkpoints kept in storage; None keeps all.
        train_loop: The per-worker function, by default :func:`train_loop_per_worker`.
            A caller that wraps it (to start per-worker monitoring, say) passes the
            wrapper, which must call :func:`train_loop_per_worker` with its config.
        extra_loop_config: Entries added to the per-worker config for such a wrapper.
    """
    loop_config: dict[str, object] = {**(extra_loop_config or {}), RUN_KEY: run.to_dict()}
    if resume_checkpoint is not None:
        if not isinstance(resume_checkpoint, Checkpoint):
            resume_checkpoint = Checkpoint.from_directory(os.fspath(resume_checkpoint))
        loop_config[RESUME_KEY] = resume_checkpoint
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        callbacks=list(callbacks) if callbacks else None,
        failure_config=FailureConfig(max_failures=failure_max),
        checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
    )
    return TorchTrainer(
        train_loop or train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if run.scaling.use_gpu else "gloo"),
        scaling_config=ray_scaling_config(run.scaling),
        run_config=run_config,
    )


def run_training(
    run: RunConfig,
    *,
    storage_path: str,
    name: str,
    callbacks: Sequence[ray.train.UserCallback] | None = None,
    resume_checkpoint: Checkpoint | str | os.PathLike[str] | None = None,
    failure_max: int = 0,
    num_to_keep: int | None = 2,
) -> ray.train.Result:
    """Build the trainer for ``run`` and train it to the end (see :func:`build_trainer`).

    Raises:
        ray.train.TrainingFailedError: a worker failed more often than ``failure_max``
            (for example with a non-finite loss).
    """
    trainer = build_trainer(
        run,
        storage_path=storage_path,
        name=name,
        callbacks=callbacks,
        resume_checkpoint=resume_checkpoint,
        failure_max=failure_max,
        num_to_keep=num_to_keep,
    )
    return trainer.fit()


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    run: RunConfig,
    split: Literal["val", "test"] = "val",
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Probe the encoder stored in a checkpoint folder, in this process.

    The probe is fitted on the training split (``run.probe_train_size`` images) with
    its weight decay chosen on validation, exactly as at the end of training. For
    ``split="test"`` the fitted probe is then evaluated on the test split; use it
    only for the final evaluation of a chosen configuration.

    Args:
        checkpoint_dir: A checkpoint folder written by the worker (``Result.checkpoint.path``).
        run: The run's configuration (model, data, probe settings).
        split: "val" returns ``val/probe_acc*``; "test" returns ``test/probe_acc*``.
        device: Where features are extracted; None picks CUDA when available.

    Raises:
        ValueError: ``split`` is not "val" or "test".
        CheckpointError: the folder is not a complete checkpoint.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split={split!r} is invalid; use 'val' or 'test'")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = load_splits(run.data)
    model = build_model(model_config_for(run, splits.train.hierarchy.num_levels))
    model.load_state_dict(load_model_state(checkpoint_dir))
    model.to(target)
    metrics = probe_model(
        model,
        run,
        splits.train,
        splits.val,
        target,
        include_val=split == "val",
        include_test=split == "test",
    )
    prefix = f"{split}/"
    return {key: value for key, value in metrics.items() if key.startswith(prefix)}
