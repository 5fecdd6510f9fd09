"""Hyperparameter search of one method: ``python search/tune.py --method g_hmlc``.

Stages: parse and check the command line, check the dataset, start (or join) Ray, build
the base run and the search space, open the MLflow parent run, run Ray Tune (Optuna
TPE + ASHA, one TorchTrainer per trial), print and save the leaderboard, and evaluate
the best trial once on the test split. ``--resume`` continues an interrupted search.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, for `search` and `hmlc_core`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging
import os
import time
from collections.abc import Sequence

from search.cli import SearchSetupError, parse_options

logger = logging.getLogger("search.tune")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return the process exit status (0 done, 2 bad input, 130 interrupted)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = parse_options(argv)
        from search.sweep import run_search  # imports Ray and torch: after the quick checks

        started = time.monotonic()
        status = run_search(options)
        print(f"Search ran for {time.monotonic() - started:.0f} s (exit status {status})", flush=True)
        return status
    except SearchSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Trials import `search` in other processes; the repository root must be on their path.
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (root, os.environ.get("PYTHONPATH", "")) if part
    )
    sys.exit(main())
