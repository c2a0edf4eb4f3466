"""Transaction measurements: ``sentry.measurement.*`` span attributes, ``sentry.measurement``
span events and ``set_measurement``, through a real TracerProvider and the bridge's processor.
Every transaction must pass Relay's normalizer without errors and keep its measurements."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sentry_receiver import normalize_event, validate_event

from otel_sentry_bridge import set_measurement
from otel_sentry_bridge._mapping.measurements import (
    MAX_NAME_AND_UNIT,
    UNITS,
    measurement_name,
    measurement_unit,
    measurement_value,
)
from otel_sentry_bridge.console import render_transaction
from otel_sentry_bridge.testing import BridgeCapture

INVALID = "sentry_bridge.invalid."


def one_transaction(capture: BridgeCapture) -> dict[str, Any]:
    (txn,) = capture.transactions()
    assert validate_event(txn) == [], txn
    sent = txn.get("measurements")
    if sent:  # Relay keeps every measurement the bridge sends, unchanged
        kept = normalize_event(txn)["measurements"]
        assert {k: m["unit"] for k, m in kept.items()} == {k: m["unit"] for k, m in sent.items()}
        for name, measurement in sent.items():  # Relay's float parsing rounds huge exponents
            assert math.isclose(kept[name]["value"], measurement["value"], rel_tol=1e-12)
    return txn


def tracer(capture: BridgeCapture) -> trace.Tracer:
    return capture.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")


def test_attributes_become_measurements(sentry_bridge: BridgeCapture) -> None:
    attrs = {
        "sentry.measurement.order.items": 3,
        "sentry.measurement.payment.wait": 182.5,
        "sentry.measurement.payment.wait.unit": "millisecond",
        "sentry.measurement.body": 2048,
        "sentry.measurement.body.unit": "By",  # OpenTelemetry's UCUM spelling
        "sentry.measurement.hit_rate": 0.25,
        "sentry.measurement.hit_rate.unit": "Ratio",
    }
    with tracer(sentry_bridge).start_as_current_span("checkout", attributes=attrs):
        pass
    txn = one_transaction(sentry_bridge)
    assert txn["measurements"] == {
        "order.items": {"value": 3.0, "unit": "none"},
        "payment.wait": {"value": 182.5, "unit": "millisecond"},
        "body": {"value": 2048.0, "unit": "byte"},
        "hit_rate": {"value": 0.25, "unit": "ratio"},
    }
    # Span data keeps the attributes as they were; they never become tags.
    assert txn["contexts"]["trace"]["data"]["sentry.measurement.order.items"] == 3
    assert not any("measurement" in key for key in txn.get("tags", {}))


def test_set_measurement_on_root_and_children(sentry_bridge: BridgeCapture) -> None:
    with tracer(sentry_bridge).start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        set_measurement("order.items", 2)
        with tracer(sentry_bridge).start_as_current_span("load"):
            set_measurement("order.items", 99)  # the root's value wins
            set_measurement("rows.read", 40)
            set_measurement("query.time", 1.5, "second")
        with tracer(sentry_bridge).start_as_current_span("render"):
            set_measurement("rows.read", 7)  # the first span that has it wins
    txn = one_transaction(sentry_bridge)
    assert txn["measurements"] == {
        "order.items": {"value": 2.0, "unit": "none"},
        "rows.read": {"value": 40.0, "unit": "none"},
        "query.time": {"value": 1.5, "unit": "second"},
    }


def test_set_measurement_again_replaces_value_and_unit(sentry_bridge: BridgeCapture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_sentry_bridge import _internal_errors
    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    with tracer(sentry_bridge).start_as_current_span("job"):
        set_measurement("wait", 5, "millisecond")
        set_measurement("wait", 6)  # no unit now: not the earlier one
        set_measurement(None, object())  # type: ignore[arg-type]  # never raises
    assert one_transaction(sentry_bridge)["measurements"]["wait"] == {"value": 6.0,
                                                                     "unit": "none"}


def test_set_measurement_without_a_recording_span_is_a_no_op() -> None:
    assert not trace.get_current_span().is_recording()
    set_measurement("order.items", 2)  # nothing to record it on: no error


def test_span_events_become_measurements(sentry_bridge: BridgeCapture) -> None:
    with tracer(sentry_bridge).start_as_current_span("job") as root:
        root.add_event("sentry.measurement", {"name": "Queue.Wait", "value": 4, "unit": "s"})
        with tracer(sentry_bridge).start_as_current_span("step") as child:
            child.add_event("sentry.measurement", {"name": "queue.wait", "value": 9})
            child.add_event("sentry.measurement", {"name": "batch.size", "value": 64.0})
            child.add_event("progress", {"name": "batch.size", "value": 1})  # other events
        # A name ending in ".unit" cannot be an attribute: set_measurement uses an event.
        set_measurement("per.unit", 3.5, "percent")
    txn = one_transaction(sentry_bridge)
    assert txn["measurements"] == {
        "queue.wait": {"value": 4.0, "unit": "second"},
        "per.unit": {"value": 3.5, "unit": "percent"},
        "batch.size": {"value": 64.0, "unit": "none"},
    }


def test_names_are_normalized_like_relay(sentry_bridge: BridgeCapture) -> None:
    attrs = {"sentry.measurement.DB-Rows": 5, "sentry.measurement.  Cache.Hits ": 1}
    with tracer(sentry_bridge).start_as_current_span("job", attributes=attrs):
        pass
    txn = one_transaction(sentry_bridge)
    assert txn["measurements"] == {
        "db_rows": {"value": 5.0, "unit": "none"},
        "cache.hits": {"value": 1.0, "unit": "none"},
    }


def test_invalid_measurements_are_set_aside(sentry_bridge: BridgeCapture) -> None:
    long_name = "a" * (MAX_NAME_AND_UNIT - len("millisecond") + 1)
    attrs: dict[str, Any] = {
        "sentry.measurement.ok": 1,
        "sentry.measurement.flag": True,  # bools are not numbers
        "sentry.measurement.text": "12",  # neither are strings
        "sentry.measurement.nan": math.nan,
        "sentry.measurement.inf": -math.inf,
        "sentry.measurement.list": [1, 2],
        "sentry.measurement.has space": 1,
        "sentry.measurement.9lives": 9,  # must start with a letter
        "sentry.measurement._private": 1,
        "sentry.measurement.": 1,  # no name
        f"sentry.measurement.{long_name}": 1,
        f"sentry.measurement.{long_name}.unit": "millisecond",
        "sentry.measurement.distance": 3,
        "sentry.measurement.distance.unit": "furlong",  # not one of Sentry's units
        "sentry.measurement.weight": 3,
        "sentry.measurement.weight.unit": 7,
        "sentry.measurement.orphan.unit": "byte",  # a unit without a value
    }
    with tracer(sentry_bridge).start_as_current_span("job", attributes=attrs) as span:
        span.add_event("sentry.measurement", {"name": "speed", "value": 3, "unit": "knot"})
        span.add_event("sentry.measurement", {"name": "bad name", "value": 1})
        span.add_event("sentry.measurement", {"value": 1})
        span.add_event("sentry.measurement", {"name": "empty"})
    txn = one_transaction(sentry_bridge)
    assert txn["measurements"] == {"ok": {"value": 1.0, "unit": "none"}}
    data = txn["contexts"]["trace"]["data"]
    set_aside = {k[len(INVALID):]: v for k, v in data.items() if k.startswith(INVALID)}
    assert set_aside == {
        "sentry.measurement.flag": "True",
        "sentry.measurement.text": "12",
        "sentry.measurement.nan": "nan",
        "sentry.measurement.inf": "-inf",
        "sentry.measurement.list": "[1, 2]",
        "sentry.measurement.has space": "1",
        "sentry.measurement.9lives": "9",
        "sentry.measurement._private": "1",
        "sentry.measurement.": "1",
        f"sentry.measurement.{long_name}": "1",
        f"sentry.measurement.{long_name}.unit": "millisecond",
        "sentry.measurement.distance": "3",
        "sentry.measurement.distance.unit": "furlong",
        "sentry.measurement.weight": "3",
        "sentry.measurement.weight.unit": "7",
        "sentry.measurement.orphan.unit": "byte",
        "sentry.measurement.speed": "3 knot",
        "sentry.measurement.bad name": "1",
        "sentry.measurement": "1",
        "sentry.measurement.empty": "<no value>",
    }
    assert "sentry.measurement.ok" in data
    assert not any(k.startswith("sentry.measurement.") and k != "sentry.measurement.ok"
                   for k in data)


def test_no_measurements_no_field(sentry_bridge: BridgeCapture) -> None:
    with tracer(sentry_bridge).start_as_current_span("job") as span:
        span.add_event("progress", {"value": 1})
    assert "measurements" not in one_transaction(sentry_bridge)


def test_event_measurements_do_not_leak_between_equal_spans() -> None:
    """Equal spans share a template; a span's own events must stay its own."""
    capture = BridgeCapture()
    try:
        for with_events in (True, False, True):
            with tracer(capture).start_as_current_span("job"):
                with tracer(capture).start_as_current_span("step") as child:
                    if with_events:
                        child.add_event("sentry.measurement", {"name": "n", "value": 1})
                        child.add_event("sentry.measurement", {"name": "bad!", "value": 1})
            capture.flush()
        first, second, third = capture.transactions()
        for txn in (first, second, third):
            assert validate_event(txn) == []
        assert first["measurements"] == third["measurements"] == {
            "n": {"value": 1.0, "unit": "none"}}
        assert "measurements" not in second
        (step,) = second["spans"]
        assert not any(k.startswith(INVALID) for k in step["data"])
        assert INVALID + "sentry.measurement.bad!" in third["spans"][0]["data"]
    finally:
        capture.close()


