"""All MLflow code of the project: the search's parent run and one child run per trial.

Layout (a later tool reads it, so keep names stable):

- Experiment: ``--experiment-name``; one experiment can contain searches of several
  methods, distinguished by the ``method`` tag.
- Parent run, one per search: tags ``method``, ``dataset``, ``budget``, ``seed``,
  ``sweep_id`` (a uuid4 hex), ``git_commit``, ``run_kind=search``; params with the same
  values plus one ``space.<knob>`` param per knob; artifacts ``search_space.yaml``,
  ``budget.yaml``, ``leaderboard.csv``; metrics ``test/probe_acc*`` of the best trial.
- Child run, one per Ray Tune trial (tag ``mlflow.parentRunId`` nests it in the UI):
  tags ``method``, ``dataset``, ``sweep_id``, ``ray_trial_id``, ``run_kind=trial`` and
  ``status`` (running, completed, early-stopped or failed); params are the trial's
  knobs under their short names; metrics are every numeric key the training loop
  reports, logged per epoch (step = epoch), plus ``val/probe_acc_best`` and
  ``val/probe_acc_best_epoch``; artifacts ``config/run_config.yaml`` and, when the
  training wrote them, mask heatmaps and the probe confusion summary.

Every call goes through :class:`mlflow.MlflowClient` with an explicit run id, so no
process-global active run is involved and the same code runs in the Tune driver, in a
trial actor and in the Ray Train controller.
"""

from __future__ import annotations

import io
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

logger = logging.getLogger(__name__)

DEFAULT_DB_NAME = "mlflow.db"
TAG_METHOD = "method"
TAG_DATASET = "dataset"
TAG_SWEEP = "sweep_id"
TAG_TRIAL = "ray_trial_id"
TAG_STATUS = "status"
TAG_KIND = "run_kind"
TAG_PARENT = "mlflow.parentRunId"
STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_EARLY_STOPPED = "early-stopped"
STATUS_FAILED = "failed"
TRIAL_STATUSES = (STATUS_RUNNING, STATUS_COMPLETED, STATUS_EARLY_STOPPED, STATUS_FAILED)
OBJECTIVE = "val/probe_acc"
# MLflow run status of each trial status.
_RUN_STATUS = {
    STATUS_COMPLETED: "FINISHED",
    STATUS_EARLY_STOPPED: "KILLED",
    STATUS_FAILED: "FAILED",
}
_MAX_PARAM_LENGTH = 6000
_LOCKED_RETRIES = 4


def default_tracking_uri(directory: str | Path | None = None) -> str:
    """Return the default tracking URI: a SQLite file ``mlflow.db`` in ``directory`` (cwd)."""
    base = Path(directory) if directory is not None else Path.cwd()
    return f"sqlite:///{(base / DEFAULT_DB_NAME).resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    """Return ``uri`` with any local path made absolute, so every Ray process agrees.

    A bare path ending in ``.db`` becomes a SQLite URI. Trials run with another working
    directory than the driver, so a relative SQLite or ``file:`` path would point each
    process at a different store.
    """
    if uri is None:
        return default_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path).expanduser().resolve().as_uri()
    if not parsed.scheme:
        path = Path(uri).expanduser().resolve()
        if path.suffix == ".db":
            return f"sqlite:///{path}"
        return path.as_uri()
    return uri


def sqlite_path(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` URI, None for other stores."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def default_optuna_storage(tracking_uri: str) -> str | None:
    """Return ``sqlite:///<dir>/optuna.db`` next to a SQLite MLflow store, else None."""
    database = sqlite_path(tracking_uri)
    if database is None:
        return None
    return f"sqlite:///{database.parent / 'optuna.db'}"


