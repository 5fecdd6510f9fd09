"""Search spaces: one pure function per method, and overrides that narrow or fix knobs.

A space maps a short knob name to a :class:`Knob`: a float or integer range, a set of
choices, or a fixed value. The names are the MLflow parameter names of every trial, so
they stay short and never name a path or an internal setting:

========== ====================================================== ==========
knob       meaning                                                methods
========== ====================================================== ==========
lr         learning rate per 256 images (scaled by global batch)  all
temperature contrastive temperature (log scale)                   all
w_L{l}     weight of level l (1 = coarsest), normalised by sum     hierarchical
beta       imbalance exponent: anchor weight n_l(c) ** -beta       g_hmlc, a_hmlc
gmm_k      GMM component count K (K >= number of levels)           g_hmlc
gmm_cov    GMM covariance type (diag or full)                      g_hmlc
heads      attention heads, a divisor of the channel width         a_hmlc
mask_temp  soft-mask temperature t_mask (log scale)                a_hmlc
========== ====================================================== ==========

The ranges are project choices, set wide enough to hold each method's published or
default setting. Nothing here imports Ray: :func:`to_tune_domains` turns a space into
``ray.tune`` domains where the search starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

METHODS: tuple[str, ...] = ("supcon", "hmc", "hmce", "g_hmlc", "a_hmlc")
HIERARCHICAL_METHODS: frozenset[str] = frozenset({"hmc", "hmce", "g_hmlc", "a_hmlc"})
GMM_COVARIANCE_TYPES: tuple[str, ...] = ("diag", "full")
MAX_SEARCHED_HEADS = 16


class SpaceError(ValueError):
    """An invalid search space or override: an unknown knob, a bad range or a bad value."""


@dataclasses.dataclass(frozen=True)
class FloatRange:
    """Float knob sampled in ``[low, high]``, uniformly or log-uniformly."""

    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        kind = "loguniform" if self.log else "uniform"
        return f"{kind}({self.low:g}, {self.high:g})"


@dataclasses.dataclass(frozen=True)
class IntRange:
    """Integer knob sampled uniformly in ``[low, high]`` (both inclusive)."""

    low: int
    high: int

    def describe(self) -> str:
        return f"randint({self.low}, {self.high})"


@dataclasses.dataclass(frozen=True)
class Choice:
    """Categorical knob sampled from ``values``."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        return "choice(" + ", ".join(str(value) for value in self.values) + ")"


@dataclasses.dataclass(frozen=True)
class Fixed:
    """Knob held at one value in every trial (still logged as a trial parameter)."""

    value: Any

    def describe(self) -> str:
        return f"fixed({self.value})"


Knob = FloatRange | IntRange | Choice | Fixed
SearchSpace = dict[str, Knob]


def level_weight_name(level: int) -> str:
    """Return the knob name of the weight of 0-based ``level`` (``w_L1`` = coarsest)."""
    return f"w_L{level + 1}"


def divisors(channels: int, maximum: int = MAX_SEARCHED_HEADS) -> tuple[int, ...]:
    """Return the divisors of ``channels`` up to ``maximum``, ascending."""
    return tuple(d for d in range(1, min(channels, maximum) + 1) if channels % d == 0)


def _common_knobs() -> SearchSpace:
    return {
        "lr": FloatRange(0.01, 1.0, log=True),
        "temperature": FloatRange(0.03, 0.5, log=True),
    }


def _level_weight_knobs(num_levels: int) -> SearchSpace:
    # Free positive weights on a log scale; the loss divides by their sum, so only the
    # ratios matter. The default exp(1 / (L - l + 1)) lies inside [0.25, 4].
    return {level_weight_name(level): FloatRange(0.25, 4.0, log=True) for level in range(num_levels)}


def supcon_space(num_levels: int, channels: int) -> SearchSpace:
    """Return the SupCon space: learning rate and temperature (finest level only)."""
    del num_levels, channels
    return _common_knobs()


def hmc_space(num_levels: int, channels: int) -> SearchSpace:
    """Return the HMC space: learning rate, temperature and one weight per level."""
    del channels
    return {**_common_knobs(), **_level_weight_knobs(num_levels)}


def hmce_space(num_levels: int, channels: int) -> SearchSpace:
    """Return the HMCE space: the HMC knobs (the max constraint itself is not searched)."""
    return hmc_space(num_levels, channels)


