"""Compute budgets of a search: how many trials, how long each trains, on what model.

Three tiers, all project choices:

- ``smoke``: a check that the whole pipeline runs. Two trials of one short epoch of a
  narrow ``small_cnn`` on one CPU worker each, with small kNN and probe subsets.
  Sized to finish in under 5 minutes on 2 CPU cores, Ray start included.
- ``local``: a meaningful search on one machine without a GPU: 16 trials of 20
  epochs of ``small_cnn``, stopped early by ASHA.
- ``full``: paper-scale settings for a GPU cluster: ResNet-18 (PointNet for point
  clouds), global batch 512 and 500 epochs on CIFAR-100. The method sources train
  for hundreds of epochs at large batches; these exact numbers are this project's.

Every number can be overridden on the command line (``--epochs``, ``--num-samples``,
...); the budget only supplies the defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

BUDGETS: tuple[str, ...] = ("smoke", "local", "full")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Default compute settings of one budget tier.

    Attributes:
        name: tier name, one of :data:`BUDGETS`.
        num_samples: trials the searcher proposes.
        max_concurrent_trials: trials running at once; None lets the cluster's free
            resources decide.
        epochs: training epochs per trial, by dataset name (``"*"`` for the others).
        batch_size: global batch in images (split over the workers).
        max_steps_per_epoch: optimizer steps per epoch, None for full epochs.
        encoder: encoder name for image datasets (point clouds use ``pointnet``).
        encoder_width: small_cnn width C, None for the encoder's default.
        knn_val_size: validation images in the per-epoch kNN proxy.
        knn_bank_size: training images in the kNN feature bank.
        probe_train_size: training images the final linear probe is fitted on,
            None for the whole training split.
        probe_max_iter: L-BFGS iterations of the linear probe.
        probe_weight_decays: weight-decay grid of the linear probe.
        warmup_epochs: learning-rate warm-up epochs.
        gmm_warmup_epochs: G-HMLC epochs with all-ones masks before the first fit.
        gmm_refit_every: G-HMLC epochs between mask refits.
        gmm_buffer_size: embeddings kept for the G-HMLC mask fit.
        grace_period: ASHA's minimum epochs before a trial can be stopped.
        reduction_factor: ASHA's reduction factor (keep 1 / factor per rung).
        use_gpu: train on one GPU per worker.
    """

    name: str
    num_samples: int
    max_concurrent_trials: int | None
    epochs: dict[str, int]
    batch_size: int
    max_steps_per_epoch: int | None
    encoder: str
    encoder_width: int | None
    knn_val_size: int
    knn_bank_size: int
    probe_train_size: int | None
    probe_max_iter: int
    probe_weight_decays: tuple[float, ...]
    warmup_epochs: int
    gmm_warmup_epochs: int
    gmm_refit_every: int
    gmm_buffer_size: int
    grace_period: int
    reduction_factor: int
    use_gpu: bool

    def epochs_for(self, dataset: str) -> int:
        """Return the default epochs for ``dataset``."""
        return self.epochs.get(dataset, self.epochs["*"])

    def describe(self) -> dict[str, Any]:
        """Return the settings as plain values (logged to the parent MLflow run)."""
        return dataclasses.asdict(self)


SMOKE = Budget(
    name="smoke",
    num_samples=2,
    max_concurrent_trials=2,
    epochs={"*": 1},
    batch_size=64,
    max_steps_per_epoch=3,
    encoder="small_cnn",
    encoder_width=32,
    knn_val_size=256,
    knn_bank_size=1024,
    probe_train_size=2048,
    probe_max_iter=25,
    probe_weight_decays=(0.0, 1e-3),
    warmup_epochs=0,
    gmm_warmup_epochs=0,
    gmm_refit_every=1,
    gmm_buffer_size=2048,
    grace_period=1,
    reduction_factor=2,
    use_gpu=False,
)

LOCAL = Budget(
    name="local",
    num_samples=16,
    max_concurrent_trials=None,
    epochs={"*": 20},
    batch_size=256,
    max_steps_per_epoch=None,
    encoder="small_cnn",
    encoder_width=None,
    knn_val_size=2000,
    knn_bank_size=10000,
    probe_train_size=20000,
    probe_max_iter=100,
    probe_weight_decays=(0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    warmup_epochs=1,
    gmm_warmup_epochs=2,
    gmm_refit_every=2,
    gmm_buffer_size=8192,
    grace_period=4,
    reduction_factor=2,
    use_gpu=False,
)

FULL = Budget(
    name="full",
    num_samples=64,
    max_concurrent_trials=None,
    epochs={"cifar100": 500, "modelnet40": 250, "*": 200},
    batch_size=512,
    max_steps_per_epoch=None,
    encoder="resnet18",
    encoder_width=None,
    knn_val_size=5000,
    knn_bank_size=50000,
    probe_train_size=None,
    probe_max_iter=200,
    probe_weight_decays=(0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
    warmup_epochs=10,
    gmm_warmup_epochs=10,
    gmm_refit_every=10,
    gmm_buffer_size=16384,
    grace_period=50,
    reduction_factor=3,
    use_gpu=True,
)

BUDGET_TABLE: dict[str, Budget] = {budget.name: budget for budget in (SMOKE, LOCAL, FULL)}


class BudgetError(ValueError):
    """An unknown budget name."""


def get_budget(name: str) -> Budget:
    """Return the budget tier ``name``.

    Raises:
        BudgetError: ``name`` is not one of :data:`BUDGETS`.
    """
    if name not in BUDGET_TABLE:
        raise BudgetError(f"unknown budget {name!r}; choose one of {list(BUDGETS)}")
    return BUDGET_TABLE[name]


def default_budget_name(cluster_has_gpu: bool) -> str:
    """Return ``full`` on a cluster with GPUs and ``local`` without one."""
    return "full" if cluster_has_gpu else "local"