def git_commit(repo_dir: str | Path) -> str:
    """Return the checkout's commit hash (with ``-dirty`` when files changed), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def make_client(tracking_uri: str) -> Any:
    """Return an :class:`mlflow.MlflowClient` for ``tracking_uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def get_or_create_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Return the id of experiment ``name``, creating it when missing.

    With a SQLite store the artifacts go to ``mlruns/`` next to the database file, so
    the store and its artifacts move together.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted; restore it in the MLflow UI "
                "or pass another --experiment-name"
            )
        return str(experiment.experiment_id)
    database = sqlite_path(tracking_uri)
    artifact_location = None
    if database is not None:
        folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        artifact_location = (database.parent / "mlruns" / folder).as_uri()
    return str(client.create_experiment(name, artifact_location=artifact_location))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _string_params(values: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    params = []
    for key, value in values.items():
        text = str(value)
        if len(text) > _MAX_PARAM_LENGTH:
            text = text[: _MAX_PARAM_LENGTH - 3] + "..."
        params.append(Param(key, text))
    return params


def _tags(values: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(key, str(value)) for key, value in values.items()]


def start_parent_run(
    client: Any,
    experiment_id: str,
    *,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any],
    space: Mapping[str, str],
    budget: Mapping[str, Any],
) -> str:
    """Create the search's parent run and log its tags, params and space; return its id."""
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={**{key: str(value) for key, value in tags.items()}, TAG_KIND: "search"},
    )
    run_id = run.info.run_id
    space_params = {f"space.{name}": text for name, text in space.items()}
    client.log_batch(run_id, params=_string_params({**params, **space_params}))
    client.log_text(run_id, yaml.safe_dump(dict(space), sort_keys=True), "search_space.yaml")
    client.log_text(run_id, yaml.safe_dump(_plain(budget), sort_keys=True), "budget.yaml")
    return run_id


def resume_run(client: Any, run_id: str) -> None:
    """Mark a run that an interrupted search left behind as running again."""
    client.update_run(run_id, status="RUNNING")


def finish_run(client: Any, run_id: str, status: str = "FINISHED") -> None:
    """End a run with an MLflow run status (FINISHED, FAILED or KILLED)."""
    client.set_terminated(run_id, status=status, end_time=_now_ms())


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# Child runs -----------------------------------------------------------------------------


def find_trial_run(client: Any, experiment_id: str, sweep_id: str, trial_id: str) -> str | None:
    """Return the child run id of trial ``trial_id`` of sweep ``sweep_id``, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{TAG_SWEEP} = '{sweep_id}' and tags.{TAG_TRIAL} = '{trial_id}'",
        max_results=2,
    )
    if len(runs) > 1:
        logger.warning("trial %s of sweep %s has %d MLflow runs", trial_id, sweep_id, len(runs))
    return runs[0].info.run_id if runs else None


def start_or_resume_trial_run(
    client: Any,
    experiment_id: str,
    *,
    parent_run_id: str,
    sweep_id: str,
    trial_id: str,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any],
) -> str:
    """Return the child run of a trial: the trial's existing run when it is resumed.

    A retried or restored trial keeps its Ray trial id, so looking the run up by the
    ``ray_trial_id`` and ``sweep_id`` tags finds the run its first attempt opened.
    """
    run_id = find_trial_run(client, experiment_id, sweep_id, trial_id)
    if run_id is not None:
        logger.info("continuing MLflow run %s of trial %s", run_id, trial_id)
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, TAG_STATUS, STATUS_RUNNING)
        return run_id
    all_tags = {
        **{key: str(value) for key, value in tags.items()},
        TAG_PARENT: parent_run_id,
        TAG_SWEEP: sweep_id,
        TAG_TRIAL: trial_id,
        TAG_KIND: "trial",
        TAG_STATUS: STATUS_RUNNING,
    }
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    client.log_batch(run.info.run_id, params=_string_params(params))
    return run.info.run_id


def numeric_metrics(metrics: Mapping[str, Any], skip: Iterable[str] = ("epoch",)) -> dict[str, float]:
    """Return the entries of ``metrics`` that MLflow can log as metrics (numbers, not bools)."""
    skipped = set(skip)
    result: dict[str, float] = {}
    for key, value in metrics.items():
        if key in skipped or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            result[key] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            result[key] = float(value.item())
    return result


def log_epoch_metrics(client: Any, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    """Log every numeric entry of one epoch's report at ``step`` (the epoch).

    Several trials write to one SQLite store at once, so a write that finds the database
    locked is tried again, up to 4 times over about 7 seconds.
    """
    from mlflow.entities import Metric

    timestamp = _now_ms()
    batch = [
        Metric(key, value, timestamp, step) for key, value in numeric_metrics(metrics).items()
    ]
    if not batch:
        return
    for attempt in range(_LOCKED_RETRIES + 1):
        try:
            client.log_batch(run_id, metrics=batch)
            return
        except Exception as error:  # MLflow wraps the driver's OperationalError
            if "locked" not in str(error) or attempt == _LOCKED_RETRIES:
                raise
            logger.warning("MLflow store locked while logging run %s; retrying", run_id)
            time.sleep(0.5 * 2**attempt)


def best_objective(client: Any, run_id: str, key: str = OBJECTIVE) -> tuple[float, int] | None:
    """Return the best (highest) value of ``key`` in the run's history and its step."""
    history = [m for m in client.get_metric_history(run_id, key) if not math.isnan(m.value)]
    if not history:
        return None
    best = max(history, key=lambda m: (m.value, -m.step))
    return best.value, best.step


