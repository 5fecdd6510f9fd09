"""Search spaces: contents per method, purity, overrides and the values a method rejects."""

from __future__ import annotations

import math

import pytest

from search import spaces
from search.spaces import Choice, FloatRange, Fixed, IntRange, SpaceError

COMMON = {"lr", "temperature"}
WEIGHTS_3 = {"w_L1", "w_L2", "w_L3"}


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("supcon", COMMON),
        ("hmc", COMMON | WEIGHTS_3),
        ("hmce", COMMON | WEIGHTS_3),
        ("g_hmlc", COMMON | WEIGHTS_3 | {"beta", "gmm_k", "gmm_cov"}),
        ("a_hmlc", COMMON | WEIGHTS_3 | {"beta", "heads", "mask_temp"}),
    ],
)
def test_space_knobs_per_method(method: str, expected: set[str]) -> None:
    space = spaces.search_space(method, num_levels=3, channels=128)
    assert set(space) == expected


def test_space_is_pure() -> None:
    first = spaces.search_space("a_hmlc", 2, 512)
    second = spaces.search_space("a_hmlc", 2, 512)
    assert first == second
    first["lr"] = Fixed(1.0)
    assert spaces.search_space("a_hmlc", 2, 512)["lr"] == FloatRange(0.01, 1.0, log=True)


def test_space_scales_and_ranges() -> None:
    space = spaces.search_space("g_hmlc", num_levels=2, channels=512)
    assert space["temperature"] == FloatRange(0.03, 0.5, log=True)
    assert space["lr"].log is True
    assert space["beta"] == FloatRange(0.0, 1.0, log=False)
    assert space["gmm_k"] == IntRange(2, 6)
    assert space["gmm_cov"] == Choice(("diag", "full"))
    assert set(space) >= {"w_L1", "w_L2"}
    assert "w_L3" not in space


def test_heads_are_divisors_of_width() -> None:
    assert spaces.search_space("a_hmlc", 3, 32)["heads"] == Choice((1, 2, 4, 8, 16))
    assert spaces.search_space("a_hmlc", 3, 24)["heads"] == Choice((1, 2, 3, 4, 6, 8, 12))
    assert spaces.divisors(2048) == (1, 2, 4, 8, 16)


def test_unknown_method_rejected() -> None:
    with pytest.raises(SpaceError, match="unknown method 'simclr'"):
        spaces.search_space("simclr", 2, 128)


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("temperature=0.1", "temperature", 0.1),
        ("lr=1e-3", "lr", 0.001),
        ("lr=0.05:0.2", "lr", {"low": 0.05, "high": 0.2}),
        ("heads=2,4", "heads", [2, 4]),
        ("gmm_cov=diag", "gmm_cov", "diag"),
        (" gmm_k = 4 ", "gmm_k", 4),
    ],
)
def test_parse_override_forms(text: str, name: str, value: object) -> None:
    assert spaces.parse_override(text) == (name, value)


@pytest.mark.parametrize("text", ["temperature", "=0.1", "lr="])
def test_parse_override_rejects_malformed(text: str) -> None:
    with pytest.raises(SpaceError, match="NAME=VALUE"):
        spaces.parse_override(text)


def test_overrides_narrow_and_fix() -> None:
    space = spaces.search_space("a_hmlc", 3, 32)
    overrides = {
        "temperature": 0.1,
        "lr": {"low": 0.05, "high": 0.2},
        "heads": [2, 4],
        "mask_temp": ["0.5"],
    }
    result = spaces.apply_overrides(space, overrides, "a_hmlc", 3, 32)
    assert result["temperature"] == Fixed(0.1)
    assert result["lr"] == FloatRange(0.05, 0.2, log=True)
    assert result["heads"] == Choice((2, 4))
    assert result["mask_temp"] == Fixed(0.5)
    assert result["beta"] == space["beta"]
    assert space["temperature"] == FloatRange(0.03, 0.5, log=True)


def test_integer_range_override_keeps_integers() -> None:
    space = spaces.search_space("g_hmlc", 3, 128)
    result = spaces.apply_overrides(space, {"gmm_k": {"low": 3, "high": 4}}, "g_hmlc", 3, 128)
    assert result["gmm_k"] == IntRange(3, 4)


def test_override_file(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("temperature: 0.07\nlr: {low: 0.1, high: 0.3}\ngmm_cov: [diag]\n")
    overrides = spaces.load_override_file(path)
    result = spaces.apply_overrides(spaces.search_space("g_hmlc", 3, 128), overrides, "g_hmlc", 3, 128)
    assert result["temperature"] == Fixed(0.07)
    assert result["lr"] == FloatRange(0.1, 0.3, log=True)
    assert result["gmm_cov"] == Fixed("diag")


def test_override_file_must_hold_mapping(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("- temperature\n")
    with pytest.raises(SpaceError, match="must hold a mapping"):
        spaces.load_override_file(path)


@pytest.mark.parametrize(
    ("method", "overrides", "message"),
    [
        ("a_hmlc", {"heads": 3}, "'heads' = 3 does not divide the encoder's channel width 32"),
        ("a_hmlc", {"heads": [2, 5]}, "'heads' = 5 does not divide"),
        ("g_hmlc", {"gmm_k": 2}, "integer >= the number of levels \\(3\\)"),
        ("g_hmlc", {"gmm_cov": "spherical"}, "'gmm_cov' must be one of"),
        ("g_hmlc", {"beta": 1.5}, "'beta' must be in \\[0, 1\\]"),
        ("hmc", {"temperature": 0}, "'temperature' must be > 0"),
        ("hmc", {"lr": {"low": 0.5, "high": 0.1}}, "low 0.5 > high 0.1"),
        ("supcon", {"heads": 2}, "'heads' is not searched by method 'supcon'"),
        ("supcon", {"w_L1": 1.0}, "'w_L1' is not searched by method 'supcon'"),
        ("hmc", {"heads": {"low": 1, "high": 2}}, "not searched"),
        ("a_hmlc", {"heads": {"low": 1, "high": 2}}, "is a choice; give a list"),
    ],
)
def test_overrides_rejected(method: str, overrides: dict, message: str) -> None:
    space = spaces.search_space(method, 3, 32)
    with pytest.raises(SpaceError, match=message):
        spaces.apply_overrides(space, overrides, method, 3, 32)


def test_describe_space() -> None:
    text = spaces.describe_space(spaces.search_space("g_hmlc", 2, 128))
    assert text["temperature"] == "loguniform(0.03, 0.5)"
    assert text["gmm_k"] == "randint(2, 6)"
    assert text["gmm_cov"] == "choice(diag, full)"
    assert text["beta"] == "uniform(0, 1)"


def test_tune_domains() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    space = spaces.apply_overrides(
        spaces.search_space("g_hmlc", 3, 128), {"beta": 0.0}, "g_hmlc", 3, 128
    )
    domains = spaces.to_tune_domains(space)
    assert domains["beta"] == 0.0
    assert isinstance(domains["gmm_cov"], Categorical)
    assert isinstance(domains["gmm_k"], Integer)
    # tune.randint excludes its upper bound, so the inclusive range 3..9 becomes [3, 10).
    assert (domains["gmm_k"].lower, domains["gmm_k"].upper) == (3, 10)
    temperature = domains["temperature"]
    assert isinstance(temperature, Float)
    assert math.isclose(temperature.lower, 0.03)
    assert math.isclose(temperature.upper, 0.5)
    assert type(temperature.sampler).__name__ == "_LogUniform"
