"""A loopback Sentry ingest server for tests, plus the payload conformance checks.

``SentryReceiver`` accepts ``POST /api/<project_id>/envelope/`` like Sentry/Relay does, parses the
envelope, validates every item (Relay's ``StoreNormalizer`` for ``transaction``/``event`` items,
the Insights lint of docs/sentry-mapping.md §2/§5/§9, and the documented shapes of §7 for the other
item types) and records what it received. Validation problems never raise inside the server
thread; they are collected in ``receiver.problems`` (see ``assert_no_problems()``).

Fault modes (``set_mode``) let reliability tests simulate rate limits, server errors, slow and
unresponsive servers::

    with SentryReceiver() as receiver:
        receiver.set_mode("status", status=429, headers={"Retry-After": "60"}, times=1)
        ...  # point the bridge at receiver.dsn()
        txns = receiver.wait_for_transactions(1)
        receiver.assert_no_problems()
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import re
import socket
import socketserver
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

import orjson

__all__ = [
    "CHECK_IN_STATUSES",
    "ITEM_TYPES",
    "SPAN_STATUSES",
    "TRANSACTION_SOURCES",
    "AuthFailure",
    "Envelope",
    "EnvelopeParseError",
    "Item",
    "SentryReceiver",
    "insights_lint",
    "parse_envelope",
    "validate_envelope",
    "validate_event",
    "validate_item",
]

Mode = Literal["ok", "status", "delay", "blackhole"]
Problems = list[str]

# §2.1: the only status strings the bridge may send (Relay also accepts ints and aliases).
SPAN_STATUSES: frozenset[str] = frozenset(
    {
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal_error",
        "unavailable",
        "data_loss",
        "unauthenticated",
    }
)
TRANSACTION_SOURCES: frozenset[str] = frozenset(
    {"custom", "url", "route", "view", "component", "task"}
)
CHECK_IN_STATUSES: frozenset[str] = frozenset({"in_progress", "ok", "error"})
LOG_LEVELS: frozenset[str] = frozenset({"trace", "debug", "info", "warn", "error", "fatal"})
METRIC_TYPES: frozenset[str] = frozenset({"counter", "gauge", "distribution"})
ATTRIBUTE_TYPES: frozenset[str] = frozenset({"string", "boolean", "integer", "double", "array"})
INTERVAL_UNITS: frozenset[str] = frozenset({"minute", "hour", "day", "week", "month", "year"})
CONTENT_TYPES: dict[str, str] = {
    "log": "application/vnd.sentry.items.log+json",
    "trace_metric": "application/vnd.sentry.items.trace-metric+json",
    "span": "application/vnd.sentry.items.span.v2+json",
}
ITEM_TYPES: frozenset[str] = frozenset(
    {"transaction", "event", "client_report", "check_in", "log", "trace_metric", "span",
     "profile_chunk"}
)
# Queries module (§4.4/§5): ops that are category "db" but not SQL.
_NON_SQL_DB_OPS = frozenset({"db.redis", "db.connect"})
_NON_SQL_DB_MARKERS = ("redis", "mongodb", "clickhouse", "compiler")
# §4.6: SDK-style wrapper ops that carry no messaging data themselves.
_QUEUE_WRAPPER_PREFIXES = ("queue.submit.", "queue.task.")
MAX_TAG_LENGTH = 200

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_ORIGIN = re.compile(r"[A-Za-z0-9._-]+")
_HTTP_CLIENT_DESCRIPTION = re.compile(r"^[A-Z_-]+ \S+")  # _OTHER: OTel's unknown method
_ENVELOPE_PATH = re.compile(r"/api/(\d+)/envelope/?")


# --------------------------------------------------------------------------------------------
# Envelope model and parser
# --------------------------------------------------------------------------------------------


class EnvelopeParseError(ValueError):
    """The request body is not a well-formed Sentry envelope."""


def _loads(data: bytes) -> Any:
    """Parse JSON (orjson: rejects NaN/Infinity like Relay does)."""
    return orjson.loads(data)


def _try_loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


@dataclass
class Item:
    """One envelope item. ``json`` is the parsed payload, or None if it is not JSON."""

    headers: dict[str, Any]
    payload: bytes
    type: str = field(init=False)
    json: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.type = str(self.headers.get("type", ""))
        self.json = _try_loads(self.payload) if self.payload else None


@dataclass
class Envelope:
    """A received envelope. ``request_headers`` keys are lower-cased."""

    headers: dict[str, Any]
    items: list[Item]
    request_headers: dict[str, str] = field(default_factory=dict)
    project_id: int = 0
    path: str = ""
    body: bytes = b""  # decoded (decompressed) request body
    status: int | None = 200  # HTTP status answered; None = never answered (blackhole)
    received_at: float = 0.0

    @property
    def event_id(self) -> str | None:
        value = self.headers.get("event_id")
        return value if isinstance(value, str) else None

    @property
    def item_types(self) -> list[str]:
        return [item.type for item in self.items]

    def items_of(self, type: str) -> list[Item]:
        return [item for item in self.items if item.type == type]


@dataclass(frozen=True)
class AuthFailure:
    path: str
    reason: str
    request_headers: dict[str, str]


def _read_line(data: bytes, pos: int) -> tuple[bytes, int]:
    """Return the bytes up to the next ``\\n`` (exclusive) and the position after it."""
    end = data.find(b"\n", pos)
    if end < 0:
        return data[pos:], len(data)
    return data[pos:end], end + 1


def _parse_json_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = _loads(line)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeParseError(f"{what} is not valid JSON: {exc}: {line[:200]!r}") from exc
    if not isinstance(value, dict):
        raise EnvelopeParseError(f"{what} is not a JSON object: {line[:200]!r}")
    return value


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[Item]]:
    """Parse the newline-delimited envelope format into (envelope headers, items).

    Items with a ``length`` header take exactly that many payload bytes (which may contain
    newlines) followed by an optional ``\\n``; without ``length`` the payload runs to the next
    newline or the end of the body. Blank lines between items and a missing or extra trailing
    newline are tolerated.
    """
    if not data.strip():
        raise EnvelopeParseError("empty envelope")
    line, pos = _read_line(data, 0)
    headers = _parse_json_object(line, "envelope header")
    items: list[Item] = []
    while pos < len(data):
        line, pos = _read_line(data, pos)
        if not line.strip():
            continue
        index = len(items)
        item_headers = _parse_json_object(line, f"item header #{index}")
        item_type = item_headers.get("type")
        if not isinstance(item_type, str) or not item_type:
            raise EnvelopeParseError(f"item header #{index} has no string 'type': {item_headers}")
        length = item_headers.get("length")
        if length is None:
            payload, pos = _read_line(data, pos)
        else:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise EnvelopeParseError(f"item #{index} has an invalid length {length!r}")
            if pos + length > len(data):
                raise EnvelopeParseError(
                    f"item #{index} ({item_type}) is truncated: length {length}, "
                    f"{len(data) - pos} bytes left"
                )
            payload = data[pos : pos + length]
            pos += length
            if pos < len(data):
                if data[pos : pos + 1] != b"\n":
                    raise EnvelopeParseError(
                        f"item #{index} ({item_type}) payload is not followed by a newline "
                        f"(wrong length {length}?)"
                    )
                pos += 1
        items.append(Item(headers=item_headers, payload=payload))
    return headers, items


# --------------------------------------------------------------------------------------------
# Small value checks
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_hex32(value: Any) -> bool:
    return isinstance(value, str) and _HEX32.fullmatch(value) is not None


def _is_hex16(value: Any) -> bool:
    return isinstance(value, str) and _HEX16.fullmatch(value) is not None


def _timestamp(value: Any) -> float | None:
    """Epoch seconds from a number or an RFC 3339 string; None if neither."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    return None


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_status(value: Any, where: str, add: Callable[[str], None]) -> None:
    if value is None:
        add(f"{where} is missing")
    elif not isinstance(value, str) or value not in SPAN_STATUSES:
        add(f"{where} {value!r} is not a Sentry span status (§2.1)")


