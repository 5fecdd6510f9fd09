"""Train one configuration, no search: ``python search/train.py --method g_hmlc ...``.

Stages: parse the command line into a RunConfig (defaults of the dataset, then the
``--config`` YAML file, then the flags) and check the dataset and the run folder. Then
start (or join) Ray and run the TorchTrainer in a background thread, printing one line
per epoch. At the end, print the linear-probe accuracies and the checkpoint folder.

Exit status: 0 done, 1 training failed, 2 invalid input, 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import yaml

from hmlc_core.config import ConfigError
from hmlc_core.train.config import METHODS, RunConfig, default_run_config, merge_dicts

DATASETS = ("cifar100", "fashion-mnist", "modelnet40", "folder")
DEFAULT_DATASET = "cifar100"
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(ValueError):
    """An invalid command-line value, reported before Ray starts."""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python search/train.py``."""
    parser = argparse.ArgumentParser(
        prog="python search/train.py",
        description=(
            "Pretrain one configuration with Ray Train (TorchTrainer) and report the "
            "linear-probe accuracy per hierarchy level. Values come from the dataset's "
            "defaults, then --config, then the flags below."
        ),
    )
    training = parser.add_argument_group("what to train")
    training.add_argument("--method", required=True, choices=METHODS, help="training objective")
    training.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help=f"dataset (default: data.name of --config, else {DEFAULT_DATASET})",
    )
    training.add_argument("--data-dir", default=None, help="folder that contains the dataset files")
    training.add_argument("--download", action="store_true", help="download cifar100 or fashion-mnist when missing")
    training.add_argument("--config", default=None, help="YAML file with RunConfig fields (nested like RunConfig.to_dict())")
    training.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one RunConfig field by dotted key, e.g. method.beta=0.5 (value parsed as YAML); repeatable",
    )
    training.add_argument("--epochs", type=int, default=None, help="training epochs")
    training.add_argument("--batch-size", type=int, default=None, help="global batch in images (split evenly over workers)")
    training.add_argument("--lr", type=float, default=None, help="peak learning rate per 256 images (scaled linearly)")
    training.add_argument("--temperature", type=float, default=None, help="contrastive temperature")
    training.add_argument("--seed", type=int, default=None, help="seed of initialisation, shuffling and augmentation")
    training.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap on steps per epoch (smoke runs)")
    training.add_argument("--final-test", action="store_true", help="also probe the test split at the end (final reports only)")

    workers = parser.add_argument_group("workers")
    workers.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (default: 1)")
    workers.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL, bf16 autocast")
    workers.add_argument("--cpus-per-worker", type=float, default=None, help="CPU cores reserved per worker (default: 1)")

    output = parser.add_argument_group("where results go")
    output.add_argument("--storage-path", default="ray_results", help="folder (or s3:// URI) for results and checkpoints (default: ./%(default)s)")
    output.add_argument("--name", default=None, help="run name (default: train-<method>-<dataset>-<time>)")
    output.add_argument("--resume", action="store_true", help="continue the run --name in --storage-path from its latest checkpoint")
    output.add_argument("--resume-from", default=None, help="start a new run from this checkpoint folder")
    output.add_argument("--failure-max", type=int, default=0, help="worker failures to recover from a checkpoint (default: 0)")

    cluster = parser.add_argument_group("Ray cluster")
    cluster.add_argument("--address", default=None, help="address of a running Ray cluster (default: start a local one on 127.0.0.1)")
    cluster.add_argument("--num-cpus", type=int, default=None, help="CPU cores of the local Ray cluster (default: all)")
    return parser


def set_dotted(values: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Return ``values`` with one ``a.b.c=VALUE`` assignment applied (VALUE parsed as YAML).

    Raises:
        UsageError: the assignment has no ``=`` or an empty key.
    """
    key, separator, text = assignment.partition("=")
    if not separator or not key.strip():
        raise UsageError(f"--set {assignment!r} is invalid; use KEY=VALUE, e.g. method.beta=0.5")
    nested: Any = yaml.safe_load(text)
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return merge_dicts(values, nested)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Collect the RunConfig values set by individual flags."""
    values: dict[str, Any] = {}
    top_level = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "max_steps_per_epoch": args.max_steps_per_epoch,
    }
    values.update({key: value for key, value in top_level.items() if value is not None})
    if args.final_test:
        values["final_test"] = True
    data = {"data_dir": args.data_dir} if args.data_dir is not None else {}
    if args.download:
        data["download"] = True
    scaling = {"num_workers": args.num_workers, "cpus_per_worker": args.cpus_per_worker}
    scaling = {key: value for key, value in scaling.items() if value is not None}
    if args.use_gpu:
        scaling["use_gpu"] = True
    sections = {
        "data": data,
        "scaling": scaling,
        "optim": {"lr": args.lr} if args.lr is not None else {},
        "method": {"temperature": args.temperature} if args.temperature is not None else {},
    }
    values.update({key: section for key, section in sections.items() if section})
    return values


