"""Richer frames from the live exception behind ``Span.record_exception`` (the wrapper)."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import _internal_errors, _live_exceptions
from otel_sentry_bridge._live_exceptions import LiveStash, exception_chain
from otel_sentry_bridge.testing import BridgeCapture


class LedgerError(Exception):
    pass


def post_entry(amount: int) -> None:
    # a comment line: part of the context around the raise
    limit = 100
    if amount > limit:
        raise LedgerError(f"amount {amount} over the limit")
    print("never reached")


def settle(amount: int) -> None:
    try:
        post_entry(amount)
    except LedgerError as exc:
        raise RuntimeError("settlement failed") from exc


@pytest.fixture
def without_wrapper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The bridge as it was: no wrapper, not even when a pipeline starts."""
    _live_exceptions.uninstall()
    monkeypatch.setattr(_live_exceptions, "install", lambda: False)
    yield


def _settle_in_span(bridge: BridgeCapture) -> dict[str, Any]:
    tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    with tracer.start_as_current_span("POST /settle", kind=SpanKind.SERVER, attributes={
            "http.method": "POST", "http.route": "/settle", "http.status_code": 200}) as span:
        try:
            settle(250)
        except RuntimeError as exc:
            span.record_exception(exc)
    (event,) = bridge.items("event")
    assert validate_event(event, kind="event") == []
    return event


def test_live_exception_gives_frames_with_source_context(sentry_bridge: BridgeCapture) -> None:
    event = _settle_in_span(sentry_bridge)
    cause, main = event["exception"]["values"]
    assert (cause["type"], cause["module"], cause["value"]) == (
        "LedgerError", __name__, "amount 250 over the limit")
    assert (main["type"], main["module"], main["value"]) == (
        "RuntimeError", "builtins", "settlement failed")
    assert main["mechanism"] == {"type": "auto.otel.flask", "handled": True}
    inner = cause["stacktrace"]["frames"][-1]
    assert (inner["function"], inner["module"], inner["filename"], inner["in_app"]) == (
        "post_entry", __name__, "test_live_exceptions.py", True)
    assert inner["abs_path"] == __file__
    assert inner["context_line"] == '        raise LedgerError(f"amount {amount} over the limit")'
    assert inner["pre_context"] == [
        "", "def post_entry(amount: int) -> None:",
        "    # a comment line: part of the context around the raise",
        "    limit = 100", "    if amount > limit:"]
    assert len(inner["post_context"]) == 5
    assert inner["post_context"][0].strip() == 'print("never reached")'
    assert "vars" not in inner  # local variables are never read
    outer = main["stacktrace"]["frames"]
    assert [f["function"] for f in outer] == ["_settle_in_span", "settle"]
    assert outer[-1]["context_line"].strip() == 'raise RuntimeError("settlement failed") from exc'
    trace_id = int(event["contexts"]["trace"]["trace_id"], 16)
    assert trace_id not in _live_exceptions.STASH._traces  # taken (freed) by the mapping


def test_without_the_wrapper_frames_are_parsed_from_the_text(
    without_wrapper: None, sentry_bridge: BridgeCapture,
) -> None:
    event = _settle_in_span(sentry_bridge)
    cause, main = event["exception"]["values"]
    inner = cause["stacktrace"]["frames"][-1]
    assert inner["function"] == "post_entry" and inner["in_app"] is True
    assert inner["context_line"] == 'raise LedgerError(f"amount {amount} over the limit")'
    assert "pre_context" not in inner and "module" not in inner
    assert main["stacktrace"]["frames"][-1]["function"] == "settle"
    assert not _live_exceptions.installed()


