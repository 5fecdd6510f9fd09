"""Per-epoch shuffling and per-worker batches."""

from __future__ import annotations

import pytest
import torch

from hmlc_core.train.sharding import epoch_batches, fixed_subset, steps_per_epoch


def test_workers_split_the_single_worker_batch() -> None:
    single = epoch_batches(100, seed=7, epoch=3, rank=0, world_size=1, batch_per_worker=8)
    parts = [epoch_batches(100, 7, 3, rank, 2, 4) for rank in range(2)]
    assert single.shape == (12, 8)
    assert parts[0].shape == (12, 4)
    torch.testing.assert_close(torch.cat(parts, dim=1), single)


def test_order_changes_per_epoch_and_repeats_per_seed() -> None:
    first = epoch_batches(100, seed=0, epoch=0, rank=0, world_size=1, batch_per_worker=10)
    again = epoch_batches(100, seed=0, epoch=0, rank=0, world_size=1, batch_per_worker=10)
    second = epoch_batches(100, seed=0, epoch=1, rank=0, world_size=1, batch_per_worker=10)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, second)
    # Each epoch visits every sample once.
    assert sorted(first.flatten().tolist()) == list(range(100))


def test_max_steps_and_drop_last() -> None:
    assert steps_per_epoch(105, 10) == 10
    assert steps_per_epoch(105, 10, max_steps=3) == 3
    assert epoch_batches(105, 0, 0, 1, 2, 5, max_steps=3).shape == (3, 5)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        steps_per_epoch(5, 10)


def test_fixed_subset() -> None:
    subset = fixed_subset(50, 10, seed=4)
    assert subset.shape == (10,)
    assert torch.equal(subset, fixed_subset(50, 10, seed=4))
    assert torch.equal(subset, subset.sort().values)
    assert torch.equal(fixed_subset(5, None, seed=0), torch.arange(5))
    assert torch.equal(fixed_subset(5, 10, seed=0), torch.arange(5))
