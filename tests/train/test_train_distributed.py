"""Two gloo processes against one process: the same loss, gradients and G-HMLC masks.

The two-process group runs once per module because spawning costs a few seconds. It
writes its results to a file, and the tests compare them with a single-process run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from hmlc_core.losses.feature_identification import GMMMaskConfig, fit_gmm_masks
from hmlc_core.models import EncoderConfig, ModelConfig, build_model
from hmlc_core.train.config import MethodConfig
from hmlc_core.train.masks import EmbeddingBuffer, refit_masks
from hmlc_core.train.methods import LossContext
from hmlc_core.train.step import compute_loss

IMAGES_PER_WORKER = 6
NUM_LEVELS, DIM = 3, 16
METHODS = {
    "supcon": MethodConfig(method="supcon", beta=0.5),
    "hmc": MethodConfig(method="hmc"),
    "hmce": MethodConfig(method="hmce", beta=0.5),
    "g_hmlc": MethodConfig(method="g_hmlc", beta=0.5),
    "a_hmlc": MethodConfig(method="a_hmlc", beta=0.5, overlap_penalty=0.1),
}


def _global_batch(total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed float views (N, 2, 1, 28, 28) and tree-consistent label paths (N, 3)."""
    generator = torch.Generator().manual_seed(11)
    views = torch.randn(total, 2, 1, 28, 28, generator=generator)
    fine = torch.randint(0, 8, (total,), generator=generator)
    paths = torch.stack([fine // 4, fine // 2, fine], dim=1)
    return views, paths


def _class_counts() -> list[torch.Tensor]:
    return [torch.tensor([30, 10]), torch.tensor([5, 10, 20, 7]), torch.arange(1, 9) * 3]


def _hard_masks() -> torch.Tensor:
    return (torch.rand(NUM_LEVELS, DIM, generator=torch.Generator().manual_seed(5)) > 0.4).float()


def _model(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(encoder=EncoderConfig(name="small_cnn", in_channels=1, width=16), projection_dim=DIM)
    if method == "a_hmlc":
        config = config.with_attention(NUM_LEVELS, num_heads=2)
    # Eval mode freezes BatchNorm statistics: on CPU each worker would otherwise
    # normalise over its own images (SyncBatchNorm needs an accelerator).
    return build_model(config).eval()


def _loss_and_grads(method: str, rank: int, world_size: int) -> dict[str, object]:
    model = _model(method)
    trained = DistributedDataParallel(model) if world_size > 1 else model
    views, paths = _global_batch(IMAGES_PER_WORKER * 2)
    count = views.shape[0] // world_size
    rows = slice(rank * count, (rank + 1) * count)
    context = LossContext(
        level_weights=torch.tensor([1.0, 2.0, 3.0]),
        class_counts=_class_counts(),
        gather_distributed=world_size > 1,
    )
    terms, _ = compute_loss(trained, views[rows], paths[rows], METHODS[method], context, _hard_masks())
    terms.loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return {"loss": terms.loss.detach().clone(), "grads": grads}


def _buffer_for_rank(rank: int) -> EmbeddingBuffer:
    """Embeddings where dims 0-3 carry level 0, 4-7 level 1, the rest level 2 (plus noise)."""
    generator = torch.Generator().manual_seed(100 + rank)
    fine = torch.randint(0, 8, (64,), generator=generator)
    paths = torch.stack([fine // 4, fine // 2, fine], dim=1)
    z = 0.1 * torch.randn(64, DIM, generator=generator)
    z[:, 0:4] += paths[:, :1].float()
    z[:, 4:8] += paths[:, 1:2].float()
    z[:, 8:] += paths[:, 2:].float()
    buffer = EmbeddingBuffer(64, DIM, NUM_LEVELS)
    buffer.add(z, paths)
    return buffer


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results = {method: _loss_and_grads(method, rank, world_size) for method in METHODS}
        refit = refit_masks(_buffer_for_rank(rank), GMMMaskConfig(), torch.ones(NUM_LEVELS, DIM), torch.device("cpu"))
        results["masks"] = refit.masks
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_worker_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(2, _free_port(), str(out_dir)), nprocs=2, join=True)
    return [torch.load(Path(out_dir) / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_two_workers_match_one_worker(method: str, two_worker_results: list[dict]) -> None:
    single = _loss_and_grads(method, rank=0, world_size=1)
    for rank in range(2):
        distributed = two_worker_results[rank][method]
        torch.testing.assert_close(distributed["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        assert distributed["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(distributed["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_masks_agree_after_refit(two_worker_results: list[dict]) -> None:
    masks = [two_worker_results[rank]["masks"] for rank in range(2)]
    torch.testing.assert_close(masks[0], masks[1])
    # Rank 0 fitted on both buffers, concatenated in rank order.
    parts = [_buffer_for_rank(rank).contents() for rank in range(2)]
    embeddings = torch.cat([part[0] for part in parts])
    paths = torch.cat([part[1] for part in parts])
    expected = fit_gmm_masks(embeddings, paths, GMMMaskConfig(), previous_masks=torch.ones(NUM_LEVELS, DIM))
    torch.testing.assert_close(masks[0], expected.masks.float())
    assert not torch.equal(masks[0], torch.ones(NUM_LEVELS, DIM))
