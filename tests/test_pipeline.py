"""Processor and exporter through the real pipeline: once per span, never in the app's way."""

from __future__ import annotations

import logging
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import SentrySpanExporter, SentrySpanProcessor, _internal_errors
from otel_sentry_bridge.testing import BridgeCapture


def make_request(provider: TracerProvider, name: str = "GET /a", children: int = 2) -> None:
    tracer = provider.get_tracer("opentelemetry.instrumentation.flask")
    with tracer.start_as_current_span(name, kind=SpanKind.SERVER,
                                      attributes={"http.method": "GET", "http.route": "/a",
                                                  "http.status_code": 200}):
        for i in range(children):
            with tracer.start_as_current_span(f"child-{i}"):
                pass


def test_processor_sends_one_transaction_per_request(sentry_bridge: BridgeCapture) -> None:
    make_request(sentry_bridge.tracer_provider)
    make_request(sentry_bridge.tracer_provider, children=0)
    txns = sentry_bridge.transactions()
    assert [len(t["spans"]) for t in txns] == [2, 0]
    for txn in txns:
        assert validate_event(txn) == []
    envelope_headers, _ = sentry_bridge.envelopes()[0]
    assert envelope_headers["trace"]["trace_id"] == txns[0]["contexts"]["trace"]["trace_id"]
    assert envelope_headers["trace"]["transaction"] == "GET /a"


def test_two_processors_and_an_exporter_never_double_report() -> None:
    capture = BridgeCapture()
    try:
        provider = capture.tracer_provider
        provider.add_span_processor(SentrySpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter()))
        make_request(provider)
        txns = capture.transactions()
        assert len(txns) == 1
        assert len(txns[0]["spans"]) == 2
    finally:
        capture.close()


def test_exporter_alone_assembles_transactions() -> None:
    capture = BridgeCapture()
    try:
        provider = TracerProvider(shutdown_on_exit=False)
        capture.pipeline.processors = 0  # only the exporter feeds this pipeline
        provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter()))
        make_request(provider, children=3)
        txns = capture.transactions()
        assert len(txns) == 1 and len(txns[0]["spans"]) == 3
    finally:
        capture.close()


def test_internal_errors_never_reach_the_app(
    sentry_bridge: BridgeCapture, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import otel_sentry_bridge._send as send_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("mapping bug")

    monkeypatch.setattr(send_module, "build_transaction", broken)
    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_internal_errors, "_seen", set())
    with caplog.at_level(logging.DEBUG, logger="otel_sentry_bridge"):
        for _ in range(3):
            make_request(sentry_bridge.tracer_provider)
        assert sentry_bridge.transactions() == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "your application keeps running" in errors[0].getMessage()


def test_intake_queue_is_bounded_and_drops_are_reported() -> None:
    capture = BridgeCapture(max_buffered_spans=100)
    try:
        pipeline = capture.pipeline
        pipeline._stopped = True  # keep the worker from draining while we overfill
        pipeline._worker = threading.current_thread()
        for _ in range(50):
            make_request(capture.tracer_provider, children=3)
        assert len(pipeline.queue) == 100
        assert pipeline.drops.total("queue_overflow", "span") == 50 * 4 - 100
    finally:
        pipeline._stopped = False
        capture.close()


def test_disabled_without_destination() -> None:
    processor = SentrySpanProcessor()
    assert processor.pipeline is None
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    make_request(provider)
    assert processor.force_flush() is True
    processor.shutdown()


def test_spans_from_threads_stay_in_their_trace(sentry_bridge: BridgeCapture) -> None:
    provider = sentry_bridge.tracer_provider
    tracer = provider.get_tracer("app")

    def work(n: int) -> None:
        with tracer.start_as_current_span(f"job-{n}", kind=SpanKind.SERVER):
            for i in range(5):
                with tracer.start_as_current_span(f"step-{n}-{i}"):
                    pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    txns = sentry_bridge.transactions()
    assert sorted(t["transaction"] for t in txns) == sorted(f"job-{n}" for n in range(8))
    for txn in txns:
        n = txn["transaction"].split("-")[1]
        assert sorted(s["description"] for s in txn["spans"]) == [
            f"step-{n}-{i}" for i in range(5)]
        trace_id = txn["contexts"]["trace"]["trace_id"]
        assert all(s["trace_id"] == trace_id for s in txn["spans"])