def finish_trial_run(client: Any, run_id: str, status: str) -> None:
    """Set the trial's ``status`` tag, log the best objective and end the run.

    Raises:
        ValueError: ``status`` is not a trial status.
    """
    if status not in _RUN_STATUS:
        raise ValueError(f"trial status {status!r} is invalid; use one of {sorted(_RUN_STATUS)}")
    best = best_objective(client, run_id)
    if best is not None:
        from mlflow.entities import Metric

        value, step = best
        now = _now_ms()
        client.log_batch(
            run_id,
            metrics=[
                Metric(f"{OBJECTIVE}_best", value, now, step),
                Metric(f"{OBJECTIVE}_best_epoch", float(step), now, step),
            ],
        )
    client.set_tag(run_id, TAG_STATUS, status)
    finish_run(client, run_id, _RUN_STATUS[status])


def log_metrics_once(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log final numbers such as test accuracies (step 0)."""
    log_epoch_metrics(client, run_id, metrics, step=0)


def log_yaml(client: Any, run_id: str, content: Mapping[str, Any], artifact_file: str) -> None:
    """Log a mapping as a YAML artifact."""
    client.log_text(run_id, yaml.safe_dump(_plain(content), sort_keys=False), artifact_file)


def log_file(client: Any, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Log a local file as an artifact."""
    client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_mask_heatmap(
    client: Any,
    run_id: str,
    masks: Any,
    artifact_file: str,
    title: str,
    level_names: Iterable[str] | None = None,
) -> None:
    """Log a levels x dimensions mask matrix as a PNG heatmap and as CSV numbers.

    Shape:
        masks: (L, D), values in [0, 1] (hard 0/1 masks or mean soft masks).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.asarray(masks, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"masks must have shape (L, D), got {matrix.shape}")
    labels = list(level_names) if level_names is not None else []
    if len(labels) != matrix.shape[0]:
        labels = [f"L{level + 1}" for level in range(matrix.shape[0])]
    figure, axes = plt.subplots(figsize=(max(6.0, matrix.shape[1] / 16), 1.0 + 0.5 * len(labels)))
    image = axes.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("embedding dimension")
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    client.log_figure(run_id, figure, artifact_file)
    plt.close(figure)
    buffer = io.StringIO()
    np.savetxt(buffer, matrix, delimiter=",", fmt="%.6g")
    client.log_text(run_id, buffer.getvalue(), os.path.splitext(artifact_file)[0] + ".csv")
