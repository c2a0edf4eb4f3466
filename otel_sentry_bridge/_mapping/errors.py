"""Sentry error events from OpenTelemetry ``exception`` span events (pure).

``Span.record_exception`` (and every instrumentation that sees an unhandled error) adds an event
named ``exception`` with ``exception.type``, ``exception.message``, ``exception.stacktrace``
(Python's formatted traceback) and ``exception.escaped``. Each becomes one error event: the
exception chain parsed from the traceback, the trace context of the span that recorded it, and
the transaction's name, release, environment, user, tags and request.

A record may add (``conventions.py``): ``capture.*`` context and a fingerprint
(``capture_errors``; ``capture.<key>.json`` holds structure as JSON), an explicit
``sentry.exception.handled``, and ``sentry.exception.message_digest`` when its message leaves
private data out: a record of the same exception with ``str(exception)`` then gets that message
and joins its event. Another span event (a breadcrumb about the exception) may carry the
digest with ``exception.type`` and ``exception.message`` to the same effect.

What the pipeline knows besides the spans (the live exception's richer frames, log
breadcrumbs, what sentry-sdk already sent) is applied to these events by ``error_inputs.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_sentry_bridge.conventions import (
    CAPTURE_JSON_SUFFIX,
    CAPTURE_PREFIX,
    EXCEPTION_HANDLED,
    EXCEPTION_MESSAGE_DIGEST,
    FINGERPRINT,
)

from .breadcrumbs import MAX_BREADCRUMBS, breadcrumb_trail
from .frames import MAX_CHAIN, MAX_FRAMES, parse_traceback
from .mapping_context import MappingContext
from .scrub import scrub_text
from .values import MAX_TAG_CHARS, MAX_VALUE_CHARS, clean_value, seconds, text_or_none

__all__ = [
    "MAX_BREADCRUMBS", "MAX_CHAIN", "MAX_FRAMES", "breadcrumb_trail", "dedupe_key",
    "error_events", "message_digest", "parse_traceback",
]

#: Longest ``capture.<key>.json`` text decoded, and deepest structure kept from it.
MAX_JSON_CHARS = 65_536
MAX_JSON_DEPTH = 8


def _type_and_module(qualified: str) -> tuple[str, str]:
    module, _, name = qualified.rpartition(".")
    return (name or qualified), (module or "builtins")


def _values(attrs: Any, origin: str, handled: bool, send_pii: bool) -> list[dict[str, Any]]:
    kind = text_or_none(attrs.get("exception.type"))
    message = text_or_none(attrs.get("exception.message"))
    stack = attrs.get("exception.stacktrace")
    parsed = parse_traceback(stack) if isinstance(stack, str) else []
    if not parsed:
        parsed = [{"type": kind or "Error", "value": message or "", "frames": [],
                   "source": None}]
    values: list[dict[str, Any]] = []
    for index, item in enumerate(parsed):
        last = index == len(parsed) - 1
        qualified = (kind if last and kind else item["type"]) or "Error"
        name, module = _type_and_module(qualified)
        text = message if last and message is not None else item["value"]
        value: dict[str, Any] = {"type": name[:MAX_VALUE_CHARS], "module": module}
        if text:
            value["value"] = scrub_text(text, send_pii)[:MAX_VALUE_CHARS]
        if item["frames"]:
            value["stacktrace"] = {"frames": item["frames"]}
        if last:
            value["mechanism"] = {"type": origin, "handled": handled}
        values.append(value)
    return values


def _merge_extras(into: dict[str, Any], attrs: Any) -> None:
    """Business context and fingerprint of a ``capture_errors`` record (any duplicate's)."""
    fingerprint = attrs.get(FINGERPRINT)
    if not into.get("fingerprint") and isinstance(fingerprint, (list, tuple)):
        parts = [p for p in (text_or_none(v) for v in fingerprint[:20]) if p]
        if parts:
            into["fingerprint"] = [p[:MAX_TAG_CHARS] for p in parts]
    for key, value in attrs.items():
        if isinstance(key, str) and key.startswith(CAPTURE_PREFIX) and value is not None:
            name = key[len(CAPTURE_PREFIX):] or "value"
            if name.endswith(CAPTURE_JSON_SUFFIX) and isinstance(value, str):
                decoded = _json_structure(value)
                if decoded is not None:
                    name, value = name[:-len(CAPTURE_JSON_SUFFIX)] or "value", decoded
            into.setdefault("context", {}).setdefault(name, clean_value(value))


def _json_structure(text: str) -> dict[str, Any] | list[Any] | None:
    """A ``capture.<key>.json`` value: its JSON object or array (``None``: too long, too
    deep, not JSON, or a plain value; the text is then kept as it is)."""
    if len(text) > MAX_JSON_CHARS:
        return None
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, (dict, list)):
        return None
    level, depth = [decoded], 0
    while level:  # breadth first: no recursion on hostile input
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return None
        level = [v for item in level
                 for v in (item.values() if isinstance(item, dict) else item)
                 if isinstance(v, (dict, list))]
    return decoded


