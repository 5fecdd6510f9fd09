"""Typed configuration of one pretraining run: method, optimiser, scaling and the run itself.

Every config is a frozen dataclass validated when built (:class:`hmlc_core.config.ConfigBase`),
so an invalid value raises a ConfigError that names the field. ``RunConfig.from_dict`` and
``RunConfig.to_dict`` round-trip through plain dicts, the form used by YAML files,
search samples and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import torch

from hmlc_core.config import ConfigBase, ConfigError, require
from hmlc_core.data import DataConfig
from hmlc_core.eval import ProbeConfig
from hmlc_core.losses.feature_identification import GMMMaskConfig
from hmlc_core.losses.weights import default_level_weights
from hmlc_core.models import EncoderConfig, ModelConfig

MethodName = Literal["supcon", "hmc", "hmce", "g_hmlc", "a_hmlc"]
METHODS: tuple[str, ...] = ("supcon", "hmc", "hmce", "g_hmlc", "a_hmlc")

# Learning rates are given per this many images and scaled linearly to the global batch.
LR_REFERENCE_BATCH = 256


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_finite(value: object, name: str, minimum: float, strict: bool) -> None:
    ok = _is_number(value) and math.isfinite(value)  # type: ignore[arg-type]
    ok = ok and (value > minimum if strict else value >= minimum)  # type: ignore[operator]
    bound = f"> {minimum}" if strict else f">= {minimum}"
    require(ok, f"{name}={value!r} is invalid; it must be a finite number {bound}")


def _require_int(value: object, name: str, minimum: int) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name}={value!r} is invalid; it must be an int >= {minimum}",
    )


@dataclasses.dataclass(frozen=True)
class MethodConfig(ConfigBase):
    """The training objective and its hyperparameters.

    Attributes:
        method: "supcon" (finest level only), "hmc", "hmce", "g_hmlc" or "a_hmlc".
        temperature: Softmax temperature of every contrastive term.
        level_weights: lambda_l per level, coarsest first; None uses
            ``default_level_weights`` (exp(1 / (L - l + 1)) for 1-based l).
        constraint: "none" or "max" (the HMCE hierarchy constraint); None uses "max"
            for hmce, g_hmlc and a_hmlc and "none" for hmc. Ignored by supcon.
        beta: Exponent of the per-level imbalance weights n_l(c)^-beta, in [0, 1];
            0 turns them off. Applied by every method when above 0 (supcon uses the
            finest-level weights).
        gmm: G-HMLC mixture settings.
        gmm_warmup_epochs: G-HMLC epochs trained with all-ones masks before the first fit.
        gmm_refit_every: G-HMLC epochs between two mask fits.
        gmm_buffer_size: G-HMLC embeddings kept (over all workers) for a fit.
        attention_heads: A-HMLC attention heads; must divide the encoder width.
        mask_temperature: A-HMLC soft-mask temperature t_mask.
        overlap_penalty: A-HMLC weight gamma of the mask overlap penalty.

    The G-HMLC schedule defaults (2 warm-up epochs, a refit every 2 epochs) are a
    project choice.
    """

    method: MethodName = "g_hmlc"
    temperature: float = 0.1
    level_weights: tuple[float, ...] | None = None
    constraint: Literal["none", "max"] | None = None
    beta: float = 0.0
    gmm: GMMMaskConfig = dataclasses.field(default_factory=GMMMaskConfig)
    gmm_warmup_epochs: int = 2
    gmm_refit_every: int = 2
    gmm_buffer_size: int = 16384
    attention_heads: int = 4
    mask_temperature: float = 1.0
    overlap_penalty: float = 0.0

    def validate(self) -> None:
        require(
            self.method in METHODS,
            f"MethodConfig.method={self.method!r} is invalid; valid methods are {list(METHODS)}",
        )
        _require_finite(self.temperature, "MethodConfig.temperature", 0.0, strict=True)
        if self.level_weights is not None:
            require(
                isinstance(self.level_weights, tuple) and len(self.level_weights) >= 1,
                f"MethodConfig.level_weights={self.level_weights!r} is invalid; give a "
                f"non-empty tuple with one weight per level, or None for the default",
            )
            for weight in self.level_weights:
                _require_finite(weight, "MethodConfig.level_weights entry", 0.0, strict=True)
        require(
            self.constraint in (None, "none", "max"),
            f"MethodConfig.constraint={self.constraint!r} is invalid; use 'none', 'max' or None",
        )
        _require_finite(self.beta, "MethodConfig.beta", 0.0, strict=False)
        require(self.beta <= 1.0, f"MethodConfig.beta={self.beta!r} is invalid; it must be <= 1")
        require(
            isinstance(self.gmm, GMMMaskConfig),
            f"MethodConfig.gmm must be a GMMMaskConfig, got {type(self.gmm).__name__}",
        )
        _require_int(self.gmm_warmup_epochs, "MethodConfig.gmm_warmup_epochs", 0)
        _require_int(self.gmm_refit_every, "MethodConfig.gmm_refit_every", 1)
        _require_int(self.gmm_buffer_size, "MethodConfig.gmm_buffer_size", 2)
        _require_int(self.attention_heads, "MethodConfig.attention_heads", 1)
        _require_finite(self.mask_temperature, "MethodConfig.mask_temperature", 0.0, strict=True)
        _require_finite(self.overlap_penalty, "MethodConfig.overlap_penalty", 0.0, strict=False)

    @property
    def resolved_constraint(self) -> str:
        """The constraint in effect: "max" or "none"."""
        if self.constraint is not None:
            return self.constraint
        return "none" if self.method in ("supcon", "hmc") else "max"

    def resolved_level_weights(self, num_levels: int) -> torch.Tensor:
        """Return lambda_l for ``num_levels`` levels, coarsest first. Shape: (L,).

        Raises:
            ConfigError: ``level_weights`` has a different length than ``num_levels``.
        """
        if self.level_weights is None:
            return default_level_weights(num_levels)
        if len(self.level_weights) != num_levels:
            raise ConfigError(
                f"MethodConfig.level_weights has {len(self.level_weights)} entries but the "
                f"dataset's hierarchy has {num_levels} levels; give one weight per level"
            )
        return torch.tensor(self.level_weights, dtype=torch.float32)

    def refits_masks_after(self, epoch: int) -> bool:
        """Return True when G-HMLC refits its masks at the end of 0-based ``epoch``.

        The first fit follows epoch ``gmm_warmup_epochs - 1``, then one every
        ``gmm_refit_every`` epochs, so epochs before ``gmm_warmup_epochs`` train with
        all-ones masks.
        """
        if self.method != "g_hmlc":
            return False
        completed = epoch + 1
        if completed < max(1, self.gmm_warmup_epochs):
            return False
        return (completed - max(1, self.gmm_warmup_epochs)) % self.gmm_refit_every == 0


@dataclasses.dataclass(frozen=True)
class OptimConfig(ConfigBase):
    """Optimiser and learning-rate schedule.

    Attributes:
        optimizer: "sgd" (with momentum) or "lars".
        lr: Peak learning rate per 256 images; the run uses lr * batch_size / 256.
        momentum: Momentum factor.
        weight_decay: L2 penalty (LARS skips biases and normalisation parameters).
        warmup_epochs: Epochs of linear warm-up (fractions allowed); at most half of the
            run's steps warm up, so short runs still decay (a project choice).
        min_lr: Absolute learning rate reached at the end of the cosine decay.
        trust_coefficient: LARS trust coefficient; unused by SGD.
    """

    optimizer: Literal["sgd", "lars"] = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    trust_coefficient: float = 0.001

    def validate(self) -> None:
        require(
            self.optimizer in ("sgd", "lars"),
            f"OptimConfig.optimizer={self.optimizer!r} is invalid; use 'sgd' or 'lars'",
        )
        _require_finite(self.lr, "OptimConfig.lr", 0.0, strict=True)
        _require_finite(self.momentum, "OptimConfig.momentum", 0.0, strict=False)
        require(self.momentum < 1, f"OptimConfig.momentum={self.momentum!r} must be < 1")
        _require_finite(self.weight_decay, "OptimConfig.weight_decay", 0.0, strict=False)
        _require_finite(self.warmup_epochs, "OptimConfig.warmup_epochs", 0.0, strict=False)
        _require_finite(self.min_lr, "OptimConfig.min_lr", 0.0, strict=False)
        _require_finite(self.trust_coefficient, "OptimConfig.trust_coefficient", 0.0, strict=True)

    def scaled_lr(self, global_batch: int) -> float:
        """Return the peak learning rate for a global batch of ``global_batch`` images."""
        return self.lr * global_batch / LR_REFERENCE_BATCH


@dataclasses.dataclass(frozen=True)
class ScalingSettings(ConfigBase):
    """How many Ray Train workers run, and on what.

    Attributes:
        num_workers: Training workers (one process each).
        use_gpu: One GPU share per worker, NCCL; otherwise CPU and gloo.
        cpus_per_worker: CPUs reserved per worker; Ray sets OMP_NUM_THREADS to this value.
            NOTE: two runs of one config with 2 CPU threads per worker (in Ray, and in a
            plain process) differed in the 5th significant digit of the loss after 10
            steps (batch 128, small_cnn). With 1 thread the runs were identical, so exact
            reproduction needs 1 CPU per worker; the multi-thread cause was not found.
        gpus_per_worker: GPUs reserved per worker when ``use_gpu``.
        amp: bf16 autocast for the forward pass on GPU; ignored on CPU.
        sync_batchnorm: Convert BatchNorm to SyncBatchNorm on GPU with several workers,
            so normalisation statistics cover the global batch. PyTorch supports
            SyncBatchNorm only on accelerators, so CPU workers always normalise over
            their own batch.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    amp: bool = True
    sync_batchnorm: bool = True

    def validate(self) -> None:
        _require_int(self.num_workers, "ScalingSettings.num_workers", 1)
        _require_finite(self.cpus_per_worker, "ScalingSettings.cpus_per_worker", 0.0, strict=False)
        _require_finite(self.gpus_per_worker, "ScalingSettings.gpus_per_worker", 0.0, strict=False)
        require(
            not self.use_gpu or self.gpus_per_worker > 0,
            "ScalingSettings.gpus_per_worker=0 is invalid with use_gpu=True; "
            "give each worker a GPU share > 0",
        )


