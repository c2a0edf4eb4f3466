"""Trace buffer: local roots, late-span grace, late and orphan spans, caps and timeouts."""

from __future__ import annotations

from collections import Counter

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from spans import SpanFactory, remote_parent

from otel_sentry_bridge.buffer import OpenRoot, TraceBuffer


class Harness:
    """Drive a TraceBuffer with real spans and an explicit clock."""

    def __init__(self, **kw: float) -> None:
        self.drops: Counter[tuple[str, str]] = Counter()
        params = dict(grace=1.0, timeout=60.0, max_spans=1000, max_buffered_spans=10_000,
                      max_buffered_bytes=1 << 30, partial_segments=True, max_root_age=86_400.0)
        params.update(kw)
        self.buffer = TraceBuffer(
            grace=float(params["grace"]), timeout=float(params["timeout"]),
            max_spans=int(params["max_spans"]),
            max_buffered_spans=int(params["max_buffered_spans"]),
            max_buffered_bytes=int(params["max_buffered_bytes"]),
            on_drop=lambda reason, cat, n: self.drops.update({(reason, cat): n}),
            partial_segments=bool(params["partial_segments"]),
            max_root_age=float(params["max_root_age"]),
        )
        self.now = 0.0
        self.sent: list[tuple[ReadableSpan | OpenRoot, list[ReadableSpan]]] = []

    def start(self, span: ReadableSpan) -> None:
        self.buffer.start(span, self.now)

    def end(self, span: ReadableSpan, starts: bool = True) -> None:
        self.buffer.end(span, self.now, starts_seen=starts)

    def replay(self, spans: list[ReadableSpan]) -> None:
        """Feed starts and ends in the order they happened (as a processor sees them)."""
        events = [(s.start_time or 0, 0, i, s) for i, s in enumerate(spans)]
        events += [(s.end_time or 0, 1, i, s) for i, s in enumerate(spans)]
        for _, kind, _, span in sorted(events, key=lambda e: (e[0], e[1], e[2])):
            if kind == 0:
                self.start(span)
            else:
                self.end(span)

    def tick(self, seconds: float, force: bool = False) -> list[tuple[str, list[str]]]:
        self.now += seconds
        ready = self.buffer.collect(self.now, force=force)
        self.sent.extend(ready)
        return [(name_of(root), sorted(c.name for c in children)) for root, children in ready]


def name_of(root: ReadableSpan | OpenRoot) -> str:
    """A root's name; a partial segment's as ``<root name> (segment N)``."""
    if isinstance(root, OpenRoot):
        return f"{root.span.name} (segment {root.number})"
    return root.name


def tree(f: SpanFactory, depth_names: list[str]) -> None:
    with f.span(depth_names[0], SpanKind.SERVER):
        for name in depth_names[1:]:
            with f.span(name):
                pass


def test_root_waits_for_the_grace_then_sends_with_children() -> None:
    f = SpanFactory()
    tree(f, ["root", "a", "b"])
    h = Harness()
    spans = f.finished()
    for span in spans:
        h.end(span, starts=False)
    assert h.tick(0.5) == []
    assert h.tick(0.6) == [("root", ["a", "b"])]
    assert h.buffer.span_count == 0 and h.buffer.pending == 0


def test_child_ending_within_the_grace_joins_its_root() -> None:
    f = SpanFactory()
    tracer = f.tracer()
    root = tracer.start_span("root", kind=SpanKind.SERVER)
    from opentelemetry import trace

    child = tracer.start_span("late-child", context=trace.set_span_in_context(root))
    h = Harness()
    root.end()
    h.end(f.finished()[0], starts=False)
    h.tick(0.5)
    child.end()
    h.end(f.finished()[1], starts=False)
    assert h.tick(0.6) == [("root", ["late-child"])]


