"""Breadcrumbs of error events: the trail of a transaction before its error (pure).

Three sources, merged oldest first: finished spans of kinds users follow (db, http, cache,
redis, queue), span events that are not exceptions (``add_breadcrumb`` writes one named
``sentry.breadcrumb``), and ``logging`` records made while a span of the transaction was
current (kept by ``_log_breadcrumbs.py``, merged in by ``error_inputs.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import Attributes

from .scrub import scrub_text, scrubbed_data
from .values import clean_attrs, text_or_none

#: Breadcrumbs kept per error event (the most recent ones), as sentry-sdk's default.
MAX_BREADCRUMBS = 100
#: Longest breadcrumb message kept (log records and ``add_breadcrumb``).
MAX_CRUMB_MESSAGE = 1024

#: The span event ``add_breadcrumb`` records, and its attribute keys.
BREADCRUMB_EVENT = "sentry.breadcrumb"
CRUMB_CATEGORY = "sentry.breadcrumb.category"
CRUMB_MESSAGE = "sentry.breadcrumb.message"
CRUMB_LEVEL = "sentry.breadcrumb.level"
CRUMB_DATA = "sentry.breadcrumb.data."

#: Sentry's breadcrumb levels, and the spellings taken for them.
LEVELS = {"fatal": "fatal", "critical": "fatal", "error": "error", "warning": "warning",
          "warn": "warning", "info": "info", "debug": "debug"}

_CRUMB_DATA = {
    "http": ("url", "http.request.method", "http.response.status_code"),
    "query": ("db.system", "db.name"),
    "cache": ("cache.key", "cache.hit", "cache.item_size"),
    "redis": ("db.system",),
    "queue": ("messaging.destination.name", "messaging.message.id", "messaging.system"),
}


def crumb_level(value: Any) -> str:
    """A Sentry breadcrumb level (``info`` for anything unknown)."""
    text = text_or_none(value)
    return LEVELS.get(text.lower(), "info") if text else "info"


def python_level(levelno: int) -> str:
    """The Sentry level of a Python ``logging`` level."""
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def log_crumb(
    created: float, levelno: int, logger: str, message: str, send_pii: bool
) -> dict[str, Any]:
    """The breadcrumb of one ``logging`` record (as sentry-sdk's logging integration)."""
    return {
        "timestamp": created,
        "type": "log",
        "category": logger or "root",
        "level": python_level(levelno),
        "message": scrub_text(message, send_pii)[:MAX_CRUMB_MESSAGE],
    }


def _span_crumb(span: dict[str, Any]) -> dict[str, Any] | None:
    """Sentry's breadcrumb for a finished span of a kind users follow (db, http, cache, queue)."""
    op: str = span["op"]
    if op == "http.client":
        kind, category = "http", "httplib"
    elif op == "db":
        kind, category = "query", "query"
    elif op.startswith("cache."):
        kind, category = "default", op
    elif op == "db.redis":
        kind, category = "redis", "redis"
    elif op.startswith("queue."):
        kind, category = "default", op
    else:
        return None
    data = span.get("data") or {}
    family = "cache" if op.startswith("cache.") else "queue" if op.startswith("queue.") else kind
    crumb_data = {k: data[k] for k in _CRUMB_DATA[family] if data.get(k) is not None}
    if span.get("status") not in (None, "ok"):
        crumb_data["status"] = span["status"]
    crumb: dict[str, Any] = {
        "timestamp": span["start_timestamp"],
        "type": kind,
        "category": category,
        "message": span["description"],
        "level": "info" if span.get("status") in (None, "ok") else "warning",
    }
    if crumb_data:
        crumb["data"] = crumb_data
    return crumb


def _added_crumb(when: float, attrs: Attributes, send_pii: bool) -> dict[str, Any]:
    """The breadcrumb an ``add_breadcrumb`` event stands for."""
    attrs = attrs or {}
    crumb: dict[str, Any] = {
        "timestamp": when,
        "type": "default",
        "category": (text_or_none(attrs.get(CRUMB_CATEGORY)) or "default")[:200],
        "level": crumb_level(attrs.get(CRUMB_LEVEL)),
    }
    message = text_or_none(attrs.get(CRUMB_MESSAGE))
    if message:
        crumb["message"] = scrub_text(message, send_pii)[:MAX_CRUMB_MESSAGE]
    data = {k[len(CRUMB_DATA):]: v for k, v in attrs.items()
            if isinstance(k, str) and k.startswith(CRUMB_DATA) and len(k) > len(CRUMB_DATA)}
    if data:
        crumb["data"] = scrubbed_data(data, send_pii)
    return crumb


def breadcrumb_trail(
    recorded: Sequence[tuple[ReadableSpan, dict[str, Any]]],
    spans: Sequence[dict[str, Any]],
    send_pii: bool = False,
) -> list[dict[str, Any]]:
    """Every breadcrumb of a transaction, oldest first: its db, http, cache and queue spans
    (at their start) and the span events that are not exceptions (``add_breadcrumb``'s
    with their own category, message, level and data)."""
    crumbs = [c for c in map(_span_crumb, spans) if c is not None]
    for span, _mapped in recorded:
        for event in span.events:
            if event.name == "exception" or event.timestamp is None:
                continue
            when = event.timestamp / 1e9
            if event.name == BREADCRUMB_EVENT:
                crumbs.append(_added_crumb(when, event.attributes, send_pii))
                continue
            crumb: dict[str, Any] = {
                "timestamp": when,
                "type": "default",
                "category": "event",
                "message": text_or_none(event.name) or "event",
                "level": "info",
            }
            if event.attributes:
                crumb["data"] = clean_attrs(event.attributes)
            crumbs.append(crumb)
    crumbs.sort(key=lambda c: c["timestamp"])
    return crumbs