def _check_origin(value: Any, where: str, add: Callable[[str], None]) -> None:
    if value is not None and (not isinstance(value, str) or not _ORIGIN.fullmatch(value)):
        add(f"{where} {value!r} must match [A-Za-z0-9._-]+")


def _check_tags(tags: Any, where: str, add: Callable[[str], None]) -> None:
    if tags is None:
        return
    pairs: Iterable[Any]
    if isinstance(tags, dict):
        pairs = tags.items()
    elif isinstance(tags, list):
        pairs = tags
    else:
        add(f"{where} must be an object, got {type(tags).__name__}")
        return
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            add(f"{where} entry {pair!r} is not a key/value pair")
            continue
        key, value = pair
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_LENGTH:
            add(f"{where} key {key!r} must be a non-empty string of <= {MAX_TAG_LENGTH} chars")
        if not isinstance(value, str):
            add(f"{where}[{key!r}] value {value!r} must be a string")
        elif len(value) > MAX_TAG_LENGTH:
            add(f"{where}[{key!r}] value is {len(value)} chars (> {MAX_TAG_LENGTH})")


def _check_queue_data(data: Mapping[str, Any], where: str, add: Callable[[str], None]) -> None:
    # The Queues page groups by destination and system. The message id is shown when present;
    # some brokers have none (Kafka), so its absence is not an error.
    for key in ("messaging.destination.name", "messaging.system"):
        value = data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            add(f"{where}: data[{key!r}] is missing (Queues module)")
    message_id = data.get("messaging.message.id")
    if message_id is not None and not (isinstance(message_id, str) and message_id.strip()):
        add(f"{where}: data['messaging.message.id'] {message_id!r} must be a non-empty string")
    latency = data.get("messaging.message.receive.latency")
    if latency is not None and not _is_number(latency):
        add(f"{where}: data['messaging.message.receive.latency'] {latency!r} must be a number")
    for key in ("messaging.message.retry.count", "messaging.message.body.size"):
        if key in data and data[key] is not None and not _is_int(data[key]):
            add(f"{where}: data[{key!r}] {data[key]!r} must be an integer")


def _is_queue_module_op(op: str) -> bool:
    return op.startswith("queue.") and not op.startswith(_QUEUE_WRAPPER_PREFIXES)


def _is_queries_op(op: str) -> bool:
    if op == "db":
        return True
    if not op.startswith("db.") or op in _NON_SQL_DB_OPS:
        return False
    return not any(marker in op for marker in _NON_SQL_DB_MARKERS)


# --------------------------------------------------------------------------------------------
# Insights lint (§2, §5, §9)
# --------------------------------------------------------------------------------------------


def _event_label(event: Mapping[str, Any], kind: str) -> str:
    event_id = event.get("event_id") if isinstance(event, Mapping) else None
    return f"{kind} {event_id if isinstance(event_id, str) and event_id else '<no event_id>'}"


def _lint_span(
    index: int,
    span: Any,
    *,
    trace_id: Any,
    root_span_id: Any,
    known_ids: set[str],
    duplicate_ids: set[str],
    add: Callable[[str], None],
) -> None:
    if not isinstance(span, dict):
        add(f"spans[{index}] is not an object")
        return
    span_id: Any = span.get("span_id")
    op: Any = span.get("op")
    where = f"spans[{index}] (span_id={span_id!r}, op={op!r})"

    if not _is_hex16(span_id):
        add(f"{where}: span_id must be 16 lowercase hex chars")
    elif span_id == root_span_id:
        add(f"{where}: span_id equals the root span id")
    elif span_id in duplicate_ids:
        add(f"{where}: duplicate span_id")
    if span.get("trace_id") != trace_id:
        add(f"{where}: trace_id {span.get('trace_id')!r} differs from the transaction's")
    parent = span.get("parent_span_id")
    if parent is None:
        add(f"{where}: parent_span_id is missing")
    elif parent == span_id or parent not in known_ids:
        add(f"{where}: parent_span_id {parent!r} is neither the root nor a span of this event")

    start_raw, end_raw = span.get("start_timestamp"), span.get("timestamp")
    start, end = _timestamp(start_raw), _timestamp(end_raw)
    if start is None:
        add(f"{where}: start_timestamp missing or invalid ({start_raw!r})")
    if end is None:
        add(f"{where}: timestamp missing or invalid ({end_raw!r})")
    if start is not None and end is not None and start > end:
        add(f"{where}: start_timestamp {start_raw!r} > timestamp {end_raw!r}")

    _check_status(span.get("status"), f"{where}: status", add)
    if not _is_nonempty_str(op):
        add(f"{where}: op is missing")
        op = ""
    _check_origin(span.get("origin"), f"{where}: origin", add)
    _check_tags(span.get("tags"), f"{where}: tags", add)

    raw_data = span.get("data")
    if raw_data is not None and not isinstance(raw_data, dict):
        add(f"{where}: data must be an object")
    data = _as_dict(raw_data)
    tags = _as_dict(span.get("tags"))
    description = span.get("description")

    if op == "http.client":
        if not isinstance(description, str) or not _HTTP_CLIENT_DESCRIPTION.match(description):
            add(f"{where}: description {description!r} must look like 'METHOD URL'")
        if not _is_nonempty_str(data.get("http.request.method")):
            add(f"{where}: data['http.request.method'] is missing")
        code = data.get("http.response.status_code")
        if code is not None and not _is_int(code):
            add(f"{where}: data['http.response.status_code'] {code!r} must be an integer")
        tag = tags.get("http.status_code")
        if tag is not None:
            if not isinstance(tag, str):
                add(f"{where}: tags['http.status_code'] {tag!r} must be a string")
            if not _is_int(code):
                add(f"{where}: tags['http.status_code'] set but no integer "
                    "data['http.response.status_code']")
            elif str(code) != str(tag):
                add(f"{where}: tags['http.status_code'] {tag!r} != "
                    f"data['http.response.status_code'] {code!r}")
    elif _is_queries_op(op):
        if not _is_nonempty_str(description):
            add(f"{where}: db span needs the query as description")
        if not _is_nonempty_str(data.get("db.system")):
            add(f"{where}: data['db.system'] is missing (Queries module)")

    if op.startswith("cache."):
        size = data.get("cache.item_size")
        if size is not None and not _is_int(size):
            add(f"{where}: data['cache.item_size'] {size!r} must be an integer")
        key = data.get("cache.key")
        key_ok = isinstance(key, list) and bool(key) and all(isinstance(k, str) for k in key)
        if op == "cache.get":
            # cache.hit may be absent when unknowable (a read that failed) but never a non-bool.
            hit = data.get("cache.hit")
            if "cache.hit" in data and not isinstance(hit, bool):
                add(f"{where}: data['cache.hit'] {hit!r} must be a JSON boolean")
            if not key_ok:
                add(f"{where}: data['cache.key'] {key!r} must be a non-empty list of strings")
        elif key is not None and not key_ok:
            add(f"{where}: data['cache.key'] {key!r} must be a non-empty list of strings")

    if _is_queue_module_op(op):
        _check_queue_data(data, where, add)