def test_child_ending_after_its_root_was_sent_goes_out_alone_in_the_same_trace() -> None:
    f = SpanFactory()
    tracer = f.tracer()
    from opentelemetry import trace

    root = tracer.start_span("root", kind=SpanKind.SERVER)
    child = tracer.start_span("slow", context=trace.set_span_in_context(root))
    grandchild = tracer.start_span("inner", context=trace.set_span_in_context(child))
    h = Harness()
    live_root, live_child, live_grand = root, child, grandchild
    for span in (live_root, live_child, live_grand):
        h.start(span)  # type: ignore[arg-type]
    grandchild.end()
    h.end(f.finished()[0])
    root.end()
    h.end(f.finished()[1])
    assert h.tick(1.5) == [("root", [])]  # 'inner' waits for its open parent 'slow'
    child.end()
    h.end(f.finished()[2])
    assert h.tick(1.5) == [("slow", ["inner"])]
    (first_root, _), (second_root, _) = h.sent
    assert isinstance(first_root, ReadableSpan) and isinstance(second_root, ReadableSpan)
    assert second_root.context.trace_id == first_root.context.trace_id
    assert second_root.parent is not None
    assert second_root.parent.span_id == first_root.context.span_id
    assert h.drops == Counter()


def test_remote_parent_makes_a_root_and_orphans_become_roots() -> None:
    f = SpanFactory()
    with f.span("server", SpanKind.SERVER, context=remote_parent()), f.span("db"):
        pass
    h = Harness(grace=0.0)
    h.replay(f.finished())
    assert h.tick(0.0) == [("server", ["db"])]
    # a span whose parent this process never saw (processor mode): its own transaction
    g = SpanFactory()
    with g.span("never-seen-parent"), g.span("orphan"):
        pass
    h.end(g.finished()[0])
    assert h.tick(0.0) == [("orphan", [])]


def test_exporter_mode_waits_for_parents_then_times_out() -> None:
    g = SpanFactory()
    with g.span("parent-elsewhere"), g.span("waiting"):
        pass
    h = Harness(grace=0.0, timeout=10.0)
    h.end(g.finished()[0], starts=False)
    assert h.tick(5.0) == []
    assert h.buffer.span_count == 1
    assert h.tick(6.0) == []
    assert h.drops[("event_processor", "span")] == 1
    assert h.buffer.span_count == 0


def test_duplicate_deliveries_are_sent_once() -> None:
    f = SpanFactory()
    tree(f, ["root", "a"])
    h = Harness(grace=0.0)
    spans = f.finished()
    for span in spans + spans:
        h.end(span, starts=False)
    assert h.tick(0.0) == [("root", ["a"])]
    for span in spans:
        h.end(span, starts=False)
    assert h.tick(0.0) == []


def test_force_ignores_the_grace() -> None:
    f = SpanFactory()
    tree(f, ["root", "a"])
    h = Harness(grace=100.0)
    h.replay(f.finished())
    assert h.tick(0.0, force=True) == [("root", ["a"])]


def test_unended_root_children_are_evicted_and_counted_with_partial_segments_off() -> None:
    f = SpanFactory()
    tracer = f.tracer()
    from opentelemetry import trace

    root = tracer.start_span("forever", kind=SpanKind.SERVER)
    h = Harness(timeout=30.0, partial_segments=False)
    h.start(root)  # type: ignore[arg-type]
    for i in range(3):
        child = tracer.start_span(f"c{i}", context=trace.set_span_in_context(root))
        h.start(child)  # type: ignore[arg-type]
        child.end()
        h.end(f.finished()[-1])
    assert h.buffer.span_count == 3
    assert h.tick(31.0) == []
    assert h.drops[("event_processor", "span")] == 3
    assert h.buffer.span_count == 0
    root.end()
    h.end(f.finished()[-1])
    assert h.tick(2.0) == [("forever", [])]


def test_global_cap_drops_and_counts() -> None:
    f = SpanFactory()
    with f.span("root", SpanKind.SERVER):
        for i in range(150):
            with f.span(f"c{i}"):
                pass
    h = Harness(max_buffered_spans=100)
    h.replay(f.finished())
    assert h.drops[("buffer_overflow", "span")] == 50
    (_name, children), = h.tick(2.0)
    assert len(children) == 100


def test_segment_cap_keeps_the_earliest() -> None:
    f = SpanFactory()
    with f.span("root", SpanKind.SERVER):
        for i in range(400):
            with f.span(f"c{i:03d}"):
                pass
    h = Harness(max_spans=100)
    h.replay(f.finished())
    (_name, children), = h.tick(2.0)
    assert children[0] == "c000" and len(children) <= 201
    assert "c000" in children and "c099" in children
    assert h.drops[("buffer_overflow", "span")] == 400 - len(children)


