"""G-HMLC mask refits across workers: buffer, gather, fit on rank 0, broadcast.

Each worker keeps its most recent embeddings in an :class:`EmbeddingBuffer`. At a refit
every worker's buffer is gathered, rank 0 fits the mixture with
:func:`hmlc_core.losses.feature_identification.fit_gmm_masks`, and the masks are
broadcast, so every worker trains with the same masks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings

import torch
import torch.distributed as dist
from torch import Tensor

from hmlc_core.losses.feature_identification import GMMMaskConfig, fit_gmm_masks

logger = logging.getLogger(__name__)


class EmbeddingBuffer:
    """Ring buffer of the latest embeddings and label paths of one worker (on CPU).

    Shape:
        embeddings: (capacity, D); paths: (capacity, L).
    """

    def __init__(self, capacity: int, dim: int, num_levels: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._embeddings = torch.zeros(capacity, dim)
        self._paths = torch.zeros(capacity, num_levels, dtype=torch.long)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, embeddings: Tensor, paths: Tensor) -> None:
        """Append a batch, overwriting the oldest rows when full.

        Shape:
            embeddings: (N, D); paths: (N, L).
        """
        embeddings = embeddings.detach().float().cpu()[-self.capacity :]
        paths = paths.detach().cpu()[-self.capacity :]
        count = embeddings.shape[0]
        rows = (self._next + torch.arange(count)) % self.capacity
        self._embeddings[rows] = embeddings
        self._paths[rows] = paths
        self._next = (self._next + count) % self.capacity
        self._size = min(self.capacity, self._size + count)

    def contents(self) -> tuple[Tensor, Tensor]:
        """Return the stored embeddings and paths. Shape: (M, D), (M, L)."""
        return self._embeddings[: self._size].clone(), self._paths[: self._size].clone()

    def clear(self) -> None:
        """Drop every stored row."""
        self._next = 0
        self._size = 0


def per_worker_capacity(total: int, world_size: int) -> int:
    """Return the buffer rows each worker keeps so all workers hold about ``total``."""
    return max(1, math.ceil(total / world_size))


def all_ones_masks(num_levels: int, dim: int) -> Tensor:
    """Return the masks used before the first fit (plain HMCE). Shape: (L, D)."""
    return torch.ones(num_levels, dim)


@dataclasses.dataclass(frozen=True)
class RefitResult:
    """Masks after a refit, identical on all workers.

    Attributes:
        masks: Hard 0/1 masks. Shape: (L, D).
        fell_back: True when the mixture failed and the previous masks were kept.
        num_samples: Embeddings (over all workers) the mixture was fitted on.
    """

    masks: Tensor
    fell_back: bool
    num_samples: int


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_buffers(embeddings: Tensor, paths: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Concatenate every worker's buffer on every worker (sizes may differ).

    Collectives run on ``device`` (CUDA for NCCL); the result is on the CPU.

    Shape:
        embeddings: (M_r, D); paths: (M_r, L); output: (sum_r M_r, D), (sum_r M_r, L).
    """
    if not _distributed():
        return embeddings, paths
    world_size = dist.get_world_size()
    size = torch.tensor([embeddings.shape[0]], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    gathered_z = _gather_padded(embeddings.float(), longest, device)
    gathered_paths = _gather_padded(paths, longest, device)
    counts = [int(s) for s in sizes]
    z = torch.cat([part[:count] for part, count in zip(gathered_z, counts)])
    labels = torch.cat([part[:count] for part, count in zip(gathered_paths, counts)])
    return z.cpu(), labels.cpu()


def _gather_padded(tensor: Tensor, rows: int, device: torch.device) -> list[Tensor]:
    padded = torch.zeros(rows, *tensor.shape[1:], dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor.to(device)
    parts = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, padded)
    return parts


def broadcast_masks(masks: Tensor, fell_back: bool, device: torch.device) -> tuple[Tensor, bool]:
    """Send rank 0's masks and fallback flag to every worker.

    Shape:
        masks: (L, D), the same shape on every rank; output: (L, D) on the CPU.
    """
    if not _distributed():
        return masks, fell_back
    payload = torch.cat([masks.flatten().float(), torch.tensor([float(fell_back)])]).to(device)
    dist.broadcast(payload, src=0)
    payload = payload.cpu()
    return payload[:-1].view_as(masks).clone(), bool(payload[-1] > 0.5)


def refit_masks(
    buffer: EmbeddingBuffer,
    config: GMMMaskConfig,
    previous_masks: Tensor,
    device: torch.device,
) -> RefitResult:
    """Fit new masks on the gathered buffers of all workers and share rank 0's result.

    Every worker must call this at the same point. Only rank 0 fits the mixture.

    Shape:
        previous_masks: (L, D); output masks: (L, D).
    """
    embeddings, paths = gather_buffers(*buffer.contents(), device)
    is_rank_zero = not _distributed() or dist.get_rank() == 0
    masks, fell_back = previous_masks, False
    if is_rank_zero:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_gmm_masks(embeddings, paths, config, previous_masks=previous_masks)
        for warning in caught:
            logger.warning("G-HMLC mask refit: %s", warning.message)
        masks, fell_back = result.masks.float().cpu(), bool(result.fell_back)
    masks, fell_back = broadcast_masks(masks, fell_back, device)
    return RefitResult(masks=masks, fell_back=fell_back, num_samples=int(embeddings.shape[0]))
