"""Optuna TPE searcher for an objective that only the last report of a trial holds."""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class FinalMetricOptunaSearch(OptunaSearch):
    """OptunaSearch that ignores intermediate results without the objective.

    ``OptunaSearch.on_trial_result`` (Ray 2.60) indexes every result with the metric, but
    ``val/probe_acc`` appears only in a trial's final report; the per-epoch reports carry
    the kNN proxy that ASHA reads. The study still receives the final value through
    ``on_trial_complete``; Optuna's pruner is off in OptunaSearch, so no decision depends
    on the skipped intermediate values.
    """

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)