def test_byte_cap() -> None:
    f = SpanFactory()
    with f.span("root", SpanKind.SERVER):
        for i in range(20):
            with f.span(f"c{i}", attributes={"blob": "x" * 100_000}):
                pass
    h = Harness(max_buffered_bytes=500_000)
    h.replay(f.finished())
    dropped = h.drops[("buffer_overflow", "span")]
    assert dropped >= 15
    assert h.buffer.byte_count <= 500_000


def test_processor_mode_sends_at_once_when_nothing_is_open() -> None:
    f = SpanFactory()
    tree(f, ["root", "a", "b"])
    h = Harness(grace=5.0)
    h.replay(f.finished())
    assert h.tick(0.0) == [("root", ["a", "b"])]


def test_processor_mode_waits_for_an_open_child_within_the_grace() -> None:
    from opentelemetry import trace

    f = SpanFactory()
    tracer = f.tracer()
    root = tracer.start_span("root", kind=SpanKind.SERVER)
    child = tracer.start_span("streaming", context=trace.set_span_in_context(root))
    h = Harness(grace=2.0)
    h.start(root)  # type: ignore[arg-type]
    h.start(child)  # type: ignore[arg-type]
    root.end()
    h.end(f.finished()[0])
    assert h.tick(1.0) == []
    child.end()
    h.end(f.finished()[1])
    assert h.tick(0.0) == [("root", ["streaming"])]


def test_duplicate_delivery_while_waiting_for_the_parent_is_kept_once() -> None:
    f = SpanFactory()
    tree(f, ["root", "a"])
    child, root = f.finished()
    h = Harness(grace=0.0)
    h.end(child, starts=False)
    h.end(child, starts=False)
    assert h.buffer.span_count == 1
    h.end(root, starts=False)
    assert h.tick(0.0) == [("root", ["a"])]
    assert (h.buffer.span_count, h.buffer.byte_count) == (0, 0)


# ------------------------------------------------------------------ long-running roots


class Job:
    """A root that stays open while children start and finish (processor mode: starts seen)."""

    def __init__(self, h: Harness, name: str = "nightly-report") -> None:
        from opentelemetry import trace

        self.h = h
        self.f = SpanFactory()
        self.tracer = self.f.tracer("job")
        self.trace = trace
        self.root = self.tracer.start_span(name, kind=SpanKind.CONSUMER)
        h.start(self.root)  # type: ignore[arg-type]

    def open(self, name: str, parent: object = None) -> object:
        span = self.tracer.start_span(
            name, context=self.trace.set_span_in_context(parent or self.root))  # type: ignore[arg-type]
        self.h.start(span)  # type: ignore[arg-type]
        return span

    def close(self, span: object) -> None:
        span.end()  # type: ignore[attr-defined]
        self.h.end(self.f.finished()[-1])

    def child(self, name: str, parent: object = None) -> object:
        span = self.open(name, parent)
        self.close(span)
        return span

    def end(self) -> None:
        self.close(self.root)


def test_running_root_sends_partial_segments_each_interval() -> None:
    h = Harness(timeout=30.0)
    job = Job(h)
    for name in ("a", "b"):
        job.child(name)
    assert h.tick(29.0) == []
    assert h.tick(1.5) == [("nightly-report (segment 1)", ["a", "b"])]
    assert (h.buffer.span_count, h.buffer.byte_count) == (0, 0)
    assert h.tick(30.0) == []  # nothing finished since: no empty segment
    job.child("c")
    assert h.tick(30.0) == [("nightly-report (segment 2)", ["c"])]
    job.child("d")
    job.end()
    assert h.tick(2.0) == [("nightly-report", ["d"])]
    assert h.drops == Counter()
    assert (h.buffer.pending, h.buffer.span_count, h.buffer.byte_count, len(h.buffer.owner)) \
        == (0, 0, 0, 0)
    head = h.sent[0][0]
    assert isinstance(head, OpenRoot)
    assert head.span.context == job.root.get_span_context()
    live: object = job.root
    assert head.span.end_time is None and head.span is not live  # a snapshot


