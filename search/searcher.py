"""Searcher and scheduler adapted to an objective that only a trial's last report contains."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
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


class FinalEpochSafeASHA(ASHAScheduler):
    """ASHA that never stops a trial on its last epoch.

    ASHA (Ray 2.60) places a rung at ``max_t`` when ``max_t`` is a power of the
    reduction factor times the grace period, and can stop a trial there. At the last
    epoch the training is already done and paid for, and stopping it would cut the
    trial's final artifacts, so this scheduler lets the trial end on its own.
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
