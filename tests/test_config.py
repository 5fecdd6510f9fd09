"""Tests for the shared config base class."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hmlc_core.config import ConfigBase, ConfigError, require


@dataclass(frozen=True)
class _Inner(ConfigBase):
    size: int = 1

    def validate(self) -> None:
        require(self.size > 0, f"size must be > 0, got {self.size}")


@dataclass(frozen=True)
class _Outer(ConfigBase):
    inner: _Inner = _Inner()
    optional_inner: _Inner | None = None
    sizes: tuple[int, ...] = (1, 2)


def test_from_dict_builds_nested_configs() -> None:
    config = _Outer.from_dict({"inner": {"size": 3}, "optional_inner": {"size": 4}, "sizes": [5]})
    assert config.inner == _Inner(size=3)
    assert config.optional_inner == _Inner(size=4)
    assert config.sizes == (5,)


def test_from_dict_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\] for _Inner"):
        _Inner.from_dict({"sise": 3})


def test_from_dict_rejects_unknown_nested_key() -> None:
    with pytest.raises(ConfigError, match="sise"):
        _Outer.from_dict({"inner": {"sise": 3}})


def test_invalid_value_raises_at_construction() -> None:
    with pytest.raises(ConfigError, match="size must be > 0, got 0"):
        _Inner(size=0)


def test_round_trip_through_dict() -> None:
    config = _Outer(inner=_Inner(size=2), optional_inner=_Inner(size=7), sizes=(3, 4))
    assert _Outer.from_dict(config.to_dict()) == config


def test_config_is_frozen() -> None:
    config = _Inner()
    with pytest.raises(AttributeError):
        config.size = 5  # type: ignore[misc]
    assert config.replace(size=5).size == 5
