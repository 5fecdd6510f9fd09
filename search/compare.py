"""Compare the methods searched in one MLflow experiment: ``python search/compare.py --experiment NAME``.

Reads the layout that ``search/tune.py`` writes (see ``search.tracking``): one parent run
per search (tag ``run_kind=search``) and one child run per trial (``run_kind=trial``),
tied together by the ``sweep_id`` tag. For every method, dataset and budget it reports
the number of searches and trials, the best validation probe accuracy, and the test
accuracy at each level of the trial each search chose. Searches that differ only in
``--seed`` are aggregated: mean and sample standard deviation over seeds.

Outputs: the table on stdout, ``comparison.md``, ``comparison.csv`` and
``comparison.png`` in ``--output-dir``, and the same files in a new MLflow run of the
experiment (tag ``run_kind=comparison``) unless ``--no-mlflow-run`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import datetime
import logging
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from search import tracking

logger = logging.getLogger("search.compare")

KIND_SEARCH = "search"
KIND_TRIAL = "trial"
KIND_COMPARISON = "comparison"
VAL_BEST = "val/probe_acc_best"
VAL_LAST = "val/probe_acc"
TEST_PREFIX = "test/probe_acc_L"
# Tags a search may set on its parent run to name the trial it evaluated on the test split.
CHOSEN_TRIAL_TAGS = ("best_trial_id", "best_ray_trial_id")
CHOSEN_RUN_TAGS = ("best_run_id", "best_trial_run_id")
_TEST_KEY = re.compile(r"^test/probe_acc_L(\d+)$")


class CompareError(ValueError):
    """The experiment or its runs cannot be compared (message names the value and the fix)."""


@dataclasses.dataclass(frozen=True)
class SearchSummary:
    """Summary of one search (parent run).

    Attributes:
        run_id: the parent run.
        run_name: the parent run's name.
        sweep_id: the search's ``sweep_id`` tag.
        method: ``method`` tag.
        dataset: ``dataset`` tag.
        budget: ``budget`` tag (``-`` when missing).
        seed: ``seed`` tag (``-`` when missing).
        trial_status: number of trials per status (completed, early-stopped, failed, ...).
        best_val: highest validation probe accuracy of a completed trial, NaN if none.
        chosen_trial: Ray trial id (run name when the tag is missing) of the chosen
            trial, or None.
        test: test probe accuracy per level, 1-based level -> accuracy; empty when the
            search has no test evaluation.
    """

    run_id: str
    run_name: str
    sweep_id: str
    method: str
    dataset: str
    budget: str
    seed: str
    trial_status: Mapping[str, int]
    best_val: float
    chosen_trial: str | None
    test: Mapping[int, float]

    @property
    def trials(self) -> int:
        """Number of trials of the search."""
        return sum(self.trial_status.values())


@dataclasses.dataclass(frozen=True)
class MethodSummary:
    """The searches of one method, dataset and budget, aggregated over seeds.

    Attributes:
        method, dataset, budget: the group's key.
        searches: the group's searches, ordered by seed.
        best_val_mean, best_val_std: mean and sample standard deviation over searches
            of the best validation accuracy (std NaN for one search).
        test_mean, test_std: per level (1-based), the same statistics of the chosen
            trials' test accuracies, over the searches that have them.
        test_count: per level, how many searches have a test accuracy.
    """

    method: str
    dataset: str
    budget: str
    searches: tuple[SearchSummary, ...]
    best_val_mean: float
    best_val_std: float
    test_mean: Mapping[int, float]
    test_std: Mapping[int, float]
    test_count: Mapping[int, int]

    @property
    def seeds(self) -> tuple[str, ...]:
        """Seeds of the group's searches."""
        return tuple(search.seed for search in self.searches)

    def status_count(self, status: str) -> int:
        """Return the number of the group's trials with ``status``."""
        return sum(search.trial_status.get(status, 0) for search in self.searches)

    @property
    def trials(self) -> int:
        """Number of trials over the group's searches."""
        return sum(search.trials for search in self.searches)


# Reading MLflow -------------------------------------------------------------------------


