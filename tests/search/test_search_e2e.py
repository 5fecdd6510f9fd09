"""Real searches on real Fashion-MNIST: local Ray on 127.0.0.1, MLflow SQLite in tmp_path.

Each test runs ``python search/tune.py`` as a user would, in a subprocess, with the
smoke budget (one short epoch per trial), then reads the MLflow store and the files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TUNE = str(REPO_ROOT / "search" / "tune.py")
EXPERIMENT = "e2e"
LEVELS = (1, 2, 3)
PER_EPOCH_KEYS = {
    "train/loss",
    "train/lr",
    "val/knn_acc",
    *(f"train/loss_L{level}" for level in LEVELS),
}
FINAL_KEYS = {
    "val/probe_acc",
    "val/probe_acc_best",
    "val/probe_acc_best_epoch",
    *(f"val/probe_acc_L{level}" for level in LEVELS),
}

pytestmark = pytest.mark.slow


def search_command(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, TUNE,
        "--dataset", "fashion-mnist",
        "--budget", "smoke",
        "--num-cpus", "2",
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
        "--experiment-name", EXPERIMENT,
        "--storage-path", str(tmp_path / "ray_results"),
        *extra,
    ]


def run_search(tmp_path: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        search_command(tmp_path, *extra), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def client_for(tmp_path: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def runs_by_kind(client: Any, kind: str) -> list[Any]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], filter_string=f"tags.run_kind = '{kind}'"))


def artifact_paths(client: Any, run_id: str, folder: str | None = None) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, folder)}


def test_smoke_search_with_failing_trial(tmp_path: Path) -> None:
    done = run_search(tmp_path, "--method", "g_hmlc", "--debug-fail-trial", "always")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Leaderboard of search g_hmlc-fashion-mnist-smoke-seed0-" in done.stdout
    assert "Best trial " in done.stdout
    assert "test/probe_acc = " in done.stdout
    assert "test/probe_acc_L1 = " in done.stdout

    client = client_for(tmp_path)
    (parent,) = runs_by_kind(client, "search")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["method"] == "g_hmlc"
    assert parent.data.tags["dataset"] == "fashion-mnist"
    assert parent.data.tags["budget"] == "smoke"
    assert parent.data.params["seed"] == "0"
    assert parent.data.params["space.gmm_cov"] == "choice(diag, full)"
    assert "git_commit" in parent.data.tags
    assert {"test/probe_acc", *(f"test/probe_acc_L{level}" for level in LEVELS)} <= set(parent.data.metrics)
    assert {"leaderboard.csv", "search_space.yaml", "base_run_config.yaml"} <= artifact_paths(client, parent.info.run_id)

    children = runs_by_kind(client, "trial")
    assert len(children) == 2
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert {child.data.tags["sweep_id"] for child in children} == {parent.data.tags["sweep_id"]}
    by_status = {child.data.tags["status"]: child for child in children}
    assert set(by_status) == {"completed", "failed"}
    failed, completed = by_status["failed"], by_status["completed"]
    assert failed.info.status == "FAILED"
    assert completed.info.status == "FINISHED"
    assert set(completed.data.params) == {"lr", "temperature", "w_L1", "w_L2", "w_L3", "beta", "gmm_k", "gmm_cov"}
    assert PER_EPOCH_KEYS | FINAL_KEYS <= set(completed.data.metrics)
    assert completed.data.metrics["val/probe_acc_best"] == completed.data.metrics["val/probe_acc"]
    assert completed.data.metrics["val/probe_acc_best_epoch"] == 1.0
    assert 0.0 < completed.data.metrics["val/probe_acc"] <= 1.0
    assert "test/probe_acc" in completed.data.metrics
    assert parent.data.tags["best_run_id"] == completed.info.run_id
    assert {"config", "masks", "probe"} <= artifact_paths(client, completed.info.run_id)
    assert "masks/gmm_hard_masks.png" in artifact_paths(client, completed.info.run_id, "masks")
    assert "probe/confusion_summary.json" in artifact_paths(client, completed.info.run_id, "probe")

    (folder,) = (tmp_path / "ray_results").iterdir()
    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(board) == 2
    assert list(board["status"]) == ["completed", "failed"]
    assert board.loc[0, "trial_id"] == completed.data.tags["ray_trial_id"]
    assert board.loc[0, "val/probe_acc"] == pytest.approx(completed.data.metrics["val/probe_acc"])
    assert (tmp_path / "optuna.db").is_file()


def wait_for_epoch(tmp_path: Path, process: subprocess.Popen[str], log: Path, epoch: int, timeout: float) -> str:
    """Return the trial id of the first child run that logged ``epoch``.

    The store is read only after the search printed its parent run, because a second
    client that opens a new SQLite store while the search creates its tables can break
    the schema setup of either.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search ended before it could be interrupted"
        if "MLflow parent run" in log.read_text():
            client = client_for(tmp_path)
            for child in runs_by_kind(client, "trial"):
                steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
                if epoch in steps:
                    return child.data.tags["ray_trial_id"]
        time.sleep(1.0)
    raise AssertionError(f"no trial reached epoch {epoch} within {timeout} s")


def test_resume_after_interrupt(tmp_path: Path) -> None:
    extra = ("--method", "hmc", "--num-samples", "2", "--max-concurrent-trials", "1", "--epochs", "3", "--name", "resumable")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log_path = tmp_path / "first.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        search_command(tmp_path, *extra), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        interrupted_trial = wait_for_epoch(tmp_path, process, log_path, epoch=1, timeout=400)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    first_output = log_path.read_text()
    assert code == 130, first_output[-3000:]
    assert "was interrupted. Continue it with:" in first_output
    client = client_for(tmp_path)
    (parent,) = runs_by_kind(client, "search")
    assert parent.info.status == "KILLED"

    done = run_search(tmp_path, "--method", "hmc", "--name", "resumable", "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Best trial " in done.stdout
    (parent,) = runs_by_kind(client, "search")
    assert parent.info.status == "FINISHED"
    children = runs_by_kind(client, "trial")
    trial_ids = [child.data.tags["ray_trial_id"] for child in children]
    assert len(children) == 2
    assert len(set(trial_ids)) == 2
    assert interrupted_trial in trial_ids
    for child in children:
        trial_id = child.data.tags["ray_trial_id"]
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "train/loss"))
        # Each epoch is logged once and the history has no gap: the interrupted trial
        # continued from its epoch checkpoint in its own run instead of starting over
        # or opening a second run.
        assert steps == list(range(1, len(steps) + 1)), (trial_id, steps)
        if trial_id == interrupted_trial:
            assert child.data.tags["status"] == "completed"
            assert steps == [1, 2, 3]
        else:
            # ASHA may stop the second trial at epoch 1 or 2 when its kNN accuracy is
            # below the first trial's.
            assert child.data.tags["status"] in ("completed", "early-stopped")
