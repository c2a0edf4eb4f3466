"""Partial segments: the trace buffer's part for local roots that run long.

With ``SENTRY_BRIDGE_PARTIAL_SEGMENTS`` on (processor mode: the buffer sees starts), the
finished descendants of a local root that has not ended are not held until it ends: every
``SENTRY_BRIDGE_BUFFER_TIMEOUT`` (the interval) and, once the root has run that long, whenever
they fill a transaction (``SENTRY_BRIDGE_MAX_SPANS``) and at each flush (``force_flush``,
shutdown), they go out as a partial segment: :class:`~otel_sentry_bridge._segments.OpenRoot`
(a snapshot of the root, read here on the worker from a weak reference) and the spans. The
mapping makes a transaction of it (``_mapping/partial.py``); when the root ends, its own
transaction carries the rest.

At an interval, finished spans on a branch with a still-open span wait for one more interval
(so that a parent and its children usually go out together). A root that can never end (the
application dropped it without ending it: the weak reference is dead) or that has run for
``max_root_age`` is forgotten after a last partial segment: it and its open descendants, should
they end, go out as local roots of their own (as orphans do). Nothing is dropped for that,
except the finished spans of a root that died before its first partial segment (nothing is
known to name them by): those are counted, as with partial segments off.

Single-threaded, like :mod:`otel_sentry_bridge.buffer`, whose state these functions change.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan

from ._segments import OpenRoot, Ready, Segment, estimate_size, near_open, snapshot

if TYPE_CHECKING:
    from .buffer import TraceBuffer

#: How long a root that has not ended is tracked at most (seconds): a day.
MAX_OPEN_ROOT_AGE = 86_400.0


def track(span: ReadableSpan) -> Callable[[], ReadableSpan | None] | None:
    """A weak reference to a running root (``None`` for a span that takes none)."""
    try:
        return weakref.ref(span)
    except TypeError:
        return None


def running_long(buffer: TraceBuffer, segment: Segment, now: float) -> bool:
    """Whether the root of ``segment`` runs and started at least the timeout ago."""
    return segment.live is not None and now - segment.born >= buffer.timeout


def due(buffer: TraceBuffer, segment: Segment, now: float, flush: bool) -> bool:
    """Whether the running root of ``segment`` needs a look now: an interval has passed, or
    (once it runs long) a flush, or its finished spans fill a transaction. A root that has
    run for less than the timeout is left alone, as with partial segments off."""
    if now - segment.created >= buffer.timeout:
        return True
    return (now - segment.born >= buffer.timeout
            and (flush or len(segment.spans) >= buffer.max_spans))


def open_root_parts(
    buffer: TraceBuffer, segment: Segment, now: float, flush: bool,
) -> list[Ready]:
    """Partial segments of a running root that is :func:`due` (none when it holds nothing)."""
    live = segment.live() if segment.live is not None else None
    if live is None or now - segment.born >= buffer.max_root_age:
        parts = _cut(buffer, segment, now, live, hold=False)
        _forget(buffer, segment)
        return parts
    if not segment.spans:
        segment.created = now
        return []
    return _cut(buffer, segment, now, live,
                hold=not flush and len(segment.spans) < buffer.max_spans)


def _cut(
    buffer: TraceBuffer, segment: Segment, now: float, live: ReadableSpan | None, hold: bool,
) -> list[Ready]:
    segment.created = now
    spans = segment.spans
    if not spans:
        segment.held = frozenset()
        return []
    if live is not None:
        segment.head = snapshot(live)
    head = segment.head
    if head is None:
        buffer._evict_children(segment, now)  # counted: nothing to describe them by
        return []
    keep = near_open(segment) - segment.held if hold else set()
    send = [span for span_id, span in spans.items() if span_id not in keep]
    if not send:
        segment.held = frozenset(keep)
        return []
    if keep:
        size = 0
        for span in send:
            size += estimate_size(span)
        segment.spans = {span_id: spans[span_id] for span_id in spans if span_id in keep}
    else:
        size = segment.size
        segment.spans = {}
    segment.held = frozenset(keep)
    segment.size -= size
    buffer.span_count -= len(send)
    buffer.byte_count -= size
    owner = buffer.owner
    trace_id = segment.trace_id
    for span in send:
        span_id = span.context.span_id
        owner.pop(span_id, None)
        buffer._remember_sent(span_id, trace_id, now)
    send.sort(key=_start)
    parts: list[Ready] = []
    step = buffer.max_spans
    for index in range(0, len(send), step):
        segment.parts += 1
        parts.append((OpenRoot(head, segment.parts), send[index:index + step]))
    return parts


def _start(span: ReadableSpan) -> int:
    start = span.start_time
    return start if type(start) is int else 0


def _forget(buffer: TraceBuffer, segment: Segment) -> None:
    """Stop tracking a root that has not ended: it and its open descendants are forgotten
    (each one that ends later goes out as a local root of its own, as an orphan does)."""
    owner = buffer.owner
    root_id = segment.root_id
    for span_id in (*segment.open, root_id):
        if owner.get(span_id) == root_id:
            del owner[span_id]
    if buffer.segments.get(root_id) is segment:
        del buffer.segments[root_id]
    segment.open = {}
    segment.live = None
    segment.head = None
