"""``add_breadcrumb``: note something for the error events of the current trace.

The note is an OpenTelemetry span event on the current span (named ``sentry.breadcrumb``, its
category, message, level and data as attributes), so it works with plain OpenTelemetry code
and other exporters see it too. The bridge turns it into a breadcrumb of the error events of
that transaction that happen after it. Only the OpenTelemetry API is used here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from ._mapping.breadcrumbs import (
    BREADCRUMB_EVENT,
    CRUMB_CATEGORY,
    CRUMB_DATA,
    CRUMB_LEVEL,
    CRUMB_MESSAGE,
    LEVELS,
)

logger = logging.getLogger("otel_sentry_bridge")

#: At most this many data keys (after flattening), nested at most this deep.
MAX_DATA_KEYS = 50
MAX_DEPTH = 3

_warned = False
_PLAIN = (str, bool, int, float)


def _attribute(value: Any) -> Any:
    """A value OpenTelemetry accepts as an attribute (others become their text)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return tuple(value)
    try:
        return str(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _flatten(data: Mapping[Any, Any], prefix: str, into: dict[str, Any], depth: int) -> None:
    for key, value in data.items():
        if len(into) >= MAX_DATA_KEYS:
            return
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and depth < MAX_DEPTH:
            _flatten(value, f"{name}.", into, depth + 1)
        elif value is not None:
            into[name] = _attribute(value)


def breadcrumb_attributes(
    category: str, message: str, data: Mapping[str, Any] | None = None, level: str = "info"
) -> dict[str, Any]:
    """The attributes of the ``sentry.breadcrumb`` span event (nested ``data`` flattened to
    dotted keys)."""
    flat: dict[str, Any] = {}
    if data:
        _flatten(data, "", flat, 1)
    attrs: dict[str, Any] = {
        CRUMB_CATEGORY: str(category),
        CRUMB_MESSAGE: str(message),
        CRUMB_LEVEL: LEVELS.get(str(level).lower(), "info"),
    }
    attrs.update((f"{CRUMB_DATA}{k}", v) for k, v in flat.items())
    return attrs


def add_breadcrumb(
    category: str, message: str, data: Mapping[str, Any] | None = None, level: str = "info"
) -> None:
    """Record a breadcrumb on the current span: ``category`` (``"auth"``), ``message``,
    optional ``data`` (flattened to OpenTelemetry attribute values) and ``level`` (``debug``,
    ``info``, ``warning``, ``error``, ``fatal``). Nothing happens when no span is recording;
    a failure is logged once and never raised."""
    global _warned
    try:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(BREADCRUMB_EVENT, breadcrumb_attributes(category, message, data, level))
    except Exception as error:  # never the caller's problem
        if not _warned:
            _warned = True
            logger.warning("otel-sentry-bridge: add_breadcrumb could not record: %r", error)