def _lint_transaction(event: Mapping[str, Any], add: Callable[[str], None]) -> None:
    if event.get("type") != "transaction":
        add(f"type is {event.get('type')!r}, expected 'transaction'")
    if event.get("platform") != "python":
        add(f"platform is {event.get('platform')!r}, expected 'python'")
    if not _is_nonempty_str(event.get("transaction")):
        add("transaction name is missing or empty")
    source = _as_dict(event.get("transaction_info")).get("source")
    if source not in TRANSACTION_SOURCES:
        add(f"transaction_info.source {source!r} not in {sorted(TRANSACTION_SOURCES)}")

    contexts = _as_dict(event.get("contexts"))
    if "trace" not in contexts or not isinstance(contexts["trace"], dict):
        add("contexts.trace is missing")
    trace = _as_dict(contexts.get("trace"))
    trace_id, root_span_id = trace.get("trace_id"), trace.get("span_id")
    if not _is_hex32(trace_id) or trace_id == "0" * 32:
        add(f"contexts.trace.trace_id {trace_id!r} must be 32 lowercase hex, not all zero")
    if not _is_hex16(root_span_id):
        add(f"contexts.trace.span_id {root_span_id!r} must be 16 lowercase hex")
    parent = trace.get("parent_span_id")
    if parent is not None and not _is_hex16(parent):
        add(f"contexts.trace.parent_span_id {parent!r} must be 16 lowercase hex")
    _check_status(trace.get("status"), "contexts.trace.status", add)
    op: Any = trace.get("op")
    if not _is_nonempty_str(op):
        add("contexts.trace.op is missing")
        op = ""
    _check_origin(trace.get("origin"), "contexts.trace.origin", add)
    _check_tags(event.get("tags"), "tags", add)

    if op == "http.server":
        # No response context is allowed: a request can end without a response (a client
        # that went away, a crash in the server); one that is there must hold an int.
        status_code = _as_dict(contexts.get("response")).get("status_code")
        if "response" in contexts and not _is_int(status_code):
            add(f"http.server: contexts.response.status_code {status_code!r} must be an int")
        if not _is_nonempty_str(_as_dict(event.get("request")).get("method")):
            add("http.server: request.method is missing")
        tag = _as_dict(event.get("tags")).get("http.status_code")
        if tag is not None and _is_int(status_code) and str(status_code) != tag:
            add(f"http.server: tags['http.status_code'] {tag!r} != contexts.response.status_code")
    if _is_queue_module_op(op):
        _check_queue_data(_as_dict(trace.get("data")), f"contexts.trace (op={op!r})", add)

    spans = event.get("spans")
    if spans is None:
        return
    if not isinstance(spans, list):
        add("spans must be a list")
        return
    ids = [s.get("span_id") for s in spans if isinstance(s, dict)]
    seen: set[str] = set()
    duplicates: set[str] = set()
    for span_id in ids:
        if isinstance(span_id, str):
            (duplicates if span_id in seen else seen).add(span_id)
    known = set(seen)
    if isinstance(root_span_id, str):
        known.add(root_span_id)
    for index, span in enumerate(spans):
        _lint_span(
            index,
            span,
            trace_id=trace_id,
            root_span_id=root_span_id,
            known_ids=known,
            duplicate_ids=duplicates,
            add=add,
        )
    _check_span_tree(spans, root_span_id, add)


def _check_span_tree(spans: list[Any], root_span_id: Any, add: Callable[[str], None]) -> None:
    """Flag spans whose ancestry loops (parent_span_id cycle) instead of reaching the root."""
    parents = {
        s["span_id"]: s.get("parent_span_id")
        for s in spans
        if isinstance(s, dict) and isinstance(s.get("span_id"), str)
    }
    reaches_root: dict[str, bool] = {}
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        current: Any = start
        while True:
            if current == root_span_id or current not in parents:
                result = True  # reached the root (unknown parents are reported elsewhere)
                break
            if current in reaches_root:
                result = reaches_root[current]
                break
            if current in on_path:
                result = False
                break
            path.append(current)
            on_path.add(current)
            current = parents[current]
        for node in path:
            reaches_root[node] = result
        if not result:
            add(f"span {start!r} is part of (or hangs below) a parent_span_id cycle")


def _lint_error_event(event: Mapping[str, Any], add: Callable[[str], None]) -> None:
    if event.get("type") == "transaction":
        add("error event item carries type 'transaction'")
    if not _is_nonempty_str(event.get("level")):
        add("level is missing")
    values = _as_dict(event.get("exception")).get("values")
    if not isinstance(values, list) or not values:
        add("exception.values is missing or empty")
        values = []
    for index, exc in enumerate(values):
        if not isinstance(exc, dict):
            add(f"exception.values[{index}] is not an object")
            continue
        if not _is_nonempty_str(exc.get("type")):
            add(f"exception.values[{index}].type is missing")
        stacktrace = exc.get("stacktrace")
        if stacktrace is not None:
            frames = _as_dict(stacktrace).get("frames")
            if not isinstance(frames, list) or not frames:
                add(f"exception.values[{index}].stacktrace.frames is missing or empty")
    trace = _as_dict(_as_dict(event.get("contexts")).get("trace"))
    if not _is_hex32(trace.get("trace_id")):
        add(f"contexts.trace.trace_id {trace.get('trace_id')!r} must be 32 lowercase hex")
    if not _is_hex16(trace.get("span_id")):
        add(f"contexts.trace.span_id {trace.get('span_id')!r} must be 16 lowercase hex")
    _check_tags(event.get("tags"), "tags", add)