def g_hmlc_space(num_levels: int, channels: int) -> SearchSpace:
    """Return the G-HMLC space: HMCE knobs, beta, GMM component count and covariance type.

    The component count runs from ``num_levels`` (one component per level) to
    ``3 * num_levels`` (project choice).
    """
    return {
        **hmce_space(num_levels, channels),
        "beta": FloatRange(0.0, 1.0),
        "gmm_k": IntRange(num_levels, 3 * num_levels),
        "gmm_cov": Choice(GMM_COVARIANCE_TYPES),
    }


def a_hmlc_space(num_levels: int, channels: int) -> SearchSpace:
    """Return the A-HMLC space: HMCE knobs, beta, attention heads and mask temperature.

    Heads are the divisors of the encoder's channel width up to 16 (project choice).
    """
    return {
        **hmce_space(num_levels, channels),
        "beta": FloatRange(0.0, 1.0),
        "heads": Choice(divisors(channels)),
        "mask_temp": FloatRange(0.1, 4.0, log=True),
    }


SPACE_FUNCTIONS: dict[str, Callable[[int, int], SearchSpace]] = {
    "supcon": supcon_space,
    "hmc": hmc_space,
    "hmce": hmce_space,
    "g_hmlc": g_hmlc_space,
    "a_hmlc": a_hmlc_space,
}


def search_space(method: str, num_levels: int, channels: int) -> SearchSpace:
    """Return the default space of ``method`` for a hierarchy and an encoder width.

    Args:
        method: one of :data:`METHODS`.
        num_levels: levels of the dataset's hierarchy (L).
        channels: width of the encoder's pooled feature and tokens (C), which the
            attention heads must divide.

    Raises:
        SpaceError: unknown method.
    """
    if method not in SPACE_FUNCTIONS:
        raise SpaceError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return SPACE_FUNCTIONS[method](num_levels, channels)


def check_knob_value(name: str, value: Any, num_levels: int, channels: int) -> None:
    """Raise SpaceError when ``value`` is outside what knob ``name`` can ever take.

    These are hard limits of the method (for example heads must divide the channel
    width), not the default ranges: a user may widen a range within them.
    """
    if name in ("lr", "temperature", "mask_temp") or name.startswith("w_L"):
        _require_number(name, value)
        if not value > 0:
            raise SpaceError(f"knob {name!r} must be > 0, got {value!r}")
    elif name == "beta":
        _require_number(name, value)
        if not 0.0 <= value <= 1.0:
            raise SpaceError(f"knob 'beta' must be in [0, 1], got {value!r}")
    elif name == "gmm_k":
        if not isinstance(value, int) or isinstance(value, bool) or value < num_levels:
            raise SpaceError(
                f"knob 'gmm_k' must be an integer >= the number of levels ({num_levels}), "
                f"got {value!r}"
            )
    elif name == "gmm_cov":
        if value not in GMM_COVARIANCE_TYPES:
            raise SpaceError(
                f"knob 'gmm_cov' must be one of {list(GMM_COVARIANCE_TYPES)}, got {value!r}"
            )
    elif name == "heads":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or channels % value:
            raise SpaceError(
                f"knob 'heads' = {value!r} does not divide the encoder's channel width "
                f"{channels}; use one of {list(divisors(channels, maximum=channels))}"
            )
    else:
        raise SpaceError(f"unknown knob {name!r}")


def _require_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"knob {name!r} must be a finite number, got {value!r}")


def check_space(space: Mapping[str, Knob], num_levels: int, channels: int) -> None:
    """Raise SpaceError when a knob's range or choices reach values the method cannot use."""
    for name, knob in space.items():
        if isinstance(knob, Fixed):
            check_knob_value(name, knob.value, num_levels, channels)
        elif isinstance(knob, Choice):
            if not knob.values:
                raise SpaceError(f"knob {name!r} has no choices")
            for value in knob.values:
                check_knob_value(name, value, num_levels, channels)
        elif isinstance(knob, (FloatRange, IntRange)):
            if knob.low > knob.high:
                raise SpaceError(
                    f"knob {name!r} has low {knob.low!r} > high {knob.high!r}; swap them"
                )
            check_knob_value(name, knob.low, num_levels, channels)
            check_knob_value(name, knob.high, num_levels, channels)
            if isinstance(knob, FloatRange) and knob.log and knob.low <= 0:
                raise SpaceError(f"knob {name!r} is log-scaled, so low must be > 0")


# Overrides ------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one command-line override ``NAME=SPEC`` into a knob name and a YAML-like value.

    ``SPEC`` is a single value (``temperature=0.1`` fixes the knob), a range
    ``LOW:HIGH`` (``lr=0.05:0.2`` narrows it) or a comma list (``heads=2,4`` keeps
    those choices).

    Raises:
        SpaceError: the text is not of the form ``NAME=SPEC``.
    """
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise SpaceError(
            f"invalid search override {text!r}; write NAME=VALUE, NAME=LOW:HIGH or NAME=A,B"
        )
    if ":" in spec:
        low, _, high = spec.partition(":")
        return name, {"low": _scalar(low), "high": _scalar(high)}
    if "," in spec:
        return name, [_scalar(part) for part in spec.split(",") if part.strip()]
    return name, _scalar(spec)


def _scalar(text: str) -> Any:
    return _coerce(yaml.safe_load(text.strip()))


def _coerce(value: Any) -> Any:
    # YAML 1.1 reads "1e-3" as a string; treat numeric strings as numbers.
    if isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                continue
    return value


def load_override_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML file of overrides: ``knob: value``, ``knob: {low:, high:}`` or ``knob: [..]``.

    Raises:
        SpaceError: the file is missing or does not hold a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise SpaceError(f"search-space file {str(file)!r} not found; check --space-file")
    content = yaml.safe_load(file.read_text()) or {}
    if not isinstance(content, dict):
        raise SpaceError(
            f"search-space file {str(file)!r} must hold a mapping of knob names, "
            f"got {type(content).__name__}"
        )
    return {str(name): value for name, value in content.items()}


def apply_overrides(
    space: Mapping[str, Knob],
    overrides: Mapping[str, Any],
    method: str,
    num_levels: int,
    channels: int,
) -> SearchSpace:
    """Return ``space`` with knobs narrowed or fixed by ``overrides``, then checked.

    An override value is a scalar (fix the knob), a mapping with ``low``/``high``
    (and optionally ``log``) for a new range, or a list (a new set of choices; one
    element fixes the knob). A range keeps the knob's integer or log scale.

    Raises:
        SpaceError: an override names a knob that ``method`` does not search, or its
            value is one the method cannot use.
    """
    result: SearchSpace = dict(space)
    for name, value in overrides.items():
        if name not in space:
            raise SpaceError(
                f"knob {name!r} is not searched by method {method!r}; "
                f"its knobs are {sorted(space)}"
            )
        result[name] = _override_knob(name, space[name], value)
    check_space(result, num_levels, channels)
    return result


def _override_knob(name: str, default: Knob, value: Any) -> Knob:
    if isinstance(value, Mapping):
        unknown = set(value) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(value):
            raise SpaceError(
                f"range override of knob {name!r} needs keys low and high (and optionally "
                f"log), got {sorted(value)}"
            )
        low, high = _coerce(value["low"]), _coerce(value["high"])
        if isinstance(default, IntRange):
            return IntRange(int(low), int(high))
        if isinstance(default, Choice):
            raise SpaceError(f"knob {name!r} is a choice; give a list of values, not a range")
        log = bool(value.get("log", isinstance(default, FloatRange) and default.log))
        return FloatRange(float(low), float(high), log=log)
    if isinstance(value, list):
        if not value:
            raise SpaceError(f"override of knob {name!r} is an empty list")
        values = tuple(_coerce(item) for item in value)
        if len(values) == 1:
            return Fixed(values[0])
        return Choice(values)
    return Fixed(_coerce(value))


def describe_space(space: Mapping[str, Knob]) -> dict[str, str]:
    """Return each knob's human-readable definition, e.g. ``{"lr": "loguniform(0.01, 1)"}``."""
    return {name: knob.describe() for name, knob in sorted(space.items())}


def to_tune_domains(space: Mapping[str, Knob]) -> dict[str, Any]:
    """Turn a space into a Ray Tune ``param_space`` (fixed knobs stay plain values)."""
    from ray import tune

    domains: dict[str, Any] = {}
    for name, knob in space.items():
        if isinstance(knob, Fixed):
            domains[name] = knob.value
        elif isinstance(knob, Choice):
            domains[name] = tune.choice(list(knob.values))
        elif isinstance(knob, IntRange):
            # tune.randint excludes its upper bound.
            domains[name] = tune.randint(knob.low, knob.high + 1)
        elif knob.log:
            domains[name] = tune.loguniform(knob.low, knob.high)
        else:
            domains[name] = tune.uniform(knob.low, knob.high)
    return domains
