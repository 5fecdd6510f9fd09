"""SupCon, HMCE, G-HMLC and A-HMLC on Fashion-MNIST at equal compute: ``python bench/compare_methods.py``.

For every method, a small Optuna search (TPE, in this process, no Ray) runs over the
method's knobs from ``search.spaces``, scored by the final validation linear-probe
accuracy. The best configuration is then trained again with several seeds, and each
seed run is evaluated once on the test split. All methods share the encoder, epochs,
batch, step cap and probe of the chosen ``--budget``, so they get the same compute. Prints the budget, the
per-level test accuracies (mean ± sample standard deviation over seeds) and the
wall-clock per method, and writes the same to ``bench/results/compare_methods_<date>.md``
with the machine and the git commit.

Budgets are project choices. ``tiny`` (28 runs of 80 steps) took 19 minutes on 2 CPU
cores shared with other jobs (``bench/results/compare_methods_2026-12-04.md``); an idle
machine is faster. It shows that the comparison runs, not which method wins. ``small`` and ``medium`` are
for machines with more cores or a GPU. The flags override single budget numbers.
NOTE: Optuna's TPE samples at random for its first 10 trials, so searches of fewer
trials (``tiny``, ``small``) are random searches.
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
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hmlc_core.data import load_splits
from hmlc_core.train.config import RunConfig, merge_dicts
from hmlc_core.train.loop import TrainingSession, WorkerInfo, prepare_data

from search.spaces import Choice, FloatRange, Fixed, IntRange, Knob, search_space

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS: tuple[str, ...] = ("supcon", "hmce", "g_hmlc", "a_hmlc")
DATASET = "fashion-mnist"
NUM_LEVELS = 3


@dataclasses.dataclass(frozen=True)
class BenchBudget:
    """Compute shared by every method (project choices).

    Attributes:
        name: budget name.
        epochs: training epochs per run.
        batch_size: images per optimizer step.
        max_steps_per_epoch: cap on steps per epoch, None for full epochs.
        width: small_cnn feature width C.
        search_trials: Optuna trials per method.
        seeds: seeds of the final runs per method.
        probe_train_size: training images of the linear probe.
        probe_val_size: validation images that choose the probe's weight decay.
        probe_max_iter: L-BFGS iterations of the probe.
        knn_val_size: validation images of the per-epoch kNN proxy.
        knn_bank_size: training images of the kNN bank.
    """

    name: str
    epochs: int
    batch_size: int
    max_steps_per_epoch: int | None
    width: int
    search_trials: int
    seeds: int
    probe_train_size: int
    probe_val_size: int
    probe_max_iter: int
    knn_val_size: int
    knn_bank_size: int

    def describe(self) -> str:
        """Return the budget as one line for the output."""
        steps = "full epochs" if self.max_steps_per_epoch is None else f"at most {self.max_steps_per_epoch} steps per epoch"
        return (
            f"budget {self.name}: small_cnn width {self.width}, {self.epochs} epochs of batch {self.batch_size} "
            f"({steps}), {self.search_trials} search trials and {self.seeds} seeds per method, linear probe on "
            f"{self.probe_train_size} training images ({self.probe_max_iter} L-BFGS iterations, weight decay "
            f"chosen on {self.probe_val_size} validation images), test on the full test split"
        )


BUDGETS: dict[str, BenchBudget] = {
    "tiny": BenchBudget("tiny", epochs=2, batch_size=128, max_steps_per_epoch=40, width=32, search_trials=4, seeds=3,
                        probe_train_size=4096, probe_val_size=2000, probe_max_iter=50, knn_val_size=500, knn_bank_size=2000),
    "small": BenchBudget("small", epochs=10, batch_size=256, max_steps_per_epoch=None, width=64, search_trials=8, seeds=3,
                         probe_train_size=20000, probe_val_size=6000, probe_max_iter=100, knn_val_size=2000, knn_bank_size=10000),
    "medium": BenchBudget("medium", epochs=30, batch_size=256, max_steps_per_epoch=None, width=128, search_trials=16, seeds=3,
                          probe_train_size=54000, probe_val_size=6000, probe_max_iter=200, knn_val_size=2000, knn_bank_size=20000),
}


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """Metrics and wall-clock seconds of one training run."""

    metrics: Mapping[str, float]
    seconds: float


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """Search and seed-run results of one method."""

    method: str
    best_knobs: Mapping[str, Any]
    best_search_val: float
    search_seconds: float
    seed_runs: tuple[RunOutcome, ...]


def base_run(method: str, budget: BenchBudget, seed: int, device: str) -> RunConfig:
    """Return the run settings every method shares under ``budget``."""
    values = {
        "method": {"method": method, "gmm_warmup_epochs": 0, "gmm_refit_every": 1, "gmm_buffer_size": 4096, "gmm": {"seed": seed}},
        "data": {"name": DATASET},
        "model": {"encoder": {"name": "small_cnn", "in_channels": 1, "width": budget.width}},
        "optim": {"warmup_epochs": 0.0},
        "probe": {"max_iter": budget.probe_max_iter, "seed": seed, "weight_decays": [0.0, 1e-4, 1e-3]},
        "scaling": {"num_workers": 1, "use_gpu": device == "cuda"},
        "batch_size": budget.batch_size,
        "epochs": budget.epochs,
        "seed": seed,
        "knn_val_size": budget.knn_val_size,
        "knn_bank_size": budget.knn_bank_size,
        "max_steps_per_epoch": budget.max_steps_per_epoch,
        "probe_train_size": budget.probe_train_size,
        "probe_val_size": budget.probe_val_size,
        "final_test": False,
    }
    return RunConfig.from_dict(merge_dicts(RunConfig().to_dict(), values))


def suggest(trial: Any, name: str, knob: Knob) -> Any:
    """Return Optuna's suggestion for one knob of ``search.spaces``."""
    if isinstance(knob, FloatRange):
        return trial.suggest_float(name, knob.low, knob.high, log=knob.log)
    if isinstance(knob, IntRange):
        return trial.suggest_int(name, knob.low, knob.high)
    if isinstance(knob, Choice):
        return trial.suggest_categorical(name, list(knob.values))
    if isinstance(knob, Fixed):
        return knob.value
    raise TypeError(f"knob {name!r} has unsupported type {type(knob).__name__}")