@dataclasses.dataclass(frozen=True)
class RunConfig(ConfigBase):
    """One pretraining run.

    Attributes:
        method: Objective and its hyperparameters.
        data: Dataset and split.
        model: Encoder and projection head. Leave ``attention`` None: A-HMLC builds its
            masker from ``method.attention_heads`` and ``method.mask_temperature``.
        optim: Optimiser and schedule.
        probe: Linear probe run at the end of training.
        scaling: Workers and devices.
        batch_size: Global batch in images (each image gives two views); split evenly,
            batch_size / num_workers images per worker.
        epochs: Training epochs.
        seed: Seed of initialisation, shuffling, augmentation and evaluation subsets.
        knn_k: Neighbours of the per-epoch kNN proxy.
        knn_val_size: Validation images in the kNN query set (fixed, seeded).
        knn_bank_size: Training images in the kNN bank (fixed, seeded).
        knn_every: Epochs between kNN evaluations (the last epoch always has one).
        max_steps_per_epoch: Cap on optimiser steps per epoch, for smoke runs; None for all.
        final_test: Also probe the test split after training (final reports only).
        probe_train_size: Training images for the final probe (seeded subset); None: all.
        probe_val_size: Validation images for the final probe; None: all.
        eval_batch_size: Images per forward pass during feature extraction.
    """

    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    scaling: ScalingSettings = dataclasses.field(default_factory=ScalingSettings)
    batch_size: int = 256
    epochs: int = 100
    seed: int = 0
    knn_k: int = 20
    knn_val_size: int = 1000
    knn_bank_size: int = 5000
    knn_every: int = 1
    max_steps_per_epoch: int | None = None
    final_test: bool = False
    probe_train_size: int | None = None
    probe_val_size: int | None = None
    eval_batch_size: int = 512

    def validate(self) -> None:
        parts = {
            "method": MethodConfig,
            "data": DataConfig,
            "model": ModelConfig,
            "optim": OptimConfig,
            "probe": ProbeConfig,
            "scaling": ScalingSettings,
        }
        for name, config_type in parts.items():
            value = getattr(self, name)
            require(
                isinstance(value, config_type),
                f"RunConfig.{name} must be a {config_type.__name__}, got {type(value).__name__}",
            )
        self._validate_sizes()
        self._validate_batch()
        require(
            self.model.attention is None,
            "RunConfig.model.attention must be None; A-HMLC builds its masker from "
            "method.attention_heads and method.mask_temperature",
        )
        if self.method.method == "a_hmlc":
            channels = self.model.encoder.out_dim
            require(
                channels % self.method.attention_heads == 0,
                f"MethodConfig.attention_heads={self.method.attention_heads} does not divide "
                f"the encoder width {channels} of {self.model.encoder.name}; pick a divisor "
                f"of {channels}",
            )

    def _validate_sizes(self) -> None:
        _require_int(self.epochs, "RunConfig.epochs", 1)
        _require_int(self.seed, "RunConfig.seed", 0)
        _require_int(self.knn_k, "RunConfig.knn_k", 1)
        _require_int(self.knn_val_size, "RunConfig.knn_val_size", 1)
        _require_int(self.knn_bank_size, "RunConfig.knn_bank_size", 1)
        _require_int(self.knn_every, "RunConfig.knn_every", 1)
        _require_int(self.eval_batch_size, "RunConfig.eval_batch_size", 1)
        for name in ("max_steps_per_epoch", "probe_train_size", "probe_val_size"):
            value = getattr(self, name)
            if value is not None:
                _require_int(value, f"RunConfig.{name}", 1)

    def _validate_batch(self) -> None:
        _require_int(self.batch_size, "RunConfig.batch_size", 2)
        workers = self.scaling.num_workers
        require(
            self.batch_size % workers == 0,
            f"RunConfig.batch_size={self.batch_size} is not divisible by "
            f"scaling.num_workers={workers}; use a multiple of {workers}",
        )

    @property
    def batch_per_worker(self) -> int:
        """Images per worker and step."""
        return self.batch_size // self.scaling.num_workers

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build the run from nested dicts (YAML, search samples, checkpoints).

        Raises:
            ConfigError: a key is unknown or a value is invalid, also in nested configs.
        """
        values = dict(values)
        # ConfigBase.from_dict passes a nested mapping only to a field typed as a plain
        # config class; ModelConfig has its own from_dict for the optional masker.
        if isinstance(values.get("model"), Mapping):
            values["model"] = ModelConfig.from_dict(values["model"])
        if isinstance(values.get("method"), Mapping):
            method = dict(values["method"])
            if isinstance(method.get("gmm"), Mapping):
                method["gmm"] = GMMMaskConfig.from_dict(method["gmm"])
            values["method"] = MethodConfig.from_dict(method)
        return super().from_dict(values)


def default_encoder(dataset: str) -> EncoderConfig:
    """Return the default encoder for a dataset name (a project choice).

    fashion-mnist: small_cnn on 1 channel; cifar100 and folder: resnet18 on 3 channels;
    modelnet40: pointnet on xyz.
    """
    if dataset == "fashion-mnist":
        return EncoderConfig(name="small_cnn", in_channels=1)
    if dataset == "modelnet40":
        return EncoderConfig(name="pointnet", in_channels=3)
    return EncoderConfig(name="resnet18", in_channels=3)


def default_run_config(dataset: str, method_name: str = "g_hmlc", **overrides: Any) -> RunConfig:
    """Return a RunConfig for ``dataset`` and ``method_name`` with that dataset's encoder.

    Args:
        dataset: DataConfig name, e.g. "fashion-mnist" or "cifar100".
        method_name: MethodConfig method; a ``method`` dict in ``overrides`` may set the
            method's other fields.
        **overrides: Other RunConfig fields, as values or nested dicts; nested dicts
            are merged into the defaults key by key.

    Raises:
        ConfigError: a value is invalid.
    """
    values: dict[str, Any] = {
        "data": {"name": dataset},
        "model": {"encoder": default_encoder(dataset).to_dict()},
        "method": {"method": method_name},
    }
    return RunConfig.from_dict(merge_dicts(values, overrides))


def merge_dicts(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated with ``overrides``, merging nested mappings key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged
