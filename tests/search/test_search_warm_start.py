"""Warm start of the Optuna searcher from an earlier study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from ray import tune

from search.cli import SearchSetupError
from search.searcher import FinalMetricOptunaSearch
from search.sweep import finished_trials

SPACE = {"lr": tune.loguniform(1e-3, 1.0), "temperature": tune.loguniform(0.05, 0.5)}


def _earlier_study(storage: str) -> None:
    study = optuna.create_study(study_name="earlier", storage=storage, direction="maximize")
    distributions = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
        "temperature": optuna.distributions.FloatDistribution(0.05, 0.5, log=True),
    }
    for lr, value in ((0.1, 0.7), (0.01, 0.6)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "temperature": 0.1}, distributions=distributions, value=value
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.2},
            distributions={"lr": distributions["lr"]},
            value=0.9,
        )
    )


def test_finished_trials_reads_completed(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _earlier_study(storage)
    trials = finished_trials(storage, "earlier")
    assert [value for _, value in trials] == [0.7, 0.6, 0.9]
    assert trials[0][0] == {"lr": 0.1, "temperature": 0.1}


def test_finished_trials_unknown_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _earlier_study(storage)
    with pytest.raises(SearchSetupError, match="study 'missing' was not found.*earlier"):
        finished_trials(storage, "missing")


def test_finished_trials_needs_storage() -> None:
    with pytest.raises(SearchSetupError, match="needs an Optuna storage"):
        finished_trials(None, "earlier")


def test_searcher_adds_matching_trials_once(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _earlier_study(storage)
    searcher = FinalMetricOptunaSearch(
        metric="val/probe_acc",
        mode="max",
        seed=0,
        storage=optuna.storages.RDBStorage(storage),
        study_name="later",
        warm_start_trials=finished_trials(storage, "earlier"),
    )
    searcher.set_search_properties("val/probe_acc", "max", SPACE)
    later = optuna.load_study(study_name="later", storage=storage)
    # The trial that searched only "lr" is skipped: its knobs differ from this space.
    assert sorted(trial.value for trial in later.trials) == [0.6, 0.7]

    searcher._setup_study("max")  # a resumed search sets the study up again
    assert len(optuna.load_study(study_name="later", storage=storage).trials) == 2
