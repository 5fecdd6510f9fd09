"""Optimisers: SGD with momentum, and LARS (You et al., "Large Batch Training of
Convolutional Networks", 2017) for large global batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class LARS(Optimizer):
    """SGD with momentum whose step is scaled per tensor by a trust ratio.

    For a tensor w with gradient g (weight decay already added), the update uses
    ``trust_coefficient * ||w|| / ||g||`` as the local learning-rate factor. Groups
    with ``lars_exclude=True`` (biases and normalisation parameters, by the usual
    convention) get neither weight decay nor the trust ratio.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0:
            raise ValueError(f"LARS learning rate must be >= 0, got {lr}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        """Apply one update to every parameter that has a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = self._scaled_gradient(param, group)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss

    @staticmethod
    def _scaled_gradient(param: Tensor, group: dict) -> Tensor:
        grad = param.grad
        if group["lars_exclude"]:
            return grad
        grad = grad.add(param, alpha=group["weight_decay"])
        param_norm = torch.linalg.vector_norm(param)
        grad_norm = torch.linalg.vector_norm(grad)
        trust = torch.where(
            (param_norm > 0) & (grad_norm > 0),
            group["trust_coefficient"] * param_norm / (grad_norm + group["eps"]),
            torch.ones_like(param_norm),
        )
        return grad * trust


def split_decay_groups(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """Split trainable parameters into (weights, biases and normalisation parameters).

    A parameter with at most one dimension counts as a bias or normalisation parameter.
    """
    weights: list[Tensor] = []
    others: list[Tensor] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (weights if param.ndim > 1 else others).append(param)
    return weights, others


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float = 0.001,
) -> Optimizer:
    """Build SGD (weight decay on every parameter) or LARS (biases and norms excluded).

    Args:
        model: The model to optimise (unwrapped or DDP-wrapped).
        name: "sgd" or "lars".
        lr: The peak learning rate, already scaled to the global batch.
        momentum: Momentum factor.
        weight_decay: L2 penalty factor.
        trust_coefficient: LARS trust coefficient (ignored for SGD).

    Raises:
        ValueError: ``name`` is not "sgd" or "lars".
    """
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    if name == "lars":
        weights, others = split_decay_groups(model)
        groups = [{"params": weights}, {"params": others, "lars_exclude": True}]
        groups = [group for group in groups if group["params"]]
        return LARS(
            groups,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
        )
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'lars'")