def insights_lint(event: Mapping[str, Any], *, kind: str | None = None) -> list[str]:
    """Check what Relay does not: the Insights requirements of sentry-mapping.md §2, §5 and §9.

    ``kind`` is ``"transaction"`` or ``"event"`` (error event); by default it is inferred from
    ``event["type"]``. Every problem string starts with ``"<kind> <event_id>: "``.
    """
    if kind is None:
        is_txn = isinstance(event, Mapping) and event.get("type") == "transaction"
        kind = "transaction" if is_txn else "event"
    label = _event_label(event, kind)
    problems: Problems = []

    def add(message: str) -> None:
        problems.append(f"{label}: {message}")

    if not isinstance(event, Mapping):
        add(f"payload is not a JSON object ({type(event).__name__})")
    elif kind == "transaction":
        _lint_transaction(event, add)
    else:
        _lint_error_event(event, add)
    return problems


# --------------------------------------------------------------------------------------------
# Relay normalizer
# --------------------------------------------------------------------------------------------

NORMALIZER_CONFIG: dict[str, Any] = {
    "project_id": 1,
    "client_ip": "127.0.0.1",
    "client": "sentry.python.otel-bridge/0.1.0",
    "protocol_version": "7",
    "max_secs_in_future": 60,
    "max_secs_in_past": 30 * 24 * 3600,
    "is_renormalize": False,
    "remove_other": True,
    "normalize_user_agent": True,
    "enable_trimming": True,
    "normalize_spans": True,
}
_normalizer: Any = None
# The FFI call releases the GIL and passes the normalizer to Rust as a `*mut` (aliased `&mut`
# when called concurrently), so concurrent use is not guaranteed safe: serialize all calls.
_normalizer_lock = threading.Lock()


def _normalize_locked(event: Mapping[str, Any]) -> Any:
    global _normalizer
    with _normalizer_lock:
        if _normalizer is None:
            # sentry_relay forces RUST_BACKTRACE=1, so every hard error (ProcessingError*)
            # captures and symbolizes a Rust backtrace: ~70 ms each. We discard it anyway.
            os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
            from sentry_relay.processing import StoreNormalizer

            _normalizer = StoreNormalizer(**NORMALIZER_CONFIG)
        return _normalizer.normalize_event(dict(event))


def normalize_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Run Relay's StoreNormalizer (cached, serialized by a lock); raises on hard errors."""
    result = _normalize_locked(event)
    if not isinstance(result, dict):  # pragma: no cover - Relay always returns an object
        raise TypeError(f"normalizer returned {type(result).__name__}")
    return result


def _relay_message(exc: BaseException) -> str:
    """Relay exceptions carry a huge Rust backtrace in str(); keep only the message."""
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"


def validate_event(event: Mapping[str, Any], *, kind: str | None = None) -> list[str]:
    """Relay conformance (§9): no exception, no output ``errors``, ``insights_lint`` clean."""
    if kind is None:
        kind = "transaction" if event.get("type") == "transaction" else "event"
    label = _event_label(event, kind)
    problems: Problems = []
    try:
        normalized = normalize_event(event)
    except Exception as exc:
        problems.append(f"{label}: Relay rejected the event: {_relay_message(exc)}")
    else:
        errors = normalized.get("errors")
        if errors:
            problems.append(
                f"{label}: Relay normalization errors: {orjson.dumps(errors).decode()}"
            )
    problems.extend(insights_lint(event, kind=kind))
    return problems


# --------------------------------------------------------------------------------------------
# Item shape checks (§7) for the types the normalizer does not cover
# --------------------------------------------------------------------------------------------


def _check_attributes(attributes: Any, where: str, add: Callable[[str], None]) -> None:
    if attributes is None:
        return
    if not isinstance(attributes, dict):
        add(f"{where}.attributes must be an object")
        return
    for key, attr in attributes.items():
        at = f"{where}.attributes[{key!r}]"
        extra = set(attr) - {"value", "type", "unit"} if isinstance(attr, dict) else set()
        if not isinstance(attr, dict) or "value" not in attr or extra:
            add(f"{at} must be {{value, type}}, got {attr!r}")
            continue
        kind, value = attr.get("type"), attr["value"]
        if kind not in ATTRIBUTE_TYPES:
            add(f"{at}.type {kind!r} not in {sorted(ATTRIBUTE_TYPES)}")
            continue
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": _is_int(value),
            "double": _is_number(value),
            "array": isinstance(value, list)
            and len({type(v) for v in value}) <= 1
            and all(isinstance(v, (str, bool, int, float)) for v in value),
        }[kind]
        if not ok:
            add(f"{at}: value {value!r} does not match type {kind!r}")


def _check_batch(
    item: Item, where: str, add: Callable[[str], None]
) -> list[tuple[str, dict[str, Any]]]:
    """Common checks of the ``{"version": 2, "items": [...]}`` container items."""
    expected_ct = CONTENT_TYPES[item.type]
    if item.headers.get("content_type") != expected_ct:
        add(f"{where}: item header content_type {item.headers.get('content_type')!r} "
            f"!= {expected_ct!r}")
    payload = item.json
    if not isinstance(payload, dict):
        add(f"{where}: payload is not a JSON object")
        return []
    if payload.get("version") != 2:
        add(f"{where}: payload version {payload.get('version')!r} != 2")
    entries = payload.get("items")
    if not isinstance(entries, list) or not entries:
        add(f"{where}: payload items must be a non-empty list")
        return []
    count = item.headers.get("item_count")
    if count != len(entries):
        add(f"{where}: item_count {count!r} != len(items) {len(entries)}")
    result = []
    for index, entry in enumerate(entries):
        if isinstance(entry, dict):
            result.append((f"{where}: items[{index}]", entry))
        else:
            add(f"{where}: items[{index}] is not an object")
    return result


def _check_trace_ids(entry: Mapping[str, Any], at: str, add: Callable[[str], None]) -> None:
    if not _is_hex32(entry.get("trace_id")):
        add(f"{at}.trace_id {entry.get('trace_id')!r} must be 32 lowercase hex")
    if entry.get("span_id") is not None and not _is_hex16(entry.get("span_id")):
        add(f"{at}.span_id {entry.get('span_id')!r} must be 16 lowercase hex")


def _check_log(item: Item, where: str, add: Callable[[str], None]) -> None:
    for at, entry in _check_batch(item, where, add):
        if not _is_number(entry.get("timestamp")):
            add(f"{at}.timestamp {entry.get('timestamp')!r} must be a number")
        _check_trace_ids(entry, at, add)
        if entry.get("level") not in LOG_LEVELS:
            add(f"{at}.level {entry.get('level')!r} not in {sorted(LOG_LEVELS)}")
        if not isinstance(entry.get("body"), str):
            add(f"{at}.body must be a string")
        _check_attributes(entry.get("attributes"), at, add)