def build_run(args: argparse.Namespace) -> RunConfig:
    """Build the RunConfig: dataset defaults, then --config, then --set, then the flags.

    Raises:
        UsageError: the YAML file is missing or not a mapping, or a value is invalid.
    """
    values: dict[str, Any] = {}
    if args.config is not None:
        path = Path(args.config)
        if not path.is_file():
            raise UsageError(f"--config {path} was not found; give the path of a YAML file")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {path} must hold a mapping of RunConfig fields")
        values = loaded
    for assignment in args.set:
        values = set_dotted(values, assignment)
    values = merge_dicts(values, flag_overrides(args))
    dataset = args.dataset or values.get("data", {}).get("name") or DEFAULT_DATASET
    # --method and the resolved dataset win over the same fields in --config and --set.
    values = merge_dicts(values, {"method": {"method": args.method}, "data": {"name": dataset}})
    try:
        return default_run_config(dataset, args.method, **values)
    except (ConfigError, TypeError) as error:
        raise UsageError(str(error)) from error


def check_dataset(run: RunConfig) -> None:
    """Load the splits once on the driver, so a missing dataset fails before Ray starts.

    Raises:
        UsageError: the dataset files are missing or invalid.
    """
    from hmlc_core.data import DataError, load_splits

    try:
        load_splits(run.data)
    except (DataError, FileNotFoundError) as error:
        raise UsageError(
            f"dataset {run.data.name!r} could not be loaded: {error}\n"
            f"Pass --data-dir with the dataset files, or --download (cifar100, fashion-mnist)."
        ) from error


def check_run_folder(storage_path: str, name: str, resume: bool) -> None:
    """Reject reusing an existing run folder without --resume, and --resume without one.

    Ray Train continues a run whose folder exists, so starting a "new" run under an
    old name would silently resume it.
    """
    if "://" in storage_path:
        return
    folder = Path(storage_path).expanduser() / name
    if folder.exists() and not resume:
        raise UsageError(
            f"run folder {folder} already exists; pass --resume to continue that run, "
            f"or choose another --name"
        )
    if resume and not folder.exists():
        raise UsageError(f"--resume: run folder {folder} was not found; check --storage-path and --name")


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address``, or start a local one bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        ray.init(address=address)
        return
    from hmlc_core.train.local_ray import init_local_ray

    init_local_ray(num_cpus=num_cpus)


def train_with_progress(run: RunConfig, args: argparse.Namespace, name: str) -> Any:
    """Run the TorchTrainer in a thread and print a line per reported epoch.

    Returns:
        The ``ray.train.Result``.

    Raises:
        ray.train.TrainingFailedError: training failed on a worker.
    """
    from hmlc_core.train.callbacks import JsonLinesRecorder, format_epoch_line
    from hmlc_core.train.trainer import build_trainer

    progress = Path(tempfile.mkdtemp(prefix="hmlc-train-")) / "progress.jsonl"
    progress.touch()
    trainer = build_trainer(
        run,
        storage_path=os.path.abspath(args.storage_path) if "://" not in args.storage_path else args.storage_path,
        name=name,
        callbacks=[JsonLinesRecorder(str(progress))],
        resume_checkpoint=args.resume_from,
        failure_max=args.failure_max,
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # re-raised in the main thread below
            outcome["error"] = error

    thread = threading.Thread(target=fit, name="torch-trainer", daemon=True)
    thread.start()
    printed = 0
    while True:
        finished = not thread.is_alive()
        lines = progress.read_text().splitlines()
        for line in lines[printed:]:
            print(format_epoch_line(json.loads(line)["metrics"], run.epochs), flush=True)
        printed = len(lines)
        if finished:
            break
        time.sleep(0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def print_summary(result: Any, run: RunConfig) -> None:
    """Print the final probe accuracies per level and the checkpoint folder."""
    metrics = result.metrics or {}
    for split in ("val", "test"):
        levels = sorted(key for key in metrics if key.startswith(f"{split}/probe_acc_L"))
        if not levels:
            continue
        parts = "  ".join(f"{key.rsplit('_', 1)[1]} {metrics[key]:.4f}" for key in levels)
        print(f"{split} linear probe top-1 per level (L1 = coarsest): {parts}")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint.path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Train one run; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        run = build_run(args)
        name = args.name or f"train-{args.method}-{run.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_run_folder(args.storage_path, name, args.resume)
        if args.resume and args.resume_from is not None:
            raise UsageError("--resume and --resume-from exclude each other; pick one")
        if args.address is None:
            check_dataset(run)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"run {name}: {run.method.method} on {run.data.name}, {run.epochs} epochs, "
          f"batch {run.batch_size} over {run.scaling.num_workers} worker(s)", flush=True)
    start_ray(args.address, args.num_cpus)
    import ray.train

    try:
        result = train_with_progress(run, args, name)
    except KeyboardInterrupt:
        print("interrupted; continue later with --resume and the same --name", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ray.train.TrainingFailedError as error:
        print(f"error: training failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print_summary(result, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
