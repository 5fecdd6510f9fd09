"""Searcher and scheduler adapted to an objective that only a trial's last report contains."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


class FinalMetricOptunaSearch(OptunaSearch):
    """OptunaSearch that ignores intermediate results without the objective.

    ``OptunaSearch.on_trial_result`` (Ray 2.60) reads the metric from every result and
    raises KeyError without it. Here ``val/probe_acc`` appears only in a trial's final
    report, while the per-epoch reports carry the kNN proxy that ASHA reads. The study
    still receives the final value through ``on_trial_complete``. OptunaSearch runs
    Optuna with its pruner off, so no decision depends on the skipped values.
    """

    def __init__(
        self, *args: Any, warm_start_trials: Sequence[tuple[dict[str, Any], float]] = (), **kwargs: Any
    ) -> None:
        self._warm_start_trials = list(warm_start_trials)
        super().__init__(*args, **kwargs)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        self._add_warm_start_trials()

    def _add_warm_start_trials(self) -> None:
        """Add an earlier study's finished trials to a new study, so TPE starts from them.

        Only trials whose parameters are exactly this search's knobs are added, and only
        into an empty study, so a resumed search does not add them twice.
        """
        if not self._warm_start_trials or self._ot_study.trials:
            return
        names = set(self._space)
        added = 0
        for params, value in self._warm_start_trials:
            if set(params) == names:
                self.add_evaluated_point(params, value)
                added += 1
        logger.info(
            "warm start: added %d of %d earlier trials (the others searched other knobs)",
            added,
            len(self._warm_start_trials),
        )


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