def message_digest(text: str) -> str:
    """What :data:`EXCEPTION_MESSAGE_DIGEST` holds for a message: BLAKE2b (16 bytes, hex)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _replaced_messages(
    recorded: Sequence[tuple[ReadableSpan, dict[str, Any]]],
) -> dict[tuple[Any, str], str]:
    """The messages that replace ``str(exception)``, by exception type and digest (from any
    span event saying so: an ``exception``, or a breadcrumb about one)."""
    out: dict[tuple[Any, str], str] = {}
    for span, _mapped in recorded:
        for event in span.events:
            attrs = event.attributes or {}
            digest = attrs.get(EXCEPTION_MESSAGE_DIGEST)
            message = attrs.get("exception.message")
            if isinstance(digest, str) and isinstance(message, str):
                out[(attrs.get("exception.type"), digest)] = message
    return out


def _replace_message(attrs: Any, replaced: dict[tuple[Any, str], str]) -> Any:
    """``attrs`` of a record with OpenTelemetry's own message, with the replacement another
    record of the same exception gave (so both are one event, without the private data)."""
    message = attrs.get("exception.message")
    if EXCEPTION_MESSAGE_DIGEST in attrs or not isinstance(message, str):
        return attrs
    better = replaced.get((attrs.get("exception.type"), message_digest(message)))
    return attrs if better is None else {**attrs, "exception.message": better}


def _escaped(attrs: Any) -> bool:
    escaped = attrs.get("exception.escaped")
    return escaped is True or (isinstance(escaped, str) and escaped.lower() == "true")


def dedupe_key(values: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    """What makes two records one exception: the main exception's type and value and its
    innermost frame."""
    main = values[-1]
    frames = main.get("stacktrace", {}).get("frames", [])
    innermost = (frames[-1]["abs_path"], frames[-1].get("lineno")) if frames else None
    return main["type"], main.get("value"), innermost


def error_events(
    recorded: Sequence[tuple[ReadableSpan, dict[str, Any]]],
    transaction: dict[str, Any],
    ctx: MappingContext,
    spans: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One error event per distinct exception recorded on the spans of one transaction.

    ``recorded``: ``(span, its mapped span dict)`` for spans with events, in any order. The same
    exception recorded by each span it escaped (nested ``with`` blocks) gives one event: the
    longest stack trace, and the trace context of the span that recorded it first (the one
    closest to where it was raised).
    """
    found: dict[tuple[Any, ...], tuple[int, list[dict[str, Any]], dict[str, Any]]] = {}
    records: dict[tuple[Any, ...], list[tuple[int, Any]]] = {}
    #: the mechanism of each exception's last record: the span it escaped furthest says
    #: whether it was handled (the longest stack trace may be another record's)
    latest: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}
    replaced = _replaced_messages(recorded)
    for span, mapped in recorded:
        status = span.status.status_code if span.status is not None else StatusCode.UNSET
        for event in span.events:
            if event.name != "exception":
                continue
            attrs = event.attributes or {}
            if replaced:
                attrs = _replace_message(attrs, replaced)
            explicit = attrs.get(EXCEPTION_HANDLED)
            handled = (explicit if type(explicit) is bool
                       else not (_escaped(attrs) or status is StatusCode.ERROR))
            values = _values(attrs, mapped["origin"], handled, ctx.send_pii)
            key = dedupe_key(values)
            when = event.timestamp or 0
            records.setdefault(key, []).append((when, attrs))
            if when >= latest.get(key, (-1, None))[0]:
                latest[key] = (when, values[-1]["mechanism"])
            previous = found.get(key)
            if previous is None:
                found[key] = (when, values, mapped)
                continue
            first_when, first_values, first_span = previous
            frames = len(values[-1].get("stacktrace", {}).get("frames", ()))
            kept = first_values
            if frames > len(first_values[-1].get("stacktrace", {}).get("frames", ())):
                kept = values
            if when < first_when:
                found[key] = (when, kept, mapped)
            else:
                found[key] = (first_when, kept, first_span)
    trail = breadcrumb_trail(recorded, spans, ctx.send_pii) if found else []
    out: list[dict[str, Any]] = []
    for key, (when, values, mapped) in found.items():
        values[-1]["mechanism"] = latest[key][1]
        error = _event(when, values, mapped, transaction)
        extra: dict[str, Any] = {}
        # the record closest to the raise (the earliest) wins where two disagree
        for _when, attrs in sorted(records.get(key, ()), key=lambda r: r[0]):
            _merge_extras(extra, attrs)
        if extra.get("fingerprint"):
            error["fingerprint"] = extra["fingerprint"]
        if extra.get("context"):
            error["contexts"]["capture"] = extra["context"]
        moment = seconds(when) if when else None
        crumbs = [c for c in trail if moment is None or c["timestamp"] <= moment]
        if crumbs:
            error["breadcrumbs"] = {"values": crumbs[-MAX_BREADCRUMBS:]}
        out.append(error)
    return out


_SHARED = ("transaction", "release", "environment", "server_name", "user", "tags", "request",
           "sdk", "platform")


def _event(
    when: int, values: list[dict[str, Any]], span: dict[str, Any], transaction: dict[str, Any]
) -> dict[str, Any]:
    trace: dict[str, Any] = {
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "op": span["op"],
        "status": span["status"],
        "origin": span["origin"],
        "type": "trace",
    }
    if span.get("description"):  # as sentry-sdk's trace context: e.g. the failing query
        trace["description"] = span["description"]
    txn_trace = transaction["contexts"]["trace"]
    if span["span_id"] == txn_trace["span_id"]:
        parent = txn_trace.get("parent_span_id")
    else:
        parent = span.get("parent_span_id")
    if parent:
        trace["parent_span_id"] = parent
    contexts = {k: v for k, v in transaction["contexts"].items() if k != "trace"}
    contexts["trace"] = trace
    digest = hashlib.blake2b(
        f"{span['trace_id']}{span['span_id']}{when}{values[-1]['type']}".encode(), digest_size=16
    ).hexdigest()
    event: dict[str, Any] = {
        "event_id": digest,
        "level": "error",
        "timestamp": seconds(when) or transaction["timestamp"],
        "exception": {"values": values},
        "contexts": contexts,
    }
    for key in _SHARED:
        if key in transaction:
            event[key] = transaction[key]
    return event
