"""The one mapping from a search sample (knob -> value) to the trial's RunConfig.

:func:`build_base_run` turns the command line and the budget into the run every
trial starts from; :func:`apply_sample` writes one trial's knob values into it. The
knob names are the ones :mod:`search.spaces` declares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hmlc_core.train.config import RunConfig, merge_dicts

from search.budgets import Budget
from search.spaces import SpaceError, level_weight_name

POINT_DATASETS = frozenset({"modelnet40"})


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Run settings that come from the command line rather than from the search.

    Attributes:
        method: training objective.
        dataset: dataset name of :class:`hmlc_core.data.DataConfig`.
        data_dir: folder searched first for the dataset files, None for the defaults.
        in_channels: image channels (1 grayscale, 3 RGB) or values per point (3).
        epochs: training epochs per trial.
        batch_size: global batch in images.
        max_steps_per_epoch: cap on optimizer steps per epoch, None for full epochs.
        num_workers: Ray Train workers per trial.
        use_gpu: one GPU per worker.
        cpus_per_worker: CPUs reserved per worker.
        seed: seed of the runs (initialisation, shuffling, evaluation subsets).
    """

    method: str
    dataset: str
    data_dir: str | None
    in_channels: int
    epochs: int
    batch_size: int
    max_steps_per_epoch: int | None
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    seed: int


def encoder_settings(dataset: str, budget: Budget, in_channels: int) -> dict[str, Any]:
    """Return the encoder config of a budget: PointNet for point clouds, else the budget's.

    The budget's ``encoder_width`` applies to small_cnn only (ResNets have a fixed width).
    """
    if dataset in POINT_DATASETS:
        return {"name": "pointnet", "in_channels": in_channels, "width": None}
    width = budget.encoder_width if budget.encoder == "small_cnn" else None
    return {"name": budget.encoder, "in_channels": in_channels, "width": width}


def build_base_run(settings: RunSettings, budget: Budget) -> RunConfig:
    """Return the run every trial starts from: budget defaults plus command-line settings.

    Raises:
        hmlc_core.config.ConfigError: a value is invalid (the message names the field).
    """
    values: dict[str, Any] = {
        "method": {
            "method": settings.method,
            "gmm_warmup_epochs": budget.gmm_warmup_epochs,
            "gmm_refit_every": budget.gmm_refit_every,
            "gmm_buffer_size": budget.gmm_buffer_size,
            "gmm": {"seed": settings.seed},
        },
        "data": {"name": settings.dataset, "data_dir": settings.data_dir},
        "model": {"encoder": encoder_settings(settings.dataset, budget, settings.in_channels)},
        "optim": {"warmup_epochs": float(budget.warmup_epochs)},
        "probe": {
            "weight_decays": list(budget.probe_weight_decays),
            "max_iter": budget.probe_max_iter,
            "seed": settings.seed,
        },
        "scaling": {
            "num_workers": settings.num_workers,
            "use_gpu": settings.use_gpu,
            "cpus_per_worker": settings.cpus_per_worker,
        },
        "batch_size": settings.batch_size,
        "epochs": settings.epochs,
        "seed": settings.seed,
        "knn_val_size": budget.knn_val_size,
        "knn_bank_size": budget.knn_bank_size,
        "max_steps_per_epoch": settings.max_steps_per_epoch,
        "probe_train_size": budget.probe_train_size,
        "final_test": False,
    }
    return RunConfig.from_dict(merge_dicts(RunConfig().to_dict(), values))


def apply_sample(base: RunConfig, sample: Mapping[str, Any], num_levels: int) -> RunConfig:
    """Return ``base`` with one trial's knob values written into their config fields.

    ================ ======================================
    knob             field
    ================ ======================================
    lr               optim.lr
    temperature      method.temperature
    w_L1 .. w_L{L}   method.level_weights (all or none)
    beta             method.beta
    gmm_k            method.gmm.n_components
    gmm_cov          method.gmm.covariance_type
    heads            method.attention_heads
    mask_temp        method.mask_temperature
    ================ ======================================

    Raises:
        SpaceError: an unknown knob, or only some of the level weights.
        hmlc_core.config.ConfigError: a value the run rejects.
    """
    values = base.to_dict()
    method, optim, gmm = values["method"], values["optim"], values["method"]["gmm"]
    weight_names = [level_weight_name(level) for level in range(num_levels)]
    given_weights = [name for name in weight_names if name in sample]
    if given_weights and len(given_weights) != num_levels:
        missing = sorted(set(weight_names) - set(given_weights))
        raise SpaceError(f"sample sets only some level weights; missing {missing}")
    if given_weights:
        method["level_weights"] = [float(sample[name]) for name in weight_names]
    for name, value in sample.items():
        if name in weight_names:
            continue
        if name == "lr":
            optim["lr"] = float(value)
        elif name == "temperature":
            method["temperature"] = float(value)
        elif name == "beta":
            method["beta"] = float(value)
        elif name == "gmm_k":
            gmm["n_components"] = int(value)
        elif name == "gmm_cov":
            gmm["covariance_type"] = str(value)
        elif name == "heads":
            method["attention_heads"] = int(value)
        elif name == "mask_temp":
            method["mask_temperature"] = float(value)
        else:
            raise SpaceError(f"sample contains unknown knob {name!r}")
    return RunConfig.from_dict(values)


def sample_params(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Return the knob values of a Tune config as MLflow params (plain Python values)."""
    params: dict[str, Any] = {}
    for name, value in sorted(sample.items()):
        params[name] = value.item() if hasattr(value, "item") else value
    return params
