"""Sentry error events from OpenTelemetry ``exception`` span events (pure).

``Span.record_exception`` (and every instrumentation that sees an unhandled error) adds an event
named ``exception`` with ``exception.type``, ``exception.message``, ``exception.stacktrace``
(Python's formatted traceback) and ``exception.escaped``. Each becomes one error event: the
exception chain parsed from the traceback, the trace context of the span that recorded it, and
the transaction's name, release, environment, user, tags and request.
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_sentry_bridge.conventions import CAPTURE_PREFIX, FINGERPRINT

from .mapping_context import MappingContext
from .scrub import scrub_text
from .values import MAX_TAG_CHARS, MAX_VALUE_CHARS, clean_attrs, clean_value, seconds, text_or_none

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]*)", line (?P<line>\d+)(?:, in (?P<func>.+))?\s*$')
#: Python 3.11+ underlines the failing expression with a line of these characters.
_MARKERS = frozenset(" ~^-")
_CHAIN = {
    "The above exception was the direct cause of the following exception:": "__cause__",
    "During handling of the above exception, another exception occurred:": "__context__",
}
_TRACEBACK_HEADER = "Traceback (most recent call last):"
#: Paths that are not the application's own code.
_NOT_APP = ("site-packages", "dist-packages")
_STDLIB = tuple(
    path for path in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")}
    if path
)
MAX_FRAMES = 250
MAX_CHAIN = 10


def _frame(path: str, line: str, function: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"abs_path": path, "lineno": int(line)}
    frame["function"] = function or "<module>"
    marker = next((m for m in _NOT_APP if f"/{m}/" in path), None)
    if marker is not None:
        relative = path.split(f"/{marker}/", 1)[1]
        frame["filename"] = relative
        if relative.endswith(".py"):
            frame["module"] = relative[:-3].replace("/", ".").removesuffix(".__init__")
        frame["in_app"] = False
    else:
        frame["filename"] = path.rsplit("/", 1)[-1] or path
        frame["in_app"] = not (path.startswith("<") or path.startswith(_STDLIB))
    return frame


def _split_exception_line(text: str) -> tuple[str, str]:
    name, _, value = text.partition(": ")
    return name.strip(), value.strip()


def parse_traceback(text: str) -> list[dict[str, Any]]:
    """A formatted Python traceback -> exceptions ``{type, value, frames, source}``, the first
    raised (the cause) first, as Sentry orders them. Unknown lines are skipped."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        source = _CHAIN.get(line.strip())
        if source is not None:
            blocks.append((source, []))
        else:
            blocks[-1][1].append(line)
    out: list[dict[str, Any]] = []
    for source, lines in blocks[-MAX_CHAIN:]:
        frames: list[dict[str, Any]] = []
        last_line: str | None = None
        for line in lines:
            match = _FRAME.match(line)
            if match:
                frames.append(_frame(match["path"], match["line"], match["func"]))
                continue
            stripped = line.strip()
            if not stripped or stripped == _TRACEBACK_HEADER or set(stripped) <= _MARKERS:
                continue
            if line.startswith((" ", "\t")):
                if frames and "context_line" not in frames[-1]:
                    frames[-1]["context_line"] = stripped[:MAX_VALUE_CHARS]
                continue
            last_line = stripped
        if last_line is None and not frames:
            continue
        kind, value = _split_exception_line(last_line or "")
        out.append({"type": kind, "value": value, "frames": frames[-MAX_FRAMES:],
                    "source": source})
    return out


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
            into.setdefault("context", {}).setdefault(name, clean_value(value))


def _escaped(attrs: Any) -> bool:
    escaped = attrs.get("exception.escaped")
    return escaped is True or (isinstance(escaped, str) and escaped.lower() == "true")


def _dedupe_key(values: list[dict[str, Any]]) -> tuple[Any, ...]:
    main = values[-1]
    frames = main.get("stacktrace", {}).get("frames", [])
    innermost = (frames[-1]["abs_path"], frames[-1]["lineno"]) if frames else None
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
    for span, mapped in recorded:
        status = span.status.status_code if span.status is not None else StatusCode.UNSET
        for event in span.events:
            if event.name != "exception":
                continue
            attrs = event.attributes or {}
            handled = not (_escaped(attrs) or status is StatusCode.ERROR)
            values = _values(attrs, mapped["origin"], handled, ctx.send_pii)
            key = _dedupe_key(values)
            when = event.timestamp or 0
            records.setdefault(key, []).append((when, attrs))
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
    trail = breadcrumb_trail(recorded, spans) if found else []
    out: list[dict[str, Any]] = []
    for key, (when, values, mapped) in found.items():
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


#: Breadcrumbs kept per error event (the most recent ones), as sentry-sdk's default.
MAX_BREADCRUMBS = 100
_CRUMB_DATA = {
    "http": ("url", "http.request.method", "http.response.status_code"),
    "query": ("db.system", "db.name"),
    "cache": ("cache.key", "cache.hit", "cache.item_size"),
    "redis": ("db.system",),
    "queue": ("messaging.destination.name", "messaging.message.id", "messaging.system"),
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


def breadcrumb_trail(
    recorded: Sequence[tuple[ReadableSpan, dict[str, Any]]], spans: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every breadcrumb of a transaction, oldest first: its db, http, cache and queue spans
    (at their start) and the span events that are not exceptions."""
    crumbs = [c for c in map(_span_crumb, spans) if c is not None]
    for span, _mapped in recorded:
        for event in span.events:
            if event.name == "exception" or event.timestamp is None:
                continue
            crumb: dict[str, Any] = {
                "timestamp": seconds(event.timestamp),
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
