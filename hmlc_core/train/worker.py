"""The per-worker training function that Ray Train's TorchTrainer runs on every worker.

Stages: read the config, find this worker's rank and device, build the
:class:`~hmlc_core.train.loop.TrainingSession`, resume from a checkpoint when one exists,
then train epoch by epoch. Every epoch each worker calls ``ray.train.report`` once
(Ray Train V2 requires all workers to report the same number of times). Every worker
reports rank 0's metrics, and only rank 0 attaches the checkpoint.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from hmlc_core.train.checkpoint import load_checkpoint, save_checkpoint
from hmlc_core.train.config import RunConfig
from hmlc_core.train.loop import TrainingSession, WorkerInfo, share_metrics

logger = logging.getLogger(__name__)

# Keys of the train_loop_config dict that build_trainer passes to every worker.
RUN_KEY = "run"
RESUME_KEY = "resume_from"

# (metrics, session, attach_checkpoint) -> None
Reporter = Callable[[dict[str, float], TrainingSession, bool], None]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train one run on this Ray Train worker.

    Args:
        config: ``{"run": RunConfig.to_dict()}``, optionally with ``"resume_from"``: a
            checkpoint (or its folder) to start from when Ray has no checkpoint of this run.
    """
    run = RunConfig.from_dict(config[RUN_KEY])
    info = ray_worker_info(run)
    session = TrainingSession(run, info)
    resume_session(session, config.get(RESUME_KEY))
    run_epochs(session, report_to_ray)


def ray_worker_info(run: RunConfig) -> WorkerInfo:
    """Return this worker's rank, world size and device from the Ray Train context."""
    context = ray.train.get_context()
    device = ray.train.torch.get_device() if run.scaling.use_gpu else torch.device("cpu")
    return WorkerInfo(
        rank=context.get_world_rank(), world_size=context.get_world_size(), device=device
    )


def resume_session(
    session: TrainingSession, resume_from: ray.train.Checkpoint | str | os.PathLike[str] | None
) -> None:
    """Load the run's latest Ray checkpoint, else ``resume_from``, else start fresh.

    Ray provides a checkpoint after a worker failure (FailureConfig) and when a run is
    started again with the same storage path and name.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            session.load_state(load_checkpoint(folder))
        logger.info("resumed from the run's checkpoint after epoch %d", session.epoch)
    elif resume_from is not None:
        if not isinstance(resume_from, ray.train.Checkpoint):
            resume_from = ray.train.Checkpoint.from_directory(os.fspath(resume_from))
        with resume_from.as_directory() as folder:
            session.load_state(load_checkpoint(folder))
        logger.info("resumed from %s after epoch %d", resume_from.path, session.epoch)


def run_epochs(session: TrainingSession, report: Reporter) -> None:
    """Train the remaining epochs, reporting metrics (and a checkpoint) after each.

    When the run has no epoch left (a finished run resumed), the final evaluation is
    reported once without a checkpoint.
    """
    run, info = session.run, session.info
    if session.epoch >= run.epochs:
        metrics = share_metrics(session.final_evaluation(), info)
        metrics["epoch"] = session.epoch
        report(metrics, session, False)
        return
    while session.epoch < run.epochs:
        metrics = session.train_epoch()
        metrics.update(session.update_masks())
        evaluated = session.evaluate_epoch()
        if session.epoch == run.epochs:
            evaluated.update(session.final_evaluation())
        metrics.update(evaluated)
        metrics = share_metrics(metrics, info)
        metrics["epoch"] = session.epoch
        report(metrics, session, True)


def report_to_ray(
    metrics: dict[str, float], session: TrainingSession, attach_checkpoint: bool = True
) -> None:
    """Call ``ray.train.report``; rank 0 attaches a checkpoint of the session when asked.

    The checkpoint is written atomically into a temporary folder and uploaded by Ray
    before ``report`` returns (synchronous upload). Ray registers it as the run's latest
    checkpoint only after the upload finishes, so a crash during a save leaves the
    previous checkpoint as the latest one.
    """
    if not (attach_checkpoint and session.info.is_rank_zero):
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="hmlc-checkpoint-") as scratch:
        folder = save_checkpoint(Path(scratch) / "checkpoint", session.state())
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(os.fspath(folder)),
            checkpoint_dir_name=f"checkpoint_epoch_{session.epoch:04d}",
        )
