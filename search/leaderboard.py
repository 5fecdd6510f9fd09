"""The leaderboard of a search: one row per trial, best validation probe accuracy first."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

OBJECTIVE = "val/probe_acc"
KNN = "val/knn_acc"


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the leaderboard shows it.

    Attributes:
        trial_id: Ray Tune trial id.
        status: completed, early-stopped, failed or running.
        knobs: the trial's knob values (short names).
        metrics: the trial's last reported metrics.
        mlflow_run_id: the trial's child run, or None when it has none.
        checkpoint_path: the trial's latest training checkpoint, or None.
    """

    trial_id: str
    status: str
    knobs: Mapping[str, Any]
    metrics: Mapping[str, Any]
    mlflow_run_id: str | None = None
    checkpoint_path: str | None = None


def _level_columns(records: Iterable[TrialRecord]) -> list[str]:
    keys = {key for record in records for key in record.metrics if key.startswith(OBJECTIVE + "_L")}
    return sorted(keys, key=lambda key: int(key.rsplit("_L", 1)[1]))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def build_leaderboard(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """Return one row per trial, sorted by ``val/probe_acc`` (highest first, missing last).

    Columns: ``rank``, ``trial_id``, ``status``, ``epochs``, ``val/probe_acc``, the
    per-level ``val/probe_acc_L{l}``, ``val/knn_acc``, one column per knob, and
    ``mlflow_run_id``.
    """
    levels = _level_columns(records)
    knob_names = sorted({name for record in records for name in record.knobs})
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "trial_id": record.trial_id,
            "status": record.status,
            "epochs": record.metrics.get("epoch"),
            OBJECTIVE: _number(record.metrics.get(OBJECTIVE)),
        }
        row.update({key: _number(record.metrics.get(key)) for key in levels})
        row[KNN] = _number(record.metrics.get(KNN))
        row.update({name: record.knobs.get(name) for name in knob_names})
        row["mlflow_run_id"] = record.mlflow_run_id
        rows.append(row)
    columns = ["trial_id", "status", "epochs", OBJECTIVE, *levels, KNN, *knob_names, "mlflow_run_id"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values(
        [OBJECTIVE, KNN], ascending=False, na_position="last", kind="stable"
    ).reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def best_record(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """Return the completed trial with the highest ``val/probe_acc``, or None.

    Ties go to the earlier trial in ``records``.
    """
    best: TrialRecord | None = None
    for record in records:
        value = _number(record.metrics.get(OBJECTIVE))
        if record.status != "completed" or math.isnan(value):
            continue
        if best is None or value > _number(best.metrics.get(OBJECTIVE)):
            best = record
    return best


def format_leaderboard(frame: pd.DataFrame) -> str:
    """Return the leaderboard as a fixed-width table with accuracies to 4 decimals."""
    with pd.option_context("display.max_columns", None, "display.width", 200):
        return frame.to_string(index=False, float_format=lambda value: f"{value:.4f}")


def save_leaderboard(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the leaderboard as CSV (creating the folder) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False)
    return target
