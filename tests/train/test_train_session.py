"""The per-worker training session without Ray: resumption, non-finite losses, the probe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from hmlc_core.data import HierarchicalDataset, Hierarchy, TrainValSplits, load_splits
from hmlc_core.train.checkpoint import load_checkpoint, save_checkpoint
from hmlc_core.train.config import RunConfig, default_run_config, merge_dicts
from hmlc_core.train.loop import TrainingSession, WorkerInfo, probe_model
from hmlc_core.train.step import NonFiniteLossError
from hmlc_core.train.trainer import evaluate_checkpoint

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CPU = WorkerInfo(rank=0, world_size=1, device=torch.device("cpu"))
FAST_PROBE = {"weight_decays": [0.0, 1e-3], "max_iter": 30}


def _run(method_name: str, **overrides: object) -> RunConfig:
    values = {
        "batch_size": 32,
        "epochs": 3,
        "max_steps_per_epoch": 3,
        "knn_val_size": 100,
        "knn_bank_size": 200,
        "probe_train_size": 300,
        "probe_val_size": 200,
        "probe": FAST_PROBE,
        "data": {"data_dir": FASHION_DIR},
        "method": {"gmm_warmup_epochs": 1, "gmm_refit_every": 1},
        "model": {"encoder": {"name": "small_cnn", "in_channels": 1, "width": 32}},
    }
    return default_run_config("fashion-mnist", method_name, **merge_dicts(values, overrides))


@pytest.fixture(scope="module")
def fashion_splits() -> TrainValSplits:
    return load_splits(_run("hmce").data)


def _session(run: RunConfig, splits: TrainValSplits) -> TrainingSession:
    from hmlc_core.train.loop import prepare_data

    return TrainingSession(run, CPU, data=prepare_data(run, CPU, splits))


def _train(session: TrainingSession, epochs: int) -> list[float]:
    losses = []
    for _ in range(epochs):
        losses.append(session.train_epoch()["train/loss"])
        session.update_masks()
    return losses


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(fashion_splits: TrainValSplits, tmp_path: Path) -> None:
    run = _run("g_hmlc")
    uninterrupted = _session(run, fashion_splits)
    expected = _train(uninterrupted, 3)

    first = _session(run, fashion_splits)
    _train(first, 1)
    folder = save_checkpoint(tmp_path / "epoch_1", first.state())
    resumed = _session(run, fashion_splits)
    resumed.load_state(load_checkpoint(folder))
    assert resumed.epoch == 1
    assert resumed.global_step == 3
    torch.testing.assert_close(resumed.masks, first.masks)
    assert not torch.equal(resumed.masks, torch.ones_like(resumed.masks))

    assert _train(resumed, 2) == expected[1:]
    torch.testing.assert_close(resumed.masks, uninterrupted.masks)
    assert resumed.optimizer.param_groups[0]["lr"] == uninterrupted.optimizer.param_groups[0]["lr"]


@pytest.mark.slow
def test_resume_with_more_epochs_stretches_schedule(fashion_splits: TrainValSplits, tmp_path: Path) -> None:
    short = _session(_run("hmce", epochs=1), fashion_splits)
    _train(short, 1)
    folder = save_checkpoint(tmp_path / "epoch_1", short.state())
    longer_run = _run("hmce", epochs=4)
    reference = _session(longer_run, fashion_splits)
    _train(reference, 1)
    resumed = _session(longer_run, fashion_splits)
    resumed.load_state(load_checkpoint(folder))
    assert resumed.scheduler.total_steps == 12
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"])
    assert resumed.optimizer.param_groups[0]["lr"] != pytest.approx(short.optimizer.param_groups[0]["lr"])


@pytest.mark.slow
def test_non_finite_loss_stops_with_step(fashion_splits: TrainValSplits) -> None:
    session = _session(_run("hmce"), fashion_splits)
    _train(session, 1)
    with torch.no_grad():
        session.unwrapped.head.parameters().__next__().fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss at global step 3 \(epoch 2\) is nan"):
        session.train_epoch()


@pytest.mark.slow
def test_resume_rejects_other_model(fashion_splits: TrainValSplits, tmp_path: Path) -> None:
    session = _session(_run("hmce"), fashion_splits)
    folder = save_checkpoint(tmp_path / "ckpt", session.state())
    other = _run("hmce", model={"encoder": {"name": "small_cnn", "in_channels": 1, "width": 16}})
    with pytest.raises(Exception, match="differs from this run"):
        _session(other, fashion_splits).load_state(load_checkpoint(folder))


@pytest.mark.slow
def test_evaluate_checkpoint_matches_final_probe(fashion_splits: TrainValSplits, tmp_path: Path) -> None:
    run = _run("a_hmlc", epochs=1, final_test=True, method={"overlap_penalty": 0.1})
    session = _session(run, fashion_splits)
    _train(session, 1)
    final = session.final_evaluation()
    folder = save_checkpoint(tmp_path / "ckpt", session.state())

    val = evaluate_checkpoint(folder, run, "val", device="cpu")
    assert sorted(val) == sorted(key for key in final if key.startswith("val/"))
    for key, value in val.items():
        assert value == pytest.approx(final[key], abs=1e-6), key
    test = evaluate_checkpoint(folder, run, "test", device="cpu")
    assert sorted(test) == ["test/probe_acc", "test/probe_acc_L1", "test/probe_acc_L2", "test/probe_acc_L3"]
    for key in test:
        assert test[key] == pytest.approx(final[key], abs=1e-6), key
    # Ten fine classes: a trained small CNN beats chance (0.1) clearly even after 3 steps.
    assert test["test/probe_acc"] > 0.3
    with pytest.raises(ValueError, match="split='train' is invalid"):
        evaluate_checkpoint(folder, run, "train")  # type: ignore[arg-type]


class _FlattenFeatures(nn.Module):
    """Feature extractor whose pooled feature is the flattened image (raw pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def features(self, x: Tensor) -> Tensor:
        return x.flatten(1) + 0 * self.anchor


def _pixel_dataset(num: int, split: str, seed: int, shuffle_labels: bool) -> HierarchicalDataset:
    """Fine class c lights pixel c of a 4x4 image; two coarse classes of two fine ones."""
    hierarchy = Hierarchy(
        level_names=("coarse", "fine"),
        class_names=(("a", "b"), ("a0", "a1", "b0", "b1")),
        parents=((), (0, 0, 1, 1)),
    )
    generator = torch.Generator().manual_seed(seed)
    fine = torch.randint(0, 4, (num,), generator=generator)
    images = torch.randint(0, 40, (num, 1, 4, 4), generator=generator, dtype=torch.uint8)
    images.view(num, 16)[torch.arange(num), fine] = 255
    if shuffle_labels:
        fine = fine[torch.randperm(num, generator=generator)]
    paths = hierarchy.paths_from_fine(fine)
    return HierarchicalDataset(
        name="pixels", modality="image", inputs=images, paths=paths, hierarchy=hierarchy,
        split=split, mean=(0.2,), std=(0.3,),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("shuffle_labels", [False, True])
def test_probe_separable_and_shuffled(shuffle_labels: bool) -> None:
    run = _run("hmce", probe={"weight_decays": [0.0, 1e-4], "max_iter": 50}, final_test=False)
    train = _pixel_dataset(400, "train", seed=1, shuffle_labels=shuffle_labels)
    val = _pixel_dataset(400, "val", seed=2, shuffle_labels=shuffle_labels)
    metrics = probe_model(_FlattenFeatures(), run, train, val, torch.device("cpu"))
    assert metrics["val/probe_acc"] == metrics["val/probe_acc_L2"]
    if not shuffle_labels:
        assert metrics["val/probe_acc_L1"] == 1.0
        assert metrics["val/probe_acc_L2"] == 1.0
    else:
        # Chance is 0.5 (coarse) and 0.25 (fine); 3 standard errors at n = 200 is ~0.1.
        assert abs(metrics["val/probe_acc_L1"] - 0.5) < 0.12
        assert abs(metrics["val/probe_acc_L2"] - 0.25) < 0.1
    assert math.isfinite(metrics["eval/probe_time_s"])