def _check_trace_metric(item: Item, where: str, add: Callable[[str], None]) -> None:
    for at, entry in _check_batch(item, where, add):
        if not _is_number(entry.get("timestamp")):
            add(f"{at}.timestamp {entry.get('timestamp')!r} must be a number")
        _check_trace_ids(entry, at, add)
        if not _is_nonempty_str(entry.get("name")):
            add(f"{at}.name is missing")
        if entry.get("type") not in METRIC_TYPES:
            add(f"{at}.type {entry.get('type')!r} not in {sorted(METRIC_TYPES)}")
        if not _is_number(entry.get("value")):
            add(f"{at}.value {entry.get('value')!r} must be a number")
        if entry.get("unit") is not None and not isinstance(entry.get("unit"), str):
            add(f"{at}.unit must be a string")
        _check_attributes(entry.get("attributes"), at, add)


def _check_span_v2(item: Item, where: str, add: Callable[[str], None]) -> None:
    for at, entry in _check_batch(item, where, add):
        _check_trace_ids(entry, at, add)
        if not _is_hex16(entry.get("span_id")):
            add(f"{at}.span_id {entry.get('span_id')!r} must be 16 lowercase hex")
        parent = entry.get("parent_span_id")
        if parent is not None and not _is_hex16(parent):
            add(f"{at}.parent_span_id {parent!r} must be 16 lowercase hex")
        if not _is_nonempty_str(entry.get("name")):
            add(f"{at}.name is missing")
        if entry.get("status") not in ("ok", "error"):
            add(f"{at}.status {entry.get('status')!r} must be 'ok' or 'error'")
        if not isinstance(entry.get("is_segment"), bool):
            add(f"{at}.is_segment must be a boolean")
        start: Any = entry.get("start_timestamp")
        end: Any = entry.get("end_timestamp")
        if not _is_number(start) or not _is_number(end):
            add(f"{at}: start_timestamp/end_timestamp must be numbers")
        elif start > end:
            add(f"{at}: start_timestamp > end_timestamp")
        _check_attributes(entry.get("attributes"), at, add)


def _check_client_report(item: Item, where: str, add: Callable[[str], None]) -> None:
    payload = item.json
    if not isinstance(payload, dict):
        add(f"{where}: payload is not a JSON object")
        return
    if not _is_number(payload.get("timestamp")):
        add(f"{where}: timestamp {payload.get('timestamp')!r} must be a number (epoch seconds)")
    discarded = payload.get("discarded_events")
    if not isinstance(discarded, list):
        add(f"{where}: discarded_events must be a list")
        return
    for index, entry in enumerate(discarded):
        at = f"{where}: discarded_events[{index}]"
        if not isinstance(entry, dict):
            add(f"{at} is not an object")
            continue
        for key in ("reason", "category"):
            if not _is_nonempty_str(entry.get(key)):
                add(f"{at}.{key} {entry.get(key)!r} must be a non-empty string")
        quantity: Any = entry.get("quantity")
        if not _is_int(quantity) or quantity <= 0:
            add(f"{at}.quantity {quantity!r} must be a positive integer")


def _check_check_in(item: Item, where: str, add: Callable[[str], None]) -> None:
    payload = item.json
    if not isinstance(payload, dict):
        add(f"{where}: payload is not a JSON object")
        return
    if not _is_hex32(payload.get("check_in_id")):
        add(f"{where}: check_in_id {payload.get('check_in_id')!r} must be 32 lowercase hex")
    if not _is_nonempty_str(payload.get("monitor_slug")):
        add(f"{where}: monitor_slug is missing")
    if payload.get("status") not in CHECK_IN_STATUSES:
        add(f"{where}: status {payload.get('status')!r} not in {sorted(CHECK_IN_STATUSES)}")
    duration = payload.get("duration")
    if duration is not None and (not _is_number(duration) or duration < 0):
        add(f"{where}: duration {duration!r} must be a non-negative number (seconds)")
    config = payload.get("monitor_config")
    if config is not None:
        schedule = _as_dict(_as_dict(config).get("schedule"))
        stype: Any = schedule.get("type")
        value: Any = schedule.get("value")
        if stype == "crontab":
            if not _is_nonempty_str(value):
                add(f"{where}: crontab schedule value {value!r} must be a string")
        elif stype == "interval":
            if not _is_int(value) or value <= 0:
                add(f"{where}: interval schedule value {value!r} must be a positive int")
            if schedule.get("unit") not in INTERVAL_UNITS:
                add(f"{where}: interval unit {schedule.get('unit')!r} not in "
                    f"{sorted(INTERVAL_UNITS)}")
        else:
            add(f"{where}: monitor_config.schedule.type {stype!r} must be crontab|interval")
    trace = _as_dict(_as_dict(payload.get("contexts")).get("trace"))
    if trace and not _is_hex32(trace.get("trace_id")):
        add(f"{where}: contexts.trace.trace_id {trace.get('trace_id')!r} must be 32 hex")
    _check_check_in_details(payload, where, add)


_MONITOR_CONFIG_KEYS = frozenset({"schedule", "timezone", "checkin_margin", "max_runtime",
                                  "failure_issue_threshold", "recovery_threshold", "owner"})


def _check_check_in_details(payload: dict[str, Any], where: str,
                            add: Callable[[str], None]) -> None:
    """§7.2 beyond the basics: what Relay rejects or cuts (slug > 50, environment > 64
    characters, a config without a schedule), and the documented shape (a closing check-in
    has its duration, only the trace context, minutes as positive integers)."""
    slug = payload.get("monitor_slug")
    if isinstance(slug, str) and len(slug) > 50:
        add(f"{where}: monitor_slug is {len(slug)} characters (Relay keeps 50)")
    environment = payload.get("environment")
    if environment is not None and (not _is_nonempty_str(environment) or len(environment) > 64):
        add(f"{where}: environment {environment!r} must be a string of 1..64 characters")
    if payload.get("release") is not None and not _is_nonempty_str(payload.get("release")):
        add(f"{where}: release {payload.get('release')!r} must be a non-empty string")
    status, duration = payload.get("status"), payload.get("duration")
    if status in ("ok", "error") and not _is_number(duration):
        add(f"{where}: a closing check-in ({status}) needs its duration in seconds")
    if status == "in_progress" and duration is not None:
        add(f"{where}: an in_progress check-in has no duration ({duration!r})")
    config = payload.get("monitor_config")
    if config is not None:
        if not isinstance(config, dict) or "schedule" not in config:
            add(f"{where}: monitor_config must be an object with a schedule (Relay)")
            config = {}
        unknown = set(config) - _MONITOR_CONFIG_KEYS
        if unknown:
            add(f"{where}: monitor_config has unknown keys {sorted(unknown)}")
        schedule = _as_dict(config.get("schedule"))
        value = schedule.get("value")
        if schedule.get("type") == "crontab" and isinstance(value, str) and len(
                value.split()) != 5:
            add(f"{where}: crontab {value!r} must have 5 fields")
        zone = config.get("timezone")
        if zone is not None and not _is_nonempty_str(zone):
            add(f"{where}: monitor_config.timezone {zone!r} must be a zone name")
        for key in ("checkin_margin", "max_runtime", "failure_issue_threshold",
                    "recovery_threshold"):
            number = config.get(key)
            if number is not None and (not _is_int(number) or number < 1):
                add(f"{where}: monitor_config.{key} {number!r} must be a positive integer")
    contexts = payload.get("contexts")
    if contexts is not None:
        if not isinstance(contexts, dict) or set(contexts) - {"trace"}:
            add(f"{where}: contexts must hold the trace context only")
        span_id = _as_dict(_as_dict(contexts).get("trace")).get("span_id")
        if span_id is not None and not _is_hex16(span_id):
            add(f"{where}: contexts.trace.span_id {span_id!r} must be 16 lowercase hex")