def search_all_runs(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """Return every run of the experiment matching ``filter_string``, following pages."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_experiment_id(client: Any, name: str) -> str:
    """Return the id of experiment ``name``.

    Raises:
        CompareError: no active experiment has that name; the message lists the names.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        names = sorted(item.name for item in client.search_experiments())
        raise CompareError(f"MLflow experiment {name!r} not found; the store contains {names}. Pass one of them with --experiment")
    return str(experiment.experiment_id)


def _finite(value: Any) -> float:
    if value is None:
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def trial_val_accuracy(run: Any) -> float:
    """Return a trial's best validation probe accuracy (``val/probe_acc_best``, else the last value)."""
    metrics = run.data.metrics
    return _finite(metrics.get(VAL_BEST, metrics.get(VAL_LAST)))


def level_test_accuracies(metrics: Mapping[str, float]) -> dict[int, float]:
    """Return the ``test/probe_acc_L{l}`` metrics as 1-based level -> accuracy."""
    result: dict[int, float] = {}
    for key, value in metrics.items():
        match = _TEST_KEY.match(key)
        if match is not None and math.isfinite(value):
            result[int(match.group(1))] = float(value)
    return dict(sorted(result.items()))


def _tag(run: Any, key: str, default: str = "-") -> str:
    return str(run.data.tags.get(key, default))


def _chosen_run(parent: Any, trials: Sequence[Any]) -> Any | None:
    """Return the trial the search evaluated on the test split.

    That is the trial a parent tag names, else the completed trial with the highest
    validation accuracy (earlier trial on ties), as ``search.leaderboard.best_record``
    picks it.
    """
    tags = parent.data.tags
    for key in CHOSEN_RUN_TAGS:
        for run in trials:
            if tags.get(key) == run.info.run_id:
                return run
    for key in CHOSEN_TRIAL_TAGS:
        for run in trials:
            if key in tags and run.data.tags.get(tracking.TAG_TRIAL) == tags[key]:
                return run
    completed = [run for run in trials if _tag(run, tracking.TAG_STATUS) == tracking.STATUS_COMPLETED]
    scored = [run for run in completed if not math.isnan(trial_val_accuracy(run))]
    if not scored:
        return None
    ordered = sorted(scored, key=lambda run: (run.info.start_time or 0, run.info.run_name or ""))
    return max(ordered, key=trial_val_accuracy)


def summarise_search(parent: Any, trials: Sequence[Any]) -> SearchSummary:
    """Summarise one parent run and its trial runs."""
    status: dict[str, int] = {}
    for run in trials:
        key = _tag(run, tracking.TAG_STATUS, "unknown")
        status[key] = status.get(key, 0) + 1
    completed = [trial_val_accuracy(run) for run in trials if _tag(run, tracking.TAG_STATUS) == tracking.STATUS_COMPLETED]
    finite = [value for value in completed if not math.isnan(value)]
    chosen = _chosen_run(parent, trials)
    test = level_test_accuracies(parent.data.metrics)
    if not test and chosen is not None:
        test = level_test_accuracies(chosen.data.metrics)
    chosen_name = None
    if chosen is not None:
        chosen_name = chosen.data.tags.get(tracking.TAG_TRIAL) or chosen.info.run_name
    return SearchSummary(
        run_id=parent.info.run_id,
        run_name=parent.info.run_name or parent.info.run_id,
        sweep_id=_tag(parent, tracking.TAG_SWEEP),
        method=_tag(parent, tracking.TAG_METHOD),
        dataset=_tag(parent, tracking.TAG_DATASET),
        budget=_tag(parent, "budget"),
        seed=_tag(parent, "seed"),
        trial_status=dict(sorted(status.items())),
        best_val=max(finite) if finite else math.nan,
        chosen_trial=chosen_name,
        test=test,
    )


def collect_searches(client: Any, experiment_id: str) -> list[SearchSummary]:
    """Return a summary of every search (parent run) in the experiment, oldest first."""
    parents = search_all_runs(client, experiment_id, f"tags.{tracking.TAG_KIND} = '{KIND_SEARCH}'")
    trials = search_all_runs(client, experiment_id, f"tags.{tracking.TAG_KIND} = '{KIND_TRIAL}'")
    by_sweep: dict[str, list[Any]] = {}
    by_parent: dict[str, list[Any]] = {}
    for run in trials:
        by_sweep.setdefault(run.data.tags.get(tracking.TAG_SWEEP, ""), []).append(run)
        by_parent.setdefault(run.data.tags.get(tracking.TAG_PARENT, ""), []).append(run)
    summaries = []
    for parent in sorted(parents, key=lambda run: run.info.start_time or 0):
        sweep = parent.data.tags.get(tracking.TAG_SWEEP)
        children = by_sweep.get(sweep, []) if sweep else by_parent.get(parent.info.run_id, [])
        summaries.append(summarise_search(parent, children))
    return summaries


# Aggregation ------------------------------------------------------------------------------


def mean_and_std(values: Iterable[float]) -> tuple[float, float]:
    """Return the mean and sample standard deviation of the finite values (NaN when undefined)."""
    finite = [value for value in values if not math.isnan(value)]
    if not finite:
        return math.nan, math.nan
    spread = statistics.stdev(finite) if len(finite) >= 2 else math.nan
    return statistics.fmean(finite), spread


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.isdigit() else (sys.maxsize, seed)


def summarise_methods(searches: Sequence[SearchSummary]) -> list[MethodSummary]:
    """Group searches by (method, dataset, budget) and aggregate them over seeds.

    Groups are ordered by dataset, then by mean test accuracy of the finest level
    (highest first), then by method name.
    """
    groups: dict[tuple[str, str, str], list[SearchSummary]] = {}
    for search in searches:
        groups.setdefault((search.method, search.dataset, search.budget), []).append(search)
    summaries = []
    for (method, dataset, budget), members in groups.items():
        members = sorted(members, key=lambda search: _seed_key(search.seed))
        levels = sorted({level for search in members for level in search.test})
        test_mean, test_std, test_count = {}, {}, {}
        for level in levels:
            values = [search.test[level] for search in members if level in search.test]
            test_mean[level], test_std[level] = mean_and_std(values)
            test_count[level] = len(values)
        val_mean, val_std = mean_and_std(search.best_val for search in members)
        summaries.append(
            MethodSummary(method, dataset, budget, tuple(members), val_mean, val_std, test_mean, test_std, test_count)
        )
    return sorted(summaries, key=_summary_order)


def _summary_order(summary: MethodSummary) -> tuple[str, float, str, str]:
    finest = summary.test_mean[max(summary.test_mean)] if summary.test_mean else math.nan
    return (summary.dataset, -finest if not math.isnan(finest) else math.inf, summary.method, summary.budget)


# Tables -----------------------------------------------------------------------------------


def format_statistic(mean: float, std: float, count: int) -> str:
    """Return ``0.8123`` for one value, ``0.8123 ± 0.0040 (n=3)`` for several, ``-`` for none."""
    if math.isnan(mean):
        return "-"
    if count < 2 or math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} (n={count})"


