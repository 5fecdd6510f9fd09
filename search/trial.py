"""The Tune function trainable: one trial launches one Ray Train TorchTrainer.

Metric flow (one path): each worker calls ``ray.train.report``; Ray Train calls
:class:`TrialReportCallback` on its controller, which logs the report to the trial's
MLflow child run and forwards it to Tune (``TuneReportCallback``), where ASHA and
Optuna read it.

Failures: the trainer of a trial is named after the Ray trial id and stored under the
search's folder. When Tune retries a crashed trial (``FailureConfig``) or a restored
search restarts an unfinished one, the new trainer has the same name, so Ray Train V2
finds the run's checkpoint snapshot and the workers continue from the latest
checkpoint instead of epoch 0. The child MLflow run is looked up by the trial id, so
the trial continues its own run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from hmlc_core.train.config import RunConfig
from hmlc_core.train.trainer import build_trainer

from search import tracking
from search.cli import FAIL_ALWAYS
from search.mapping import apply_sample, sample_params

logger = logging.getLogger(__name__)



class InjectedTrialError(RuntimeError):
    """Raised on purpose by the ``--debug-fail-trial`` hook."""


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """Settings every trial needs besides its sampled knobs (passed with ``tune.with_parameters``).

    Attributes:
        base_run: ``RunConfig.to_dict()`` of the run every trial starts from.
        num_levels: levels of the dataset's hierarchy.
        tracking_uri: MLflow tracking URI (absolute).
        experiment_id: MLflow experiment id.
        parent_run_id: the search's parent run.
        sweep_id: the search's id (tag ``sweep_id``).
        method: method name (tag).
        dataset: dataset name (tag).
        train_storage: folder or URI where the trials' Ray Train runs are stored.
        fail_mode: debug hook mode (``search.cli.FAIL_MODES``), or None.
        fail_marker_dir: local folder for the debug hook's claim and marker files.
    """

    base_run: dict[str, Any]
    num_levels: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    method: str
    dataset: str
    train_storage: str
    fail_mode: str | None = None
    fail_marker_dir: str | None = None


class TrialReportCallback(TuneReportCallback):
    """Log every Ray Train report to the trial's MLflow run, then forward it to Tune.

    Runs on the Ray Train controller of the trial. The MLflow client is created there
    on first use, because a client does not travel between processes.
    """

    def __init__(self, tracking_uri: str, run_id: str, fail_marker: str | None = None) -> None:
        super().__init__()
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.fail_marker = fail_marker
        self._client: Any = None

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        report = metrics[0]
        if self._client is None:
            self._client = tracking.make_client(self.tracking_uri)
        step = int(report.get("epoch", 0))
        try:
            tracking.log_epoch_metrics(self._client, self.run_id, report, step=step)
        except Exception:  # noqa: BLE001 - a tracking outage must not stop training
            logger.exception("logging epoch %d to MLflow run %s failed", step, self.run_id)
        super().after_report(run_context, metrics, checkpoint)
        if self.fail_marker is not None and not os.path.exists(self.fail_marker):
            Path(self.fail_marker).touch()
            raise InjectedTrialError(
                f"debug hook: trial fails once after epoch {step} (--debug-fail-trial)"
            )


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Train one sampled configuration and track it in MLflow (the Tune trainable).

    Args:
        config: the trial's knob values (short names), from the search space.
        context: the search's fixed settings.
    """
    trial_id = tune.get_context().get_trial_id()
    run = apply_sample(RunConfig.from_dict(context.base_run), config, context.num_levels)
    client = tracking.make_client(context.tracking_uri)
    run_id = tracking.start_or_resume_trial_run(
        client,
        context.experiment_id,
        parent_run_id=context.parent_run_id,
        sweep_id=context.sweep_id,
        trial_id=trial_id,
        run_name=trial_id,
        tags={tracking.TAG_METHOD: context.method, tracking.TAG_DATASET: context.dataset},
        params=sample_params(config),
    )
    tracking.log_yaml(client, run_id, run.to_dict(), "config/run_config.yaml")
    fail_marker = _debug_failure(context, trial_id)
    callback = TrialReportCallback(context.tracking_uri, run_id, fail_marker=fail_marker)
    trainer = build_trainer(
        run,
        storage_path=context.train_storage,
        name=trial_id,
        callbacks=[callback],
        failure_max=0,
        train_loop=train_loop_with_system_metrics,
        extra_loop_config={_TRACKING_URI_KEY: context.tracking_uri, _RUN_ID_KEY: run_id},
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        log_trial_artifacts(client, run_id, result.checkpoint, run)


_TRACKING_URI_KEY = "mlflow_tracking_uri"
_RUN_ID_KEY = "mlflow_run_id"


def train_loop_with_system_metrics(config: dict[str, Any]) -> None:
    """Run the training loop on one Ray Train worker while MLflow samples its system metrics.

    Each worker logs under its own node id (``worker0``, ``worker1``, ...) into the
    trial's run. A monitor that cannot start is logged and training goes on without it.
    """
    from hmlc_core.train.worker import train_loop_per_worker
    from search.reports import start_system_metrics, worker_node_id

    monitor = None
    rank = ray.train.get_context().get_world_rank()
    try:
        monitor = start_system_metrics(
            config[_TRACKING_URI_KEY], config[_RUN_ID_KEY], worker_node_id(rank)
        )
    except Exception:  # noqa: BLE001 - monitoring must not stop training
        logger.exception("starting system metrics of worker %d failed; training goes on", rank)
    try:
        train_loop_per_worker(config)
    finally:
        if monitor is not None:
            monitor.finish()


def _debug_failure(context: TrialContext, trial_id: str) -> str | None:
    """Apply the ``--debug-fail-trial`` hook; return the fail-once marker path, if any.

    The first trial that starts claims the failure by creating a claim file that contains
    its id, so exactly one trial fails, also when it is retried.
    """
    if context.fail_mode is None or context.fail_marker_dir is None:
        return None
    marker_dir = Path(context.fail_marker_dir)
    marker_dir.mkdir(parents=True, exist_ok=True)
    claim = marker_dir / "failing-trial"
    try:
        with open(claim, "x") as stream:
            stream.write(trial_id)
    except FileExistsError:
        if claim.read_text() != trial_id:
            return None
    if context.fail_mode == FAIL_ALWAYS:
        raise InjectedTrialError(f"debug hook: trial {trial_id} always fails (--debug-fail-trial)")
    return str(marker_dir / f"failed-once-{trial_id}")


def log_trial_artifacts(client: Any, run_id: str, checkpoint: Any, run: RunConfig) -> None:
    """Compute and log the mask heatmaps and the probe confusion summary of a trial.

    On GPU runs the work goes to a Ray task with one GPU, because the trial itself
    reserves no accelerator.
    """
    from search.artifacts import compute_trial_artifacts

    try:
        with checkpoint.as_directory() as folder:
            if run.scaling.use_gpu:
                remote = ray.remote(num_cpus=1, num_gpus=1)(compute_trial_artifacts)
                artifacts = ray.get(remote.remote(folder, run, "cuda"))
            else:
                artifacts = compute_trial_artifacts(folder, run)
    except Exception as error:  # noqa: BLE001 - artifacts must not fail a trained trial
        logger.exception("computing the artifacts of MLflow run %s failed", run_id)
        client.set_tag(run_id, "artifacts_error", f"{type(error).__name__}: {error}"[:5000])
        return
    if artifacts.gmm_masks is not None:
        tracking.log_mask_heatmap(
            client,
            run_id,
            artifacts.gmm_masks,
            "masks/gmm_hard_masks.png",
            "G-HMLC hard masks at the end of training (1 = dimension used by the level)",
            artifacts.level_names,
        )
    if artifacts.soft_masks_mean is not None:
        tracking.log_mask_heatmap(
            client,
            run_id,
            artifacts.soft_masks_mean,
            "masks/attention_soft_masks_mean.png",
            "A-HMLC soft masks, mean over validation images",
            artifacts.level_names,
        )
    client.log_dict(run_id, {"levels": artifacts.confusion}, "probe/confusion_summary.json")
    log_embedding_plots_safely(client, run_id, artifacts)


def log_embedding_plots_safely(client: Any, run_id: str, artifacts: Any) -> None:
    """Log the per-level 2-D embedding plots of the validation subset; a failure is only logged."""
    from search.reports import log_embedding_plots

    try:
        log_embedding_plots(
            client, run_id, artifacts.val_features, artifacts.val_paths, artifacts.hierarchy
        )
    except Exception as error:  # noqa: BLE001 - a plot must not fail a trained trial
        logger.exception("logging the embedding plots of MLflow run %s failed", run_id)
        client.set_tag(run_id, "embedding_plot_error", f"{type(error).__name__}: {error}"[:5000])