def _check_profile_chunk(item: Item, where: str, add: Callable[[str], None]) -> None:
    """A continuous-profiling chunk (Sentry's "Sample Format V2", as sentry-sdk writes it)."""
    payload = item.json
    if not isinstance(payload, dict):
        add(f"{where}: payload is not a JSON object")
        return
    if not _is_nonempty_str(item.headers.get("platform")):
        add(f"{where}: item header platform is missing")
    if payload.get("version") != "2":
        add(f"{where}: version {payload.get('version')!r} != '2'")
    for key in ("chunk_id", "profiler_id"):
        if not _is_hex32(payload.get(key)):
            add(f"{where}: {key} {payload.get(key)!r} must be 32 lowercase hex")
    if not _is_nonempty_str(payload.get("platform")):
        add(f"{where}: platform is missing")
    sdk = _as_dict(payload.get("client_sdk"))
    if not _is_nonempty_str(sdk.get("name")) or not _is_nonempty_str(sdk.get("version")):
        add(f"{where}: client_sdk needs a name and a version")
    for key in ("release", "environment"):
        if payload.get(key) is not None and not _is_nonempty_str(payload.get(key)):
            add(f"{where}: {key} {payload.get(key)!r} must be a non-empty string")
    profile = payload.get("profile")
    if not isinstance(profile, dict):
        add(f"{where}: profile must be an object")
        return
    frames, stacks, samples = (profile.get(k) for k in ("frames", "stacks", "samples"))
    if not isinstance(frames, list) or not isinstance(stacks, list):
        add(f"{where}: profile.frames and profile.stacks must be lists")
        return
    if not isinstance(samples, list):
        add(f"{where}: profile.samples must be a list")
        return
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not (
            _is_nonempty_str(frame.get("function")) or frame.get("instruction_addr")
        ):
            add(f"{where}: profile.frames[{index}] needs a function")
    for index, stack in enumerate(stacks):
        if not isinstance(stack, list) or not all(
            _is_int(f) and 0 <= f < len(frames) for f in stack
        ):
            add(f"{where}: profile.stacks[{index}] must list indexes into frames")
    for index, sample in enumerate(samples):
        at = f"{where}: profile.samples[{index}]"
        if not isinstance(sample, dict):
            add(f"{at} is not an object")
            continue
        stack_id: Any = sample.get("stack_id")
        if not _is_int(stack_id) or not 0 <= stack_id < len(stacks):
            add(f"{at}.stack_id {stack_id!r} must index profile.stacks")
        if not _is_number(sample.get("timestamp")):
            add(f"{at}.timestamp {sample.get('timestamp')!r} must be a number (epoch seconds)")
        if not _is_nonempty_str(sample.get("thread_id")):
            add(f"{at}.thread_id {sample.get('thread_id')!r} must be a string")
    metadata = profile.get("thread_metadata")
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in _as_dict(metadata).items()
    ):
        add(f"{where}: profile.thread_metadata must map thread ids to objects")


_SHAPE_CHECKS: dict[str, Callable[[Item, str, Callable[[str], None]], None]] = {
    "client_report": _check_client_report,
    "check_in": _check_check_in,
    "log": _check_log,
    "trace_metric": _check_trace_metric,
    "span": _check_span_v2,
    "profile_chunk": _check_profile_chunk,
}


def validate_item(item: Item, *, where: str | None = None) -> list[str]:
    """Validate one envelope item (normalizer + lint for events, §7 shapes for the others)."""
    where = where or f"{item.type or '<untyped>'} item"
    if item.type in ("transaction", "event"):
        if not isinstance(item.json, dict):
            return [f"{where}: payload is not a JSON object: {item.payload[:200]!r}"]
        return validate_event(item.json, kind=item.type)
    check = _SHAPE_CHECKS.get(item.type)
    if check is None:
        return [f"{where}: unknown/unexpected item type {item.type!r}"]
    problems: Problems = []
    check(item, where, problems.append)
    return problems


def _head_transaction(items: list[Item]) -> bool:
    """Whether the envelope holds a transaction that starts its trace (no parent)."""
    for item in items:
        payload = item.json
        if item.type == "transaction" and isinstance(payload, dict):
            trace = _as_dict(_as_dict(payload.get("contexts")).get("trace"))
            return not trace.get("parent_span_id")
    return False


def validate_envelope(
    headers: Mapping[str, Any], items: list[Item], *, public_key: str | None = None
) -> list[str]:
    """Validate envelope headers (event_id, sent_at, DSC §8) and every item."""
    problems: Problems = []
    env_event_id = headers.get("event_id")
    label = f"envelope {env_event_id or '<no event_id>'}"
    if env_event_id is not None and not _is_hex32(env_event_id):
        problems.append(f"{label}: header event_id must be 32 lowercase hex")
    sent_at = headers.get("sent_at")
    if sent_at is not None and (not isinstance(sent_at, str) or _timestamp(sent_at) is None):
        problems.append(f"{label}: header sent_at {sent_at!r} must be an RFC 3339 string")
    dsc = headers.get("trace")
    if dsc is not None:
        if not isinstance(dsc, dict):
            problems.append(f"{label}: header trace (DSC) must be an object")
            dsc = {}
        if not _is_hex32(dsc.get("trace_id")):
            problems.append(f"{label}: DSC trace_id {dsc.get('trace_id')!r} must be 32 hex")
        if not _is_nonempty_str(dsc.get("public_key")):
            problems.append(f"{label}: DSC public_key is missing")
        elif (public_key is not None and dsc.get("public_key") != public_key
              and _head_transaction(items)):
            # A continued trace carries its head's DSC (maybe another project's key); a
            # trace that starts here carries ours.
            problems.append(f"{label}: DSC public_key {dsc.get('public_key')!r} != DSN key")
        for key, value in dsc.items():
            if not isinstance(value, str):
                problems.append(f"{label}: DSC value {key}={value!r} must be a string")
    for index, item in enumerate(items):
        problems.extend(validate_item(item, where=f"{label} item #{index} ({item.type})"))
        payload = item.json
        if item.type in ("transaction", "event") and isinstance(payload, dict):
            if env_event_id is not None and payload.get("event_id") != env_event_id:
                problems.append(
                    f"{label}: item #{index} event_id {payload.get('event_id')!r} "
                    "differs from the envelope header"
                )
            trace_id = _as_dict(_as_dict(payload.get("contexts")).get("trace")).get("trace_id")
            if isinstance(dsc, dict) and item.type == "transaction" and dsc.get(
                "trace_id"
            ) not in (None, trace_id):
                problems.append(
                    f"{label}: DSC trace_id {dsc.get('trace_id')!r} != transaction trace_id "
                    f"{trace_id!r}"
                )
    return problems


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fault:
    mode: Mode = "ok"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    body: bytes | None = None


