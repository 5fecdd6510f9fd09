"""Optuna TPE searcher for an objective that only the last report of a trial contains."""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class FinalMetricOptunaSearch(OptunaSearch):
    """OptunaSearch that ignores intermediate results without the objective.

    ``OptunaSearch.on_trial_result`` (Ray 2.60) reads the metric from every result and
    raises KeyError without it. Here ``val/probe_acc`` appears only in a trial's final
    report, while the per-epoch reports carry the kNN proxy that ASHA reads. The study
    still receives the final value through ``on_trial_complete``. OptunaSearch runs
    Optuna with its pruner off, so no decision depends on the skipped values.
    """

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)
