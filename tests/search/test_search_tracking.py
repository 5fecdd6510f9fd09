"""MLflow layout against a real SQLite store, and the leaderboard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from search import tracking
from search.leaderboard import TrialRecord, best_record, build_leaderboard, save_leaderboard


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str, str]:
    folder = tmp_path_factory.mktemp("mlflow")
    uri = tracking.default_tracking_uri(folder)
    client = tracking.make_client(uri)
    experiment_id = tracking.get_or_create_experiment(client, "test-search", uri)
    return client, experiment_id, uri


def test_resolve_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///runs/m.db") == f"sqlite:///{tmp_path.resolve()}/runs/m.db"
    assert tracking.resolve_tracking_uri("store.db") == f"sqlite:///{tmp_path.resolve()}/store.db"
    assert tracking.resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking.default_optuna_storage(f"sqlite:///{tmp_path}/mlflow.db") == f"sqlite:///{tmp_path}/optuna.db"
    assert tracking.default_optuna_storage("http://127.0.0.1:5000") is None


def test_artifacts_next_to_database(store: tuple[object, str, str]) -> None:
    client, experiment_id, uri = store
    experiment = client.get_experiment(experiment_id)  # type: ignore[attr-defined]
    database = tracking.sqlite_path(uri)
    assert database is not None
    assert experiment.artifact_location == (database.parent / "mlruns" / "test-search").as_uri()
    assert tracking.get_or_create_experiment(client, "test-search", uri) == experiment_id


def test_parent_and_child_runs(store: tuple[object, str, str]) -> None:
    client, experiment_id, _ = store
    parent = tracking.start_parent_run(
        client,
        experiment_id,
        run_name="search-a",
        tags={"method": "hmc", "dataset": "fashion-mnist", "sweep_id": "s1"},
        params={"method": "hmc", "seed": 0},
        space={"lr": "loguniform(0.01, 1)"},
        budget={"name": "smoke", "epochs": {"*": 1}},
    )
    child = tracking.start_or_resume_trial_run(
        client,
        experiment_id,
        parent_run_id=parent,
        sweep_id="s1",
        trial_id="t0",
        run_name="t0",
        tags={"method": "hmc", "dataset": "fashion-mnist"},
        params={"lr": 0.1, "temperature": 0.2},
    )
    run = client.get_run(child)  # type: ignore[attr-defined]
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["ray_trial_id"] == "t0"
    assert run.data.tags["status"] == "running"
    assert run.data.tags["run_kind"] == "trial"
    assert run.data.params == {"lr": "0.1", "temperature": "0.2"}
    parent_run = client.get_run(parent)  # type: ignore[attr-defined]
    assert parent_run.data.params["space.lr"] == "loguniform(0.01, 1)"
    assert parent_run.data.tags["run_kind"] == "search"

    # Epoch reports: non-numeric entries and the epoch itself are not metrics.
    reports = [
        {"epoch": 1, "train/loss": 3.0, "val/knn_acc": 0.2, "checkpoint_path": "/x", "flag": True},
        {"epoch": 2, "train/loss": 2.5, "val/knn_acc": 0.3, "val/probe_acc": 0.6},
        {"epoch": 3, "train/loss": 2.0, "val/knn_acc": 0.35, "val/probe_acc": 0.55},
    ]
    for report in reports:
        tracking.log_epoch_metrics(client, child, report, step=report["epoch"])

    # A resumed trial finds its own run instead of opening a second one.
    again = tracking.start_or_resume_trial_run(
        client,
        experiment_id,
        parent_run_id=parent,
        sweep_id="s1",
        trial_id="t0",
        run_name="t0",
        tags={},
        params={"lr": 0.1, "temperature": 0.2},
    )
    assert again == child
    tracking.finish_trial_run(client, child, tracking.STATUS_COMPLETED)
    run = client.get_run(child)  # type: ignore[attr-defined]
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == "completed"
    assert set(run.data.metrics) == {
        "train/loss",
        "val/knn_acc",
        "val/probe_acc",
        "val/probe_acc_best",
        "val/probe_acc_best_epoch",
    }
    assert run.data.metrics["val/probe_acc"] == 0.55
    assert run.data.metrics["val/probe_acc_best"] == 0.6
    assert run.data.metrics["val/probe_acc_best_epoch"] == 2.0
    steps = [m.step for m in client.get_metric_history(child, "train/loss")]  # type: ignore[attr-defined]
    assert steps == [1, 2, 3]


def test_finish_trial_statuses(store: tuple[object, str, str]) -> None:
    client, experiment_id, _ = store
    for trial_id, status, run_status in (
        ("t1", tracking.STATUS_EARLY_STOPPED, "KILLED"),
        ("t2", tracking.STATUS_FAILED, "FAILED"),
    ):
        run_id = tracking.start_or_resume_trial_run(
            client, experiment_id, parent_run_id="p", sweep_id="s2", trial_id=trial_id,
            run_name=trial_id, tags={}, params={},
        )
        tracking.finish_trial_run(client, run_id, status)
        run = client.get_run(run_id)  # type: ignore[attr-defined]
        assert run.info.status == run_status
        assert run.data.tags["status"] == status
        assert "val/probe_acc_best" not in run.data.metrics
    with pytest.raises(ValueError, match="trial status 'done' is invalid"):
        tracking.finish_trial_run(client, run_id, "done")


def test_mask_heatmap_artifacts(store: tuple[object, str, str]) -> None:
    client, experiment_id, _ = store
    run_id = client.create_run(experiment_id).info.run_id  # type: ignore[attr-defined]
    masks = [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]
    tracking.log_mask_heatmap(client, run_id, masks, "masks/m.png", "masks", ["coarse", "fine"])
    names = sorted(a.path for a in client.list_artifacts(run_id, "masks"))  # type: ignore[attr-defined]
    assert names == ["masks/m.csv", "masks/m.png"]
    text = Path(client.download_artifacts(run_id, "masks/m.csv")).read_text()  # type: ignore[attr-defined]
    assert text.splitlines() == ["1,0,0,1", "0,1,1,0"]


def record(trial_id: str, status: str, probe: float | None, knn: float, **knobs: object) -> TrialRecord:
    metrics: dict[str, object] = {"val/knn_acc": knn, "epoch": 3}
    if probe is not None:
        metrics.update({"val/probe_acc": probe, "val/probe_acc_L1": probe + 0.2, "val/probe_acc_L2": probe})
    return TrialRecord(trial_id, status, knobs, metrics, mlflow_run_id=f"run-{trial_id}")


def test_leaderboard_order_and_best(tmp_path: Path) -> None:
    records = [
        record("a", "completed", 0.50, 0.4, lr=0.1),
        record("b", "early-stopped", None, 0.6, lr=0.2),
        record("c", "completed", 0.70, 0.3, lr=0.3),
        record("d", "failed", None, math.nan, lr=0.4),
    ]
    frame = build_leaderboard(records)
    assert list(frame["trial_id"]) == ["c", "a", "b", "d"]
    assert list(frame["rank"]) == [1, 2, 3, 4]
    assert list(frame.columns[:8]) == [
        "rank", "trial_id", "status", "epochs", "val/probe_acc",
        "val/probe_acc_L1", "val/probe_acc_L2", "val/knn_acc",
    ]
    assert frame.loc[0, "lr"] == 0.3
    assert frame.loc[0, "val/probe_acc_L1"] == pytest.approx(0.9)
    best = best_record(records)
    assert best is not None and best.trial_id == "c"
    assert best_record([records[1], records[3]]) is None
    path = save_leaderboard(frame, tmp_path / "out" / "leaderboard.csv")
    assert path.read_text().splitlines()[0].startswith("rank,trial_id,status,epochs,val/probe_acc")
