"""Long-running roots (issue 6, item 3): a job that runs longer than the buffered-span timeout
sends its finished spans in partial segments, through the real pipeline.

A real ``TracerProvider`` with ``BridgeCapture(buffer_timeout=...)``: the worker cuts segments
on its own clock, so each test waits for what it expects (bounded) before the next step.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import SentrySpanExporter
from otel_sentry_bridge._mapping.partial import segment_span_id
from otel_sentry_bridge.sampler import SentryBridgeSampler
from otel_sentry_bridge.testing import BridgeCapture, parse_envelope

ROOT = "nightly-report"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def arrived(capture: BridgeCapture, item_type: str = "transaction") -> list[
        tuple[dict[str, Any], dict[str, Any]]]:
    """``(envelope header, payload)`` of the items sent so far (without flushing)."""
    out = []
    for body in list(capture.raw):
        headers, items = parse_envelope(body)
        for item_headers, payload in items:
            if item_headers.get("type") == item_type:
                out.append((headers, orjson.loads(payload)))
    return out


def transactions_are(capture: BridgeCapture, count: int) -> Callable[[], bool]:
    return lambda: len(arrived(capture)) == count


def hex_id(span: trace.Span) -> str:
    return f"{span.get_span_context().span_id:016x}"


def assert_buffer_empty(capture: BridgeCapture) -> None:
    buffer = capture.pipeline.buffer
    assert (buffer.pending, buffer.span_count, buffer.byte_count, len(buffer.owner),
            len(buffer.waiting)) == (0, 0, 0, 0, 0), "spans left behind in the buffer"


@pytest.fixture
def capture() -> Iterator[BridgeCapture]:
    bridge = BridgeCapture(buffer_timeout=1.0)
    try:
        yield bridge
    finally:
        bridge.close()


def test_a_long_job_sends_its_finished_spans_in_segments(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("jobs")
    root = tracer.start_span(ROOT, attributes={"job.id": "42"})
    in_root = trace.set_span_in_context(root)
    with tracer.start_as_current_span("load", context=in_root) as load:
        with tracer.start_as_current_span("query") as query:
            pass
    with tracer.start_as_current_span("transform", context=in_root) as transform:
        pass
    wait_for(lambda: len(arrived(capture)) == 1, "segment 1")
    with tracer.start_as_current_span("write", context=in_root) as write:
        pass
    wait_for(lambda: len(arrived(capture)) == 2, "segment 2")
    with tracer.start_as_current_span("notify", context=in_root) as notify:
        pass
    root.end()
    capture.flush()
    sent = arrived(capture)
    headers = [h for h, _ in sent]
    txns = [t for _, t in sent]

    assert [t["transaction"] for t in txns] == [
        f"{ROOT} (segment 1)", f"{ROOT} (segment 2)", ROOT]
    root_id = hex_id(root)
    trace_id = f"{root.get_span_context().trace_id:032x}"
    for number, txn in enumerate(txns[:2], start=1):
        context = txn["contexts"]["trace"]
        assert context["trace_id"] == trace_id
        assert context["parent_span_id"] == root_id
        assert context["span_id"] == f"{segment_span_id(int(root_id, 16), number):016x}"
        assert context["status"] == "ok"
        assert context["op"] == txns[2]["contexts"]["trace"]["op"]
        assert txn["transaction_info"] == {"source": "custom"}
        assert txn["start_timestamp"] == min(s["start_timestamp"] for s in txn["spans"])
        assert txn["timestamp"] == max(s["timestamp"] for s in txn["spans"])
    first, second, last = (
        {s["description"]: s for s in txn["spans"]} for txn in txns)
    segment_1 = txns[0]["contexts"]["trace"]["span_id"]
    # children of the root hang under the segment; deeper spans keep their parent
    assert first["load"]["parent_span_id"] == segment_1
    assert first["transform"]["parent_span_id"] == segment_1
    assert first["query"]["parent_span_id"] == hex_id(load) == first["load"]["span_id"]
    assert second["write"]["parent_span_id"] == txns[1]["contexts"]["trace"]["span_id"]
    # the root's own transaction carries the rest
    assert txns[2]["contexts"]["trace"]["span_id"] == root_id
    assert "parent_span_id" not in txns[2]["contexts"]["trace"]
    assert list(last) == ["notify"] and last["notify"]["parent_span_id"] == root_id
    # every span exactly once across all transactions
    sent_ids = Counter([txns[2]["contexts"]["trace"]["span_id"]]
                       + [s["span_id"] for t in txns for s in t["spans"]])
    made = [root, load, query, transform, write, notify]
    assert sent_ids == Counter(hex_id(s) for s in made)
    for txn in txns:
        assert validate_event(txn) == []
    # one DSC for the trace, naming the root (not a segment)
    assert all(h["trace"]["trace_id"] == trace_id for h in headers)
    assert all(h["trace"]["transaction"] == ROOT for h in headers)
    assert capture.pipeline.drops.total() == 0
    assert capture.client_reports() == []
    assert_buffer_empty(capture)


def test_errors_in_a_segment_are_sent_with_it(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("jobs")
    root = tracer.start_span(ROOT)
    with tracer.start_as_current_span("step", context=trace.set_span_in_context(root)) as step:
        step.record_exception(ValueError("bad row 17"))
    wait_for(lambda: len(arrived(capture)) == 1, "segment 1")
    wait_for(lambda: len(arrived(capture, "event")) == 1, "the error event")
    (_, segment), = arrived(capture)
    (header, error), = arrived(capture, "event")
    assert validate_event(error, kind="event") == []
    assert error["contexts"]["trace"]["trace_id"] == segment["contexts"]["trace"]["trace_id"]
    assert error["contexts"]["trace"]["span_id"] == hex_id(step)
    assert header["trace"]["transaction"] == ROOT
    root.end()
    capture.flush()
    assert [t["transaction"] for _, t in arrived(capture)] == [f"{ROOT} (segment 1)", ROOT]
    assert len(arrived(capture, "event")) == 1  # not sent again with the root
    assert_buffer_empty(capture)


def test_with_partial_segments_off_the_children_are_dropped_and_counted() -> None:
    capture = BridgeCapture(buffer_timeout=1.0, partial_segments=False)
    try:
        tracer = capture.tracer_provider.get_tracer("jobs")
        root = tracer.start_span(ROOT)
        for name in ("a", "b"):
            with tracer.start_as_current_span(name, context=trace.set_span_in_context(root)):
                pass
        drops = capture.pipeline.drops
        wait_for(lambda: drops.total("event_processor", "span") == 2, "the eviction")
        root.end()
        (txn,) = capture.transactions()
        assert txn["transaction"] == ROOT and txn["spans"] == []
        (report,) = capture.client_reports()
        assert report["discarded_events"] == [
            {"reason": "event_processor", "category": "span", "quantity": 2}]
        assert_buffer_empty(capture)
    finally:
        capture.close()


def test_a_root_the_app_drops_without_ending_it_is_not_kept(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("jobs")

    def start_job() -> SpanContext:
        root = tracer.start_span("leaky-job")
        with tracer.start_as_current_span("a", context=trace.set_span_in_context(root)):
            pass
        return root.get_span_context()  # the span itself is dropped here, never ended

    root_context = start_job()
    wait_for(lambda: len(arrived(capture)) == 1, "segment 1")
    gc.collect()
    parent = trace.set_span_in_context(NonRecordingSpan(root_context))
    with tracer.start_as_current_span("b", context=parent):
        pass
    buffer = capture.pipeline.buffer
    wait_for(lambda: buffer.pending == 0, "the buffer to forget the root")
    capture.flush()
    txns = [t for _, t in arrived(capture)]
    assert [t["transaction"] for t in txns] == ["leaky-job (segment 1)", "leaky-job (segment 2)"]
    assert [[s["description"] for s in t["spans"]] for t in txns] == [["a"], ["b"]]
    assert capture.pipeline.drops.total() == 0
    assert_buffer_empty(capture)


def test_a_root_that_keeps_running_keeps_sending_with_bounded_memory(
    capture: BridgeCapture,
) -> None:
    tracer = capture.tracer_provider.get_tracer("jobs")
    root = tracer.start_span("daemon")
    in_root = trace.set_span_in_context(root)
    buffer = capture.pipeline.buffer
    held = []
    for segment in range(1, 4):
        for i in range(20):
            with tracer.start_as_current_span(f"tick-{segment}-{i}", context=in_root):
                pass
        held.append(buffer.span_count)
        wait_for(transactions_are(capture, segment), f"segment {segment}")
        assert buffer.span_count == 0 and buffer.byte_count == 0
    assert max(held) <= 20
    names = [t["transaction"] for _, t in arrived(capture)]
    assert names == [f"daemon (segment {n})" for n in (1, 2, 3)]
    root.end()
    capture.flush()
    assert [t["transaction"] for _, t in arrived(capture)][-1] == "daemon"
    assert_buffer_empty(capture)


def test_shutdown_sends_what_a_long_running_root_holds() -> None:
    capture = BridgeCapture(buffer_timeout=1.0)
    try:
        tracer = capture.tracer_provider.get_tracer("jobs")
        root = tracer.start_span(ROOT)
        in_root = trace.set_span_in_context(root)
        with tracer.start_as_current_span("a", context=in_root):
            pass
        wait_for(lambda: len(arrived(capture)) == 1, "segment 1")
        with tracer.start_as_current_span("b", context=in_root):
            pass
    finally:
        capture.close()  # the process exits while the job runs
    txns = [t for _, t in arrived(capture)]
    assert [t["transaction"] for t in txns] == [f"{ROOT} (segment 1)", f"{ROOT} (segment 2)"]
    assert [s["description"] for s in txns[1]["spans"]] == ["b"]
    # only the root itself, which never ended, is given up
    assert dict(capture.pipeline.drops.totals) == {("queue_overflow", "transaction"): 1}


def test_exporter_mode_keeps_the_eviction() -> None:
    """Without span starts (``OTEL_TRACES_EXPORTER=sentry_bridge`` alone) the bridge cannot
    tell a running root from a parent that never comes: the children are counted, as before."""
    capture = BridgeCapture(buffer_timeout=1.0)
    try:
        provider = TracerProvider(shutdown_on_exit=False)
        capture.pipeline.processors = 0  # only the exporter feeds this pipeline
        provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter()))
        tracer = provider.get_tracer("jobs")
        root = tracer.start_span(ROOT)
        with tracer.start_as_current_span("a", context=trace.set_span_in_context(root)):
            pass
        drops = capture.pipeline.drops
        wait_for(lambda: drops.total("event_processor", "span") == 1, "the eviction")
        root.end()
        (txn,) = capture.transactions()
        assert txn["transaction"] == ROOT and txn["spans"] == []
        assert_buffer_empty(capture)
        provider.shutdown()
    finally:
        capture.close()


def test_unsampled_segments_are_counted_and_their_errors_sent() -> None:
    capture = BridgeCapture(sampler=SentryBridgeSampler(0.0), buffer_timeout=1.0)
    try:
        tracer = capture.tracer_provider.get_tracer("jobs")
        root = tracer.start_span(ROOT, kind=SpanKind.INTERNAL)
        assert root.is_recording() and not root.get_span_context().trace_flags.sampled
        in_root = trace.set_span_in_context(root)
        with tracer.start_as_current_span("quiet", context=in_root):
            pass
        drops = capture.pipeline.drops
        wait_for(lambda: drops.total("sample_rate", "transaction") == 1, "segment 1 counted")
        assert drops.total("sample_rate", "span") == 2  # its span, and the segment's own
        with tracer.start_as_current_span("failing", context=in_root) as failing:
            failing.record_exception(RuntimeError("disk full"))
        wait_for(lambda: len(arrived(capture, "event")) == 1, "the error event")
        (header, error), = arrived(capture, "event")
        assert validate_event(error, kind="event") == []
        assert header["trace"]["sampled"] == "false"
        assert header["trace"]["transaction"] == ROOT
        root.end()
        capture.flush()
        assert arrived(capture) == []  # no transaction of an unsampled trace
        assert drops.total("sample_rate", "transaction") == 3  # two segments and the root
        assert_buffer_empty(capture)
    finally:
        capture.close()
