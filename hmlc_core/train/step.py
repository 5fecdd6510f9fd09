"""One training step: augment on the device, forward both views, loss, backward, update.

Everything here is a plain function of a model, tensors and configs, so it runs and is
tested without Ray; the Ray worker calls it once per step.

Shape letters: N images on this worker, V = 2 views, D embedding width, L levels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from hmlc_core.train.config import MethodConfig
from hmlc_core.train.methods import LossContext, LossTerms, method_loss

# Augmentation: raw batch (N, ...) and a generator -> float views (N, V, ...).
Augmentation = Callable[[Tensor, torch.Generator], Tensor]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops."""


@dataclasses.dataclass(frozen=True)
class ViewOutputs:
    """Model outputs of all views, grouped per image.

    Attributes:
        z: Embeddings in float32. Shape: (N, V, D).
        soft_masks: A-HMLC soft masks in float32, or None. Shape: (N, V, L, D).
    """

    z: Tensor
    soft_masks: Tensor | None


@dataclasses.dataclass(frozen=True)
class StepResult:
    """Metrics of one optimiser step.

    Attributes:
        loss: The minimised loss.
        level_losses: Raw per-level losses keyed by 0-based level.
        overlap: A-HMLC overlap penalty before weighting, or None.
        lr: Learning rate of the first parameter group used by this step.
        embeddings: Detached z of the first view, for the G-HMLC buffer. Shape: (N, D).
    """

    loss: float
    level_losses: dict[int, float]
    overlap: float | None
    lr: float
    embeddings: Tensor


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Return bf16 autocast on CUDA when ``enabled``, else a no-op context."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_views(model: nn.Module, views: Tensor, amp: bool = False) -> ViewOutputs:
    """Run the model on every view in one batch and regroup the outputs per image.

    Shape:
        views: (N, V, ...) float inputs.
        output: z (N, V, D); soft_masks (N, V, L, D) or None.
    """
    num_images, num_views = views.shape[:2]
    with autocast_context(views.device, amp):
        # (N, V, ...) -> (N * V, ...): row n * V + v is view v of image n.
        output = model(views.flatten(0, 1))
    z = output.z.float().view(num_images, num_views, -1)
    soft_masks = None
    if output.soft_masks is not None:
        masks = output.soft_masks.float()
        soft_masks = masks.view(num_images, num_views, *masks.shape[1:])
    return ViewOutputs(z=z, soft_masks=soft_masks)


def compute_loss(
    model: nn.Module,
    views: Tensor,
    paths: Tensor,
    method: MethodConfig,
    context: LossContext,
    hard_masks: Tensor | None = None,
    amp: bool = False,
) -> tuple[LossTerms, ViewOutputs]:
    """Forward the views and compute the method's loss (no backward).

    Shape:
        views: (N, V, ...); paths: (N, L); hard_masks: (L, D) or None.
    """
    outputs = forward_views(model, views, amp)
    terms = method_loss(method, outputs.z, paths, context, hard_masks, outputs.soft_masks)
    return terms, outputs


def check_finite_loss(loss: Tensor, step: int, epoch: int) -> None:
    """Raise NonFiniteLossError naming the step and value when ``loss`` is NaN or infinite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"training stopped: the loss at global step {step} (epoch {epoch + 1}) is {value}; "
            f"lower the learning rate or raise the temperature, and check the input data"
        )


def train_step(
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    images: Tensor,
    paths: Tensor,
    augment: Augmentation,
    generator: torch.Generator,
    method: MethodConfig,
    context: LossContext,
    hard_masks: Tensor | None = None,
    amp: bool = False,
    step: int = 0,
    epoch: int = 0,
) -> StepResult:
    """Take one optimiser step on a batch of raw images.

    Args:
        model: The (possibly DDP-wrapped) contrastive model, in training mode.
        optimizer: Its optimiser.
        scheduler: Stepped once after the update.
        images: Raw inputs on the training device (e.g. uint8 images). Shape: (N, ...).
        paths: Label paths on the training device. Shape: (N, L).
        augment: Two-view augmentation, run on the images' device.
        generator: Source of the augmentation parameters.
        method: The method config.
        context: Level weights, class counts and the distributed flag.
        hard_masks: G-HMLC masks. Shape: (L, D).
        amp: bf16 autocast (CUDA only).
        step: Global step index, for the error message.
        epoch: 0-based epoch, for the error message.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite (checked before backward).
    """
    views = augment(images, generator)
    terms, outputs = compute_loss(model, views, paths, method, context, hard_masks, amp)
    check_finite_loss(terms.loss, step, epoch)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    optimizer.step()
    scheduler.step()
    return StepResult(
        loss=float(terms.loss.detach()),
        level_losses={level: float(value) for level, value in terms.level_losses.items()},
        overlap=None if terms.overlap is None else float(terms.overlap),
        lr=lr,
        embeddings=outputs.z[:, 0].detach(),
    )