def _recorded(exc: BaseException, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        assert isinstance(span, Span)
        span.record_exception(exc, *args, **kwargs)
        events = span.events
    assert len(events) == 1  # OpenTelemetry's method ran exactly once
    (event,) = events
    return event.name, dict(event.attributes or {}), event.timestamp


def test_what_opentelemetry_records_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        settle(500)
    except RuntimeError as caught:
        exc = caught
    calls: list[tuple[Any, ...]] = []
    original = Span.record_exception
    _live_exceptions.uninstall()

    def spy(self: Span, *args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Span, "record_exception", spy)
    options: dict[str, Any] = {"attributes": {"order.id": "o-9"}, "timestamp": 1_700_000_000,
                               "escaped": True}
    plain = _recorded(exc, **options)
    assert _live_exceptions.install()
    try:
        assert not _live_exceptions.install()  # idempotent
        wrapped = _recorded(exc, **options)
        positional = _recorded(exc, {"order.id": "o-9"}, 1_700_000_000, True)
    finally:
        _live_exceptions.uninstall()
    assert Span.record_exception is spy  # uninstalled: what was there before is back
    assert wrapped == plain == positional
    assert plain[0] == "exception" and plain[2] == 1_700_000_000
    assert plain[1]["exception.escaped"] == "True" and plain[1]["order.id"] == "o-9"
    # the same arguments reached OpenTelemetry's method, once per call
    assert calls == [((exc,), options), ((exc,), options),
                     ((exc, {"order.id": "o-9"}, 1_700_000_000, True), {})]


def test_the_wrapper_swallows_its_own_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_internal_errors, "_seen", set())

    def broken(exc: BaseException) -> Any:
        raise ValueError("bug in the bridge")

    monkeypatch.setattr(_live_exceptions, "exception_chain", broken)
    _live_exceptions.install()
    try:
        with caplog.at_level(logging.DEBUG, logger="otel_sentry_bridge"):
            for _ in range(2):
                try:
                    settle(300)
                except RuntimeError as exc:
                    name, attrs, _ = _recorded(exc)
                    assert name == "exception" and attrs["exception.type"] == "RuntimeError"
    finally:
        _live_exceptions.uninstall()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "record_exception.live_frames" in errors[0].getMessage()


def test_no_reference_to_the_exception_is_kept(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")

    def job() -> weakref.ref[BaseException]:
        with tracer.start_as_current_span("job") as span:
            try:
                post_entry(1_000)
            except LedgerError as exc:
                span.record_exception(exc)
                return weakref.ref(exc)
        raise AssertionError("unreachable")

    ref = job()
    gc.collect()
    assert ref() is None
    (event,) = sentry_bridge.items("event")
    assert event["exception"]["values"][-1]["stacktrace"]["frames"][-1]["pre_context"]


def test_the_stash_is_bounded() -> None:
    try:
        settle(200)
    except RuntimeError as exc:
        chain, chars = exception_chain(exc)
    assert [item["source"] for item in chain] == [None, "__cause__"]
    assert chars > 0
    stash = LiveStash(max_entries=3, max_chars=10**9)
    for trace_id in range(5):
        stash.put(trace_id, 7, chain, chars)
    assert len(stash) == 3
    assert stash.take(0, {7}) == [] and stash.take(1, {7}) == []  # the oldest were evicted
    assert stash.take(4, {8}) == []  # another span of that trace: kept for its transaction
    assert stash.take(4, {7}) == [chain]
    assert len(stash) == 2
    probe = LiveStash()
    probe.put(0, 1, chain, chars)
    cost = probe._chars  # what one chain is counted as (its text, plus its objects)
    assert cost > chars
    small = LiveStash(max_entries=100, max_chars=2 * cost)
    for trace_id in range(4):
        small.put(trace_id, 1, chain, chars)
    assert len(small) == 2  # the size budget evicts too
    one_trace = LiveStash(max_entries=100, max_chars=3 * cost)
    for span_id in range(10):  # a long-lived root recording exception after exception
        one_trace.put(42, span_id, chain, chars)
    assert len(one_trace) == 3 and one_trace.evicted == 7
    assert one_trace.take(42, set(range(10))) == [chain] * 3  # the newest three


def test_deep_recursion_keeps_the_innermost_frames(sentry_bridge: BridgeCapture) -> None:
    def dive(depth: int) -> None:
        if depth == 0:
            raise LedgerError("bottom")
        dive(depth - 1)

    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("deep") as span:
        try:
            dive(400)
        except LedgerError as exc:
            span.record_exception(exc)
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert len(frames) == 250 and frames[-1]["function"] == "dive"
    with_context = [f for f in frames if "pre_context" in f]
    assert len(with_context) == _live_exceptions.CONTEXT_FRAMES
    assert with_context[-1] is frames[-1]
