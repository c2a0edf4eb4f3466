"""Sentry log items from Python ``logging`` records and OpenTelemetry log records (pure).

The shape is sentry-sdk 2.75's (``sentry-mapping.md`` section 7.3): ``timestamp``, ``trace_id``,
``span_id``, ``level``, ``body`` and typed ``attributes``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from .mapping_context import MappingContext
from .values import INT_MAX, INT_MIN, MAX_VALUE_CHARS, hex_span, hex_trace, safe_str

#: OpenTelemetry severity number ranges -> Sentry log levels (sentry-sdk's OTEL_RANGES).
_LEVELS = ((4, "trace"), (8, "debug"), (12, "info"), (16, "warn"), (20, "error"), (24, "fatal"))
#: Python logging level -> OpenTelemetry severity number (as OpenTelemetry's LoggingHandler).
_PYTHON_SEVERITY = ((logging.CRITICAL, 21), (logging.ERROR, 17), (logging.WARNING, 13),
                    (logging.INFO, 9), (logging.DEBUG, 5))
ORIGIN = "auto.log.otel_sentry_bridge"


def severity_of(levelno: int) -> int:
    """OpenTelemetry severity number of a Python logging level."""
    for level, number in _PYTHON_SEVERITY:
        if levelno >= level:
            return number
    return 1


def level_of(severity: int | None) -> str:
    """Sentry log level of an OpenTelemetry severity number (``info`` when unknown)."""
    if not severity:
        return "info"
    for upper, name in _LEVELS:
        if severity <= upper:
            return name
    return "fatal"


def typed(value: Any) -> dict[str, Any]:
    """``{"value", "type"}`` as Sentry log and metric attributes take them."""
    if isinstance(value, bool):
        return {"value": value, "type": "boolean"}
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return {"value": value, "type": "integer"}
        return {"value": str(value), "type": "string"}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"value": value, "type": "double"}
        return {"value": str(value), "type": "string"}
    if isinstance(value, (list, tuple)) and value and len({type(v) for v in value}) == 1 and (
        isinstance(value[0], (str, bool, int, float))
    ):
        return {"value": [typed(v)["value"] for v in value], "type": "array"}
    text = value if isinstance(value, str) else safe_str(value)
    return {"value": text[:MAX_VALUE_CHARS], "type": "string"}


def _common(attributes: dict[str, Any], ctx: MappingContext) -> None:
    attributes["sentry.sdk.name"] = typed("sentry.python.otel-bridge")
    attributes["sentry.sdk.version"] = typed(ctx.sdk_version)
    attributes["sentry.origin"] = typed(ORIGIN)
    if ctx.environment:
        attributes["sentry.environment"] = typed(ctx.environment)
    if ctx.release:
        attributes["sentry.release"] = typed(ctx.release)
    if ctx.server_name:
        attributes["server.address"] = typed(ctx.server_name)


def python_log_entry(
    record: logging.LogRecord, body: str, trace_id: int, span_id: int | None,
    ctx: MappingContext,
) -> dict[str, Any]:
    """A log item from a ``logging.LogRecord`` (``body``: its formatted message)."""
    severity = severity_of(record.levelno)
    level = level_of(severity)
    attributes: dict[str, Any] = {
        "sentry.severity_number": typed(severity),
        "sentry.severity_text": typed(level),
        "logger.name": typed(record.name),
        "code.file.path": typed(record.pathname),
        "code.line.number": typed(record.lineno),
        "code.function.name": typed(record.funcName),
        "thread.name": typed(record.threadName),
    }
    if record.args and isinstance(record.msg, str):
        attributes["sentry.message.template"] = typed(record.msg)
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        if len(args) == 1 and isinstance(args[0], Mapping):
            parameters: Any = args[0].items()
        else:
            parameters = enumerate(args)
        for name, value in list(parameters)[:20]:
            attributes[f"sentry.message.parameter.{name}"] = typed(value)
    _common(attributes, ctx)
    entry: dict[str, Any] = {
        "timestamp": record.created,
        "trace_id": hex_trace(trace_id),
        "level": level,
        "body": body[:MAX_VALUE_CHARS],
        "attributes": attributes,
    }
    if span_id:
        entry["span_id"] = hex_span(span_id)
    return entry


def otel_log_entry(
    record: Any, ctx: MappingContext, fallback_trace_id: int, now: float
) -> dict[str, Any]:
    """A log item from an OpenTelemetry (API) ``LogRecord``."""
    severity = getattr(record.severity_number, "value", None)
    level = level_of(severity if isinstance(severity, int) else None)
    attributes: dict[str, Any] = {
        safe_str(k): typed(v) for k, v in list((record.attributes or {}).items())[:100]
    }
    if isinstance(severity, int):
        attributes["sentry.severity_number"] = typed(severity)
    attributes["sentry.severity_text"] = typed(record.severity_text or level)
    _common(attributes, ctx)
    trace_id = record.trace_id if record.trace_id else fallback_trace_id
    stamp = record.timestamp or record.observed_timestamp
    body = record.body if isinstance(record.body, str) else typed(record.body)["value"]
    entry: dict[str, Any] = {
        "timestamp": stamp / 1e9 if stamp else now,
        "trace_id": hex_trace(trace_id),
        "level": level,
        "body": str(body)[:MAX_VALUE_CHARS],
        "attributes": attributes,
    }
    if record.span_id:
        entry["span_id"] = hex_span(record.span_id)
    return entry