def test_spans_next_to_an_open_span_wait_one_interval() -> None:
    h = Harness(timeout=30.0)
    job = Job(h)
    job.child("done")
    step = job.open("step")
    job.child("inside-step", step)  # below an open span: waits for it
    outer = job.open("outer")
    inner = job.open("inner", outer)
    job.close(outer)  # ended, with a descendant still open: waits for it too
    assert h.tick(31.0) == [("nightly-report (segment 1)", ["done"])]
    job.close(step)
    job.close(inner)
    assert h.tick(31.0) == [("nightly-report (segment 2)", ["inner", "inside-step", "outer",
                                                           "step"])]
    # held at most one interval: spans below a step that never ends go out after two
    stuck = job.open("stuck")
    job.child("below-stuck", stuck)
    assert h.tick(31.0) == []
    assert h.tick(31.0) == [("nightly-report (segment 3)", ["below-stuck"])]
    job.close(stuck)
    job.end()
    assert h.tick(2.0) == [("nightly-report", ["stuck"])]
    assert h.drops == Counter()


def test_a_long_running_root_sends_a_full_transaction_at_once_and_on_flush() -> None:
    h = Harness(timeout=30.0, max_spans=3)
    job = Job(h)
    for i in range(4):
        job.child(f"early{i}")  # before the first interval: held (as with the setting off)
    assert h.tick(0.0) == []
    assert h.tick(31.0) == [("nightly-report (segment 1)", ["early0", "early1", "early2"]),
                            ("nightly-report (segment 2)", ["early3"])]
    for i in range(3):
        job.child(f"c{i}")
    assert h.tick(0.0) == [("nightly-report (segment 3)", ["c0", "c1", "c2"])]
    job.child("last")
    assert h.tick(0.0) == []
    assert h.tick(0.0, force=True) == [("nightly-report (segment 4)", ["last"])]
    job.end()
    assert h.tick(0.0) == [("nightly-report", [])]
    assert h.drops == Counter()


def test_a_flush_leaves_roots_that_have_not_run_long_alone() -> None:
    h = Harness(timeout=30.0)
    job = Job(h)
    job.child("a")
    assert h.tick(1.0, force=True) == []
    job.end()
    assert h.tick(0.0) == [("nightly-report", ["a"])]


def test_a_root_dropped_unended_is_forgotten() -> None:
    import gc

    h = Harness(timeout=30.0)
    job = Job(h)
    job.child("a")
    assert h.tick(31.0) == [("nightly-report (segment 1)", ["a"])]
    open_child = job.open("open-child")
    job.child("b")
    job.root = None  # type: ignore[assignment]  # the app dropped it without ending it
    gc.collect()
    assert h.tick(31.0) == [("nightly-report (segment 2)", ["b"])]  # the last one
    assert (h.buffer.pending, len(h.buffer.owner), h.buffer.span_count) == (0, 0, 0)
    job.close(open_child)  # an open descendant that ends later goes out on its own
    assert h.tick(2.0) == [("open-child", [])]
    assert h.drops == Counter()


def test_a_root_dropped_before_its_first_segment_has_its_spans_counted() -> None:
    import gc

    h = Harness(timeout=30.0)
    job = Job(h)
    job.child("a")
    job.root = None  # type: ignore[assignment]
    gc.collect()
    assert h.tick(31.0) == []
    assert h.drops[("event_processor", "span")] == 1
    assert (h.buffer.pending, len(h.buffer.owner), h.buffer.span_count) == (0, 0, 0)


def test_a_root_is_tracked_for_max_root_age_at_most() -> None:
    h = Harness(timeout=30.0, max_root_age=60.0)
    job = Job(h)
    job.child("a")
    assert h.tick(31.0) == [("nightly-report (segment 1)", ["a"])]
    job.child("b")
    assert h.tick(31.0) == [("nightly-report (segment 2)", ["b"])]  # the last one
    assert h.buffer.pending == 0
    job.child("after")  # its parent is no longer tracked: a local root of its own
    assert h.tick(0.0) == [("after", [])]
    job.end()
    assert h.tick(2.0) == [("nightly-report", [])]
    assert h.drops == Counter()
    assert (h.buffer.pending, len(h.buffer.owner), h.buffer.span_count) == (0, 0, 0)


def test_exporter_mode_still_evicts_and_counts() -> None:
    """Without starts there is no running root to describe: children of a parent that never
    comes are dropped after the timeout and counted, as before."""
    from opentelemetry import trace

    f = SpanFactory()
    tracer = f.tracer()
    root = tracer.start_span("forever")
    with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
        pass
    h = Harness(timeout=30.0)
    h.end(f.finished()[0], starts=False)
    assert h.tick(31.0) == []
    assert h.drops[("event_processor", "span")] == 1
    assert (h.buffer.span_count, h.buffer.byte_count) == (0, 0)
