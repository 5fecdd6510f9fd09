"""Optuna study plots logged to a parent run of a real SQLite MLflow store."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import optuna
import pytest

from search import reports, tracking

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    uri = tracking.default_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    client = tracking.make_client(uri)
    experiment_id = tracking.get_or_create_experiment(client, "optuna-plots", uri)
    return client, experiment_id


@pytest.fixture()
def client_and_run(store: tuple[object, str]) -> tuple[object, str]:
    client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id  # type: ignore[attr-defined]
    return client, run_id


def _objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 0.01, 1.0, log=True)
    temperature = trial.suggest_float("temperature", 0.05, 0.5)
    return 1.0 - (lr - 0.1) ** 2 - 0.1 * temperature


def _study(trials: int) -> optuna.Study:
    study = optuna.create_study(
        direction="maximize", study_name="g_hmlc-search", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(_objective, n_trials=trials)
    return study


def test_logs_html_pngs_and_table(client_and_run: tuple[object, str], tmp_path: Path) -> None:
    client, run_id = client_and_run
    written = reports.log_optuna_plots(client, run_id, _study(6))
    assert written == [
        "optuna/search_plots.html",
        "optuna/optimization_history.png",
        "optuna/param_importances.png",
        "optuna/parallel_coordinate.png",
        "optuna/trials.csv",
    ]
    listed = {item.path for item in client.list_artifacts(run_id, "optuna")}  # type: ignore[attr-defined]
    assert listed == set(written)
    local = Path(client.download_artifacts(run_id, "optuna", str(tmp_path)))  # type: ignore[attr-defined]
    html = (local / "search_plots.html").read_text()
    # plotly.js is embedded once, so the page opens without network access.
    assert html.count("* plotly.js v") == 1
    assert re.findall(r"<script[^>]*\ssrc=", html) == []
    for text in ("optimization history", "param importances", "parallel coordinate", "temperature", "probe_acc"):
        assert text in html
    with open(local / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert {"params_lr", "params_temperature", "value", "state"} <= set(rows[0])
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (local / f"{name}.png").stat().st_size > 5000


def test_single_trial_skips_importances(client_and_run: tuple[object, str]) -> None:
    client, run_id = client_and_run
    written = reports.log_optuna_plots(client, run_id, _study(1), artifact_dir="plots")
    assert written == [
        "plots/search_plots.html",
        "plots/optimization_history.png",
        "plots/parallel_coordinate.png",
        "plots/trials.csv",
    ]


def test_no_completed_trial_logs_table_only(client_and_run: tuple[object, str]) -> None:
    client, run_id = client_and_run
    study = optuna.create_study(direction="maximize")

    def failing(trial: optuna.Trial) -> float:
        trial.suggest_float("lr", 0.01, 1.0)
        raise RuntimeError("trial crashed")

    study.optimize(failing, n_trials=2, catch=(RuntimeError,))
    assert reports.optuna_figures(study) == {}
    assert reports.log_optuna_plots(client, run_id, study) == ["optuna/trials.csv"]


def test_optuna_figures_unknown_backend() -> None:
    with pytest.raises(ValueError, match="bokeh"):
        reports.optuna_figures(_study(2), backend="bokeh")
