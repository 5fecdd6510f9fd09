"""Shared helpers for the frozen, typed config dataclasses of every component.

Each component declares one ``@dataclass(frozen=True)`` config that subclasses
:class:`ConfigBase` and checks its values in ``validate``. Building a config from a
mapping (a YAML file, a search sample, a checkpoint) goes through
:meth:`ConfigBase.from_dict`, which rejects unknown keys, so a typo never passes
silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T", bound="ConfigBase")


class ConfigError(ValueError):
    """An invalid config value or an unknown config key."""


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base class of the frozen config dataclasses.

    Subclasses override :meth:`validate` and raise :class:`ConfigError` naming the
    field, its value and the accepted range.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError when a field has an invalid value."""

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
        """Build the config from a mapping, recursing into nested config fields.

        Raises:
            ConfigError: a key is not a field of this config, or a value is invalid.
        """
        field_types = typing.get_type_hints(cls)
        names = {field.name for field in dataclasses.fields(cls) if field.init}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(names)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            field_type = field_types[name]
            config_type = _config_type(field_type)
            if isinstance(value, Mapping) and config_type is not None:
                value = config_type.from_dict(value)
            elif isinstance(value, list) and _is_tuple_type(field_type):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain Python values (nested configs become dicts)."""
        return dataclasses.asdict(self)

    def replace(self: T, **changes: Any) -> T:
        """Return a validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _config_type(field_type: Any) -> type[ConfigBase] | None:
    """Return the ConfigBase subclass inside ``field_type`` (also ``X | None``), if any."""
    candidates = typing.get_args(field_type) if _is_union(field_type) else (field_type,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, ConfigBase):
            return candidate
    return None


def _is_union(field_type: Any) -> bool:
    return typing.get_origin(field_type) in (typing.Union, types.UnionType)


def _is_tuple_type(field_type: Any) -> bool:
    origin = typing.get_origin(field_type)
    if origin is tuple:
        return True
    if _is_union(field_type):
        return any(_is_tuple_type(arg) for arg in typing.get_args(field_type))
    return False


def require(condition: bool, message: str) -> None:
    """Raise ConfigError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
