"""The training run on one worker, in named stages, independent of Ray.

:class:`TrainingSession` contains data, model, optimiser, schedule and G-HMLC masks of one
worker. ``hmlc_core.train.worker`` drives it under Ray Train. Tests drive it in a plain
process, or in a gloo process group, to check steps, resumption and mask agreement.

Stages: :func:`setup_process` (seeds, device), :func:`prepare_data`,
:func:`prepare_model`, :func:`prepare_optimizer`, then per epoch
:meth:`TrainingSession.train_epoch`, :meth:`TrainingSession.update_masks`,
:meth:`TrainingSession.evaluate_epoch`, and at the end :meth:`TrainingSession.final_evaluation`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hmlc_core.config import ConfigError
from hmlc_core.data import (
    HierarchicalDataset,
    TrainValSplits,
    build_two_view_augmentation,
    load_splits,
    load_test_split,
)
from hmlc_core.models import ContrastiveModel, ModelConfig, build_model
from hmlc_core.train import evaluation
from hmlc_core.train.checkpoint import TrainingState, capture_rng_state, restore_rng_state
from hmlc_core.train.config import RunConfig
from hmlc_core.train.masks import EmbeddingBuffer, all_ones_masks, per_worker_capacity, refit_masks
from hmlc_core.train.methods import LossContext
from hmlc_core.train.optim import build_optimizer
from hmlc_core.train.schedule import WarmupCosineLR
from hmlc_core.train.sharding import epoch_batches, epoch_generator, fixed_subset, steps_per_epoch
from hmlc_core.train.step import Augmentation, StepResult, train_step

logger = logging.getLogger(__name__)

# Seed offsets that separate the random streams of one run.
_AUGMENT_STREAM = 1
_KNN_BANK_STREAM = 2
_KNN_QUERY_STREAM = 3
_PROBE_TRAIN_STREAM = 4
_PROBE_VAL_STREAM = 5


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Position of this worker in the run.

    Attributes:
        rank: World rank (0 evaluates and writes checkpoints).
        world_size: Number of workers; above 1 a torch.distributed group must exist.
        device: Training device of this worker.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_rank_zero(self) -> bool:
        """True on the worker that evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when the workers share a torch.distributed process group."""
        return self.world_size > 1


@dataclasses.dataclass
class RunData:
    """The datasets and transforms of a run on one worker.

    Attributes:
        train: Training split, inputs on the training device.
        val: Validation split (CPU).
        augment: Two-view training augmentation.
        class_counts: Training count of every class per level.
        knn_bank: Fixed training subset used as the kNN bank (CPU).
        knn_queries: Fixed validation subset used as kNN queries (CPU).
    """

    train: HierarchicalDataset
    val: HierarchicalDataset
    augment: Augmentation
    class_counts: list[Tensor]
    knn_bank: HierarchicalDataset
    knn_queries: HierarchicalDataset

    @property
    def num_levels(self) -> int:
        """Number of hierarchy levels L."""
        return self.train.hierarchy.num_levels


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_process(run: RunConfig, info: WorkerInfo) -> None:
    """Seed the process; every worker uses the same seed, so models start identical."""
    seed_everything(run.seed)
    if info.device.type == "cuda":
        torch.cuda.set_device(info.device)


def prepare_data(run: RunConfig, info: WorkerInfo, splits: TrainValSplits | None = None) -> RunData:
    """Load the splits, check them against the config and choose the kNN subsets.

    Args:
        run: The run's configuration.
        info: This worker's rank and device.
        splits: Already loaded splits of ``run.data``; None loads them.

    Raises:
        ConfigError: the encoder's input channels or the method's level settings do not
            fit the dataset.
    """
    splits = splits if splits is not None else load_splits(run.data)
    train, val = splits.train, splits.val
    check_run_against_data(run, train)
    bank_index = fixed_subset(len(train), run.knn_bank_size, run.seed * 1009 + _KNN_BANK_STREAM)
    query_index = fixed_subset(len(val), run.knn_val_size, run.seed * 1009 + _KNN_QUERY_STREAM)
    return RunData(
        train=train.to(info.device),
        val=val,
        augment=build_two_view_augmentation(train),
        class_counts=[counts.to(info.device) for counts in train.class_counts()],
        knn_bank=train.subset(bank_index),
        knn_queries=val.subset(query_index),
    )


def check_run_against_data(run: RunConfig, train: HierarchicalDataset) -> None:
    """Raise ConfigError when the run's settings cannot work with this dataset."""
    num_levels = train.hierarchy.num_levels
    run.method.resolved_level_weights(num_levels)
    if train.modality == "image":
        channels = int(train.inputs.shape[1])
        if run.model.encoder.in_channels != channels:
            raise ConfigError(
                f"model.encoder.in_channels={run.model.encoder.in_channels} but {train.name} "
                f"images have {channels} channel(s); set in_channels to {channels}"
            )
    if run.method.method == "g_hmlc" and run.method.gmm.n_components < num_levels:
        raise ConfigError(
            f"method.gmm.n_components={run.method.gmm.n_components} is below the "
            f"{num_levels} levels of {train.name}; use at least {num_levels} components"
        )
    if run.method.method == "g_hmlc" and run.model.projection_dim < num_levels:
        raise ConfigError(
            f"model.projection_dim={run.model.projection_dim} is below the {num_levels} "
            f"levels of {train.name}; G-HMLC needs at least one dimension per level"
        )


