"""Gathered losses on a 2-process gloo group against one process on the whole batch.

Each rank has half of a fixed global batch. With gather_distributed=True the
loss on every rank must equal the single-process loss of the whole batch, and
a rank's feature (and soft mask) gradient must be world_size times the
single-process gradient of its rows.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from hmlc_core.losses import gather_with_grad, hierarchical_loss, supcon_loss

WORLD_SIZE = 2
NUM_IMAGES, NUM_VIEWS, WIDTH, NUM_LEVELS = 8, 2, 6, 2


def global_batch() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "features": torch.randn(NUM_IMAGES, NUM_VIEWS, WIDTH, generator=generator, dtype=torch.float64),
        "paths": torch.randint(0, 2, (NUM_IMAGES, NUM_LEVELS), generator=generator),
        "soft": torch.rand(NUM_IMAGES, NUM_VIEWS, NUM_LEVELS, WIDTH, generator=generator).double(),
        "hard": torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.float64),
        "weights": torch.rand(NUM_IMAGES, NUM_LEVELS, generator=generator).double() + 0.1,
    }


def compute(variant: str, batch: dict[str, Tensor], gather: bool) -> tuple[Tensor, list[Tensor]]:
    """Return the loss and the gradients of features (and soft masks) for one variant."""
    features = batch["features"].clone().requires_grad_(True)
    inputs = [features]
    if variant == "supcon":
        loss = supcon_loss(
            features, batch["paths"][:, -1], 0.3, weights=batch["weights"][:, 0],
            gather_distributed=gather,
        )
    elif variant == "hmce_hard_masks":
        loss = hierarchical_loss(
            features, batch["paths"], 0.3, constraint="max", masks=batch["hard"],
            anchor_weights=batch["weights"], gather_distributed=gather,
        )
    else:
        soft = batch["soft"].clone().requires_grad_(True)
        inputs.append(soft)
        loss = hierarchical_loss(
            features, batch["paths"], 0.3, constraint="max", masks=soft, gather_distributed=gather
        )
    loss.backward()
    return loss.detach(), [tensor.grad for tensor in inputs]


def run_rank(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)  # two processes share the test machine's cores
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        batch = global_batch()
        rows = slice(rank * NUM_IMAGES // WORLD_SIZE, (rank + 1) * NUM_IMAGES // WORLD_SIZE)
        local = {name: value[rows] if name != "hard" else value for name, value in batch.items()}
        for variant in ("supcon", "hmce_hard_masks", "soft_masks"):
            expected_loss, expected_grads = compute(variant, batch, gather=False)
            loss, grads = compute(variant, local, gather=True)
            assert torch.allclose(loss, expected_loss, rtol=1e-12, atol=0), (variant, rank)
            for grad, expected in zip(grads, expected_grads):
                assert torch.allclose(grad, WORLD_SIZE * expected[rows], rtol=1e-10, atol=1e-14), (
                    variant,
                    rank,
                )
        gathered = gather_with_grad(torch.full((2, 3), float(rank)))
        assert gathered[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_without_process_group_is_identity() -> None:
    tensor = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(tensor) is tensor


def test_gather_distributed_without_process_group_is_noop() -> None:
    batch = global_batch()
    for variant in ("supcon", "hmce_hard_masks", "soft_masks"):
        plain, plain_grads = compute(variant, batch, gather=False)
        gathered, gathered_grads = compute(variant, batch, gather=True)
        assert torch.equal(plain, gathered)
        for left, right in zip(plain_grads, gathered_grads):
            assert torch.equal(left, right)


@pytest.mark.timeout(120)
def test_gloo_two_ranks_match_single_process(tmp_path) -> None:
    init_file = os.path.join(tmp_path, "gloo_init")
    mp.spawn(run_rank, args=(init_file,), nprocs=WORLD_SIZE, join=True)
