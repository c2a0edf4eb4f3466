"""The trace buffer's data: segments (future transactions), spans waiting for their parent
(and their expiry), span size estimates, tombstone keys, partial-segment heads, and the helpers
that work on one segment.

Pure and single-threaded like :mod:`otel_sentry_bridge.buffer`, which uses these (and keeps
their names importable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan

if TYPE_CHECKING:
    from .buffer import TraceBuffer

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
    #: the root while it runs (partial segments on, processor mode): a weak reference, so
    #: that the buffer never keeps a root alive; dropped when the root ends
    live: Callable[[], ReadableSpan | None] | None = None
    #: when the root started (``created`` restarts at each partial segment)
    born: float = 0.0
    #: partial segments sent so far, and the snapshot of the root taken for the last one
    parts: int = 0
    head: ReadableSpan | None = None
    #: finished spans held back at the last partial segment (they go with the next one)
    held: frozenset[int] = frozenset()


@dataclass(frozen=True)
class OpenRoot:
    """The head of a partial segment: a snapshot of a local root that has not ended (its
    name, ids, parent, kind, attributes, start, resource and scope; no end, no events) and
    the segment's number (1, 2, ...)."""

    span: ReadableSpan
    number: int


def snapshot(live: ReadableSpan) -> ReadableSpan:
    """A copy of what a running span says now (read on the worker; the span may change)."""
    attrs = getattr(live, "_attributes", None)
    inner = getattr(attrs, "_dict", None)
    # a dict's copy is one C-level call: atomic under the GIL, however the app's thread writes
    copy = inner.copy() if type(inner) is dict else dict(live.attributes or {})
    return ReadableSpan(
        name=live.name, context=live.context, parent=live.parent, resource=live.resource,
        attributes=copy, kind=live.kind, instrumentation_scope=live.instrumentation_scope,
        start_time=live.start_time,
    )


@dataclass
class Waiting:
    """A finished span whose parent has not been seen yet (exporter mode)."""

    span: ReadableSpan
    since: float
    size: int


#: What the buffer hands out: an ended local root and its finished descendants, or the head
#: of a partial segment of a root still running and the finished spans it carries.
Ready = tuple[ReadableSpan | OpenRoot, list[ReadableSpan]]


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


def detach_blocked(
    segment: Segment, segments: dict[int, Segment], owner: dict[int, int],
    waiting: dict[int, list[Waiting]], now: float,
) -> list[ReadableSpan]:
    """The finished spans that go out with a released root. Those below a still-open span
    wait for it (in ``waiting``); each top-most open span roots a new segment."""
    if not segment.open:
        return list(segment.spans.values())
    children: list[ReadableSpan] = []
    for span_id, span in segment.spans.items():
        blocker = open_ancestor(span, segment)
        if blocker is None:
            children.append(span)
            continue
        size = estimate_size(span)
        segment.size -= size
        waiting.setdefault(blocker, []).append(Waiting(span, now, size))
        owner.pop(span_id, None)
    split_open(segment, segments, owner, now)
    return children


def expire_waiting(buffer: TraceBuffer, now: float) -> None:
    """Drop (and count) spans that waited for their parent longer than the buffer's timeout."""
    waiting = buffer.waiting
    for parent_id in list(waiting):
        items = waiting[parent_id]
        keep = [w for w in items if now - w.since < buffer.timeout]
        if len(keep) != len(items):
            gone = [w for w in items if now - w.since >= buffer.timeout]
            buffer.span_count -= len(gone)
            buffer.byte_count -= sum(w.size for w in gone)
            lost = 0
            for item in gone:
                context = item.span.context
                if not _has_copy(buffer, context.trace_id, context.span_id):
                    lost += 1  # a second delivery of a span sent or buffered is not lost
                    buffer._remember_sent(context.span_id, context.trace_id, now)
            if lost:
                buffer.on_drop("event_processor", "span", lost)
        if keep:
            waiting[parent_id] = keep
        else:
            del waiting[parent_id]


def _has_copy(buffer: TraceBuffer, trace_id: int, span_id: int) -> bool:
    """Whether this span was already sent or counted, or waits in a segment."""
    if tombstone(trace_id, span_id) in buffer.sent:
        return True
    root_id = buffer.owner.get(span_id)
    return root_id is not None and buffer.segments[root_id].trace_id == trace_id


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


def near_open(segment: Segment) -> set[int]:
    """Finished spans of ``segment`` on a branch with a still-open span: below one (their
    parent has not ended) or above one (a descendant has not ended)."""
    held: set[int] = set()
    open_ids = segment.open
    if not open_ids:
        return held
    spans = segment.spans
    for span_id, span in spans.items():
        if open_ancestor(span, segment) is not None:
            held.add(span_id)
    visited: set[int] = set()
    for parent_id in open_ids.values():
        node: int | None = parent_id
        for _ in range(10_000):
            if node is None or node == segment.root_id or node in visited:
                break
            visited.add(node)
            if node in open_ids:
                node = open_ids[node]
                continue
            finished = spans.get(node)
            if finished is None:
                break
            held.add(node)
            node = finished.parent.span_id if finished.parent is not None else None
    return held