def test_units() -> None:
    assert len(UNITS) == 8 + 14 + 2 + 1
    assert measurement_unit(None) == measurement_unit("") == measurement_unit("1") == "none"
    assert measurement_unit("ms") == measurement_unit("MilliSecond") == "millisecond"
    assert measurement_unit("KiBy") == "kibibyte" and measurement_unit("exbibyte") == "exbibyte"
    assert measurement_unit("%") == "percent" and measurement_unit("weeks") is None
    assert measurement_name("A.b-C_9") == "a.b_c_9" and measurement_name(3) is None
    assert measurement_value(True) is None and measurement_value(1 << 2000) is None
    assert measurement_value(-2) == -2.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(
    st.one_of(st.sampled_from(["a", "B-c", "x.unit", "1", "", "é", "q.unit.unit"]),
              st.text(max_size=12)).map(lambda s: "sentry.measurement." + s),
    st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=8),
              st.sampled_from(sorted(UNITS)), st.lists(st.integers(), max_size=2)),
    max_size=6,
))
def test_any_attributes_map_and_pass_relay(attrs: dict[str, Any]) -> None:
    capture = BridgeCapture()
    try:
        with tracer(capture).start_as_current_span("job", attributes=attrs):
            pass
        txn = one_transaction(capture)
        for name, measurement in txn.get("measurements", {}).items():
            assert measurement_name(name) == name
            assert measurement["unit"] in UNITS
            assert math.isfinite(measurement["value"])
    finally:
        capture.close()


@pytest.mark.parametrize("value", [0, -1, 1e300, 2**63])
def test_extreme_values(sentry_bridge: BridgeCapture, value: float) -> None:
    with tracer(sentry_bridge).start_as_current_span("job"):
        set_measurement("v", value)
    assert one_transaction(sentry_bridge)["measurements"]["v"]["value"] == float(value)


def test_terminal_waterfall_shows_measurements(sentry_bridge: BridgeCapture) -> None:
    with tracer(sentry_bridge).start_as_current_span("POST /orders"):
        set_measurement("order.items", 2)
        set_measurement("payment.wait", 182.5, "ms")
    text = render_transaction(one_transaction(sentry_bridge), 100)
    assert text.splitlines()[1] == "  measurements: order.items=2, payment.wait=182.5 millisecond"
