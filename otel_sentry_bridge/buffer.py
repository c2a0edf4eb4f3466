"""Per-local-root grouping of spans with caps, a late-span grace and timeouts.

Single-threaded by design: only the pipeline's worker (or a flush holding the pipeline's lock)
calls it, with an explicit monotonic ``now``. Feed it span starts (when a processor sees them)
and span ends in the order they happened; it returns complete segments (a root and its finished
descendants) when their grace has passed, and counts everything it drops.

A local root is a span with no parent, a remote parent, or a parent this process never saw.
Without start events (exporter mode) a span whose parent is unknown waits for that parent until
the buffered-span timeout. The finished descendants of a root that runs long go out in partial
segments (:mod:`otel_sentry_bridge._open_roots`), or, with those off, are dropped (counted)
after the timeout.

Segments, waiting spans, size estimates and tombstone keys are defined in
:mod:`otel_sentry_bridge._segments` (and importable from here).
"""

from __future__ import annotations

from collections import OrderedDict

from opentelemetry.sdk.trace import ReadableSpan

from ._open_roots import MAX_OPEN_ROOT_AGE, due, open_root_parts, running_long, track
from ._segments import (
    DropSink,
    OpenRoot,
    Ready,
    Segment,
    Waiting,
    detach_blocked,
    estimate_size,
    expire_waiting,
    tombstone,
)

__all__ = ["DropSink", "OpenRoot", "Ready", "Segment", "TraceBuffer", "Waiting", "estimate_size",
           "tombstone"]