def train_once(run: RunConfig, splits: Any, device: torch.device) -> RunOutcome:
    """Train ``run`` in this process and return its final metrics and wall-clock seconds."""
    start = time.perf_counter()
    info = WorkerInfo(rank=0, world_size=1, device=device)
    session = TrainingSession(run, info, data=prepare_data(run, info, splits))
    metrics: dict[str, float] = {}
    while session.epoch < run.epochs:
        metrics.update(session.train_epoch())
        metrics.update(session.update_masks())
    metrics.update(session.final_evaluation())
    return RunOutcome(metrics=metrics, seconds=time.perf_counter() - start)


def run_method(method: str, budget: BenchBudget, splits: Any, device: torch.device, log: Any) -> MethodResult:
    """Search one method's knobs, then train the best knobs with every seed."""
    import optuna

    from search.mapping import apply_sample

    channels = budget.width
    space = search_space(method, NUM_LEVELS, channels)
    base = base_run(method, budget, seed=0, device=device.type)

    def objective(trial: Any) -> float:
        sample = {name: suggest(trial, name, knob) for name, knob in space.items()}
        outcome = train_once(apply_sample(base, sample, NUM_LEVELS), splits, device)
        value = outcome.metrics.get("val/probe_acc", math.nan)
        log(f"  {method} trial {trial.number}: val/probe_acc {value:.4f} in {outcome.seconds:.0f} s, {sample}")
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    start = time.perf_counter()
    study.optimize(objective, n_trials=budget.search_trials)
    search_seconds = time.perf_counter() - start
    best = {**{name: knob.value for name, knob in space.items() if isinstance(knob, Fixed)}, **study.best_params}
    runs = []
    for seed in range(1, budget.seeds + 1):
        seeded = dataclasses.replace(apply_sample(base_run(method, budget, seed, device.type), best, NUM_LEVELS), final_test=True)
        outcome = train_once(seeded, splits, device)
        log(f"  {method} seed {seed}: test/probe_acc {outcome.metrics.get('test/probe_acc', math.nan):.4f} in {outcome.seconds:.0f} s")
        runs.append(outcome)
    return MethodResult(method, best, study.best_value, search_seconds, tuple(runs))


def mean_std(values: Sequence[float]) -> str:
    """Return ``mean ± sample std`` of the values to 4 decimals."""
    finite = [value for value in values if not math.isnan(value)]
    if not finite:
        return "-"
    if len(finite) == 1:
        return f"{finite[0]:.4f}"
    return f"{statistics.fmean(finite):.4f} ± {statistics.stdev(finite):.4f}"


