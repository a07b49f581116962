"""One reader for every settings section (``backends.<cloud>``, ``kubernetes``).

A section is a frozen dataclass; :func:`read` coerces the raw YAML mapping into its
fields by their annotated types, with the same rules everywhere:

- keys may use ``-`` or ``_``; an unknown key is an error with a did-you-mean;
- ``bool``: YAML booleans or ``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case);
- ``int`` / ``float``: numbers or numeric text, never a boolean; an ``int`` has no
  fraction. A number must be greater than 0 unless its field carries
  ``metadata=ZERO_OK`` (then at least 0);
- ``str``: text, trimmed; ``Mapping[str, str]``: a mapping of text to text.

Sections with structure of their own (a cloud list, per-service endpoints) name those
keys in ``structured``; they come back unconverted for the caller to check.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from .errors import ConfigError, did_you_mean

ZERO_OK: Mapping[str, bool] = {"zero_ok": True}
"""Field metadata: 0 is a valid value (a count of retries, a cache that is off)."""

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def boolean(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where}: {value!r} is not a boolean (true/false, yes/no, on/off)")


def number(where: str, value: Any, kind: type[int] | type[float], *, zero_ok: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: {value!r} is not a number")
    try:
        result: int | float
        if kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError(value)
            result = int(as_float)
        else:
            result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"{where}: {value!r} is not a whole number"
            if kind is int
            else f"{where}: {value!r} is not a number"
        ) from None
    if result != result or result in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if zero_ok and result < 0:
        raise ConfigError(f"{where}: must not be negative")
    if not zero_ok and result <= 0:
        raise ConfigError(f"{where}: must be greater than 0")
    return result


def text(where: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {value!r} is not a string")
    return value.strip()


def text_map(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of name -> text")
    return {str(k): text(f"{where}.{k}", v) for k, v in value.items()}


def key(raw_key: Any) -> str:
    return str(raw_key).replace("-", "_")


def read(
    cls: type[Any],
    raw: Mapping[str, Any],
    section: str,
    *,
    structured: Iterable[str] = (),
    hidden: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values for cls's fields, raw values of the structured keys)``. ``hidden`` fields
    are not settings at this level (a nested section fills them)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{section}: must be a mapping of setting -> value")
    hints = typing.get_type_hints(cls)
    skip = set(hidden)
    by_name = {f.name: f for f in fields(cls) if f.name not in skip}
    special = set(structured)
    values: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for raw_key, value in raw.items():
        name = key(raw_key)
        where = f"{section}.{name}"
        if name in special:
            rest[name] = value
            continue
        spec = by_name.get(name)
        if spec is None:
            known = sorted(set(by_name) | special)
            raise ConfigError(f"{where}: unknown setting{did_you_mean(name, known)}")
        kind = hints[name]
        if kind is bool:
            values[name] = boolean(where, value)
        elif kind in (int, float):
            values[name] = number(where, value, kind, zero_ok=bool(spec.metadata.get("zero_ok")))
        elif kind is str:
            values[name] = text(where, value)
        elif typing.get_origin(kind) in (Mapping, dict) and typing.get_args(kind) == (str, str):
            values[name] = text_map(where, value)
        else:  # pragma: no cover - a section declared a field type this reader lacks
            raise ConfigError(f"{where}: settings of type {kind} need a structured reader")
    return values, rest


def parse(cls: type[Any], raw: Mapping[str, Any], section: str) -> Any:
    """``cls(**values)`` for a section with scalar fields only."""
    values, _ = read(cls, raw, section)
    return cls(**values)
