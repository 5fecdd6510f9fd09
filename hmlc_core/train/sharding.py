"""Per-epoch shuffling and per-worker batches for data held in memory on every worker.

This replaces ``DistributedSampler`` for in-memory tensors. Every epoch draws one
permutation of the training set from a generator seeded by (seed, epoch), identical on
all workers. Global batch ``s`` is the slice ``[s * G, (s + 1) * G)`` of that
permutation, and worker ``r`` takes the part ``[r * B, (r + 1) * B)`` of it, with
G = W * B. So W workers with batch B see exactly the images that one worker with batch
W * B sees, in the same order (a project choice that makes runs comparable across
worker counts).
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPOCH_STRIDE = 1_000_003


def epoch_generator(seed: int, epoch: int, rank: int = 0, offset: int = 0) -> torch.Generator:
    """Return a CPU generator seeded from (seed, epoch, rank, offset).

    ``offset`` separates independent streams (shuffling, augmentation) of one epoch.
    """
    generator = torch.Generator()
    generator.manual_seed(((seed * _EPOCH_STRIDE + epoch) * 1009 + rank) * 101 + offset)
    return generator


def steps_per_epoch(num_samples: int, global_batch: int, max_steps: int | None = None) -> int:
    """Return the number of full global batches per epoch, capped at ``max_steps``.

    Raises:
        ValueError: the dataset contains fewer samples than one global batch.
    """
    steps = num_samples // global_batch
    if steps == 0:
        raise ValueError(
            f"the training set has {num_samples} samples, fewer than one global batch of "
            f"{global_batch}; lower batch_size"
        )
    return steps if max_steps is None else min(steps, max_steps)


def epoch_batches(
    num_samples: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    batch_per_worker: int,
    max_steps: int | None = None,
) -> Tensor:
    """Return this worker's sample indices for every step of ``epoch``.

    The last incomplete global batch is dropped.

    Returns:
        LongTensor of shape (S, B): row s contains the indices of step s on this worker.
    """
    global_batch = world_size * batch_per_worker
    num_steps = steps_per_epoch(num_samples, global_batch, max_steps)
    order = torch.randperm(num_samples, generator=epoch_generator(seed, epoch))
    batches = order[: num_steps * global_batch].view(num_steps, world_size, batch_per_worker)
    return batches[:, rank].contiguous()


def fixed_subset(num_samples: int, size: int | None, seed: int) -> Tensor:
    """Return a seeded random subset of ``size`` indices (all indices, in order, for None).

    Returns:
        LongTensor of shape (min(size, num_samples),), sorted.
    """
    if size is None or size >= num_samples:
        return torch.arange(num_samples)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(num_samples, generator=generator)[:size].sort().values
