"""The trace buffer's data: segments (future transactions), spans waiting for their parent,
span size estimates, tombstone keys, and the helpers that work on one released segment.

Pure and single-threaded like :mod:`otel_sentry_bridge.buffer`, which uses these (and keeps
their names importable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan

#: Called with ``(reason, category, quantity)`` for every drop.
DropSink = Callable[[str, str, int], None]


def estimate_size(span: ReadableSpan) -> int:
    """Rough bytes held by a finished span (for the byte cap): fixed costs plus string sizes."""
    attrs = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(attrs) is not dict:
        attrs = span.attributes or {}
    size = 600 + 96 * len(attrs)
    for value in attrs.values():
        if type(value) is str:
            size += len(value)
        elif isinstance(value, (tuple, list)):
            size += 16 * len(value) + sum(len(v) for v in value if type(v) is str)
    events = getattr(span, "_events", None)
    if events is None:
        events = span.events
    if events:
        size += 400 * len(events)
    return size


@dataclass
class Segment:
    """One future transaction: a local root and its finished descendants."""

    root_id: int
    trace_id: int
    created: float
    root: ReadableSpan | None = None
    root_ended_at: float | None = None
    spans: dict[int, ReadableSpan] = field(default_factory=dict)
    #: open (started, not ended) descendants: span id -> parent span id
    open: dict[int, int] = field(default_factory=dict)
    size: int = 0
    #: starts of this segment's spans are seen (processor mode), so ``open`` is complete
    tracked: bool = False


@dataclass
class Waiting:
    """A finished span whose parent has not been seen yet (exporter mode)."""

    span: ReadableSpan
    since: float
    size: int


Ready = tuple[ReadableSpan, list[ReadableSpan]]


def tombstone(trace_id: int, span_id: int) -> int:
    """One int for a span's identity (trace id and span id)."""
    return trace_id << 64 | span_id


def open_ancestor(span: ReadableSpan, segment: Segment) -> int | None:
    """The nearest still-open ancestor of ``span`` inside ``segment``, if any."""
    parent_id = span.parent.span_id if span.parent is not None else None
    for _ in range(10_000):
        if parent_id is None or parent_id == segment.root_id:
            return None
        if parent_id in segment.open:
            return parent_id
        parent = segment.spans.get(parent_id)
        if parent is None or parent.parent is None:
            return None
        parent_id = parent.parent.span_id
    return None


def split_open(
    segment: Segment, segments: dict[int, Segment], owner: dict[int, int], now: float
) -> None:
    """Open descendants of a released root: each top-most one roots a new segment (added to
    ``segments``; ``owner`` maps each open span id to its new segment's root)."""
    open_ids = segment.open
    for span_id, parent_id in open_ids.items():
        top = span_id
        parent = parent_id
        hops = 0
        while parent in open_ids and hops < 10_000:
            top = parent
            parent = open_ids[parent]
            hops += 1
        if top not in segments:
            segments[top] = Segment(top, segment.trace_id, now, tracked=True)
        new_segment = segments[top]
        owner[span_id] = top
        if span_id != top:
            new_segment.open[span_id] = parent_id
    segment.open = {}
