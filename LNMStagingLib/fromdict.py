"""The one strict reader of JSON objects into dataclasses (configs of models, training, bundles)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, convert: Mapping[str, Callable[[Any], Any]] | None = None,
              required: Iterable[str] | None = None, what: str | None = None) -> T:
    """A ``cls`` dataclass from a JSON object: unknown keys are refused, never ignored.

    Args:
        cls: the dataclass.
        data: the JSON object (a dict).
        convert: per key, a function turning the JSON value into the field's type (e.g. list -> tuple, a nested
            dataclass); applied to the keys present.
        required: keys that must be present (default: the fields without a default value).
        what: the object's name in messages (default: the class name).

    Returns:
        The instance (its ``__post_init__`` checks still apply).

    Raises:
        ValueError: ``data`` is not an object, has unknown or lacks required keys, or a value does not fit.
    """
    what = what or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    names = [f.name for f in fields(cls)]
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}")
    if required is None:
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = set(required) - set(data)
    if missing:
        raise ValueError(f"{what} keys missing: {sorted(missing)}")
    values = {key: (convert[key](value) if convert and key in convert else value) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"invalid {what} ({error})") from None
