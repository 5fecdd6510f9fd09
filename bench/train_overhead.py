"""Ray Train's overhead for one run: the same training in a plain process and in TorchTrainer.

(a) runs the per-worker training code (``TrainingSession`` and ``run_epochs``) in this
process without Ray Train (the local Ray cluster that (b) uses stays idle meanwhile).
(b) runs it through ``TorchTrainer`` with one worker. Both
use the same model, data, batch, steps, seeds and per-epoch work (kNN proxy, checkpoint
written to disk, final probe), and the same number of CPU threads. The script prints
images per second and seconds per epoch of the training part (measured inside the
loop, epochs after the first), the end-to-end wall time, the final probe accuracy,
and the ratios b / a of the medians over the rounds.

Example (four training runs; a few minutes on 2 idle CPU cores):

    python bench/train_overhead.py --steps 40 --epochs 3 --threads 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hmlc_core.train.checkpoint import save_checkpoint
from hmlc_core.train.config import RunConfig, default_run_config
from hmlc_core.train.loop import TrainingSession, WorkerInfo
from hmlc_core.train.worker import run_epochs


def build_run(args: argparse.Namespace) -> RunConfig:
    """Build the benchmark run: small_cnn on Fashion-MNIST, ``args.steps`` steps per epoch."""
    return default_run_config(
        "fashion-mnist",
        args.method,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_steps_per_epoch=args.steps,
        knn_val_size=500,
        knn_bank_size=2000,
        probe_train_size=2000,
        probe_val_size=1000,
        probe={"weight_decays": [0.0, 1e-4], "max_iter": 50},
        data={"data_dir": args.data_dir},
        scaling={"num_workers": 1, "cpus_per_worker": float(args.threads)},
    )


def run_plain(run: RunConfig, threads: int) -> tuple[float, list[dict[str, float]]]:
    """Run the training in this process; return (wall seconds, per-epoch metrics)."""
    torch.set_num_threads(threads)
    epochs: list[dict[str, float]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        session = TrainingSession(run, WorkerInfo(rank=0, world_size=1, device=torch.device("cpu")))

        def report(metrics: dict[str, float], current: TrainingSession, attach: bool) -> None:
            if attach:
                save_checkpoint(Path(scratch) / f"epoch_{current.epoch:04d}", current.state())
            epochs.append(metrics)

        run_epochs(session, report)
    return time.perf_counter() - start, epochs


def start_ray(threads: int) -> float:
    """Start a local Ray cluster with ``threads`` CPUs; return the seconds it took."""
    from hmlc_core.train.local_ray import init_local_ray

    start = time.perf_counter()
    init_local_ray(num_cpus=threads, log_to_driver=False)
    return time.perf_counter() - start


def run_ray(run: RunConfig) -> tuple[float, list[dict[str, float]]]:
    """Run the training through TorchTrainer with one worker (Ray already started).

    Returns:
        (wall seconds of fit, per-epoch metrics).
    """
    from hmlc_core.train.callbacks import JsonLinesRecorder
    from hmlc_core.train.trainer import run_training

    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "reports.jsonl"
        start = time.perf_counter()
        run_training(run, storage_path=scratch, name="bench", callbacks=[JsonLinesRecorder(str(log))])
        wall = time.perf_counter() - start
        epochs = [json.loads(line)["metrics"] for line in log.read_text().splitlines()]
    return wall, epochs


def steady_state(epochs: list[dict[str, Any]]) -> tuple[float, float]:
    """Return mean (images per second, seconds per epoch) over epochs after the first."""
    measured = epochs[1:] if len(epochs) > 1 else epochs
    images = statistics.mean(float(epoch["train/images_per_s"]) for epoch in measured)
    seconds = statistics.mean(float(epoch["train/epoch_time_s"]) for epoch in measured)
    return images, seconds


def print_row(label: str, wall: float, epochs: list[dict[str, float]]) -> tuple[float, float, float]:
    """Print one variant's row and return (images/s, s/epoch, wall s)."""
    images, seconds = steady_state(epochs)
    probe = epochs[-1]["val/probe_acc"]
    print(f"{label:34s}{images:10.1f}{seconds:10.2f}{wall:10.1f}{probe:10.4f}", flush=True)
    return images, seconds, wall


def main() -> None:
    """Run both variants, alternating, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST folder")
    parser.add_argument("--method", default="hmce", help="training method (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch in images (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both variants (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of (a) then (b); alternating exposes load drift (default: %(default)s)"
    )
    args = parser.parse_args()
    run = build_run(args)
    print(
        f"run: {args.method}, small_cnn, Fashion-MNIST, batch {args.batch_size}, "
        f"{args.steps} steps x {args.epochs} epochs, {args.threads} CPU threads, {args.rounds} rounds",
        flush=True,
    )
    init_seconds = start_ray(args.threads)
    print(f"ray.init: {init_seconds:.1f} s (not part of any row)")
    print(f"{'':34s}{'images/s':>10s}{'s/epoch':>10s}{'wall s':>10s}{'probe':>10s}", flush=True)
    plain_rows, ray_rows = [], []
    for round_index in range(1, args.rounds + 1):
        plain_rows.append(print_row(f"(a) plain PyTorch loop, round {round_index}", *run_plain(run, args.threads)))
        ray_rows.append(print_row(f"(b) TorchTrainer 1 worker, round {round_index}", *run_ray(run)))

    plain = [statistics.median(column) for column in zip(*plain_rows)]
    ray_numbers = [statistics.median(column) for column in zip(*ray_rows)]
    print(f"{'(a) median':34s}{plain[0]:10.1f}{plain[1]:10.2f}{plain[2]:10.1f}")
    print(f"{'(b) median':34s}{ray_numbers[0]:10.1f}{ray_numbers[1]:10.2f}{ray_numbers[2]:10.1f}")
    print(f"ratio b/a of medians: s/epoch {ray_numbers[1] / plain[1]:.3f}, wall {ray_numbers[2] / plain[2]:.3f}")


if __name__ == "__main__":
    main()
