"""Command line of ``python search/tune.py``: the options, their defaults and their checks.

Every check here runs before Ray starts or any trial is scheduled, and raises
:class:`SearchSetupError` with a message that names the bad value and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.budgets import BUDGETS
from search.spaces import METHODS

DATASETS: tuple[str, ...] = ("cifar100", "fashion-mnist", "modelnet40", "folder")
DEFAULT_EXPERIMENT = "hmlc-search"
DEFAULT_STORAGE = "ray_results"
# Debug hooks for tests of failure handling (--debug-fail-trial): the chosen trial
# raises before training every time, or once after its first report.
FAIL_ALWAYS = "always"
FAIL_ONCE_AFTER_FIRST_REPORT = "once-after-first-report"
FAIL_MODES: tuple[str, ...] = (FAIL_ALWAYS, FAIL_ONCE_AFTER_FIRST_REPORT)


class SearchSetupError(ValueError):
    """A command-line value that cannot work; raised before any trial starts."""


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """The parsed command line (see ``build_parser`` for each option's meaning)."""

    method: str
    dataset: str
    data_dir: str | None
    data_csv: str | None
    download: bool
    register_model: str | None
    warm_start: str | None
    budget: str | None
    num_samples: int | None
    max_concurrent_trials: int | None
    epochs: int | None
    batch_size: int | None
    max_steps_per_epoch: int | None
    num_workers: int
    use_gpu: bool | None
    cpus_per_worker: float
    tracking_uri: str | None
    experiment_name: str
    storage_path: str
    name: str | None
    address: str | None
    num_cpus: int | None
    resume: bool
    seed: int
    space: tuple[str, ...]
    space_file: str | None
    optuna_storage: str | None
    leaderboard_csv: str | None
    debug_fail_trial: str | None


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python search/tune.py``."""
    parser = argparse.ArgumentParser(
        prog="python search/tune.py",
        description=(
            "Hyperparameter search (Ray Tune + Optuna TPE + ASHA) over one training method. "
            "The searcher maximises the final validation linear-probe accuracy "
            "(val/probe_acc); ASHA stops weak trials on the per-epoch kNN accuracy "
            "(val/knn_acc). Every trial is an MLflow child run of one parent run per "
            "search; the best trial is evaluated once on the test split at the end."
        ),
    )
    what = parser.add_argument_group("what to search")
    what.add_argument("--method", required=True, help=f"training objective, one of {', '.join(METHODS)}")
    what.add_argument("--dataset", default="cifar100", help=f"dataset, one of {', '.join(DATASETS)} (default: %(default)s)")
    what.add_argument(
        "--data-dir",
        default=None,
        help="folder searched first for the dataset files (then $HMLC_DATA_DIR, "
        "~/.cache/hmlc/data and a system location); for --dataset folder, the image folder",
    )
    what.add_argument("--data-csv", default=None, help="training label CSV of --dataset folder (default <data-dir>/train.csv)")
    what.add_argument(
        "--warm-start",
        default=None,
        metavar="STUDY",
        help="Optuna study name of an earlier search in --optuna-storage (its parent run's "
        "tag optuna_study); its finished trials seed this search's TPE (default: none)",
    )
    what.add_argument(
        "--register-model",
        default=None,
        metavar="NAME",
        help="also register the best trial's encoder in the MLflow model registry under NAME "
        "(default: log it to the parent run only)",
    )
    what.add_argument(
        "--download",
        action="store_true",
        help="download the dataset through torchvision when its files are missing (cifar100, "
        "fashion-mnist; needs a network connection); without it nothing is downloaded",
    )
    what.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KNOB=SPEC",
        help="narrow or fix a knob, repeatable: temperature=0.1 fixes it, lr=0.05:0.2 sets "
        "a range, heads=2,4 keeps those choices",
    )
    what.add_argument("--space-file", default=None, help="YAML file of knob overrides (same forms as --space; --space wins)")
    what.add_argument("--seed", type=int, default=0, help="seed of the searcher (TPE) and of every trial's run (default: %(default)s)")

    budget = parser.add_argument_group("compute budget (defaults come from --budget)")
    budget.add_argument(
        "--budget",
        default=None,
        help="smoke (pipeline check, < 5 min on 2 CPU cores), local (one machine, CPU) or "
        "full (paper-scale, GPU cluster); default: full when the cluster has a GPU, else local",
    )
    budget.add_argument("--num-samples", type=int, default=None, help="trials to run (default: from budget)")
    budget.add_argument("--max-concurrent-trials", type=int, default=None, help="trials running at once (default: budget, capped by free cluster resources)")
    budget.add_argument("--epochs", type=int, default=None, help="training epochs per trial (default: from budget)")
    budget.add_argument("--batch-size", type=int, default=None, help="global batch per step, in images (default: from budget)")
    budget.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap on optimizer steps per epoch (default: from budget; none = full epochs)")
    budget.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial (default: %(default)s)")
    budget.add_argument(
        "--use-gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one GPU per worker (default: from budget; full uses GPUs)",
    )
    budget.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPU cores reserved per worker (default: %(default)s)")

    where = parser.add_argument_group("where results go")
    where.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///<working dir>/mlflow.db; MLflow 3 "
        "needs a database store, not the old mlruns/ file store)",
    )
    where.add_argument("--experiment-name", default=DEFAULT_EXPERIMENT, help="MLflow experiment; one experiment can hold searches of several methods (default: %(default)s)")
    where.add_argument("--storage-path", default=DEFAULT_STORAGE, help="Ray results and checkpoints: a local folder or an s3:// URI (default: ./%(default)s)")
    where.add_argument(
        "--name",
        default=None,
        help="search name, the folder under --storage-path (default: "
        "<method>-<dataset>-<budget>-seed<seed>-<UTC time>)",
    )
    where.add_argument(
        "--optuna-storage",
        default=None,
        help="Optuna study storage URL (default: sqlite optuna.db next to a SQLite MLflow "
        "store; 'memory' keeps the study in the Tune checkpoint only)",
    )
    where.add_argument("--leaderboard-csv", default=None, help="leaderboard CSV path (default: <storage-path>/<name>/leaderboard.csv, or ./<name>-leaderboard.csv for s3://)")

    cluster = parser.add_argument_group("Ray cluster")
    cluster.add_argument("--address", default=None, help="address of a running Ray cluster, e.g. 127.0.0.1:6379 (default: start a local one bound to 127.0.0.1)")
    cluster.add_argument("--num-cpus", type=int, default=None, help="CPU cores of the local Ray cluster (default: all cores; ignored with --address)")
    cluster.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted search: --name, or the newest search of this "
        "method, dataset, budget and seed under --storage-path",
    )
    # Test hook: the first trial to start fails on purpose, to check that the search goes on.
    parser.add_argument("--debug-fail-trial", default=None, choices=FAIL_MODES, help=argparse.SUPPRESS)
    return parser


def parse_options(argv: Sequence[str] | None = None) -> SearchOptions:
    """Parse the command line and check every value that needs no data and no cluster.

    Raises:
        SearchSetupError: a value that cannot work (the message names it and the fix).
    """
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = vars(args)
    values["space"] = tuple(values["space"])
    options = SearchOptions(**values)
    check_options(options)
    return options


def check_options(options: SearchOptions) -> None:
    """Raise SearchSetupError for an unknown name or a value out of range."""
    if options.method not in METHODS:
        raise SearchSetupError(f"unknown --method {options.method!r}; choose one of {list(METHODS)}")
    if options.dataset not in DATASETS:
        raise SearchSetupError(f"unknown --dataset {options.dataset!r}; choose one of {list(DATASETS)}")
    if options.budget is not None and options.budget not in BUDGETS:
        raise SearchSetupError(f"unknown --budget {options.budget!r}; choose one of {list(BUDGETS)}")
    for flag, value, minimum in (
        ("--num-samples", options.num_samples, 1),
        ("--max-concurrent-trials", options.max_concurrent_trials, 1),
        ("--epochs", options.epochs, 1),
        ("--batch-size", options.batch_size, 2),
        ("--max-steps-per-epoch", options.max_steps_per_epoch, 1),
        ("--num-workers", options.num_workers, 1),
        ("--num-cpus", options.num_cpus, 1),
    ):
        if value is not None and value < minimum:
            raise SearchSetupError(f"{flag} {value} is invalid; use an integer >= {minimum}")
    if options.cpus_per_worker <= 0:
        raise SearchSetupError(f"--cpus-per-worker {options.cpus_per_worker} is invalid; use a number > 0")
    if options.seed < 0:
        raise SearchSetupError(f"--seed {options.seed} is invalid; use an integer >= 0")
    if options.dataset == "folder" and options.data_dir is None and options.data_csv is None:
        raise SearchSetupError("--dataset folder needs --data-dir (the image folder) or --data-csv (the label CSV)")
    if options.space_file is not None and not Path(options.space_file).is_file():
        raise SearchSetupError(f"--space-file {options.space_file!r} not found; give the path of a YAML file")


def absolute_storage_path(storage_path: str) -> str:
    """Return a local storage folder as an absolute path; URIs (``s3://``) unchanged."""
    if "://" in storage_path:
        return storage_path
    return str(Path(storage_path).expanduser().resolve())


def is_remote(storage_path: str) -> bool:
    """Return True for a storage URI such as ``s3://bucket/path``."""
    return "://" in storage_path and not storage_path.startswith("file://")


def join_storage(storage_path: str, *parts: str) -> str:
    """Join path parts to a local folder or a URI with ``/``.

    A URI's query options (``s3://bucket/runs?endpoint_override=...``) stay at the end,
    so ``join_storage("s3://b/runs?scheme=http", "name")`` is ``s3://b/runs/name?scheme=http``.
    """
    if not is_remote(storage_path):
        return os.path.join(storage_path, *parts)
    base, separator, query = storage_path.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + separator + query