def model_config_for(run: RunConfig, num_levels: int) -> ModelConfig:
    """Return the run's ModelConfig, with the A-HMLC masker added for a_hmlc."""
    if run.method.method != "a_hmlc":
        return run.model
    return run.model.with_attention(
        num_levels, num_heads=run.method.attention_heads, mask_temperature=run.method.mask_temperature
    )


def prepare_model(run: RunConfig, num_levels: int, info: WorkerInfo) -> tuple[nn.Module, ContrastiveModel]:
    """Build the model on the device; wrap it in DDP when several workers train.

    Returns:
        (model used for training, the unwrapped model).
    """
    model = build_model(model_config_for(run, num_levels)).to(info.device)
    if not info.distributed:
        return model, model
    # NOTE: CPU workers normalise BatchNorm over their own images, so in training mode W
    # workers with batch B differ slightly from one worker with W * B. The CUDA branch
    # (SyncBatchNorm, NCCL, bf16) is not covered by the CPU-only test suite.
    if info.device.type == "cuda" and run.scaling.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=device_ids)
    return wrapped, model  # type: ignore[return-value]


def prepare_optimizer(
    run: RunConfig, model: nn.Module, num_steps: int
) -> tuple[torch.optim.Optimizer, WarmupCosineLR]:
    """Build the optimiser and the per-step warm-up + cosine schedule for the run."""
    optim = run.optim
    optimizer = build_optimizer(
        model,
        optim.optimizer,
        lr=optim.scaled_lr(run.batch_size),
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        trust_coefficient=optim.trust_coefficient,
    )
    total_steps = run.epochs * num_steps
    # Short runs (smoke tests, search budgets) keep at least half of their steps for decay.
    warmup_steps = min(total_steps // 2, round(optim.warmup_epochs * num_steps))
    scheduler = WarmupCosineLR(optimizer, total_steps, warmup_steps, min_lr=optim.min_lr)
    return optimizer, scheduler


class TrainingSession:
    """One worker's state for a whole run: data, model, optimiser, schedule and masks.

    Attributes:
        epoch: Completed epochs (the next epoch to train, 0-based).
        global_step: Optimiser steps taken.
        masks: G-HMLC masks for the next epoch (all ones before the first fit), or None
            for other methods. Shape: (L, D).
    """

    def __init__(self, run: RunConfig, info: WorkerInfo, data: RunData | None = None) -> None:
        self.run = run
        self.info = info
        setup_process(run, info)
        self.data = data if data is not None else prepare_data(run, info)
        self.model, self.unwrapped = prepare_model(run, self.data.num_levels, info)
        self.steps_per_epoch = steps_per_epoch(
            len(self.data.train), run.batch_size, run.max_steps_per_epoch
        )
        self.optimizer, self.scheduler = prepare_optimizer(run, self.model, self.steps_per_epoch)
        self.loss_context = LossContext(
            level_weights=run.method.resolved_level_weights(self.data.num_levels).to(info.device),
            class_counts=self.data.class_counts,
            gather_distributed=info.distributed,
        )
        self.epoch = 0
        self.global_step = 0
        self.masks: Tensor | None = None
        self.buffer: EmbeddingBuffer | None = None
        if run.method.method == "g_hmlc":
            dim = run.model.projection_dim
            self.masks = all_ones_masks(self.data.num_levels, dim)
            capacity = per_worker_capacity(run.method.gmm_buffer_size, info.world_size)
            self.buffer = EmbeddingBuffer(capacity, dim, self.data.num_levels)

    # Stage: resume ------------------------------------------------------------------

    def state(self) -> TrainingState:
        """Capture everything a checkpoint needs (tensors on the CPU)."""
        return TrainingState(
            model={name: value.cpu() for name, value in self.unwrapped.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            epoch=self.epoch,
            global_step=self.global_step,
            masks=None if self.masks is None else self.masks.cpu().clone(),
            rng=capture_rng_state(),
            run_config=self.run.to_dict(),
        )

    def load_state(self, state: TrainingState) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, masks, counters, RNG.

        Raises:
            ConfigError: the checkpoint was written by a run with a different model.
        """
        saved = state.run_config.get("model")
        if saved is not None and ModelConfig.from_dict(saved) != self.run.model:
            raise ConfigError(
                f"the checkpoint's model config {saved} differs from this run's "
                f"{self.run.model.to_dict()}; resume with the model the checkpoint was trained with"
            )
        self.unwrapped.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        # The schedule's length comes from this run, so a resumed run with more epochs
        # stretches the cosine instead of staying at min_lr.
        shape = (self.scheduler.total_steps, self.scheduler.warmup_steps, self.scheduler.min_lr)
        self.scheduler.load_state_dict(state.scheduler)
        self.scheduler.total_steps, self.scheduler.warmup_steps, self.scheduler.min_lr = shape
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr()):
            group["lr"] = lr
        self.epoch = state.epoch
        self.global_step = state.global_step
        if self.masks is not None and state.masks is not None:
            self.masks = state.masks.float().clone()
        restore_rng_state(state.rng)

    # Stage: epoch loop --------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch and return its ``train/*`` metrics (means over steps)."""
        run, info = self.run, self.info
        batches = epoch_batches(
            len(self.data.train),
            run.seed,
            self.epoch,
            info.rank,
            info.world_size,
            run.batch_per_worker,
            run.max_steps_per_epoch,
        )
        # Augmentation draws per worker, so its random views (unlike the batches) depend
        # on the number of workers.
        generator = epoch_generator(run.seed, self.epoch, info.rank, _AUGMENT_STREAM)
        sums: dict[str, float] = defaultdict(float)
        last_lr = 0.0
        self.model.train()
        start = time.perf_counter()

        for indices in batches:
            result = self._train_step(indices.to(info.device), generator)
            last_lr = result.lr
            _accumulate(sums, result)

        seconds = time.perf_counter() - start
        num_steps = len(batches)
        metrics = {key: value / num_steps for key, value in sums.items()}
        metrics["train/lr"] = last_lr
        metrics["train/epoch_time_s"] = seconds
        metrics["train/images_per_s"] = num_steps * run.batch_size / max(seconds, 1e-9)
        metrics["train/global_step"] = float(self.global_step)
        self.epoch += 1
        return metrics

    def _train_step(self, index: Tensor, generator: torch.Generator) -> StepResult:
        """Take one optimiser step on the training images at ``index`` (on the device)."""
        images, paths = self.data.train.inputs[index], self.data.train.paths[index]
        result = train_step(
            self.model,
            self.optimizer,
            self.scheduler,
            images,
            paths,
            self.data.augment,
            generator,
            self.run.method,
            self.loss_context,
            hard_masks=None if self.masks is None else self.masks.to(self.info.device),
            amp=self.run.scaling.amp and self.run.scaling.use_gpu,
            step=self.global_step,
            epoch=self.epoch,
        )
        self.global_step += 1
        if self.buffer is not None:
            self.buffer.add(result.embeddings, paths)
        return result

    def update_masks(self) -> dict[str, float]:
        """Refit the G-HMLC masks when the schedule calls for a refit after the finished epoch.

        Every worker must call this after :meth:`train_epoch`; the refit is collective.

        Returns:
            ``gmm/*`` metrics of a refit, or an empty dict.
        """
        finished = self.epoch - 1
        if self.buffer is None or self.masks is None or not self.run.method.refits_masks_after(finished):
            return {}
        result = refit_masks(self.buffer, self.run.method.gmm, self.masks, self.info.device)
        self.masks = result.masks
        self.buffer.clear()
        metrics = {"gmm/fell_back": float(result.fell_back), "gmm/buffer_size": float(result.num_samples)}
        for level, size in enumerate(self.masks.sum(dim=1).tolist()):
            metrics[f"gmm/mask_size_L{level + 1}"] = float(size)
        return metrics

    # Stage: evaluation --------------------------------------------------------------

    def evaluate_epoch(self) -> dict[str, float]:
        """Compute the kNN proxy when due (rank 0 only; other ranks return {})."""
        due = self.epoch % self.run.knn_every == 0 or self.epoch == self.run.epochs
        if not self.info.is_rank_zero or not due:
            return {}
        return evaluation.knn_metrics(
            self.unwrapped,
            self.data.knn_bank,
            self.data.knn_queries,
            k=self.run.knn_k,
            batch_size=self.run.eval_batch_size,
            device=self.info.device,
        )

    def final_evaluation(self) -> dict[str, float]:
        """Fit the linear probe (and test it when ``final_test``); rank 0 only."""
        if not self.info.is_rank_zero:
            return {}
        return probe_model(self.unwrapped, self.run, self.data.train, self.data.val, self.info.device)


def _accumulate(sums: dict[str, float], result: StepResult) -> None:
    """Add one step's logged losses to the epoch sums."""
    sums["train/loss"] += result.loss
    for level, value in result.level_losses.items():
        sums[f"train/loss_L{level + 1}"] += value
    if result.overlap is not None:
        sums["train/overlap_penalty"] += result.overlap


def probe_model(
    model: nn.Module,
    run: RunConfig,
    train: HierarchicalDataset,
    val: HierarchicalDataset,
    device: torch.device,
    include_val: bool = True,
    include_test: bool | None = None,
) -> dict[str, float]:
    """Fit the linear probe on (subsets of) the training split and report its accuracies.

    Args:
        model: The unwrapped model (or encoder) that gives pooled features.
        run: Probe settings, subset sizes and ``final_test``.
        train: Training split.
        val: Validation split (chooses the weight decay per level).
        device: Where features are extracted.
        include_val: Return the ``val/*`` metrics.
        include_test: Also evaluate on the test split; None follows ``run.final_test``.

    Returns:
        ``val/probe_acc*`` (when ``include_val``) and ``test/probe_acc*`` metrics.
    """
    train_index = fixed_subset(len(train), run.probe_train_size, run.seed * 1009 + _PROBE_TRAIN_STREAM)
    val_index = fixed_subset(len(val), run.probe_val_size, run.seed * 1009 + _PROBE_VAL_STREAM)
    probe_train = train.subset(train_index.to(train.inputs.device)).to("cpu")
    probe_val = val.subset(val_index).to("cpu")
    start = time.perf_counter()
    probe, val_metrics = evaluation.fit_probe(
        model, probe_train, probe_val, run.probe, run.eval_batch_size, device
    )
    metrics = dict(val_metrics) if include_val else {}
    metrics["eval/probe_time_s"] = time.perf_counter() - start
    if include_test if include_test is not None else run.final_test:
        test = load_test_split(run.data)
        metrics.update(
            evaluation.test_metrics(
                model, probe, test, run.eval_batch_size, device, probe_device=run.probe.device
            )
        )
    return metrics


def share_metrics(metrics: dict[str, float], info: WorkerInfo) -> dict[str, float]:
    """Return rank 0's metrics on every worker (a collective when distributed)."""
    if not info.distributed:
        return metrics
    payload = [metrics if info.is_rank_zero else None]
    dist.broadcast_object_list(payload, src=0, device=info.device if info.device.type == "cuda" else None)
    return dict(payload[0])  # type: ignore[arg-type]
