"""Search folder state, resume lookup and interruption detection."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from search.cli import SearchSetupError, parse_options
from search.sweep import (
    SweepState,
    find_search_to_resume,
    leaderboard_path,
    load_sweep_state,
    save_sweep_state,
    search_interrupted,
)


def make_state(name: str) -> SweepState:
    return SweepState(
        name=name,
        sweep_id="abc",
        method="hmc",
        dataset="fashion-mnist",
        budget="smoke",
        seed=0,
        num_samples=2,
        max_concurrent_trials=1,
        epochs=3,
        grace_period=1,
        reduction_factor=2,
        tracking_uri="sqlite:////tmp/x/mlflow.db",
        experiment_name="e",
        experiment_id="1",
        parent_run_id="p",
        optuna_storage=None,
        study_name="s",
        level_names=["category", "group", "class"],
        space={"lr": "loguniform(0.01, 1)"},
        base_run={"epochs": 3, "probe": {"weight_decays": [0.0, 0.001]}},
    )


def test_sweep_state_round_trip(tmp_path: Path) -> None:
    state = make_state("hmc-fashion-mnist-smoke-seed0-20260101-000000")
    save_sweep_state(str(tmp_path), state)
    assert load_sweep_state(str(tmp_path), state.name) == state


def test_missing_sweep_state(tmp_path: Path) -> None:
    with pytest.raises(SearchSetupError, match="search 'nope' has no sweep.json"):
        load_sweep_state(str(tmp_path), "nope")


def test_resume_picks_newest_matching_search(tmp_path: Path) -> None:
    for name in (
        "hmc-fashion-mnist-smoke-seed0-20260101-000000",
        "hmc-fashion-mnist-smoke-seed0-20260102-000000",
        "hmc-fashion-mnist-smoke-seed1-20260103-000000",
        "hmce-fashion-mnist-smoke-seed0-20260104-000000",
    ):
        save_sweep_state(str(tmp_path), make_state(name))
    options = parse_options(["--method", "hmc", "--dataset", "fashion-mnist", "--resume"])
    assert find_search_to_resume(options, str(tmp_path)) == "hmc-fashion-mnist-smoke-seed0-20260102-000000"
    named = dataclasses.replace(options, name="given")
    assert find_search_to_resume(named, str(tmp_path)) == "given"


class FakeResult:
    def __init__(self, metrics: dict, error: Exception | None = None) -> None:
        self.metrics = metrics
        self.error = error


def test_interruption_detection() -> None:
    done = [FakeResult({"done": True}), FakeResult({}, error=RuntimeError("x"))]
    assert not search_interrupted(done, num_samples=2)
    assert search_interrupted(done, num_samples=3)
    running = [FakeResult({"done": True}), FakeResult({"done": False, "epoch": 1})]
    assert search_interrupted(running, num_samples=2)


def test_leaderboard_default_path() -> None:
    options = parse_options(["--method", "hmc"])
    assert leaderboard_path(options, "/r", "n") == "/r/n/leaderboard.csv"
    assert leaderboard_path(options, "s3://bucket/r", "n") == "n-leaderboard.csv"
    custom = dataclasses.replace(options, leaderboard_csv="out.csv")
    assert leaderboard_path(custom, "/r", "n") == "out.csv"


class FakeTrial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def asha_decisions(max_t: int, epoch: int) -> tuple[str, str]:
    from search.searcher import FinalEpochSafeASHA

    scheduler = FinalEpochSafeASHA(
        time_attr="epoch", metric="val/knn_acc", mode="max", max_t=max_t,
        grace_period=1, reduction_factor=2, stop_last_trials=False,
    )
    good, bad = FakeTrial("good"), FakeTrial("bad")
    for trial in (good, bad):
        scheduler.on_trial_add(None, trial)
    first = scheduler.on_trial_result(None, good, {"epoch": epoch, "val/knn_acc": 0.9})
    second = scheduler.on_trial_result(None, bad, {"epoch": epoch, "val/knn_acc": 0.1})
    return first, second


def test_asha_stops_weak_trial_before_last_epoch() -> None:
    assert asha_decisions(max_t=4, epoch=1) == ("CONTINUE", "STOP")


def test_asha_keeps_trial_at_last_epoch() -> None:
    assert asha_decisions(max_t=1, epoch=1) == ("CONTINUE", "CONTINUE")


def test_optuna_searcher_skips_results_without_objective() -> None:
    from search.searcher import FinalMetricOptunaSearch

    searcher = FinalMetricOptunaSearch(metric="val/probe_acc", mode="max", seed=0, space={})
    # Without the objective the result is ignored before Optuna looks up the trial.
    searcher.on_trial_result("unknown-trial", {"epoch": 1, "val/knn_acc": 0.5})
    with pytest.raises(KeyError):
        searcher.on_trial_result("unknown-trial", {"epoch": 1, "val/probe_acc": 0.5, "training_iteration": 1})