def comparison_frame(summaries: Sequence[MethodSummary]) -> pd.DataFrame:
    """Return one row per method, dataset and budget, with formatted statistics.

    Columns: dataset, method, budget, searches, seeds, trials, completed,
    early-stopped, failed, best val/probe_acc, test L1 .. test L<max levels>,
    chosen trial (for single searches).
    """
    levels = sorted({level for summary in summaries for level in summary.test_mean})
    rows = []
    for summary in summaries:
        finite_vals = sum(1 for search in summary.searches if not math.isnan(search.best_val))
        row: dict[str, Any] = {
            "dataset": summary.dataset,
            "method": summary.method,
            "budget": summary.budget,
            "searches": len(summary.searches),
            "seeds": ",".join(summary.seeds),
            "trials": summary.trials,
            "completed": summary.status_count(tracking.STATUS_COMPLETED),
            "early-stopped": summary.status_count(tracking.STATUS_EARLY_STOPPED),
            "failed": summary.status_count(tracking.STATUS_FAILED),
            "best val/probe_acc": format_statistic(summary.best_val_mean, summary.best_val_std, finite_vals),
        }
        for level in levels:
            row[f"test L{level}"] = format_statistic(
                summary.test_mean.get(level, math.nan), summary.test_std.get(level, math.nan), summary.test_count.get(level, 0)
            )
        single = len(summary.searches) == 1
        row["chosen trial"] = (summary.searches[0].chosen_trial or "-") if single else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def numbers_frame(summaries: Sequence[MethodSummary]) -> pd.DataFrame:
    """Return the unformatted statistics, one row per group (the CSV written next to the table)."""
    rows = []
    for summary in summaries:
        row: dict[str, Any] = {
            "dataset": summary.dataset,
            "method": summary.method,
            "budget": summary.budget,
            "searches": len(summary.searches),
            "trials": summary.trials,
            "best_val_mean": summary.best_val_mean,
            "best_val_std": summary.best_val_std,
        }
        for level in sorted(summary.test_mean):
            row[f"test_L{level}_mean"] = summary.test_mean[level]
            row[f"test_L{level}_std"] = summary.test_std[level]
            row[f"test_L{level}_n"] = summary.test_count[level]
        rows.append(row)
    return pd.DataFrame(rows)


