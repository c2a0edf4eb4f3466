"""Attribute access and value hygiene (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from otel_sentry_bridge.conventions import Attr

#: Longest string kept in span data / contexts (Relay trims further).
MAX_VALUE_CHARS = 16_384
MAX_TAG_CHARS = 200
#: JSON integers Sentry (and orjson) take: 64-bit; larger ones are sent as strings.
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1

Attrs = Mapping[Any, Any]


def _alias_table() -> dict[str, list[tuple[tuple[str, ...], int]]]:
    table: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for name in dir(Attr):
        concept = getattr(Attr, name)
        if name.startswith("_") or not isinstance(concept, tuple):
            continue
        for rank, key in enumerate(concept):
            table.setdefault(key, []).append((concept, rank))
    return table


_ALIASES = _alias_table()


def concept_view(attrs: Attrs) -> dict[Any, Any]:
    """A copy of ``attrs`` that also holds each concept of :class:`Attr` under its tuple.

    One pass over the attributes resolves old and new semantic-convention names (new first),
    so every later lookup is a single dict access: ``view.get(Attr.HTTP_METHOD)``.
    """
    view: dict[Any, Any] = dict(attrs)
    ranks: dict[tuple[str, ...], int] = {}
    for key, value in attrs.items():
        hits = _ALIASES.get(key)
        if hits is None or value is None:
            continue
        for concept, rank in hits:
            if rank < ranks.get(concept, 99):
                ranks[concept] = rank
                view[concept] = value
    return view


def safe_str(value: Any) -> str:
    """``str(value)``, never raising (an object whose ``__str__`` fails gets a placeholder)."""
    try:
        return str(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def text_or_none(value: Any) -> str | None:
    """``value`` as a stripped, non-empty string (``None`` for None or blank text)."""
    if value is None:
        return None
    text = (value if type(value) is str else safe_str(value)).strip()
    return text or None


def pick(attrs: Attrs, keys: Sequence[str]) -> Any:
    """First present key of a plain mapping (resources and other non-view mappings)."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


def pick_str(attrs: Attrs, keys: Sequence[str]) -> str | None:
    """Like :func:`pick`, as a non-empty string."""
    return text_or_none(pick(attrs, keys))


def first(view: Attrs, concept: tuple[str, ...]) -> Any:
    """Value of a concept in a :func:`concept_view` (new semconv name first, then old)."""
    return view.get(concept)


def first_str(view: Attrs, concept: tuple[str, ...]) -> str | None:
    """Like :func:`first`, as a non-empty string."""
    return text_or_none(view.get(concept))


def first_int(view: Attrs, concept: tuple[str, ...]) -> int | None:
    """Like :func:`first`, as an int (strings of digits accepted, bools refused)."""
    value = view.get(concept)
    if type(value) is int:
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and 0 < len(value) < 40 and value.strip().lstrip("-").isdigit():
        try:
            number = int(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if INT_MIN <= number <= INT_MAX else None


def clean_value(value: Any) -> Any:
    """A JSON-safe copy of an attribute value: no bytes, no NaN, bounded strings."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "..."
    if kind is bool or value is None:
        return value
    if kind is int:
        return value if INT_MIN <= value <= INT_MAX else str(value)
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return clean_value(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value[:1000]]
    if isinstance(value, Mapping):
        return {safe_str(k): clean_value(v) for k, v in list(value.items())[:1000]}
    try:
        text = str(value)
    except Exception:
        text = f"<unrepresentable {kind.__name__}>"
    return clean_value(text)


def clean_attrs(attrs: Attrs) -> dict[str, Any]:
    """JSON-safe copy of a whole attribute mapping (fast path for plain values)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        kind = type(value)
        if (
            (kind is str and len(value) <= MAX_VALUE_CHARS)
            or (kind is int and INT_MIN <= value <= INT_MAX)
            or kind is bool
        ):
            out[key if type(key) is str else str(key)] = value
        else:
            out[key if type(key) is str else str(key)] = clean_value(value)
    return out


def tag_value(value: Any) -> str | None:
    """A Sentry tag value: a string of at most 200 characters, or None when empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = ",".join(safe_str(v) for v in value)
    else:
        text = safe_str(value)
    text = text.replace("\n", " ").strip()
    if not text:
        return None
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


_TAG_KEY = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_TAG_CHARS}}}")


def tag_key(key: str) -> str | None:
    """A valid Sentry tag key (Relay: ASCII letters, digits, ``_.:-``; 200 chars), or None."""
    key = key.strip()
    return key if _TAG_KEY.fullmatch(key) else None


def hex_trace(trace_id: int) -> str:
    """32 lowercase hex digits."""
    return f"{trace_id:032x}"


def hex_span(span_id: int) -> str:
    """16 lowercase hex digits."""
    return f"{span_id:016x}"


def seconds(ns: int | None) -> float | None:
    """Epoch nanoseconds to float seconds (Relay keeps microseconds)."""
    if ns is None:
        return None
    return ns / 1e9


#: Where an attribute goes whose key Sentry reads with a type, but whose value has another.
INVALID_PREFIX = "sentry_bridge.invalid."


def set_aside(data: dict[str, Any], *keys: str) -> None:
    """Move ``keys`` (values Sentry could not read) to :data:`INVALID_PREFIX` as text."""
    for key in keys:
        if key in data:
            value = data.pop(key)
            if value is not None and value != "":
                data[INVALID_PREFIX + key] = value if type(value) is str else str(value)
