"""Training checkpoints: what they hold, and how they are written atomically and loaded.

A checkpoint is a folder with

- ``model.pt``: the state dict of the unwrapped model (no DDP ``module.`` prefix),
- ``train_state.pt``: optimiser, scheduler, G-HMLC masks, epoch, global step, RNG states,
- ``run_config.json``: the run's configuration as a dict,
- ``manifest.json``: names and byte sizes of the three files above, written last.

:func:`save_checkpoint` builds the folder under a temporary name next to the target
and renames it into place with ``os.replace``, so the target either does not exist or
is complete. :func:`load_checkpoint` checks the manifest, so a folder copied only in
part (for example by a crash during an upload) is rejected with an error instead of
being loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "run_config.json"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or does not match the run."""


@dataclasses.dataclass
class TrainingState:
    """Everything needed to continue a run exactly where it stopped.

    Attributes:
        model: State dict of the unwrapped model.
        optimizer: ``Optimizer.state_dict()``.
        scheduler: ``LRScheduler.state_dict()``.
        epoch: Number of completed epochs; training resumes at this 0-based epoch.
        global_step: Number of optimiser steps taken so far.
        masks: G-HMLC hard masks in use for the next epoch, or None. Shape: (L, D).
        rng: RNG states from :func:`capture_rng_state`.
        run_config: ``RunConfig.to_dict()`` of the run that wrote the checkpoint.
    """

    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch: int
    global_step: int
    masks: Tensor | None
    rng: dict[str, Any]
    run_config: dict[str, Any]


def capture_rng_state() -> dict[str, Any]:
    """Return the RNG states of Python, NumPy, torch (CPU) and every CUDA device.

    The NumPy state is stored as a tensor so that ``torch.load(weights_only=True)``
    can read it back.
    """
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`."""
    random.setstate(_as_python_random_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def _as_python_random_state(state: Any) -> tuple:
    # torch.load may return the nested tuples as lists; random.setstate needs tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def save_checkpoint(directory: str | os.PathLike[str], state: TrainingState) -> Path:
    """Write ``state`` as a checkpoint folder at ``directory``, atomically.

    Args:
        directory: Target folder. It must not exist yet, or be empty.
        state: The training state to write.

    Returns:
        The checkpoint folder.

    Raises:
        FileExistsError: ``directory`` exists and is not empty.
    """
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(
            f"checkpoint folder {target} already exists and is not empty; "
            f"write each checkpoint to a new folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex}"
    partial.mkdir()
    try:
        _write_files(partial, state)
        if target.exists():
            target.rmdir()
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _fsync_directory(target.parent)
    return target


def _write_files(folder: Path, state: TrainingState) -> None:
    train_state = {
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "masks": state.masks,
        "rng": state.rng,
    }
    _save_synced(folder / MODEL_FILE, lambda f: torch.save(state.model, f))
    _save_synced(folder / STATE_FILE, lambda f: torch.save(train_state, f))
    config_text = json.dumps(state.run_config, indent=2, sort_keys=True).encode()
    _save_synced(folder / CONFIG_FILE, lambda f: f.write(config_text))
    sizes = {name: (folder / name).stat().st_size for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE)}
    manifest = json.dumps({"files": sizes, "epoch": state.epoch}).encode()
    _save_synced(folder / MANIFEST_FILE, lambda f: f.write(manifest))


def _save_synced(path: Path, write: Any) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def verify_checkpoint(directory: str | os.PathLike[str]) -> None:
    """Raise CheckpointError unless ``directory`` contains a complete checkpoint."""
    folder = Path(directory)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{folder} is not a complete checkpoint: {MANIFEST_FILE} is missing "
            f"(the save or copy was interrupted); resume from an earlier checkpoint"
        )
    manifest = json.loads(manifest_path.read_text())
    for name, size in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            raise CheckpointError(
                f"{folder} is not a complete checkpoint: {name} is missing or truncated; "
                f"resume from an earlier checkpoint"
            )


def load_model_state(directory: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load only the model state dict (on CPU) from a checkpoint folder."""
    verify_checkpoint(directory)
    return torch.load(Path(directory) / MODEL_FILE, map_location="cpu", weights_only=True)


def load_run_config_dict(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the run configuration dict stored in a checkpoint folder."""
    verify_checkpoint(directory)
    return json.loads((Path(directory) / CONFIG_FILE).read_text())


def load_checkpoint(directory: str | os.PathLike[str]) -> TrainingState:
    """Load a checkpoint folder written by :func:`save_checkpoint` (tensors on CPU).

    Raises:
        CheckpointError: the folder is missing files or contains truncated files.
    """
    folder = Path(directory)
    verify_checkpoint(folder)
    model = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    train_state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    return TrainingState(
        model=model,
        optimizer=train_state["optimizer"],
        scheduler=train_state["scheduler"],
        epoch=int(train_state["epoch"]),
        global_step=int(train_state["global_step"]),
        masks=train_state["masks"],
        rng=train_state["rng"],
        run_config=json.loads((folder / CONFIG_FILE).read_text()),
    )
