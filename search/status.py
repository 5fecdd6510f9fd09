"""Tune callback on the driver that closes each trial's MLflow run with its final status."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from search import tracking

logger = logging.getLogger(__name__)


class TrialStatusCallback(Callback):
    """Set ``status`` (completed, early-stopped, failed) and the best objective of a trial.

    A trial that ends with ``val/probe_acc`` in its last result trained to the end
    (completed); one that ends without it was stopped by ASHA (early-stopped). Tune
    calls ``on_trial_error`` only once its retries are used up (failed). The callback
    is pickled into Tune's experiment state, so it keeps no MLflow client there.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, sweep_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.sweep_id = sweep_id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    def _finish(self, trial: Any, status: str) -> None:
        if self._client is None:
            self._client = tracking.make_client(self.tracking_uri)
        run_id = tracking.find_trial_run(self._client, self.experiment_id, self.sweep_id, trial.trial_id)
        if run_id is None:
            logger.warning("trial %s ended (%s) before it opened an MLflow run", trial.trial_id, status)
            return
        tracking.finish_trial_run(self._client, run_id, status)
        logger.info("trial %s %s (MLflow run %s)", trial.trial_id, status, run_id)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status = tracking.STATUS_COMPLETED if tracking.OBJECTIVE in last else tracking.STATUS_EARLY_STOPPED
        self._finish(trial, status)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, tracking.STATUS_FAILED)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        logger.warning("trial %s failed and is retried from its latest checkpoint", trial.trial_id)