def _by_dataset(summaries: Sequence[MethodSummary]) -> dict[str, list[MethodSummary]]:
    groups: dict[str, list[MethodSummary]] = {}
    for summary in summaries:
        groups.setdefault(summary.dataset, []).append(summary)
    return groups


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def format_markdown(summaries: Sequence[MethodSummary], experiment: str, tracking_uri: str) -> str:
    """Return the comparison as a Markdown page: one table per dataset, then the searches."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Method comparison: experiment `{experiment}`",
        "",
        f"Tracking store: `{tracking_uri}`. Written {now} by `search/compare.py`.",
        "",
        "Best val/probe_acc: the highest validation linear-probe accuracy of a completed trial. "
        "Test L<l>: test linear-probe accuracy at level l (L1 coarsest) of the trial each search chose. "
        "Several seeds: mean ± sample standard deviation (n = searches).",
    ]
    for dataset, group in _by_dataset(summaries).items():
        lines += ["", f"## {dataset}", "", _markdown_table(comparison_frame(group))]
    lines += ["", "## Searches", "", "| method | dataset | budget | seed | trials | best val | chosen trial | parent run |", "|---|---|---|---|---|---|---|---|"]
    for summary in summaries:
        for search in summary.searches:
            best = "-" if math.isnan(search.best_val) else f"{search.best_val:.4f}"
            lines.append(
                f"| {search.method} | {search.dataset} | {search.budget} | {search.seed} | {search.trials} | {best} "
                f"| {search.chosen_trial or '-'} | {search.run_name} (`{search.run_id}`) |"
            )
    return "\n".join(lines) + "\n"


def format_text(summaries: Sequence[MethodSummary]) -> str:
    """Return the comparison as fixed-width text, one block per dataset."""
    blocks = []
    for dataset, group in _by_dataset(summaries).items():
        blocks.append(f"{dataset}\n{comparison_frame(group).to_string(index=False)}")
    return "\n\n".join(blocks)


# Chart ------------------------------------------------------------------------------------


def plot_comparison(summaries: Sequence[MethodSummary]) -> Any:
    """Draw per-level test accuracy bars per method, one panel per dataset.

    Error bars are the sample standard deviation over seeds where a group has two or
    more searches. Returns a matplotlib Figure; the caller closes it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = list(dict.fromkeys(summary.dataset for summary in summaries))
    methods = sorted({summary.method for summary in summaries})
    palette = matplotlib.colormaps["tab10"]
    figure, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6.5 * max(1, len(datasets)), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        groups = [summary for summary in summaries if summary.dataset == dataset]
        levels = sorted({level for summary in groups for level in summary.test_mean})
        width = 0.8 / max(1, len(groups))
        for position, summary in enumerate(groups):
            means = [summary.test_mean.get(level, math.nan) for level in levels]
            spreads = [summary.test_std.get(level, math.nan) for level in levels]
            errors = [0.0 if math.isnan(value) else value for value in spreads]
            offsets = np.arange(len(levels)) + (position - (len(groups) - 1) / 2) * width
            label = summary.method if summary.budget in ("-", "") else f"{summary.method} ({summary.budget})"
            seeds = len(summary.searches)
            colour = palette(methods.index(summary.method) % 10)
            axis.bar(offsets, means, width, yerr=errors, capsize=3, color=colour, label=f"{label}, {seeds} seed{'s' if seeds != 1 else ''}")
        axis.set_xticks(range(len(levels)), [f"L{level}" for level in levels])
        axis.set_ylim(0.0, 1.0)
        axis.set_xlabel("hierarchy level (L1 coarsest)")
        axis.set_ylabel("test/probe_acc")
        axis.set_title(dataset)
        axis.grid(axis="y", alpha=0.3)
        if not levels:
            axis.text(0.5, 0.5, "no test accuracies logged", ha="center", va="center", transform=axis.transAxes)
        else:
            axis.legend(fontsize=8, loc="lower left")
    figure.suptitle("Test linear-probe accuracy of each search's chosen trial")
    figure.tight_layout()
    return figure


# Outputs ----------------------------------------------------------------------------------


