"""Checkpoint folders: round trip, atomic writes, truncation checks and RNG states."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hmlc_core.train import checkpoint as checkpoint_module
from hmlc_core.train.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    TrainingState,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _state(epoch: int) -> TrainingState:
    return TrainingState(
        model={"weight": torch.full((2, 3), float(epoch))},
        optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        scheduler={"last_epoch": epoch * 10},
        epoch=epoch,
        global_step=epoch * 10,
        masks=torch.eye(3, 8),
        rng=capture_rng_state(),
        run_config={"epochs": 5, "method": {"method": "g_hmlc"}},
    )


def test_round_trip(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", _state(3))
    loaded = load_checkpoint(folder)
    torch.testing.assert_close(loaded.model["weight"], torch.full((2, 3), 3.0))
    torch.testing.assert_close(loaded.masks, torch.eye(3, 8))
    assert loaded.epoch == 3
    assert loaded.global_step == 30
    assert loaded.scheduler == {"last_epoch": 30}
    assert loaded.run_config == {"epochs": 5, "method": {"method": "g_hmlc"}}


def test_crash_during_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path / "epoch_1", _state(1))
    calls = {"count": 0}
    real_save = torch.save

    def crash_on_second_file(obj, handle):  # type: ignore[no-untyped-def]
        calls["count"] += 1
        if calls["count"] == 2:
            raise OSError("disk full")
        real_save(obj, handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "epoch_2", _state(2))
    # No partial target and no leftover temporary folder; the previous one still loads.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch_1"]
    assert load_checkpoint(tmp_path / "epoch_1").epoch == 1


def test_truncated_file_rejected(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", _state(1))
    model_file = folder / MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="model.pt is missing or truncated"):
        load_checkpoint(folder)


def test_missing_manifest_rejected(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", _state(1))
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        load_checkpoint(folder)


def test_existing_folder_rejected(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ckpt", _state(1))
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(tmp_path / "ckpt", _state(2))


def test_rng_states_restore_draws(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    folder = save_checkpoint(tmp_path / "ckpt", dataclasses.replace(_state(0), rng=state))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(folder).rng)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
