"""RunConfig and its parts: validation messages, defaults, dict round trips."""

from __future__ import annotations

import json

import pytest
import torch

from hmlc_core.config import ConfigError
from hmlc_core.train.config import (
    MethodConfig,
    OptimConfig,
    RunConfig,
    ScalingSettings,
    default_run_config,
    merge_dicts,
)


def test_run_config_json_round_trip() -> None:
    run = default_run_config(
        "fashion-mnist",
        "g_hmlc",
        batch_size=64,
        method={"level_weights": [1.0, 2.0, 3.0], "gmm": {"n_components": 4}},
        scaling={"num_workers": 2},
    )
    restored = RunConfig.from_dict(json.loads(json.dumps(run.to_dict())))
    assert restored == run
    assert restored.method.level_weights == (1.0, 2.0, 3.0)
    assert restored.method.gmm.n_components == 4
    assert restored.model.encoder.name == "small_cnn"
    assert restored.model.encoder.in_channels == 1
    assert restored.batch_per_worker == 32


def test_default_run_config_merges_nested_overrides() -> None:
    run = default_run_config("fashion-mnist", "hmc", data={"data_dir": "/tmp/x"})
    assert run.data.name == "fashion-mnist"
    assert run.data.data_dir == "/tmp/x"
    assert run.method.method == "hmc"
    assert merge_dicts({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"method": "simclr"}, "MethodConfig.method"),
        ({"temperature": 0.0}, "MethodConfig.temperature"),
        ({"temperature": float("nan")}, "MethodConfig.temperature"),
        ({"beta": 1.5}, "MethodConfig.beta"),
        ({"beta": -0.1}, "MethodConfig.beta"),
        ({"constraint": "min"}, "MethodConfig.constraint"),
        ({"level_weights": (1.0, -1.0)}, "level_weights"),
        ({"gmm_refit_every": 0}, "MethodConfig.gmm_refit_every"),
        ({"mask_temperature": 0.0}, "MethodConfig.mask_temperature"),
        ({"overlap_penalty": -1.0}, "MethodConfig.overlap_penalty"),
    ],
)
def test_method_config_rejects_invalid(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        MethodConfig(**values)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"optimizer": "adam"}, "OptimConfig.optimizer"),
        ({"lr": 0.0}, "OptimConfig.lr"),
        ({"momentum": 1.0}, "OptimConfig.momentum"),
        ({"warmup_epochs": -1.0}, "OptimConfig.warmup_epochs"),
    ],
)
def test_optim_config_rejects_invalid(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        OptimConfig(**values)


def test_run_config_rejects_indivisible_batch() -> None:
    with pytest.raises(ConfigError, match="batch_size=33 is not divisible by scaling.num_workers=2"):
        RunConfig(batch_size=33, scaling=ScalingSettings(num_workers=2))


def test_run_config_rejects_bad_attention_heads() -> None:
    with pytest.raises(ConfigError, match="attention_heads=3"):
        default_run_config("fashion-mnist", "a_hmlc", method={"attention_heads": 3})


def test_run_config_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"epochz": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"method": {"temprature": 0.1}})


def test_run_config_rejects_explicit_masker() -> None:
    model = {
        "encoder": {"name": "small_cnn", "in_channels": 1},
        "attention": {"num_levels": 3, "channels": 128},
    }
    with pytest.raises(ConfigError, match="model.attention must be None"):
        RunConfig.from_dict({"model": model})


def test_resolved_constraint_per_method() -> None:
    assert MethodConfig(method="hmc").resolved_constraint == "none"
    assert MethodConfig(method="supcon").resolved_constraint == "none"
    for method in ("hmce", "g_hmlc", "a_hmlc"):
        assert MethodConfig(method=method).resolved_constraint == "max"
    assert MethodConfig(method="hmce", constraint="none").resolved_constraint == "none"


def test_resolved_level_weights() -> None:
    default = MethodConfig().resolved_level_weights(3)
    expected = torch.exp(1.0 / torch.tensor([3.0, 2.0, 1.0]))
    torch.testing.assert_close(default, expected)
    explicit = MethodConfig(level_weights=(1.0, 2.0)).resolved_level_weights(2)
    torch.testing.assert_close(explicit, torch.tensor([1.0, 2.0]))
    with pytest.raises(ConfigError, match="has 2 entries but the dataset's hierarchy has 3"):
        MethodConfig(level_weights=(1.0, 2.0)).resolved_level_weights(3)


def test_mask_refit_schedule() -> None:
    method = MethodConfig(method="g_hmlc", gmm_warmup_epochs=2, gmm_refit_every=3)
    refits = [epoch for epoch in range(10) if method.refits_masks_after(epoch)]
    # First fit after 2 completed epochs (0-based epoch 1), then every 3 epochs.
    assert refits == [1, 4, 7]
    assert not MethodConfig(method="hmce").refits_masks_after(5)


def test_scaled_learning_rate() -> None:
    assert OptimConfig(lr=0.5).scaled_lr(1024) == pytest.approx(2.0)
    assert OptimConfig(lr=0.5).scaled_lr(128) == pytest.approx(0.25)
