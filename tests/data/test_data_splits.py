"""Tests of validation splits, long-tailed subsampling and the DataConfig entry points."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hmlc_core.config import ConfigError
from hmlc_core.data import (
    DataConfig,
    DataError,
    TrainValSplits,
    load_official_split,
    load_splits,
    load_test_split,
    long_tail_counts,
    long_tail_indices,
    stratified_split,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-labels-idx1-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST not installed in {FASHION_DIR}",
)


def _labels() -> torch.Tensor:
    # Class c has 20 + 3 c samples, interleaved.
    labels = torch.cat([torch.full((20 + 3 * c,), c) for c in range(7)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]


def test_split_disjoint_and_complete() -> None:
    labels = _labels()
    train, val = stratified_split(labels, 0.1, seed=0)
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))


def test_split_stratified_per_class() -> None:
    labels = _labels()
    _, val = stratified_split(labels, 0.25, seed=0)
    counts = torch.bincount(labels[val], minlength=7)
    expected = [round(0.25 * (20 + 3 * c)) for c in range(7)]
    assert counts.tolist() == expected


def test_split_stable_under_seed() -> None:
    labels = _labels()
    first = stratified_split(labels, 0.1, seed=3)
    second = stratified_split(labels, 0.1, seed=3)
    other = stratified_split(labels, 0.1, seed=4)
    assert torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_split_keeps_one_per_class_each_side() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    train, val = stratified_split(labels, 0.01, seed=0)
    assert sorted(labels[val].tolist()) == [0, 1]
    assert sorted(labels[train].tolist()) == [0, 1, 1, 2]
    train, val = stratified_split(labels, 0.99, seed=0)
    assert sorted(labels[train].tolist()) == [0, 1, 2]


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(DataError, match="val_fraction must be in \\(0, 1\\), got 1.0"):
        stratified_split(torch.zeros(4), 1.0, seed=0)


_CHILD = """
import hashlib, sys, torch
from hmlc_core.data import stratified_split
labels = torch.arange(5000) % 13
train, val = stratified_split(labels, 0.1, seed=11)
print(hashlib.sha256(val.numpy().tobytes()).hexdigest())
"""


def test_split_identical_across_processes() -> None:
    labels = torch.arange(5000) % 13
    _, val = stratified_split(labels, 0.1, seed=11)
    local = hashlib.sha256(val.numpy().tobytes()).hexdigest()
    # A second interpreter with another hash seed and thread count plays the part of another worker.
    env = {**os.environ, "PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == local


def test_long_tail_profile_hand_computed() -> None:
    counts = long_tail_counts(torch.full((5,), 500), rho=100.0)
    # 500 * 100 ** (-c / 4) for c = 0..4, floored: 500, 158.1, 50, 15.8, 5.
    assert counts.tolist() == [500, 158, 50, 15, 5]


def test_long_tail_rho_one_keeps_all() -> None:
    assert long_tail_counts(torch.tensor([30, 20, 30]), rho=1.0).tolist() == [30, 20, 30]


def test_long_tail_rejects_rho_below_one() -> None:
    with pytest.raises(DataError, match="rho must be >= 1, got 0.5"):
        long_tail_counts(torch.tensor([3, 3]), rho=0.5)


def test_long_tail_indices_seeded() -> None:
    labels = torch.arange(1000) % 10
    chosen = long_tail_indices(labels, 10, rho=10.0, seed=1)
    counts = torch.bincount(labels[chosen], minlength=10)
    assert counts.tolist() == long_tail_counts(torch.full((10,), 100), 10.0).tolist()
    assert counts[0] / counts[-1] == 10
    assert torch.equal(chosen, long_tail_indices(labels, 10, rho=10.0, seed=1))
    assert not torch.equal(chosen, long_tail_indices(labels, 10, rho=10.0, seed=2))
    assert len(set(chosen.tolist())) == len(chosen)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "imagenet", "DataConfig.name is 'imagenet'"),
        ("val_fraction", 0.0, "DataConfig.val_fraction is 0.0"),
        ("long_tail_rho", 0.5, "DataConfig.long_tail_rho is 0.5"),
        ("long_tail_rho", float("inf"), "DataConfig.long_tail_rho is inf"),
        ("num_points", 0, "DataConfig.num_points is 0"),
    ],
)
def test_config_rejects_invalid(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DataConfig(**{field: value})


def test_config_rejects_download_for_modelnet40() -> None:
    with pytest.raises(ConfigError, match="download is set for 'modelnet40'"):
        DataConfig(name="modelnet40", download=True)


def test_config_from_dict_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        DataConfig.from_dict({"name": "cifar100", "val_fraction_typo": 0.2})


@pytest.fixture(scope="module")
def fashion_splits() -> TrainValSplits:
    return load_splits(DataConfig(name="fashion-mnist", data_dir=str(FASHION_DIR)))


@needs_fashion
def test_fashion_splits_sizes(fashion_splits: TrainValSplits) -> None:
    assert len(fashion_splits.train) == 54000
    assert len(fashion_splits.val) == 6000
    assert fashion_splits.val.class_counts()[2].tolist() == [600] * 10
    assert fashion_splits.train.class_counts()[2].tolist() == [5400] * 10
    assert fashion_splits.train.split == "train"
    assert fashion_splits.val.split == "val"


@needs_fashion
def test_fashion_val_rows_of_official_train(fashion_splits: TrainValSplits) -> None:
    config = DataConfig(name="fashion-mnist", data_dir=str(FASHION_DIR))
    official = load_official_split(config, "train")
    train_index, val_index = stratified_split(official.fine_labels, 0.1, seed=0)
    assert torch.equal(fashion_splits.val.inputs, official.inputs[val_index])
    assert torch.equal(fashion_splits.train.paths, official.paths[train_index])


@needs_fashion
def test_test_split_separate_and_marked() -> None:
    test_split = load_test_split(DataConfig(name="fashion-mnist", data_dir=str(FASHION_DIR)))
    assert test_split.split == "test"
    assert len(test_split) == 10000
    with pytest.raises(DataError, match="expected a train or val split, got the test split"):
        test_split.require_split("train", "val")


@needs_fashion
def test_fashion_long_tail_train_balanced_val() -> None:
    config = DataConfig(name="fashion-mnist", data_dir=str(FASHION_DIR), long_tail_rho=10.0)
    splits = load_splits(config)
    fine_counts = splits.train.class_counts()[2]
    assert fine_counts.tolist() == long_tail_counts(torch.full((10,), 5400), 10.0).tolist()
    assert fine_counts[0].item() == 5400
    assert fine_counts[-1].item() == 540
    assert splits.val.class_counts()[2].tolist() == [600] * 10


@needs_fashion
def test_subset_and_batches(fashion_splits: TrainValSplits) -> None:
    small = fashion_splits.val.subset(torch.arange(10))
    assert torch.equal(small.inputs, fashion_splits.val.inputs[:10])
    batches = list(small.iter_batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(paths) for _, paths in batches] == [4, 4, 2]
    seen = torch.cat([paths[:, -1] for _, paths in batches])
    assert sorted(seen.tolist()) == sorted(small.fine_labels.tolist())
    assert len(list(small.iter_batches(4, drop_last=True))) == 2


@needs_fashion
def test_batches_sharded_across_workers(fashion_splits: TrainValSplits) -> None:
    small = fashion_splits.val.subset(torch.arange(11))
    shards = []
    for rank in range(3):
        generator = torch.Generator().manual_seed(4)
        batches = small.iter_batches(2, shuffle=True, generator=generator, rank=rank, world_size=3)
        shards.append(torch.cat([paths[:, -1] for _, paths in batches]))
    assert [len(shard) for shard in shards] == [3, 3, 3]
    order = torch.randperm(11, generator=torch.Generator().manual_seed(4))
    expected = small.fine_labels[order[:9]]
    assert torch.equal(torch.stack(shards, dim=1).flatten(), expected)
    with pytest.raises(DataError, match="rank must be in \\[0, world_size=3\\), got 3"):
        next(small.iter_batches(2, rank=3, world_size=3))