def write_outputs(summaries: Sequence[MethodSummary], output_dir: str | Path, experiment: str, tracking_uri: str) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.csv`` and ``comparison.png``; return their paths."""
    import matplotlib.pyplot as plt

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": folder / "comparison.md",
        "csv": folder / "comparison.csv",
        "chart": folder / "comparison.png",
    }
    paths["markdown"].write_text(format_markdown(summaries, experiment, tracking_uri))
    numbers_frame(summaries).to_csv(paths["csv"], index=False)
    figure = plot_comparison(summaries)
    try:
        figure.savefig(paths["chart"], dpi=120)
    finally:
        plt.close(figure)
    return paths


def _metric_key(*parts: str) -> str:
    """Return an MLflow metric key from parts, with characters MLflow rejects replaced by '_'."""
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "_", part) for part in parts)


def log_comparison_run(
    client: Any, experiment_id: str, summaries: Sequence[MethodSummary], files: Mapping[str, Path]
) -> str:
    """Log the comparison files and statistics to a new run of the experiment; return its id.

    Metrics are ``<dataset>/<method>/<budget>/test_L<l>_mean`` (and ``_std``, and
    ``best_val_mean``), so the MLflow UI can chart them too.
    """
    from mlflow.entities import Metric, Param

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run = client.create_run(experiment_id, run_name=f"comparison-{stamp}", tags={tracking.TAG_KIND: KIND_COMPARISON})
    run_id = run.info.run_id
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
    metrics = []
    for summary in summaries:
        prefix = (summary.dataset, summary.method, summary.budget)
        values = {"best_val_mean": summary.best_val_mean, "best_val_std": summary.best_val_std}
        for level in summary.test_mean:
            values[f"test_L{level}_mean"] = summary.test_mean[level]
            values[f"test_L{level}_std"] = summary.test_std[level]
        metrics += [Metric(_metric_key(*prefix, name), value, now, 0) for name, value in values.items() if not math.isnan(value)]
    searches = sum(len(summary.searches) for summary in summaries)
    params = [Param("groups", str(len(summaries))), Param("searches", str(searches))]
    for start in range(0, max(1, len(metrics)), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000], params=params if start == 0 else [])
    for path in files.values():
        client.log_artifact(run_id, str(path))
    tracking.finish_run(client, run_id)
    return run_id


# Command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python search/compare.py``."""
    parser = argparse.ArgumentParser(
        prog="python search/compare.py",
        description=(
            "Compare the searches of one MLflow experiment per method, dataset and budget: "
            "trials, best validation probe accuracy and per-level test accuracy of the chosen "
            "trial, with mean and standard deviation over seeds."
        ),
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (tune.py's --experiment-name)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<working dir>/mlflow.db, as tune.py)")
    parser.add_argument("--output-dir", default=None, help="folder for comparison.md/.csv/.png (default: results/compare/<experiment>)")
    parser.add_argument("--method", action="append", default=[], help="keep only this method, repeatable (default: all)")
    parser.add_argument("--dataset", action="append", default=[], help="keep only this dataset, repeatable (default: all)")
    parser.add_argument("--no-mlflow-run", action="store_true", help="do not log the comparison as a new MLflow run")
    return parser


def _safe_folder_name(name: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in name)


def run_comparison(args: argparse.Namespace) -> int:
    """Run the comparison for parsed arguments; return the exit status."""
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    database = tracking.sqlite_path(uri)
    if database is not None and not database.exists():
        raise CompareError(f"MLflow store {database} not found; pass the search's store with --tracking-uri")
    client = tracking.make_client(uri)
    experiment_id = find_experiment_id(client, args.experiment)
    searches = [
        search
        for search in collect_searches(client, experiment_id)
        if (not args.method or search.method in args.method) and (not args.dataset or search.dataset in args.dataset)
    ]
    if not searches:
        raise CompareError(
            f"experiment {args.experiment!r} contains no search runs (tag {tracking.TAG_KIND}={KIND_SEARCH})"
            f"{' matching the --method/--dataset filters' if args.method or args.dataset else ''}; run search/tune.py first"
        )
    summaries = summarise_methods(searches)
    output_dir = Path(args.output_dir) if args.output_dir else Path("results") / "compare" / _safe_folder_name(args.experiment)
    files = write_outputs(summaries, output_dir, args.experiment, uri)
    print(format_text(summaries))
    print()
    for kind, path in files.items():
        print(f"{kind}: {path}")
    if not args.no_mlflow_run:
        run_id = log_comparison_run(client, experiment_id, summaries, files)
        print(f"MLflow comparison run: {run_id} (experiment {args.experiment!r}, {uri})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and compare; return 0 on success, 2 on bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run_comparison(args)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