def test_current_span_context_helper_is_valid_only_inside_spans(
    sentry_bridge: BridgeCapture,
) -> None:
    from otel_sentry_bridge.autoinstall import _current_trace_context

    assert _current_trace_context() is None
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("x") as span:
        ctx = _current_trace_context()
        assert ctx == {"trace_id": f"{span.get_span_context().trace_id:032x}",
                       "span_id": f"{span.get_span_context().span_id:016x}"}


def test_intake_shrinks_while_sentry_is_unreachable_and_grows_back() -> None:
    """During an outage a burst is turned away (counted) instead of held at full size."""
    capture = BridgeCapture(max_buffered_spans=1_000)
    try:
        pipeline = capture.pipeline
        pipeline._worker = threading.current_thread()  # process() runs here, step by step
        pipeline.transport._backoff = 1.0  # as after a refused connection
        pipeline.process(force=False)
        assert pipeline.queue_cap == 100
        for _ in range(50):
            make_request(capture.tracer_provider, children=3)
        assert len(pipeline.queue) == 100
        assert pipeline.drops.total("queue_overflow", "span") == 50 * 4 - 100
        pipeline.transport._backoff = 0.0  # a send succeeded
        pipeline.process(force=True)
        assert pipeline.queue_cap == 1_000
    finally:
        capture.close()


def test_ended_spans_wait_in_the_intake_without_empty_event_and_link_lists() -> None:
    """The intake swaps an ended span's empty event/link lists for tuples (they cost ~1.9 KB
    per span); what the span reads is unchanged, and a span with events keeps them."""
    capture = BridgeCapture()
    try:
        pipeline = capture.pipeline
        pipeline._worker = threading.current_thread()  # keep the spans in the intake
        tracer = capture.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("child") as live:
                live.add_event("cache miss", {"key": "k"})
        busy, plain = pipeline.queue
        assert plain._events == () and plain._links == ()
        assert plain.events == () and plain.links == ()
        assert plain.dropped_events == 0 and plain.dropped_links == 0
        assert plain.to_json()
        assert [e.name for e in busy.events] == ["cache miss"]
        assert busy.dropped_events == 0
        pipeline.process(force=True)
        (txn,) = capture.transactions()
        assert [s["description"] for s in txn["spans"]] == ["child"]
    finally:
        capture.close()


@pytest.mark.parametrize("keep", [False, True])
def test_client_spans_without_a_parent_are_not_transactions(keep: bool) -> None:
    """A query or request outside any traced request or job (a Celery worker's broker polling,
    a script's stray query) is no transaction, as with Sentry's SDKs: dropped and counted,
    unless SENTRY_BRIDGE_ORPHAN_CLIENT_SPANS asks for them."""
    from opentelemetry.trace import SpanKind

    capture = BridgeCapture(orphan_client_spans=keep)
    try:
        tracer = capture.tracer_provider.get_tracer("opentelemetry.instrumentation.redis")
        with tracer.start_as_current_span("BRPOP", kind=SpanKind.CLIENT,
                                          attributes={"db.system": "redis"}) as span:
            span.record_exception(RuntimeError("connection lost"))
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
                "http.request.method": "GET", "url.full": "http://api/x"}):
            pass
        with tracer.start_as_current_span("job"):  # a root of the app's own: kept
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT,
                                              attributes={"db.system": "redis"}):
                pass
        names = sorted(t["transaction"] for t in capture.transactions())
        counted = {(d["reason"], d["category"]): d["quantity"]
                   for report in capture.client_reports() for d in report["discarded_events"]}
        # the error of the orphan span is sent either way (Sentry's SDKs report errors
        # outside transactions too)
        assert len(capture.items("event")) == 1
        if keep:
            assert names == ["BRPOP", "GET", "job"]
        else:
            assert names == ["job"]
            assert counted[("event_processor", "transaction")] == 2
    finally:
        capture.close()
