"""search/compare.py against a real SQLite MLflow store laid out by search.tracking."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from search import compare, tracking

EXPERIMENT = "hmlc-compare"


def _search(
    client: Any,
    experiment_id: str,
    *,
    method: str,
    dataset: str,
    seed: int,
    trials: list[tuple[str, float | None, dict[str, float]]],
    parent_test: dict[str, float],
) -> str:
    """Write one search: a parent run and one child run per (status, val acc, test metrics)."""
    sweep = f"{method}-{dataset}-{seed}"
    tags = {"method": method, "dataset": dataset, "budget": "smoke", "seed": seed, "sweep_id": sweep}
    parent = tracking.start_parent_run(
        client, experiment_id, run_name=f"{method}-{dataset}-seed{seed}", tags=tags, params=tags,
        space={"temperature": "loguniform(0.05, 0.5)"}, budget={"name": "smoke"},
    )
    for index, (status, val, test) in enumerate(trials):
        trial_id = f"{sweep}_0000{index}"
        run_id = tracking.start_or_resume_trial_run(
            client, experiment_id, parent_run_id=parent, sweep_id=sweep, trial_id=trial_id, run_name=trial_id,
            tags={"method": method, "dataset": dataset}, params={"temperature": 0.1 + index / 100},
        )
        if val is not None:
            tracking.log_epoch_metrics(client, run_id, {"val/probe_acc": val - 0.05, "epoch": 0}, step=0)
            tracking.log_epoch_metrics(client, run_id, {"val/probe_acc": val, "epoch": 1}, step=1)
        if test:
            tracking.log_metrics_once(client, run_id, test)
        tracking.finish_trial_run(client, run_id, status)
    if parent_test:
        tracking.log_metrics_once(client, parent, parent_test)
    tracking.finish_run(client, parent)
    return parent


def _test(l1: float, l2: float, l3: float | None = None) -> dict[str, float]:
    values = {"test/probe_acc_L1": l1, "test/probe_acc_L2": l2}
    if l3 is not None:
        values["test/probe_acc_L3"] = l3
    return values


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, str]:
    folder = tmp_path_factory.mktemp("compare")
    uri = tracking.default_tracking_uri(folder)
    client = tracking.make_client(uri)
    experiment_id = tracking.get_or_create_experiment(client, EXPERIMENT, uri)
    _search(client, experiment_id, method="g_hmlc", dataset="fashion-mnist", seed=0, trials=[
        ("completed", 0.70, {}), ("completed", 0.80, {}), ("early-stopped", 0.85, {}), ("failed", None, {}),
    ], parent_test=_test(0.95, 0.85, 0.75))
    _search(client, experiment_id, method="g_hmlc", dataset="fashion-mnist", seed=1, trials=[
        ("completed", 0.78, {}), ("completed", 0.82, {}),
    ], parent_test=_test(0.97, 0.87, 0.79))
    # No test metrics on the parent: the chosen (best completed) trial's own are used.
    _search(client, experiment_id, method="supcon", dataset="fashion-mnist", seed=0, trials=[
        ("completed", 0.74, _test(0.1, 0.1, 0.1)), ("completed", 0.75, _test(0.90, 0.80, 0.70)),
    ], parent_test={})
    _search(client, experiment_id, method="hmce", dataset="cifar100", seed=0, trials=[
        ("completed", 0.50, {}),
    ], parent_test=_test(0.60, 0.50))
    return client, experiment_id, uri


def _groups(store: tuple[Any, str, str]) -> dict[tuple[str, str], compare.MethodSummary]:
    client, experiment_id, _ = store
    summaries = compare.summarise_methods(compare.collect_searches(client, experiment_id))
    return {(summary.dataset, summary.method): summary for summary in summaries}


def test_search_summaries(store: tuple[Any, str, str]) -> None:
    client, experiment_id, _ = store
    searches = compare.collect_searches(client, experiment_id)
    assert [(search.method, search.seed) for search in searches] == [
        ("g_hmlc", "0"), ("g_hmlc", "1"), ("supcon", "0"), ("hmce", "0"),
    ]
    first = searches[0]
    assert first.trial_status == {"completed": 2, "early-stopped": 1, "failed": 1}
    assert first.trials == 4
    # The early-stopped trial's 0.85 does not count: only completed trials are chosen.
    assert first.best_val == pytest.approx(0.80)
    assert first.chosen_trial == "g_hmlc-fashion-mnist-0_00001"
    assert first.test == {1: 0.95, 2: 0.85, 3: 0.75}
    assert searches[2].chosen_trial == "supcon-fashion-mnist-0_00001"
    assert searches[2].test == {1: 0.90, 2: 0.80, 3: 0.70}


def test_seed_mean_and_spread(store: tuple[Any, str, str]) -> None:
    groups = _groups(store)
    ghmlc = groups[("fashion-mnist", "g_hmlc")]
    assert ghmlc.seeds == ("0", "1")
    assert ghmlc.trials == 6
    assert ghmlc.status_count("completed") == 4
    assert ghmlc.best_val_mean == pytest.approx(0.81)
    assert ghmlc.best_val_std == pytest.approx(math.sqrt(2 * 0.01**2))
    assert ghmlc.test_mean == pytest.approx({1: 0.96, 2: 0.86, 3: 0.77})
    assert ghmlc.test_std[3] == pytest.approx(math.sqrt(2 * 0.02**2))
    assert ghmlc.test_count == {1: 2, 2: 2, 3: 2}
    supcon = groups[("fashion-mnist", "supcon")]
    assert math.isnan(supcon.best_val_std)
    assert supcon.test_mean == pytest.approx({1: 0.90, 2: 0.80, 3: 0.70})
    assert groups[("cifar100", "hmce")].test_mean == pytest.approx({1: 0.60, 2: 0.50})


def test_group_order(store: tuple[Any, str, str]) -> None:
    client, experiment_id, _ = store
    summaries = compare.summarise_methods(compare.collect_searches(client, experiment_id))
    assert [(summary.dataset, summary.method) for summary in summaries] == [
        ("cifar100", "hmce"), ("fashion-mnist", "g_hmlc"), ("fashion-mnist", "supcon"),
    ]


def test_format_statistic() -> None:
    assert compare.format_statistic(0.81, 0.0141421, 2) == "0.8100 ± 0.0141 (n=2)"
    assert compare.format_statistic(0.7, math.nan, 1) == "0.7000"
    assert compare.format_statistic(math.nan, math.nan, 0) == "-"
    assert compare.mean_and_std([0.5, math.nan]) == (0.5, pytest.approx(math.nan, nan_ok=True))


def test_command_writes_and_logs(store: tuple[Any, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, experiment_id, uri = store
    for attempt in range(2):
        output = tmp_path / f"out{attempt}"
        status = compare.main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--output-dir", str(output)])
        assert status == 0
    printed = capsys.readouterr().out
    assert "0.7700 ± 0.0283 (n=2)" in printed
    markdown = (output / "comparison.md").read_text()
    assert "## fashion-mnist" in markdown
    assert "## cifar100" in markdown
    assert "| fashion-mnist | g_hmlc | smoke | 2 | 0,1 | 6 | 4 | 1 | 1 | 0.8100 ± 0.0141 (n=2) | 0.9600 ± 0.0141 (n=2) | 0.8600 ± 0.0141 (n=2) | 0.7700 ± 0.0283 (n=2) | - |" in markdown
    assert "| fashion-mnist | supcon | smoke | 1 | 0 | 2 | 2 | 0 | 0 | 0.7500 | 0.9000 | 0.8000 | 0.7000 | supcon-fashion-mnist-0_00001 |" in markdown
    # cifar100 has two levels, so its table has no L3 column.
    cifar_table = markdown.split("## cifar100")[1].split("##")[0]
    assert "test L2" in cifar_table
    assert "test L3" not in cifar_table
    image = matplotlib.image.imread(output / "comparison.png")
    assert image.shape[0] > 300
    assert image.shape[1] > 2 * image.shape[0]
    runs = client.search_runs([experiment_id], filter_string="tags.run_kind = 'comparison'")
    # The second comparison ignores the first comparison run.
    assert len(runs) == 2
    metrics = runs[0].data.metrics
    assert metrics["fashion-mnist/g_hmlc/smoke/test_L3_mean"] == pytest.approx(0.77)
    assert metrics["fashion-mnist/g_hmlc/smoke/best_val_mean"] == pytest.approx(0.81)
    artifacts = {item.path for item in client.list_artifacts(runs[0].info.run_id)}
    assert artifacts == {"comparison.md", "comparison.csv", "comparison.png"}


def test_command_filters(store: tuple[Any, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, uri = store
    status = compare.main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--output-dir", str(tmp_path),
                           "--method", "supcon", "--no-mlflow-run"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "supcon" in printed
    assert "g_hmlc" not in printed
    assert "cifar100" not in printed


def test_command_errors(store: tuple[Any, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, uri = store
    assert compare.main(["--experiment", "missing", "--tracking-uri", uri, "--no-mlflow-run"]) == 2
    assert f"'missing' not found; the store contains ['Default', '{EXPERIMENT}']" in capsys.readouterr().err
    assert compare.main(["--experiment", EXPERIMENT, "--tracking-uri", str(tmp_path / "none.db")]) == 2
    assert "none.db not found" in capsys.readouterr().err
    assert compare.main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--dataset", "modelnet40", "--no-mlflow-run"]) == 2
    assert "no search runs" in capsys.readouterr().err
