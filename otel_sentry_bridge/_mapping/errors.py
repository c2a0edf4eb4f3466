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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
    "MAX_BREADCRUMBS", "MAX_CHAIN", "MAX_FRAMES", "breadcrumb_trail", "common_tail",
    "dedupe_key", "error_events", "message_digest", "parse_traceback", "replaced_messages",
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
    """What :data:`EXCEPTION_MESSAGE_DIGEST` holds for a message: BLAKE2b (16 bytes, hex) of
    its first :data:`MAX_VALUE_CHARS` characters (as much as a live exception's chain keeps)."""
    data = text[:MAX_VALUE_CHARS].encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def replaced_messages(spans: Iterable[ReadableSpan]) -> dict[tuple[Any, str], str]:
    """The messages that replace ``str(exception)``, by exception type and digest (from any
    span event saying so: an ``exception``, or a breadcrumb about one)."""
    out: dict[tuple[Any, str], str] = {}
    for span in spans:
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


def common_tail(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> int:
    """How many innermost frames two stack traces share (compared by file and line)."""
    count = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x["abs_path"] != y["abs_path"] or x.get("lineno") != y.get("lineno"):
            break
        count += 1
    return count


def _frames(values: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = values[-1].get("stacktrace", {}).get("frames", [])
    return frames


class _Lineage:
    """Which spans of the transaction enclose which (the parent map is built when first
    needed: most transactions have one record per exception)."""

    def __init__(self, spans: Sequence[dict[str, Any]], recorded: Sequence[Any]) -> None:
        self._sources = (spans, [mapped for _span, mapped in recorded])
        self._parent: dict[str, Any] | None = None
        self._ancestors: dict[str, set[str]] = {}

    def ancestors(self, span_id: str) -> set[str]:
        known = self._ancestors.get(span_id)
        if known is not None:
            return known
        if self._parent is None:
            self._parent = {s["span_id"]: s.get("parent_span_id")
                            for source in self._sources for s in source}
        out: set[str] = set()
        node = self._parent.get(span_id)
        while isinstance(node, str) and node not in out and len(out) < 10_000:
            out.add(node)
            node = self._parent.get(node)
        self._ancestors[span_id] = out
        return out

    def related(self, a: str, b: str) -> bool:
        """Is one span the other or inside it?"""
        return a == b or a in self.ancestors(b) or b in self.ancestors(a)


@dataclass(slots=True)
class _Found:
    """One exception and its records (see :func:`error_events`)."""

    #: the first record's time, the longest stack trace's values, the first record's span
    when: int
    values: list[dict[str, Any]]
    span: dict[str, Any]
    #: ``(time, attributes)`` of every record, the first first; the spans that recorded it
    records: list[tuple[int, Any]] = field(default_factory=list)
    span_ids: set[str] = field(default_factory=set)
    #: the last record's time and mechanism: the span it escaped furthest says whether it
    #: was handled (the longest stack trace may be another record's)
    latest: tuple[int, dict[str, Any]] | None = None


def _same_exception(
    same: list[_Found], span_id: str, frames: list[dict[str, Any]], lineage: _Lineage
) -> _Found | None:
    """The exception (of those with the record's key) the record is another record of: one
    whose stack trace is the record's or its innermost part (or the other way round), or one
    recorded on the record's span or a span enclosing it or inside it (an exception escapes
    outwards, re-raised on its way); of those, the one sharing the most innermost frames."""
    best, most = None, -1
    for one in same:
        theirs = _frames(one.values)
        shared = common_tail(theirs, frames)
        if shared > most and (
            shared == min(len(theirs), len(frames))
            or any(lineage.related(span_id, other) for other in one.span_ids)
        ):
            best, most = one, shared
    return best


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
    closest to where it was raised). Records are of one exception when they have the same
    type, message and innermost frame, and one's stack trace is the other's innermost part or
    one's span is the other's or encloses it (:func:`_same_exception`): the same failure raised
    from two places under two sibling spans (a helper called twice) is two events.
    """
    replaced = replaced_messages(span for span, _mapped in recorded)
    records: list[tuple[int, dict[str, Any], list[dict[str, Any]], Any]] = []
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
            records.append((event.timestamp or 0, mapped, values, attrs))
    records.sort(key=lambda r: r[0])  # as the exceptions escaped: innermost record first
    found: dict[tuple[Any, ...], list[_Found]] = {}
    lineage = _Lineage(spans, recorded)
    for when, mapped, values, attrs in records:
        frames = _frames(values)
        same = found.setdefault(dedupe_key(values), [])
        one = _same_exception(same, mapped["span_id"], frames, lineage) if same else None
        if one is None:
            one = _Found(when, values, mapped)
            same.append(one)
        elif len(frames) > len(_frames(one.values)):
            one.values = values
        one.records.append((when, attrs))
        one.span_ids.add(mapped["span_id"])
        one.latest = (when, values[-1]["mechanism"])  # the last record's, so far
    trail = breadcrumb_trail(recorded, spans, ctx.send_pii) if found else []
    out: list[dict[str, Any]] = []
    for one in (one for same in found.values() for one in same):
        when, values = one.when, one.values
        if one.latest is not None:
            values[-1]["mechanism"] = one.latest[1]
        error = _event(when, values, one.span, transaction)
        extra: dict[str, Any] = {}
        # the record closest to the raise (the earliest) wins where two disagree
        for _when, attrs in one.records:
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
