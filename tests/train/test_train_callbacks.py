"""Driver-side callbacks: the per-epoch line and the JSON-lines record."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hmlc_core.train.callbacks import JsonLinesRecorder, MetricsPrinter, format_epoch_line


def test_epoch_line_lists_known_keys_in_order() -> None:
    metrics = {"epoch": 3, "val/knn_acc": 0.5, "train/loss": 4.25, "other": 1.0, "train/lr": 2e-5}
    assert format_epoch_line(metrics, 10) == "epoch 3/10  train/loss 4.2500  train/lr 2.000e-05  val/knn_acc 0.5000"
    assert format_epoch_line({"epoch": 1}) == "epoch 1"


def test_printer_and_recorder_use_rank_zero(tmp_path: Path) -> None:
    reports = [{"epoch": 1, "train/loss": 2.0}, {"epoch": 1, "train/loss": 9.0}]
    stream = io.StringIO()
    MetricsPrinter(total_epochs=2, stream=stream).after_report(None, reports, None)
    assert stream.getvalue() == "epoch 1/2  train/loss 2.0000\n"
    path = tmp_path / "log.jsonl"
    recorder = JsonLinesRecorder(str(path))
    recorder.after_report(None, reports, None)
    recorder.after_report(None, reports, None)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"metrics": reports[0], "workers": 2, "checkpoint": None}] * 2
