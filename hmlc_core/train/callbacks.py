"""Ray Train V2 driver-side callbacks that show or record the per-epoch metrics.

A ``ray.train.UserCallback`` runs in the Ray Train controller process after every
``ray.train.report``; it receives one metrics dict per worker. The workers of this
project all report rank 0's metrics, so these callbacks read ``metrics[0]``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

import ray.train

# Keys shown by MetricsPrinter when present, in this order.
PRINTED_KEYS = (
    "train/loss",
    "train/lr",
    "val/knn_acc",
    "val/probe_acc",
    "test/probe_acc",
    "train/images_per_s",
    "train/epoch_time_s",
)


def format_epoch_line(metrics: dict[str, Any], total_epochs: int | None = None) -> str:
    """Return one line such as ``epoch 3/10  train/loss 4.1021  val/knn_acc 0.7120``."""
    epoch = metrics.get("epoch", "?")
    parts = [f"epoch {epoch}" + (f"/{total_epochs}" if total_epochs else "")]
    for key in PRINTED_KEYS:
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{key} {_format_value(float(value))}")
    return "  ".join(parts)


def _format_value(value: float) -> str:
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


class MetricsPrinter(ray.train.UserCallback):
    """Prints one line per reported epoch to the controller's stdout.

    Ray forwards the controller's output to the driver's console (prefixed with the
    controller's name) when ``ray.init(log_to_driver=True)``, the default.
    """

    def __init__(self, total_epochs: int | None = None, stream: TextIO | None = None) -> None:
        self.total_epochs = total_epochs
        self.stream = stream

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        """Print rank 0's metrics of this report."""
        stream = self.stream or sys.stdout
        print(format_epoch_line(metrics[0], self.total_epochs), file=stream, flush=True)


class JsonLinesRecorder(ray.train.UserCallback):
    """Appends ``{"metrics": rank 0's metrics, "workers": W, "checkpoint": path}`` per report.

    The file is written by the controller process, so ``path`` must be reachable from
    the node that runs the controller (the driver's node by default).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        """Append this report as one JSON line."""
        record = {
            "metrics": metrics[0],
            "workers": len(metrics),
            "checkpoint": None if checkpoint is None else checkpoint.path,
        }
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
