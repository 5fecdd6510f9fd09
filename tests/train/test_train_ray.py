"""Real Ray Train V2 runs: 2 CPU workers x 1 CPU on real Fashion-MNIST, every method."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import ray.train
import torch

from hmlc_core.train.callbacks import JsonLinesRecorder
from hmlc_core.train.checkpoint import load_checkpoint
from hmlc_core.train.config import RunConfig, default_run_config, merge_dicts
from hmlc_core.train.trainer import build_trainer, run_training

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_KEYS = ["train/loss", "train/lr", "train/loss_L3", "val/knn_acc", "epoch"]
PROBE_KEYS = ["val/probe_acc", "val/probe_acc_L1", "val/probe_acc_L2", "val/probe_acc_L3"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def _run(method_name: str, **overrides: Any) -> RunConfig:
    values = {
        "batch_size": 32,
        "epochs": 1,
        "max_steps_per_epoch": 2,
        "knn_val_size": 100,
        "knn_bank_size": 200,
        "probe_train_size": 300,
        "probe_val_size": 200,
        "probe": {"weight_decays": [0.0, 1e-3], "max_iter": 30},
        "data": {"data_dir": FASHION_DIR},
        "method": {"gmm_warmup_epochs": 1, "gmm_refit_every": 1},
        "model": {"encoder": {"name": "small_cnn", "in_channels": 1, "width": 32}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
    }
    return default_run_config("fashion-mnist", method_name, **merge_dicts(values, overrides))


def _assert_finished(result: ray.train.Result, run: RunConfig) -> None:
    metrics = result.metrics
    for key in TRAIN_KEYS + PROBE_KEYS:
        assert key in metrics, key
        assert math.isfinite(metrics[key]), key
    assert metrics["epoch"] == run.epochs
    assert 0.0 <= metrics["val/probe_acc"] <= 1.0
    assert metrics["val/probe_acc"] == metrics["val/probe_acc_L3"]
    assert result.checkpoint is not None


@pytest.mark.parametrize("method", ["supcon", "hmc", "a_hmlc"])
def test_two_worker_run(method: str, tmp_path: Path) -> None:
    run = _run(method, method={"beta": 0.5, "overlap_penalty": 0.1})
    result = run_training(run, storage_path=str(tmp_path), name=f"run-{method}")
    _assert_finished(result, run)
    if method == "hmc":
        assert {"train/loss_L1", "train/loss_L2"} <= set(result.metrics)
    if method == "a_hmlc":
        assert result.metrics["train/overlap_penalty"] > 0


def test_two_worker_g_hmlc_refits_masks(tmp_path: Path) -> None:
    run = _run("g_hmlc", epochs=2)
    result = run_training(run, storage_path=str(tmp_path), name="run-g_hmlc")
    _assert_finished(result, run)
    assert result.metrics["gmm/fell_back"] == 0.0
    with result.checkpoint.as_directory() as folder:
        state = load_checkpoint(folder)
    assert state.epoch == 2
    assert state.masks is not None
    assert state.masks.shape == (3, 128)
    assert not torch.equal(state.masks, torch.ones_like(state.masks))
    sizes = [result.metrics[f"gmm/mask_size_L{level}"] for level in (1, 2, 3)]
    assert sizes == state.masks.sum(dim=1).tolist()


def test_two_worker_hmce_resume_and_callbacks(tmp_path: Path) -> None:
    run = _run("hmce", epochs=2, final_test=True)
    log = tmp_path / "reports.jsonl"
    trainer = build_trainer(
        run,
        storage_path=str(tmp_path),
        name="full",
        callbacks=[JsonLinesRecorder(str(log))],
        num_to_keep=None,
    )
    full = trainer.fit()
    _assert_finished(full, run)
    assert {"test/probe_acc", "test/probe_acc_L1", "test/probe_acc_L3"} <= set(full.metrics)

    reports = [json.loads(line) for line in log.read_text().splitlines()]
    assert [report["metrics"]["epoch"] for report in reports] == [1, 2]
    assert all(report["workers"] == 2 for report in reports)
    assert "val/probe_acc" not in reports[0]["metrics"]
    assert reports[1]["checkpoint"].endswith("checkpoint_epoch_0002")

    # Start a new run from the epoch-1 checkpoint: epoch 2 must repeat exactly.
    epoch_one = tmp_path / "full" / "checkpoint_epoch_0001"
    resumed = run_training(run, storage_path=str(tmp_path), name="resumed", resume_checkpoint=epoch_one)
    assert resumed.metrics["epoch"] == 2
    assert resumed.metrics["train/loss"] == pytest.approx(full.metrics["train/loss"], rel=1e-6)
    assert resumed.metrics["train/loss_L1"] == pytest.approx(full.metrics["train/loss_L1"], rel=1e-6)
    assert resumed.metrics["train/lr"] == pytest.approx(full.metrics["train/lr"], rel=1e-9)
