"""JSON encoding of journaled values (I7: JSON by default, never pickle).

The format is Celery's own JSON serializer (``kombu.utils.json``): plain JSON, plus ``datetime``, ``date``,
``time``, ``Decimal``, ``UUID`` and ``bytes`` written as ``{"__type__": ..., "__value__": ...}`` markers, objects
with a ``__json__()`` method, and any type registered with ``kombu.utils.json.register_type``. So a task whose
result Celery can carry can be a durable step, and its result comes back on replay with the same type and value.
Two differences, both to keep the journal exact: NaN and infinite floats are refused (not valid JSON), and so is
a dict of your own whose keys are exactly ``__type__`` and ``__value__`` (it would decode as a marker).
"""

from __future__ import annotations

import json
import math
from typing import Any

from kombu.utils import json as kombu_json

from .errors import PayloadTooLargeError, SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

# Shared encoder: json.dumps(value, separators=...) would build a new one on every call. Encoding keeps no
# state on the instance, so threads can share it. Plain values never reach kombu's ``default`` hook.
_ENCODER = kombu_json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# Every marker kombu writes, and every dict of a user that could be mistaken for one, contains this text.
_MARKER_KEY = '"__type__"'
_MARKER_KEYS = frozenset(("__type__", "__value__"))
_SCALAR_TYPES = (str, int)  # bool is an int
_CONTAINER_TYPES = (dict, list, tuple)
_KEY_TYPES = (str, int, float)


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _of_type(value: Any) -> str:
    """``of type builtins.set``: the qualified name, as the journal names exception types."""
    kind = type(value)
    return f"of type {kind.__module__}.{kind.__qualname__}"


def _first_refused(value: Any) -> tuple[str, str] | None:
    """Where in ``value`` encoding fails, as (path, what is there); None when nothing is refused."""
    found = _refusal(value, set())
    if found is None:
        return None
    steps, kind = found
    return "value" + "".join(reversed(steps)), kind


def _refusal(value: Any, open_ids: set[int]) -> tuple[list[str], str] | None:
    # Walks every value of a typed payload: cheap checks first, and the path is built only on a refusal.
    if value is None or isinstance(value, _SCALAR_TYPES):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ([], f"a float {value!r} (JSON has no NaN or infinity)")
    if isinstance(value, _CONTAINER_TYPES):
        if id(value) in open_ids:
            return [], f"a {_type_name(value)} that contains itself (a circular reference)"
        open_ids.add(id(value))
        found = _refusal_in_dict(value, open_ids) if isinstance(value, dict) else _refusal_in_items(value, open_ids)
        open_ids.discard(id(value))
        return found
    reducer = getattr(value, "__json__", None)
    if reducer is not None:
        return _refusal(reducer(), open_ids)
    try:
        _ENCODER.default(value)
    except TypeError:
        return [], _of_type(value)
    return None


def _refusal_in_items(items: list[Any] | tuple[Any, ...], open_ids: set[int]) -> tuple[list[str], str] | None:
    for index, item in enumerate(items):
        found = _refusal(item, open_ids)
        if found:
            found[0].append(f"[{index}]")
            return found
    return None


def _refusal_in_dict(value: dict[Any, Any], open_ids: set[int]) -> tuple[list[str], str] | None:
    if value.keys() == _MARKER_KEYS:
        return [], "a dict whose keys are exactly '__type__' and '__value__' (reserved for Celery's type markers)"
    for key, item in value.items():
        if key is not None and not isinstance(key, _KEY_TYPES):
            return [f" key {key!r}"], _of_type(key)
        if isinstance(key, float) and not math.isfinite(key):
            return [f" key {key!r}"], f"a float {key!r} (JSON has no NaN or infinity)"
        found = _refusal(item, open_ids)
        if found:
            found[0].append(f"[{key!r}]")
            return found
    return None


def _refused(what: str, where: str, kind: str, cause: Exception | None) -> SerializationError:
    detail = f" ({cause})" if cause is not None else ""
    return SerializationError(
        f"The {what} cannot be encoded as JSON: {where} is {kind}{detail}. "
        "Return JSON types (dict, list, str, int, float, bool, None) or the types Celery's JSON serializer "
        "carries (datetime, date, time, Decimal, UUID, bytes), for example by converting it to a dict or "
        "storing it elsewhere and returning its key."
    )


def dumps(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Encode ``value`` as compact JSON text, in the format of Celery's JSON serializer.

    ``what`` names the value in errors, e.g. ``"result of step 'charge#1' in run 3f2c..."``.
    Raises :class:`SerializationError` naming where the offending value is and its type, or
    :class:`PayloadTooLargeError`::

        >>> from datetime import date
        >>> dumps({"at": date(2024, 5, 1)}, what="result")
        '{"at":{"__type__":"date","__value__":"2024-05-01"}}'
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        found = _first_refused(value)
        where, kind = found if found else ("value", _of_type(value))
        raise _refused(what, where, kind, exc) from exc
    if _MARKER_KEY in text:
        # Typed values were encoded (or a string "__type__" appears): make sure no dict of the user's own
        # looks like a marker, or replay would hand back something else than what was journaled.
        found = _first_refused(value)
        if found:
            raise _refused(what, *found, None)
    if len(text) > max_bytes:
        raise PayloadTooLargeError(
            f"The {what} is {len(text):,} bytes as JSON, over the limit of {max_bytes:,} bytes "
            "(max_payload_bytes). Store large data elsewhere (a blob store or your database) and "
            "journal its key, or raise the limit with Durable(..., max_payload_bytes=N)."
        )
    return text


def _decode_marker(obj: dict[str, Any]) -> Any:
    try:
        return kombu_json.object_hook(obj)
    except ValueError:
        # A type registered (kombu register_type) in the process that wrote it but not in this one, e.g.
        # ``durable runs show`` without your code imported: show the marker rather than fail.
        return obj


_TYPED_DECODER = json.JSONDecoder(object_hook=_decode_marker)


def loads(text: str | None) -> Any:
    """Decode JSON text written by :func:`dumps` (or by Celery's JSON serializer); ``None`` stays ``None``.

    Typed values come back with their type: ``loads(dumps(Decimal("1.10"), what="x")) == Decimal("1.10")``.
    """
    if text is None:
        return None
    if _MARKER_KEY not in text:
        return json.loads(text)  # no markers: the C decoder alone, no Python hook per dict
    return _TYPED_DECODER.decode(text)