class _UnsupportedEncoding(Exception):
    pass


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    if encoding == "br":
        try:
            brotli = importlib.import_module("brotli")
        except ImportError as exc:
            raise _UnsupportedEncoding("br (brotli module not installed)") from exc
        return cast(bytes, brotli.decompress(body))
    raise _UnsupportedEncoding(encoding)


def _parse_auth_header(value: str) -> dict[str, str]:
    value = value.strip()
    if value[:7].lower() == "sentry ":
        value = value[7:]
    result: dict[str, str] = {}
    for part in value.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            result[key.strip()] = val.strip()
    return result


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen() backlog; 5 drops SYNs under parallel load
    block_on_close = False  # stop() joins the connection threads itself, with a deadline

    def __init__(self, address: tuple[str, int], receiver: SentryReceiver) -> None:
        self.receiver = receiver
        self._conn_lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's socket.getfqdn() (a reverse DNS lookup).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="sentry-receiver-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._connections[thread] = request
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.pop(threading.current_thread(), None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection errors (client gave up, stop() closed the socket) are expected.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.receiver._add_problems([f"receiver: unexpected server error: {exc!r}"])

    def close_connections(self, timeout: float) -> None:
        with self._conn_lock:
            connections = dict(self._connections)
        for sock in connections.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SentryReceiver/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        cast(_Server, self.server).receiver._handle(self)

    def _not_allowed(self) -> None:
        self.close_connection = True
        _respond(self, 405, {"detail": "method not allowed"}, {})

    do_GET = do_PUT = do_DELETE = _not_allowed

    def do_OPTIONS(self) -> None:
        """CORS preflight of a browser SDK's envelope POST (a page on another origin)."""
        self.close_connection = True
        requested = self.headers.get("Access-Control-Request-Headers")
        _respond(self, 200, b"", {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": requested or "Content-Type",
            "Access-Control-Max-Age": "600",
        })


def _respond(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: Mapping[str, Any] | bytes,
    headers: Mapping[str, str],
) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(dict(payload))
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            handler.send_header(key, value)
        if handler.headers.get("Origin"):  # a browser SDK on another origin (CORS)
            handler.send_header("Access-Control-Allow-Origin", "*")
            handler.send_header("Access-Control-Expose-Headers",
                                "X-Sentry-Rate-Limits, Retry-After")
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True  # the client went away (e.g. timed out)


def _read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = handler.rfile.readline(65537)
            if not size_line:
                raise ValueError("connection closed inside chunked body")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(65537)
    length = int(handler.headers.get("Content-Length") or 0)
    if length < 0:
        raise ValueError("negative Content-Length")
    return handler.rfile.read(length) if length else b""


class SentryReceiver:
    """Loopback Sentry ingest endpoint recording and validating every envelope it receives."""

    def __init__(
        self, key: str = "publickey", *, host: str = "127.0.0.1", validate: bool = True
    ) -> None:
        self.key = key
        self.host = host
        self.validate = validate
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bind_port = 0
        self._fault = _Fault()
        self._fault_remaining: int | None = None
        self._latency = 0.0
        self._reset_records()

    def _reset_records(self) -> None:
        self._envelopes: list[Envelope] = []
        self._rejected: list[Envelope] = []
        self._auth_failures: list[AuthFailure] = []
        self._problems: list[str] = []
        self._request_count = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SentryReceiver:
        """Start serving. After ``stop()`` a new ``start()`` re-binds the same port."""
        with self._lock:
            if self._server is not None:
                return self
            self._stop_event.clear()
            server = _Server((self.host, self._bind_port), self)
            self._bind_port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"sentry-receiver-{self._bind_port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; pending (delayed/blackholed) requests are dropped unanswered."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stop_event.set()
        server.shutdown()
        server.close_connections(timeout)
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> SentryReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if not self._bind_port:
            raise RuntimeError("SentryReceiver has not been started")
        return self._bind_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def dsn(self, project_id: int = 123, key: str | None = None) -> str:
        return f"http://{self.key if key is None else key}@{self.host}:{self.port}/{project_id}"

    def envelope_url(self, project_id: int = 123) -> str:
        return f"{self.url}/api/{project_id}/envelope/"

    # -- fault injection ------------------------------------------------------------------------

    def set_mode(
        self,
        mode: Mode = "ok",
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        seconds: float = 0.0,
        body: bytes | None = None,
        times: int | None = None,
        latency: float | None = None,
    ) -> None:
        """Choose how authenticated envelope requests are answered.

        * ``"ok"``: 200 ``{"id": ...}`` (default).
        * ``"status"``: answer ``status`` (required) with extra ``headers`` / raw ``body``,
          e.g. ``set_mode("status", status=429, headers={"Retry-After": "60"})``.
        * ``"delay"``: wait ``seconds`` then answer ``status`` (default 200).
        * ``"blackhole"``: read the request and never answer (until ``stop()``).

        ``times``: apply the mode to the next N requests only, then return to ``"ok"``.
        ``latency``: if given, also set the per-request added latency (see ``set_latency``).
        Non-2xx (and unanswered) requests are recorded in ``rejected``, not in ``envelopes``.
        """
        if mode not in ("ok", "status", "delay", "blackhole"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "status" and status is None:
            raise ValueError("mode 'status' needs status=")
        if mode == "delay" and seconds <= 0:
            raise ValueError("mode 'delay' needs seconds > 0")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1")
        fault = _Fault(
            mode=mode,
            status=200 if status is None or mode in ("ok", "blackhole") else status,
            headers=dict(headers or {}),
            seconds=seconds,
            body=body,
        )
        with self._lock:
            self._fault = fault
            self._fault_remaining = None if mode == "ok" else times
            if latency is not None:
                self._latency = max(0.0, latency)

    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` of latency before answering every request (all modes)."""
        with self._lock:
            self._latency = max(0.0, seconds)

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._fault.mode

    def _next_fault(self) -> _Fault:
        with self._lock:
            fault = self._fault
            if self._fault_remaining is not None:
                self._fault_remaining -= 1
                if self._fault_remaining <= 0:
                    self._fault, self._fault_remaining = _Fault(), None
            return fault

    # -- request handling ---------------------------------------------------------------------

    def _add_problems(self, problems: Iterable[str]) -> None:
        with self._lock:
            self._problems.extend(problems)

    def _check_auth(self, handler: BaseHTTPRequestHandler, query: str) -> str | None:
        """Return None when authenticated, else the reason."""
        header = handler.headers.get("X-Sentry-Auth")
        if header is not None:
            fields = _parse_auth_header(header)
            if fields.get("sentry_key") != self.key:
                return f"X-Sentry-Auth sentry_key {fields.get('sentry_key')!r} != {self.key!r}"
            if fields.get("sentry_version") != "7":
                return f"X-Sentry-Auth sentry_version {fields.get('sentry_version')!r} != '7'"
            return None
        params = parse_qs(query)
        keys = params.get("sentry_key")
        if not keys:
            return "no X-Sentry-Auth header and no sentry_key query parameter"
        if keys[0] != self.key:
            return f"query sentry_key {keys[0]!r} != {self.key!r}"
        versions = params.get("sentry_version")
        if versions and versions[0] != "7":
            return f"query sentry_version {versions[0]!r} != '7'"
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            self._handle_request(handler)
        except Exception as exc:  # never let a bug kill the server thread silently
            self._add_problems([f"receiver: internal error handling {handler.path}: {exc!r}"])
            handler.close_connection = True
            _respond(handler, 500, {"detail": "receiver internal error"}, {})

    def _handle_request(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._request_count += 1
            latency = self._latency
        request_headers = {k.lower(): v for k, v in handler.headers.items()}
        split = urlsplit(handler.path)
        try:
            raw = _read_request_body(handler)
        except ValueError as exc:
            handler.close_connection = True
            _respond(handler, 400, {"detail": f"bad request body: {exc}"}, {})
            return
        if latency and self._stop_event.wait(latency):
            handler.close_connection = True
            return

        match = _ENVELOPE_PATH.fullmatch(split.path)
        if match is None:
            _respond(handler, 404, {"detail": f"no route for {split.path}"}, {})
            return
        reason = self._check_auth(handler, split.query)
        if reason is not None:
            with self._lock:
                self._auth_failures.append(AuthFailure(handler.path, reason, request_headers))
            _respond(handler, 401, {"detail": reason}, {})
            return

        try:
            body = _decode_body(raw, handler.headers.get("Content-Encoding", ""))
        except _UnsupportedEncoding as exc:
            self._add_problems([f"receiver: unsupported Content-Encoding {exc}"])
            _respond(handler, 415, {"detail": f"unsupported encoding {exc}"}, {})
            return
        except (OSError, EOFError, zlib.error) as exc:
            self._add_problems([f"receiver: body does not decompress: {exc!r}"])
            _respond(handler, 400, {"detail": "body does not decompress"}, {})
            return
        try:
            env_headers, items = parse_envelope(body)
        except EnvelopeParseError as exc:
            self._add_problems([f"receiver: malformed envelope: {exc}"])
            _respond(handler, 400, {"detail": f"invalid envelope: {exc}"}, {})
            return

        envelope = Envelope(
            headers=env_headers,
            items=items,
            request_headers=request_headers,
            project_id=int(match.group(1)),
            path=handler.path,
            body=body,
            received_at=time.time(),
        )
        if self.validate:
            self._add_problems(validate_envelope(env_headers, items, public_key=self.key))
        self._answer(handler, envelope)

    def _answer(self, handler: BaseHTTPRequestHandler, envelope: Envelope) -> None:
        fault = self._next_fault()
        if fault.mode in ("blackhole", "delay"):
            if fault.mode == "blackhole":
                envelope.status = None
                with self._lock:
                    self._rejected.append(envelope)
                self._stop_event.wait()
                handler.close_connection = True
                return
            if self._stop_event.wait(fault.seconds):
                envelope.status = None
                with self._lock:
                    self._rejected.append(envelope)
                handler.close_connection = True
                return
        status = fault.status
        envelope.status = status
        if 200 <= status < 300:
            event_id = envelope.event_id or uuid.uuid4().hex
            with self._lock:
                self._envelopes.append(envelope)
            _respond(handler, status, fault.body or {"id": event_id}, fault.headers)
        else:
            with self._lock:
                self._rejected.append(envelope)
            _respond(handler, status, fault.body or {"detail": f"injected {status}"}, fault.headers)

    # -- accessors ------------------------------------------------------------------------------

    @property
    def envelopes(self) -> list[Envelope]:
        """Envelopes answered with 2xx, in arrival order (a copy)."""
        with self._lock:
            return list(self._envelopes)

    @property
    def rejected(self) -> list[Envelope]:
        """Authenticated envelopes answered non-2xx (``status``) or never (``status`` None)."""
        with self._lock:
            return list(self._rejected)

    @property
    def auth_failures(self) -> list[AuthFailure]:
        with self._lock:
            return list(self._auth_failures)

    @property
    def problems(self) -> list[str]:
        with self._lock:
            return list(self._problems)

    @property
    def request_count(self) -> int:
        """Every HTTP request received (accepted, rejected, unauthenticated, 404...)."""
        with self._lock:
            return self._request_count

    def items(self, type: str | None = None) -> list[Item]:
        return [
            item
            for envelope in self.envelopes
            for item in envelope.items
            if type is None or item.type == type
        ]

    def _payloads(self, type: str) -> list[dict[str, Any]]:
        return [item.json for item in self.items(type) if isinstance(item.json, dict)]

    def transactions(self) -> list[dict[str, Any]]:
        return self._payloads("transaction")

    def events(self) -> list[dict[str, Any]]:
        """Error events (``event`` items)."""
        return self._payloads("event")

    def client_reports(self) -> list[dict[str, Any]]:
        return self._payloads("client_report")

    def check_ins(self) -> list[dict[str, Any]]:
        return self._payloads("check_in")

    def profile_chunks(self) -> list[dict[str, Any]]:
        """Continuous-profiling chunks (``profile_chunk`` items)."""
        return self._payloads("profile_chunk")

    def logs(self) -> list[dict[str, Any]]:
        """Individual log records, flattened out of the ``log`` batch items."""
        return self._batch_entries("log")

    def trace_metrics(self) -> list[dict[str, Any]]:
        return self._batch_entries("trace_metric")

    def _batch_entries(self, type: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for payload in self._payloads(type):
            batch = payload.get("items")
            if isinstance(batch, list):
                entries.extend(e for e in batch if isinstance(e, dict))
        return entries

    def wait_for(
        self,
        predicate: Callable[[SentryReceiver], bool],
        timeout: float = 10.0,
        interval: float = 0.01,
    ) -> bool:
        """Poll ``predicate(self)`` until it is true (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))

    def wait_for_transactions(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` transactions arrived; return all of them (maybe fewer)."""
        self.wait_for(lambda r: len(r.transactions()) >= n, timeout)
        return self.transactions()

    def clear(self) -> None:
        """Forget everything received (envelopes, rejections, problems, counters)."""
        with self._lock:
            self._reset_records()

    def assert_no_problems(self) -> None:
        problems = self.problems
        if problems:
            listing = "\n".join(f"  - {p}" for p in problems)
            raise AssertionError(
                f"SentryReceiver recorded {len(problems)} problem(s):\n{listing}"
            )
