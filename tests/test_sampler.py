"""SentryBridgeSampler: Sentry's sampling semantics on a real TracerProvider."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sentry_receiver import validate_event

from otel_sentry_bridge import _internal_errors
from otel_sentry_bridge._trace_headers import rand_from_trace_id, split_baggage
from otel_sentry_bridge.propagation import SentryBridgePropagator
from otel_sentry_bridge.sampler import SentryBridgeSampler, sentry_bridge_sampler
from otel_sentry_bridge.testing import BridgeCapture
from otel_sentry_bridge.tracing_setup import install_propagator, install_sampler

PROP = SentryBridgePropagator()
SERVER = {"http.request.method": "GET", "http.route": "/items", "url.scheme": "http"}


def capture(**settings: Any) -> BridgeCapture:
    return BridgeCapture(sampler=SentryBridgeSampler(), **settings)


@pytest.fixture
def hook_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("bridge_test_hooks")
    module.calls = []  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def counted(bridge: BridgeCapture) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for report in bridge.client_reports():
        for entry in report["discarded_events"]:
            key = (entry["reason"], entry["category"])
            out[key] = out.get(key, 0) + entry["quantity"]
    return out


def test_rate_decides_by_sample_rand_of_the_trace_id() -> None:
    bridge = capture(traces_sample_rate=0.3)
    try:
        tracer = bridge.tracer_provider.get_tracer("app")
        expected = 0
        for _ in range(300):
            with tracer.start_as_current_span("job") as span:
                trace_id = span.get_span_context().trace_id
                sampled = span.get_span_context().trace_flags.sampled
                assert sampled == (rand_from_trace_id(trace_id) < 0.3)
                expected += sampled
                with tracer.start_as_current_span("child") as child:
                    assert child.get_span_context().trace_flags.sampled == sampled
        assert len(bridge.transactions()) == expected
        assert 50 < expected < 130
        assert counted(bridge)[("sample_rate", "transaction")] == 300 - expected
    finally:
        bridge.close()


def test_traces_sampler_gets_attributes_and_parent_and_wins(
    hook_module: types.ModuleType,
) -> None:
    def traces_sampler(ctx: dict[str, Any]) -> float:
        hook_module.calls.append(ctx)
        ctx["attributes"]["mutated"] = True  # must not reach the span
        return 0.0 if ctx.get("http.route") == "/health" else 1.0

    hook_module.traces_sampler = traces_sampler  # type: ignore[attr-defined]
    bridge = capture(traces_sampler="bridge_test_hooks:traces_sampler")
    try:
        tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
        attributes = dict(SERVER)
        with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER,
                                          attributes=attributes):
            pass
        with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER,
                                          attributes={**SERVER, "http.route": "/health"}):
            pass
        token = context.attach(PROP.extract({"sentry-trace": "a" * 32 + "-" + "b" * 16 + "-0",
                                             "baggage": "sentry-sample_rate=0.5,"
                                                        f"sentry-trace_id={'a' * 32}"}))
        try:
            with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER,
                                              attributes=SERVER):
                pass
        finally:
            context.detach(token)
        assert attributes == SERVER
        first, _health, continued = hook_module.calls
        assert first["attributes"] == {**SERVER, "mutated": True}
        assert first["http.route"] == "/items" and first["kind"] == "server"
        assert first["parent_sampled"] is None and first["name"] == "GET /items"
        assert continued["parent_sampled"] is False and continued["parent_sample_rate"] == 0.5
        names = [t["transaction"] for t in bridge.transactions()]
        assert names == ["GET /items", "GET /items"]  # the hook overrode the parent's -0
        assert all("mutated" not in t["contexts"]["trace"].get("data", {})
                   for t in bridge.transactions())
    finally:
        bridge.close()


@pytest.mark.parametrize("behaviour", ["raises", "nonsense", "missing"])
def test_a_broken_traces_sampler_falls_back_to_the_rate(
    hook_module: types.ModuleType, behaviour: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def traces_sampler(ctx: dict[str, Any]) -> Any:
        if behaviour == "raises":
            raise RuntimeError("hook bug")
        return "yes please"

    hook_module.traces_sampler = traces_sampler  # type: ignore[attr-defined]
    name = "traces_sampler" if behaviour != "missing" else "nope"
    bridge = capture(traces_sampler=f"bridge_test_hooks:{name}", traces_sample_rate=1.0)
    try:
        tracer = bridge.tracer_provider.get_tracer("app")
        monkeypatch.setattr(_internal_errors, "_WARNED", set())
        with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
            for _ in range(3):
                with tracer.start_as_current_span("job"):
                    pass
        assert len(bridge.transactions()) == 3
        warnings = [r.getMessage() for r in caplog.records if "traces_sampler" in r.getMessage()
                    or "TRACES_SAMPLER" in r.getMessage()]
        assert len(warnings) == 1, warnings  # said once, not per span
    finally:
        bridge.close()


def test_options_and_head_can_be_skipped() -> None:
    bridge = capture(skip_options_head=True)
    try:
        tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
        for method in ("OPTIONS", "HEAD", "GET"):
            with tracer.start_as_current_span(f"{method} /items", kind=SpanKind.SERVER,
                                              attributes={**SERVER,
                                                          "http.request.method": method}):
                with tracer.start_as_current_span("SELECT") as child:
                    # the children of a skipped request are dropped with it
                    assert child.is_recording() == (method == "GET")
        assert [t["transaction"] for t in bridge.transactions()] == ["GET /items"]
        assert counted(bridge) == {("sample_rate", "transaction"): 2}  # once per request
    finally:
        bridge.close()


def test_errors_of_unsampled_traces_still_reach_sentry() -> None:
    bridge = capture(traces_sample_rate=0.0)
    try:
        tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
        with pytest.raises(KeyError):
            with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER,
                                              attributes=SERVER) as span:
                assert span.is_recording() and not span.get_span_context().trace_flags.sampled
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                                  attributes={"db.system": "postgresql",
                                                              "db.statement": "SELECT 1"}):
                    pass
                raise KeyError("sku")
        with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER,
                                          attributes=SERVER):
            pass
        assert bridge.transactions() == []
        (error,) = bridge.items("event")
        assert validate_event(error) == []
        assert error["transaction"] == "GET /items"
        assert error["exception"]["values"][-1]["type"] == "KeyError"
        assert [c["category"] for c in error["breadcrumbs"]["values"]] == ["query"]
        headers = [h for h, items in bridge.envelopes() if items[0][0]["type"] == "event"]
        assert headers[0]["trace"]["sampled"] == "false"
        assert headers[0]["trace"]["trace_id"] == error["contexts"]["trace"]["trace_id"]
        assert counted(bridge) == {("sample_rate", "transaction"): 2,
                                   ("sample_rate", "span"): 3}
    finally:
        bridge.close()


def test_unsampled_errors_off_drops_at_the_sampler() -> None:
    bridge = capture(traces_sample_rate=0.0, unsampled_errors=False)
    try:
        tracer = bridge.tracer_provider.get_tracer("app")
        with pytest.raises(KeyError):
            with tracer.start_as_current_span("job") as span:
                assert not span.is_recording()
                raise KeyError("x")
        assert bridge.items("event") == [] and bridge.transactions() == []
        assert counted(bridge) == {("sample_rate", "transaction"): 1}
    finally:
        bridge.close()


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_spans_keep_the_callers_attributes(rate: float) -> None:
    """OpenTelemetry starts a span with the attributes the sampler returns: recording spans
    (sampled or not) must get the caller's, unchanged."""
    bridge = capture(traces_sample_rate=rate)
    try:
        attributes = {"http.route": "/a", "n": 1}
        with bridge.tracer_provider.get_tracer("app").start_as_current_span(
                "job", attributes=attributes) as span:
            assert dict(span.attributes or {}) == {"http.route": "/a", "n": 1}
        assert attributes == {"http.route": "/a", "n": 1}
        result = SentryBridgeSampler().should_sample(None, 0x1234 << 64, "x",
                                                     attributes=attributes)
        assert result.decision is (Decision.RECORD_AND_SAMPLE if rate else Decision.RECORD_ONLY)
    finally:
        bridge.close()