def results_table(results: Sequence[MethodResult]) -> str:
    """Return the Markdown table of per-level test accuracies and wall-clock per method."""
    header = ["method", "seeds"] + [f"test L{level}" for level in range(1, NUM_LEVELS + 1)]
    header += ["best search val", "train s per seed run", "search s", "method total s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for result in results:
        levels = [mean_std([run.metrics.get(f"test/probe_acc_L{level}", math.nan) for run in result.seed_runs]) for level in range(1, NUM_LEVELS + 1)]
        seconds = [run.seconds for run in result.seed_runs]
        total = result.search_seconds + sum(seconds)
        row = [result.method, str(len(result.seed_runs)), *levels, f"{result.best_search_val:.4f}",
               f"{statistics.fmean(seconds):.0f}", f"{result.search_seconds:.0f}", f"{total:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """Return ``git rev-parse HEAD`` of the checkout (``-dirty`` when tracked files changed), or ``uncommitted``."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    return f"{commit}-dirty" if dirty else commit


def machine_description(device: torch.device) -> str:
    """Return the CPU model, core count, torch threads and the device."""
    text = f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}"
    if device.type == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    return text


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python bench/compare_methods.py``."""
    parser = argparse.ArgumentParser(prog="python bench/compare_methods.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--budget", default="tiny", choices=sorted(BUDGETS), help="shared compute per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to compare")
    parser.add_argument("--epochs", type=int, default=None, help="override the budget's epochs")
    parser.add_argument("--search-trials", type=int, default=None, help="override the budget's search trials per method")
    parser.add_argument("--seeds", type=int, default=None, help="override the budget's seeds per method")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device (auto: cuda when available)")
    parser.add_argument("--output", default=None, help="Markdown result file (default: bench/results/compare_methods_<UTC date>.md)")
    return parser


def resolve_budget(args: argparse.Namespace) -> BenchBudget:
    """Return the chosen budget with the command-line overrides applied."""
    budget = BUDGETS[args.budget]
    overrides = {"epochs": args.epochs, "search_trials": args.search_trials, "seeds": args.seeds}
    for name, value in overrides.items():
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} {value} is invalid; use an integer >= 1")
    changed = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(budget, **changed, name=budget.name + ("+overrides" if changed else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the result file; return 0."""
    args = build_parser().parse_args(argv)
    budget = resolve_budget(args)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    started = datetime.datetime.now(datetime.timezone.utc)
    lines: list[str] = []

    def log(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    log(budget.describe())
    load_start = os.getloadavg()[0]
    splits = load_splits(base_run(METHODS[0], budget, 0, device.type).data)
    results = []
    for method in args.methods:
        log(f"{method}: search of {budget.search_trials} trials, then {budget.seeds} seeds")
        results.append(run_method(method, budget, splits, device, log))
    table = results_table(results)
    print()
    print(table)
    output = Path(args.output) if args.output else REPO_ROOT / "bench" / "results" / f"compare_methods_{started:%Y-%m-%d}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    document = [
        "# Method comparison on Fashion-MNIST at equal compute",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine_description(device)}",
        f"- Commit: {git_commit()}",
        f"- Command: `{' '.join(['python bench/compare_methods.py', *(argv if argv is not None else sys.argv[1:])])}`",
        f"- Load average (1 min) at start and end: {load_start:.2f}, {os.getloadavg()[0]:.2f}; other jobs on the "
        "machine slow the runs, so compare wall-clock only between runs on an idle machine.",
        f"- Budget: {budget.describe()}",
        "- Search: Optuna TPE (seed 0) in one process over the method's knobs from `search/spaces.py`, scored by "
        "the final val/probe_acc of seed 0 (TPE samples at random for its first 10 trials, so a search of fewer "
        f"trials is a random search). The best knobs are then trained with seeds 1..{budget.seeds} and tested once each.",
        "- Test L1 (coarsest: clothes/goods), L2 (6 groups), L3 (10 classes): mean ± sample standard deviation over seeds.",
        "",
        table,
        "",
        "Best knobs per method:",
        "",
        *[f"- {result.method}: {dict(result.best_knobs)}" for result in results],
        "",
        "Log:",
        "",
        "```",
        *lines,
        "```",
        "",
    ]
    output.write_text("\n".join(document))
    print(f"\nwritten: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