class TraceBuffer:
    """Groups spans by local root; see the module docstring."""

    def __init__(
        self,
        *,
        grace: float,
        timeout: float,
        max_spans: int,
        max_buffered_spans: int,
        max_buffered_bytes: int,
        on_drop: DropSink,
        tombstone_ttl: float = 60.0,
        max_tombstones: int = 50_000,
        partial_segments: bool = True,
        max_root_age: float = MAX_OPEN_ROOT_AGE,
    ) -> None:
        self.grace = grace
        self.timeout = timeout
        #: send the finished spans of a running root in partial segments (else: evict them)
        self.partial_segments = partial_segments
        self.max_root_age = max_root_age
        self.max_spans = max_spans
        self.segment_cap = max(2 * max_spans, max_spans + 100)
        self.keep_per_segment = max_spans + 1
        self.max_buffered_spans = max_buffered_spans
        self.max_buffered_bytes = max_buffered_bytes
        self.on_drop = on_drop
        self.tombstone_ttl = tombstone_ttl
        self.max_tombstones = max_tombstones
        self.segments: dict[int, Segment] = {}
        self.owner: dict[int, int] = {}  # span id -> root id of its live segment
        self.waiting: dict[int, list[Waiting]] = {}  # parent id -> spans waiting for it
        #: ``tombstone(trace id, span id)`` -> expiry, for spans sent or dropped: a second
        #: delivery of the same span is ignored
        self.sent: OrderedDict[int, float] = OrderedDict()
        self.span_count = 0
        self.byte_count = 0
        self.now = 0.0
        #: ids of spans whose start event was lost (the pipeline's intake was full)
        self.lost_starts: set[int] = set()
        #: span id -> time, of spans whose end was dropped (and counted) at the pipeline's
        #: intake: the worker closes them (appended by the application's threads)
        self.dropped_ends: dict[int, float] = {}
        self.max_dropped_ends = max(10_000, 4 * max_buffered_spans)
        self._last_close = float("-inf")

    # ----------------------------------------------------------------- intake
    def start(self, span: ReadableSpan, now: float) -> None:
        """A span started (processor mode): learn where it belongs."""
        self.now = now
        ctx = span.context
        if ctx is None:
            return
        span_id = ctx.span_id
        if not (0 < ctx.trace_id < 1 << 128 and 0 < span_id < 1 << 64):
            return  # invalid ids: counted when the span ends
        if span_id in self.owner or tombstone(ctx.trace_id, span_id) in self.sent:
            return
        parent = span.parent
        if parent is not None and not parent.is_remote:
            if self.waiting and any(w.span.context.span_id == span_id
                                    for w in self.waiting.get(parent.span_id, ())):
                return  # it ended already (a start delivered again, late)
            if parent.span_id in self.lost_starts:
                return  # the parent is real but untracked: group this span when it ends
            root_id = self.owner.get(parent.span_id)
            if root_id is not None:
                segment = self.segments[root_id]
                if segment.trace_id == ctx.trace_id:
                    segment.open[span_id] = parent.span_id
                    self.owner[span_id] = root_id
                    return
        if len(self.owner) >= 4 * self.max_buffered_spans:
            # Too much to track: this span is grouped when it ends (as in exporter mode).
            if len(self.lost_starts) < max(10_000, 4 * self.max_buffered_spans):
                self.lost_starts.add(span_id)
            return
        segment = Segment(span_id, ctx.trace_id, now, tracked=True, born=now)
        if self.partial_segments:
            segment.live = track(span)
        self.segments[span_id] = segment
        self.owner[span_id] = span_id

    def end(self, span: ReadableSpan, now: float, *, starts_seen: bool) -> None:
        """A span ended. ``starts_seen``: a processor reports starts (unknown parent = orphan)."""
        self.now = now
        ctx = span.context
        if ctx is None:
            return
        span_id = ctx.span_id
        trace_id = ctx.trace_id
        if not (0 < trace_id < 1 << 128 and 0 < span_id < 1 << 64):
            self.on_drop("event_processor", "span", 1)  # Sentry cannot take invalid ids
            return
        if tombstone(trace_id, span_id) in self.sent:
            return  # duplicate delivery (processor registered twice, or processor + exporter)
        size = estimate_size(span)
        root_id = self.owner.get(span_id)
        if root_id is not None:
            segment = self.segments[root_id]
            if segment.trace_id != trace_id:  # another span with the same id: keep the first
                self.on_drop("event_processor", "span", 1)
                self._remember_sent(span_id, trace_id, now)
                return
            if root_id == span_id:
                if segment.root is not None:
                    return
                segment.root = span
                segment.root_ended_at = now
                segment.live = segment.head = None
            else:
                if span_id in segment.spans:
                    return
                if not self._admit(size):
                    segment.open.pop(span_id, None)
                    self.owner.pop(span_id, None)
                    self._remember_sent(span_id, trace_id, now)
                    return
                segment.open.pop(span_id, None)
                self._add(segment, span, size)
            self._adopt(segment, span_id)
            return
        parent = span.parent
        if parent is not None and not parent.is_remote:
            waiters = self.waiting.get(parent.span_id)
            if waiters and any(w.span.context.span_id == span_id
                               and w.span.context.trace_id == trace_id for w in waiters):
                return  # the same span delivered twice (e.g. two exporters): keep it once
        if not self._admit(size):
            self._remember_sent(span_id, trace_id, now)
            return
        lost = self.lost_starts
        if lost and (span_id in lost or (parent is not None and parent.span_id in lost)):
            lost.discard(span_id)
            starts_seen = False  # its start (or its parent's) was lost: wait for the parent
        if (parent is None or parent.is_remote or starts_seen
                or tombstone(trace_id, parent.span_id) in self.sent):
            self._new_root(span, now, size)
            return
        parent_root = self.owner.get(parent.span_id)
        if parent_root is not None and self.segments[parent_root].trace_id == ctx.trace_id:
            segment = self.segments[parent_root]
            self.owner[span_id] = parent_root
            self._add(segment, span, size)
            self._adopt(segment, span_id)
            return
        self.waiting.setdefault(parent.span_id, []).append(Waiting(span, now, size))
        self.span_count += 1
        self.byte_count += size

    def _admit(self, size: int) -> bool:
        if (
            self.span_count >= self.max_buffered_spans
            or self.byte_count + size > self.max_buffered_bytes
        ):
            self.on_drop("buffer_overflow", "span", 1)
            return False
        return True

    def _new_root(self, span: ReadableSpan, now: float, size: int) -> None:
        ctx = span.context
        segment = Segment(ctx.span_id, ctx.trace_id, now, root=span, root_ended_at=now)
        self.segments[ctx.span_id] = segment
        self.owner[ctx.span_id] = ctx.span_id
        self._adopt(segment, ctx.span_id)
        del size  # roots are accounted for by their segment's existence, not the caps

    def _add(self, segment: Segment, span: ReadableSpan, size: int) -> None:
        segment.spans[span.context.span_id] = span
        segment.size += size
        self.span_count += 1
        self.byte_count += size
        if len(segment.spans) > self.segment_cap and not running_long(self, segment, self.now):
            self._prune(segment)  # (a long-running root's spans go out in partial segments)

    def _prune(self, segment: Segment) -> None:
        """Keep the earliest-started spans of an oversized segment; count the rest."""
        ordered = sorted(segment.spans.values(), key=lambda s: s.start_time or 0)
        keep = ordered[: self.keep_per_segment]
        dropped = ordered[self.keep_per_segment:]
        segment.spans = {s.context.span_id: s for s in keep}
        for span in dropped:
            size = estimate_size(span)
            segment.size -= size
            self.span_count -= 1
            self.byte_count -= size
            self.owner.pop(span.context.span_id, None)
            self._remember_sent(span.context.span_id, segment.trace_id, self.now)
        self.on_drop("buffer_overflow", "span", len(dropped))

    def _adopt(self, segment: Segment, parent_id: int) -> None:
        """Move spans that were waiting for ``parent_id`` (and their waiters) into ``segment``."""
        stack = [parent_id]
        while stack:
            waiters = self.waiting.pop(stack.pop(), None)
            if not waiters:
                continue
            for item in waiters:
                child = item.span
                if child.context.trace_id != segment.trace_id:
                    self._new_root(child, item.since, item.size)
                    self.span_count -= 1
                    self.byte_count -= item.size
                    continue
                child_id = child.context.span_id
                if child_id == segment.root_id or child_id in segment.spans:
                    # the same span delivered twice (once before its start was known): once
                    self.span_count -= 1
                    self.byte_count -= item.size
                    continue
                self.owner[child_id] = segment.root_id
                segment.spans[child_id] = child
                segment.size += item.size
                stack.append(child_id)

    # ----------------------------------------------------------------- output
    def collect(self, now: float, *, force: bool = False) -> list[Ready]:
        """Segments whose root ended more than ``grace`` ago (all ended ones when ``force``),
        and partial segments of running roots that are due."""
        self.now = now
        flush = force
        if self.dropped_ends:
            self._close_dropped(now)
        ready: list[Ready] = []
        expired: list[int] = []
        # Under memory pressure, ended roots go out without waiting for the full grace.
        force = force or (
            2 * self.byte_count > self.max_buffered_bytes
            or 2 * self.span_count > self.max_buffered_spans
        )
        for root_id, segment in list(self.segments.items()):
            if segment.root is not None:
                assert segment.root_ended_at is not None
                # The grace is for descendants still finishing: when starts are tracked and
                # none is open, nothing can join any more and the segment goes out now.
                if (
                    force
                    or (segment.tracked and not segment.open and not self.lost_starts)
                    or now - segment.root_ended_at >= self.grace
                ):
                    ready.append(self._release(segment, now))
                    expired.append(root_id)
            elif segment.live is not None:
                if due(self, segment, now, flush):
                    ready.extend(open_root_parts(self, segment, now, flush))
            elif now - segment.created >= self.timeout:
                self._evict_children(segment, now)
        for root_id in expired:
            del self.segments[root_id]
        if self.waiting:
            expire_waiting(self, now)
        self._expire_tombstones(now)
        return ready

    def _release(self, segment: Segment, now: float) -> Ready:
        root = segment.root
        assert root is not None
        children = detach_blocked(segment, self.segments, self.owner, self.waiting, now)
        for span in children:
            self.owner.pop(span.context.span_id, None)
            self._remember_sent(span.context.span_id, segment.trace_id, now)
        self.owner.pop(segment.root_id, None)
        self._remember_sent(segment.root_id, segment.trace_id, now)
        self.span_count -= len(children)
        self.byte_count -= segment.size
        return root, children

    def _evict_children(self, segment: Segment, now: float) -> None:
        """A root that has not ended within the timeout: drop its finished children (counted)."""
        if segment.spans:
            count = len(segment.spans)
            for span_id in segment.spans:
                self.owner.pop(span_id, None)
                self._remember_sent(span_id, segment.trace_id, now)
            self.span_count -= count
            self.byte_count -= segment.size
            self.on_drop("event_processor", "span", count)
            segment.spans = {}
            segment.size = 0
        segment.created = now

    def _remember_sent(self, span_id: int, trace_id: int, now: float) -> None:
        self.sent[tombstone(trace_id, span_id)] = now + self.tombstone_ttl
        if len(self.sent) > self.max_tombstones:
            self.sent.popitem(last=False)

    def _expire_tombstones(self, now: float) -> None:
        sent = self.sent
        while sent:
            _key, expiry = next(iter(sent.items()))
            if expiry > now:
                break
            sent.popitem(last=False)

    def _close_dropped(self, now: float) -> None:
        """Forget spans whose end was dropped at the intake (never wait for them)."""
        dropped = self.dropped_ends
        previous = self._last_close
        self._last_close = now
        for span_id, since in list(dropped.items()):
            root_id = self.owner.get(span_id)
            if root_id is None:
                # Noted before the previous pass: its start, if it was accepted at all, has
                # been drained since (starts are drained before each pass), so none is coming.
                if since < previous:
                    del dropped[span_id]
                continue
            del dropped[span_id]
            segment = self.segments[root_id]
            if root_id == span_id and segment.root is None:
                # The root's end is lost: its transaction cannot be sent. Its finished
                # spans are counted; still-open ones become roots of their own when they end.
                self._evict_children(segment, now)
                for open_id in segment.open:
                    self.owner.pop(open_id, None)
                self.owner.pop(span_id, None)
                del self.segments[root_id]
            elif span_id in segment.open:
                del segment.open[span_id]
                self.owner.pop(span_id, None)

    def note_dropped_end(self, span_id: int, now: float) -> None:
        """The intake dropped this span's end (called from application threads: no locks,
        only a dict assignment, bounded)."""
        if len(self.dropped_ends) < self.max_dropped_ends:
            self.dropped_ends[span_id] = now

    def drop_all(self) -> tuple[int, int]:
        """Forget everything buffered (shutdown): ``(finished spans, transactions)`` lost."""
        transactions = sum(1 for root_id, segment in self.segments.items()
                           if segment.root is not None or root_id not in self.dropped_ends)
        self.dropped_ends.clear()
        count = self.span_count + sum(1 for s in self.segments.values() if s.root is not None)
        self.segments.clear()
        self.owner.clear()
        self.waiting.clear()
        self.span_count = 0
        self.byte_count = 0
        return count, transactions

    @property
    def pending(self) -> int:
        """Number of segments still buffered."""
        return len(self.segments)
