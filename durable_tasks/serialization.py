"""JSON encoding of journaled values (I7: JSON by default, never pickle)."""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadTooLargeError, SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


def _first_unencodable(value: Any, path: str = "value") -> tuple[str, str] | None:
    """Find where in ``value`` JSON fails, as (path, type name); None when the failure is elsewhere."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path} key {key!r}", type(key).__qualname__
            found = _first_unencodable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_unencodable(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return path, f"{type(value).__module__}.{type(value).__qualname__}"


def dumps(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Encode ``value`` as compact JSON text.

    ``what`` names the value in errors, e.g. ``"result of step 'charge#1' in run 3f2c..."``.
    Raises :class:`SerializationError` naming the offending type, or :class:`PayloadTooLargeError`.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        found = _first_unencodable(value)
        where, type_name = found if found else ("value", type(value).__qualname__)
        raise SerializationError(
            f"The {what} cannot be encoded as JSON: {where} is of type {type_name} ({exc}). "
            "Return plain JSON types (dict, list, str, int, float, bool, None), for example by "
            "converting it to a dict or storing it elsewhere and returning its key."
        ) from exc
    if len(text) > max_bytes:
        raise PayloadTooLargeError(
            f"The {what} is {len(text):,} bytes as JSON, over the limit of {max_bytes:,} bytes "
            "(max_payload_bytes). Store large data elsewhere (a blob store or your database) and "
            "journal its key, or raise the limit with Durable(..., max_payload_bytes=N)."
        )
    return text


def loads(text: str | None) -> Any:
    """Decode JSON text written by :func:`dumps`; ``None`` stays ``None``."""
    return None if text is None else json.loads(text)
