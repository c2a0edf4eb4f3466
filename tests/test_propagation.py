"""SentryBridgePropagator: both header formats in, one set of headers out, the DSC frozen."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import SpanKind

from otel_sentry_bridge._dsc import DscDefaults
from otel_sentry_bridge._trace_headers import (
    backfill_rand,
    parse_sentry_trace,
    rand_from_trace_id,
    split_baggage,
)
from otel_sentry_bridge.propagation import SentryBridgePropagator
from otel_sentry_bridge.sampler import SentryBridgeSampler
from otel_sentry_bridge.testing import BridgeCapture

TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "b7ad6b7169203331"
PROP = SentryBridgePropagator()
SERVER = {"http.request.method": "GET", "http.route": "/checkout", "url.scheme": "http"}


@pytest.fixture
def bridge() -> Iterator[BridgeCapture]:
    capture = BridgeCapture(sampler=SentryBridgeSampler(), release="shop@1.0",
                            environment="prod")
    capture.pipeline.traces.defaults = DscDefaults("pubkey", "shop@1.0", "prod", "7")
    yield capture
    capture.close()


def serve(bridge: BridgeCapture, carrier: dict[str, str], outgoing_url: str = "http://x/y",
          ) -> dict[str, str]:
    """A server span continuing ``carrier``, making one outgoing request: its headers."""
    tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    token = context.attach(PROP.extract(carrier))
    sent: dict[str, str] = {}
    try:
        with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER,
                                          attributes=SERVER):
            with tracer.start_as_current_span(
                    "GET", kind=SpanKind.CLIENT,
                    attributes={"http.request.method": "GET", "url.full": outgoing_url}):
                PROP.inject(sent)
    finally:
        context.detach(token)
    return sent


def dsc_of(headers: dict[str, str]) -> dict[str, str]:
    return split_baggage(headers.get("baggage"))[0]


def envelope_dscs(bridge: BridgeCapture) -> list[dict[str, Any]]:
    return [header["trace"] for header, items in bridge.envelopes()
            if items and items[0][0]["type"] in ("transaction", "event")]


def test_head_of_trace_builds_one_dsc_for_requests_and_envelopes(bridge: BridgeCapture) -> None:
    sent = serve(bridge, {})
    trace_hex, span_hex, _flags = sent["traceparent"].split("-")[1:]
    assert sent["sentry-trace"] == f"{trace_hex}-{span_hex}-1"
    dsc = dsc_of(sent)
    assert dsc == {"trace_id": trace_hex, "public_key": "pubkey", "sample_rate": "1.0",
                   "sample_rand": dsc["sample_rand"], "sampled": "true", "org_id": "7",
                   "release": "shop@1.0", "environment": "prod",
                   "transaction": "GET /checkout"}
    assert float(dsc["sample_rand"]) == rand_from_trace_id(int(trace_hex, 16))
    assert envelope_dscs(bridge) == [dsc]  # the transaction's envelope carries the same DSC


def test_url_sourced_names_stay_out_of_the_dsc(bridge: BridgeCapture) -> None:
    tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.wsgi")
    sent: dict[str, str] = {}
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={
            "http.request.method": "GET", "url.path": "/users/42"}):
        PROP.inject(sent)
    assert "transaction" not in dsc_of(sent)
    assert "transaction" not in envelope_dscs(bridge)[0]


def test_incoming_sentry_trace_and_frozen_baggage_pass_on_unchanged(bridge: BridgeCapture) -> None:
    incoming = {
        "sentry-trace": f"{TRACE}-{SPAN}-1",
        "baggage": f"sentry-trace_id={TRACE},sentry-public_key=upstream,sentry-sample_rate=0.25,"
                   "sentry-sample_rand=0.125,sentry-sampled=true,sentry-transaction=GET%20%2F,"
                   "vendor=acme;prop=1,other=x%20y",
    }
    sent = serve(bridge, incoming)
    assert sent["sentry-trace"].startswith(TRACE) and sent["sentry-trace"].endswith("-1")
    assert sent["traceparent"].startswith(f"00-{TRACE}-")
    assert dsc_of(sent) == {"trace_id": TRACE, "public_key": "upstream", "sample_rate": "0.25",
                            "sample_rand": "0.125", "sampled": "true", "transaction": "GET /"}
    # third-party members kept: what OpenTelemetry's baggage propagator reads from them
    others = ",".join(split_baggage(sent["baggage"])[1])
    assert baggage.get_all(W3CBaggagePropagator().extract({"baggage": others})) == {
        "vendor": "acme;prop=1", "other": "x y"}
    (txn,) = bridge.transactions()
    assert txn["contexts"]["trace"]["parent_span_id"] == SPAN
    assert envelope_dscs(bridge) == [dsc_of(sent)]


def test_missing_sample_rand_is_backfilled_from_the_trace_id(bridge: BridgeCapture) -> None:
    sent = serve(bridge, {"sentry-trace": f"{TRACE}-{SPAN}-0",
                          "baggage": f"sentry-trace_id={TRACE},sentry-sample_rate=0.5"})
    rand = float(dsc_of(sent)["sample_rand"])
    assert rand == backfill_rand(int(TRACE, 16), False, 0.5)
    assert 0.5 <= rand < 1.0  # an unsampled parent at rate 0.5: in [0.5, 1)
    assert dsc_of(sent)["sample_rate"] == "0.5"  # never rewritten


def test_upstream_not_sampled_sends_nothing_and_says_so_downstream(bridge: BridgeCapture) -> None:
    sent = serve(bridge, {"sentry-trace": f"{TRACE}-{SPAN}-0"})
    assert sent["sentry-trace"].endswith("-0")
    assert sent["traceparent"].endswith("-00") or int(sent["traceparent"][-2:], 16) & 1 == 0
    assert bridge.transactions() == []
    counted = {(d["reason"], d["category"]): d["quantity"]
               for report in bridge.client_reports() for d in report["discarded_events"]}
    assert counted[("sample_rate", "transaction")] == 1
    assert counted[("sample_rate", "span")] == 2


def test_traceparent_alone_continues_the_trace(bridge: BridgeCapture) -> None:
    sent = serve(bridge, {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=1"})
    assert sent["sentry-trace"].startswith(TRACE)
    assert sent["tracestate"] == "vendor=1"
    dsc = dsc_of(sent)
    assert dsc["trace_id"] == TRACE and dsc["public_key"] == "pubkey"  # the DSC starts here
    (txn,) = bridge.transactions()
    assert txn["contexts"]["trace"]["trace_id"] == TRACE


def test_traceparent_wins_when_the_headers_disagree(bridge: BridgeCapture) -> None:
    # A W3C-only proxy between the caller and us: it rewrote traceparent, passed the rest on.
    sent = serve(bridge, {
        "traceparent": f"00-{OTHER}-{SPAN}-01",
        "sentry-trace": f"{TRACE}-{'1' * 16}-1",
        "baggage": f"sentry-trace_id={TRACE},sentry-public_key=upstream,sentry-sample_rate=0.1",
    })
    assert sent["sentry-trace"].startswith(OTHER)
    assert dsc_of(sent)["trace_id"] == OTHER  # the other trace's DSC is not carried over
    assert dsc_of(sent)["public_key"] == "pubkey"


def test_same_trace_different_parent_keeps_the_dsc(bridge: BridgeCapture) -> None:
    sent = serve(bridge, {
        "traceparent": f"00-{TRACE}-{SPAN}-01",
        "sentry-trace": f"{TRACE}-{'1' * 16}-1",
        "baggage": f"sentry-trace_id={TRACE},sentry-public_key=upstream,sentry-sample_rate=0.1",
    })
    assert dsc_of(sent)["public_key"] == "upstream"
    (txn,) = bridge.transactions()
    assert txn["contexts"]["trace"]["parent_span_id"] == SPAN  # traceparent's parent


@pytest.mark.parametrize("carrier", [
    {"sentry-trace": "not-a-trace"},
    {"sentry-trace": "0" * 32 + "-" + "0" * 16 + "-1"},
    {"traceparent": "00-zzzz-1111-01"},
    {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
    {"sentry-trace": "x" * 10_000, "baggage": "sentry-trace_id=" + "y" * 10_000},
    {"baggage": ",,,=,sentry-=1,sentry-%zz=%zz"},
])
def test_malformed_headers_start_a_new_trace(bridge: BridgeCapture,
                                             carrier: dict[str, str]) -> None:
    sent = serve(bridge, carrier)
    assert TRACE not in sent["sentry-trace"]
    (txn,) = bridge.transactions()
    assert "parent_span_id" not in txn["contexts"]["trace"]


def test_deferred_decision_is_made_here(bridge: BridgeCapture) -> None:
    sent = serve(bridge, {"sentry-trace": f"{TRACE}-{SPAN}",
                          "baggage": f"sentry-trace_id={TRACE},sentry-sample_rand=0.9"})
    assert sent["sentry-trace"].endswith("-1")  # rate 1.0 here: sampled
    assert len(bridge.transactions()) == 1


def test_org_mismatch_starts_a_new_trace(bridge: BridgeCapture) -> None:
    carrier = {"sentry-trace": f"{TRACE}-{SPAN}-1",
               "baggage": f"sentry-trace_id={TRACE},sentry-org_id=99"}
    assert TRACE not in serve(bridge, carrier)["sentry-trace"]
    assert TRACE in serve(bridge, {"sentry-trace": f"{TRACE}-{SPAN}-1"})["sentry-trace"]


def test_strict_continuation_needs_an_equal_org_id() -> None:
    capture = BridgeCapture(sampler=SentryBridgeSampler(), strict_trace_continuation=True)
    capture.pipeline.traces.defaults = DscDefaults("pubkey", None, None, "7")
    try:
        assert TRACE not in serve(capture, {"sentry-trace": f"{TRACE}-{SPAN}-1"})["sentry-trace"]
        same = {"sentry-trace": f"{TRACE}-{SPAN}-1",
                "baggage": f"sentry-trace_id={TRACE},sentry-org_id=7"}
        assert TRACE in serve(capture, same)["sentry-trace"]
    finally:
        capture.close()


def test_propagation_targets_limit_injection() -> None:
    capture = BridgeCapture(sampler=SentryBridgeSampler(),
                            trace_propagation_targets=(r"^http://internal\.",))
    try:
        assert serve(capture, {}, "http://elsewhere.example/") == {}
        sent = serve(capture, {}, "http://internal.svc/pay")
        assert {"traceparent", "sentry-trace", "baggage"} <= set(sent)
    finally:
        capture.close()


def test_business_baggage_and_the_dsc_share_one_header(bridge: BridgeCapture) -> None:
    tracer = bridge.tracer_provider.get_tracer("app")
    sent: dict[str, str] = {}
    token = context.attach(baggage.set_baggage("tenant.id", "acme"))
    try:
        with tracer.start_as_current_span("job"):
            PROP.inject(sent)
    finally:
        context.detach(token)
    sentry, others = split_baggage(sent["baggage"])
    assert others == ["tenant.id=acme"] and sentry["trace_id"]
    assert sent["baggage"].count("sentry-trace_id=") == 1


def test_extract_keeps_every_member_in_otel_baggage() -> None:
    ctx = PROP.extract({"baggage": "sentry-trace_id=abc,tenant.id=acme"})
    assert baggage.get_all(ctx) == {"sentry-trace_id": "abc", "tenant.id": "acme"}
    assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_no_span_injects_only_baggage() -> None:
    sent: dict[str, str] = {}
    PROP.inject(sent, baggage.set_baggage("k", "v"))
    assert sent == {"baggage": "k=v"}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=300), st.text(max_size=100))
def test_hostile_headers_never_raise(sentry_trace: str, bag: str, parent: str) -> None:
    ctx = PROP.extract({"sentry-trace": sentry_trace, "baggage": bag, "traceparent": parent})
    out: dict[str, str] = {}
    PROP.inject(out, ctx)
    assert set(out) <= {"traceparent", "tracestate", "sentry-trace", "baggage"}
    parse_sentry_trace(sentry_trace)
    split_baggage(bag)


def test_parse_sentry_trace_forms() -> None:
    parsed = parse_sentry_trace(f" {TRACE}-{SPAN}-1 ")
    assert parsed is not None and parsed.sampled is True
    parsed = parse_sentry_trace(f",{TRACE}-{SPAN},other")
    assert parsed is not None and parsed.sampled is None
    parsed = parse_sentry_trace(f"00-{TRACE}-{SPAN}-00")  # a W3C-looking value is unwrapped
    assert parsed is not None and parsed.sampled is False
    assert parse_sentry_trace(f"{TRACE}") is None


def test_sample_rand_from_trace_id_agrees_with_otel_ratio_sampler() -> None:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
    for rate in (0.1, 0.25, 0.5, 0.9):
        otel = TraceIdRatioBased(rate)
        for low in range(0, 2**64, 2**64 // 997):
            trace_id = (0x1234 << 64) | low
            ours = rand_from_trace_id(trace_id) < rate
            theirs = otel.should_sample(None, trace_id, "x").decision.is_sampled()
            assert ours == theirs, (rate, hex(trace_id))
    assert re.fullmatch(r"0\.\d{6}", f"{rand_from_trace_id(2**64 - 1):.6f}")


def test_a_dsc_naming_another_trace_is_dropped_even_when_the_headers_agree(
    bridge: BridgeCapture,
) -> None:
    sent = serve(bridge, {
        "traceparent": f"00-{TRACE}-{SPAN}-01", "sentry-trace": f"{TRACE}-{SPAN}-1",
        "baggage": f"sentry-trace_id={OTHER},sentry-public_key=stale,sentry-org_id=99"})
    assert sent["sentry-trace"].startswith(TRACE)  # continued: the stale org id is ignored
    assert dsc_of(sent)["public_key"] == "pubkey"


def test_big_business_baggage_never_cuts_the_dsc(bridge: BridgeCapture) -> None:
    tracer = bridge.tracer_provider.get_tracer("app")
    ctx = context.get_current()
    for n in range(200):
        ctx = baggage.set_baggage(f"k{n}", "v" * 40, ctx)
    sent: dict[str, str] = {}
    token = context.attach(ctx)
    try:
        with tracer.start_as_current_span("job"):
            PROP.inject(sent)
    finally:
        context.detach(token)
    sentry, others = split_baggage(sent["baggage"])
    assert {"trace_id", "public_key", "sample_rate", "sample_rand", "sampled",
            "transaction"} <= set(sentry)
    assert 0 < len(others) < 200 and len(sent["baggage"]) <= 8192


def test_targets_set_and_no_url_known_writes_nothing() -> None:
    capture = BridgeCapture(sampler=SentryBridgeSampler(), traces_sample_rate=0.0,
                            unsampled_errors=False, trace_propagation_targets=("internal",))
    try:
        sent: dict[str, str] = {}
        with capture.tracer_provider.get_tracer("app").start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"url.full": "http://internal/x"}):
            PROP.inject(sent)  # a dropped span has no attributes: its URL is unknown
        assert sent == {}
    finally:
        capture.close()


def test_without_a_dsn_an_upstream_dsc_is_passed_on_but_none_is_made() -> None:
    capture = BridgeCapture(sampler=SentryBridgeSampler())
    capture.pipeline.enabled = False  # as without SENTRY_DSN
    try:
        assert "baggage" not in serve(capture, {})
        upstream = {"sentry-trace": f"{TRACE}-{SPAN}-1",
                    "baggage": f"sentry-trace_id={TRACE},sentry-public_key=up"}
        assert dsc_of(serve(capture, upstream))["public_key"] == "up"
    finally:
        capture.close()