def test_entry_point_factory_takes_the_rate_argument(caplog: pytest.LogCaptureFixture) -> None:
    assert sentry_bridge_sampler("0.25").sample_rate == 0.25  # type: ignore[attr-defined]
    assert sentry_bridge_sampler("").sample_rate is None  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
        assert sentry_bridge_sampler("lots").sample_rate is None  # type: ignore[attr-defined]
    assert "OTEL_TRACES_SAMPLER_ARG" in caplog.text


def test_install_sampler_honours_otel_traces_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert not install_sampler(provider)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sentry_bridge")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    assert install_sampler(provider) and not install_sampler(provider)
    assert isinstance(provider.sampler, SentryBridgeSampler)
    assert provider.sampler.sample_rate == 0.1


class _Custom(TextMapPropagator):
    """Stands for a third propagator (b3, jaeger...): kept, before ours."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        return context

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return set()


def test_install_propagator(monkeypatch: pytest.MonkeyPatch) -> None:
    before = propagate.get_global_textmap()
    try:
        monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
        assert install_propagator()
        assert isinstance(propagate.get_global_textmap(), SentryBridgePropagator)
        monkeypatch.setenv("OTEL_PROPAGATORS", "baggage,sentry_bridge,tracecontext,custom")
        ours = SentryBridgePropagator()
        custom = _Custom()
        propagate.set_global_textmap(CompositePropagator(
            [W3CBaggagePropagator(), ours, TraceContextTextMapPropagator(), custom]))
        assert install_propagator()
        composite = propagate.get_global_textmap()
        assert composite._propagators == [custom, ours]  # type: ignore[attr-defined]
        assert not install_propagator()  # already in order
        monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
        only_w3c = CompositePropagator([TraceContextTextMapPropagator()])
        propagate.set_global_textmap(only_w3c)
        assert not install_propagator()
        assert propagate.get_global_textmap() is only_w3c
    finally:
        propagate.set_global_textmap(before)


def test_head_dsc_in_outgoing_baggage_matches_the_decision() -> None:
    bridge = capture(traces_sample_rate=0.5)
    try:
        tracer = bridge.tracer_provider.get_tracer("app")
        for _ in range(20):
            with tracer.start_as_current_span("job") as span:
                sent: dict[str, str] = {}
                PROP.inject(sent)
                dsc = split_baggage(sent["baggage"])[0]
                sampled = span.get_span_context().trace_flags.sampled
                assert dsc["sampled"] == ("true" if sampled else "false")
                assert dsc["sample_rate"] == "0.5"
                assert (float(dsc["sample_rand"]) < 0.5) == sampled
                assert sent["sentry-trace"].endswith("-1" if sampled else "-0")
    finally:
        bridge.close()
