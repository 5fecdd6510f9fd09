"""Sample -> RunConfig mapping and the base run of each budget."""

from __future__ import annotations

import pytest

from hmlc_core.config import ConfigError
from search.budgets import SMOKE, get_budget, BudgetError, default_budget_name
from search.mapping import RunSettings, apply_sample, build_base_run, sample_params
from search.spaces import SpaceError


def settings(method: str = "g_hmlc", **changes: object) -> RunSettings:
    values: dict[str, object] = dict(
        method=method,
        dataset="fashion-mnist",
        data_dir=None,
        in_channels=1,
        epochs=1,
        batch_size=64,
        max_steps_per_epoch=3,
        num_workers=1,
        use_gpu=False,
        cpus_per_worker=1.0,
        seed=7,
    )
    values.update(changes)
    return RunSettings(**values)  # type: ignore[arg-type]


def test_smoke_base_run() -> None:
    run = build_base_run(settings(), SMOKE)
    assert run.method.method == "g_hmlc"
    assert run.data.name == "fashion-mnist"
    assert run.model.encoder.name == "small_cnn"
    assert run.model.encoder.width == 32
    assert run.model.encoder.in_channels == 1
    assert (run.epochs, run.batch_size, run.max_steps_per_epoch, run.seed) == (1, 64, 3, 7)
    assert (run.knn_val_size, run.knn_bank_size, run.probe_train_size) == (256, 1024, 2048)
    assert run.probe.weight_decays == (0.0, 1e-3)
    assert run.method.gmm_warmup_epochs == 0
    assert run.method.gmm.seed == 7
    assert run.final_test is False


def test_full_budget_uses_resnet_and_pointnet() -> None:
    full = get_budget("full")
    image = build_base_run(settings(dataset="cifar100", in_channels=3, use_gpu=True), full)
    assert image.model.encoder.name == "resnet18"
    assert image.model.encoder.width is None
    assert full.epochs_for("cifar100") == 500
    points = build_base_run(settings(dataset="modelnet40", in_channels=3), full)
    assert points.model.encoder.name == "pointnet"


def test_apply_sample_sets_every_field() -> None:
    base = build_base_run(settings("g_hmlc"), SMOKE)
    sample = {
        "lr": 0.2,
        "temperature": 0.07,
        "w_L1": 1.0,
        "w_L2": 2.0,
        "w_L3": 3.0,
        "beta": 0.5,
        "gmm_k": 5,
        "gmm_cov": "full",
    }
    run = apply_sample(base, sample, num_levels=3)
    assert run.optim.lr == 0.2
    assert run.method.temperature == 0.07
    assert run.method.level_weights == (1.0, 2.0, 3.0)
    assert run.method.beta == 0.5
    assert run.method.gmm.n_components == 5
    assert run.method.gmm.covariance_type == "full"
    assert base.optim.lr != 0.2


def test_apply_sample_attention_knobs() -> None:
    base = build_base_run(settings("a_hmlc"), SMOKE)
    run = apply_sample(base, {"heads": 8, "mask_temp": 0.25}, num_levels=3)
    assert run.method.attention_heads == 8
    assert run.method.mask_temperature == 0.25


def test_apply_sample_rejects_heads_not_dividing_width() -> None:
    base = build_base_run(settings("a_hmlc"), SMOKE)
    with pytest.raises(ConfigError, match="attention_heads=3 does not divide the encoder width 32"):
        apply_sample(base, {"heads": 3}, num_levels=3)


def test_apply_sample_rejects_partial_weights() -> None:
    base = build_base_run(settings("hmc"), SMOKE)
    with pytest.raises(SpaceError, match=r"missing \['w_L3'\]"):
        apply_sample(base, {"w_L1": 1.0, "w_L2": 1.0}, num_levels=3)


def test_apply_sample_rejects_unknown_knob() -> None:
    base = build_base_run(settings("hmc"), SMOKE)
    with pytest.raises(SpaceError, match="unknown knob 'momentum'"):
        apply_sample(base, {"momentum": 0.9}, num_levels=3)


def test_sample_params_are_plain_and_sorted() -> None:
    import numpy as np

    params = sample_params({"temperature": np.float64(0.1), "heads": np.int64(4)})
    assert list(params) == ["heads", "temperature"]
    assert type(params["heads"]) is int
    assert type(params["temperature"]) is float


def test_budget_lookup() -> None:
    assert get_budget("smoke").num_samples == 2
    assert default_budget_name(cluster_has_gpu=True) == "full"
    assert default_budget_name(cluster_has_gpu=False) == "local"
    with pytest.raises(BudgetError, match="unknown budget 'huge'"):
        get_budget("huge")
