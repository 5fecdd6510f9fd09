"""Gradient-aware all-gather, so a contrastive loss can see the global batch.

Every function here is a no-op when no ``torch.distributed`` process group is
initialised, so the losses run unchanged in a single process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def distributed_world_size() -> int:
    """Return the world size of the default process group, or 1 when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums gradients over ranks."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        ctx.rank = dist.get_rank()
        ctx.local_size = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        # Every rank computed its own loss over the gathered tensor, so the
        # gradient of this rank's slice is the sum of all ranks' gradients.
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All-gather ``tensor`` from every rank along dim 0, keeping gradients.

    Rank r's block sits at rows ``r * B .. (r + 1) * B - 1`` of the result. The
    backward pass all-reduces (sums) the incoming gradient over ranks and
    returns this rank's rows. When every rank computes the same loss over the
    gathered batch, this rank's gradient is therefore world_size times the
    single-process gradient of its rows, and the gradient averaging of
    DistributedDataParallel gives exactly the single-process parameter gradient.

    Returns ``tensor`` itself when no process group is initialised. Tensors
    that do not require grad (labels, weights) are gathered without a graph.

    Args:
        tensor: this rank's block. Every rank must pass the same shape and
            the same ``requires_grad``, because the backward all-reduce runs
            only for tensors that require grad and needs every rank.

    Returns:
        The blocks of all ranks, concatenated in rank order.

    Shape:
        - tensor: (B, ...)
        - output: (W * B, ...) with W the world size

    Raises:
        ValueError: tensor is a 0-d tensor.
    """
    if tensor.dim() == 0:
        raise ValueError("gather_with_grad needs a tensor with a batch dimension, got a 0-d tensor")
    if distributed_world_size() == 1:
        return tensor
    # NOTE: all_gather requires the same batch size on every rank; a smaller
    # last batch on one rank fails inside torch.distributed, not here.
    if tensor.requires_grad:
        return _AllGatherWithGrad.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
