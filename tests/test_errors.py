"""Error events from OpenTelemetry ``exception`` span events, through the real pipeline."""

from __future__ import annotations

import asyncio
import traceback

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode
from sentry_receiver import validate_event

from otel_sentry_bridge import capture_errors
from otel_sentry_bridge._mapping.errors import parse_traceback
from otel_sentry_bridge.testing import BridgeCapture


class PaymentDeclined(Exception):
    pass


def charge(amount: int) -> None:
    raise PaymentDeclined(f"card declined for {amount}")


def checkout(amount: int) -> None:
    try:
        charge(amount)
    except PaymentDeclined as exc:
        raise RuntimeError("checkout failed") from exc


def test_unhandled_exception_in_nested_spans_is_one_event(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    with pytest.raises(RuntimeError):
        with tracer.start_as_current_span(
            "GET /checkout", kind=SpanKind.SERVER,
            attributes={"http.method": "GET", "http.route": "/checkout",
                        "http.status_code": 500, "enduser.id": "u-42"},
        ):
            with tracer.start_as_current_span("checkout service"):
                with tracer.start_as_current_span("payment"):
                    checkout(12)
    (txn,) = sentry_bridge.transactions()
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    cause, main = event["exception"]["values"]
    assert (cause["type"], cause["value"]) == ("PaymentDeclined", "card declined for 12")
    assert (main["type"], main["module"], main["value"]) == (
        "RuntimeError", "builtins", "checkout failed")
    assert main["mechanism"] == {"type": "auto.otel.flask", "handled": False}
    frames = main["stacktrace"]["frames"]
    assert frames[-1]["function"] == "checkout" and frames[-1]["in_app"] is True
    # from the live traceback: the line as written (indented), with the lines around it
    assert frames[-1]["context_line"].strip() == 'raise RuntimeError("checkout failed") from exc'
    assert frames[-1]["pre_context"][-1].strip() == "except PaymentDeclined as exc:"
    assert frames[-1]["module"] == __name__
    assert cause["stacktrace"]["frames"][-1]["function"] == "charge"
    payment = next(s for s in txn["spans"] if s["description"] == "payment")
    assert event["contexts"]["trace"]["span_id"] == payment["span_id"]
    assert event["contexts"]["trace"]["trace_id"] == txn["contexts"]["trace"]["trace_id"]
    assert event["transaction"] == "GET /checkout"
    assert event["user"] == txn["user"] == {"id": "u-42"}
    assert event["environment"] == txn["environment"]


def test_recorded_and_handled_exception(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("nightly report") as span:
        try:
            charge(5)
        except PaymentDeclined as exc:
            span.record_exception(exc, attributes={"order.id": "o-1"})
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    (value,) = event["exception"]["values"]
    assert value["type"] == "PaymentDeclined" and value["module"] == "test_errors"
    assert value["mechanism"] == {"type": "manual", "handled": True}
    assert event["transaction"] == "nightly report"


def test_exception_event_without_stacktrace(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job") as span:
        span.add_event("exception", {"exception.type": "requests.exceptions.ConnectTimeout",
                                     "exception.message": "timed out"})
        span.set_status(Status(StatusCode.ERROR))
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    (value,) = event["exception"]["values"]
    assert (value["type"], value["module"]) == ("ConnectTimeout", "requests.exceptions")
    assert "stacktrace" not in value
    assert value["mechanism"]["handled"] is False


def test_parse_traceback_of_real_exceptions() -> None:
    try:
        checkout(1)
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(exc))
    values = parse_traceback(text)
    assert [v["type"] for v in values] == [f"{__name__}.PaymentDeclined", "RuntimeError"]
    assert values[1]["source"] == "__cause__"
    assert [f["function"] for f in values[1]["frames"]] == [
        "test_parse_traceback_of_real_exceptions", "checkout"]
    site = '  File "/usr/lib/python3/site-packages/requests/api.py", line 5, in get\n    x()\n'
    (parsed,) = parse_traceback("Traceback (most recent call last):\n" + site + "OSError: x")
    (frame,) = parsed["frames"]
    assert frame["in_app"] is False and frame["module"] == "requests.api"
    assert parse_traceback("") == [] and parse_traceback("garbage") != []


def test_breadcrumbs_are_the_trail_before_the_error(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    db = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    http = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.requests")
    with pytest.raises(PaymentDeclined):
        with tracer.start_as_current_span(
            "POST /pay", kind=SpanKind.SERVER,
            attributes={"http.method": "POST", "http.route": "/pay", "http.status_code": 500},
        ) as root:
            with db.start_as_current_span("SELECT shop", kind=SpanKind.CLIENT, attributes={
                    "db.system": "postgresql", "db.statement": "SELECT id FROM orders"}):
                pass
            root.add_event("auth.login", {"method": "password"})
            with http.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={
                    "http.method": "POST", "http.url": "https://psp.example/charge?key=s",
                    "http.status_code": 402}):
                pass
            charge(7)
    with db.start_as_current_span("not in this trace", kind=SpanKind.CLIENT,
                                  attributes={"db.system": "postgresql",
                                              "db.statement": "SELECT 2"}):
        pass
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    crumbs = event["breadcrumbs"]["values"]
    assert [(c["category"], c["message"]) for c in crumbs] == [
        ("query", "SELECT id FROM orders"),
        ("event", "auth.login"),
        ("httplib", "POST https://psp.example/charge"),
    ]
    assert crumbs[1]["data"] == {"method": "password"}
    assert crumbs[2]["type"] == "http" and crumbs[2]["level"] == "warning"
    assert crumbs[2]["data"]["http.response.status_code"] == 402
    assert [c["timestamp"] for c in crumbs] == sorted(c["timestamp"] for c in crumbs)
    assert all(c["timestamp"] <= event["timestamp"] for c in crumbs)


# ------------------------------------------------------------------ capture points
class OutOfStock(Exception):
    pass


@capture_errors("inventory.reserve", fingerprint=["inventory", "out-of-stock"], step="reserve")
def reserve(product_id: int, quantity: int) -> None:
    raise OutOfStock(f"product {product_id}: {quantity} wanted")


def test_capture_point_caught_by_caller_is_a_handled_event(
    sentry_bridge: BridgeCapture,
) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER, attributes={
            "http.method": "POST", "http.route": "/orders", "http.status_code": 409}):
        try:
            with capture_errors("checkout", order_id="o-7", amount=12.5, items=("a", "b")):
                reserve(3, 2)
        except OutOfStock:
            pass  # the caller handles it: the event must still be sent, as handled
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    (value,) = event["exception"]["values"]
    assert value["type"] == "OutOfStock" and value["mechanism"]["handled"] is True
    assert value["stacktrace"]["frames"][-1]["function"] == "reserve"
    assert event["fingerprint"] == ["inventory", "out-of-stock"]
    assert event["contexts"]["capture"] == {
        "name": "inventory.reserve", "step": "reserve", "order_id": "o-7", "amount": 12.5,
        "items": ["a", "b"]}
    assert event["transaction"] == "POST /orders"


def test_capture_point_unhandled_is_one_unhandled_event(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    with pytest.raises(OutOfStock):
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            reserve(3, 2)
    (event,) = sentry_bridge.items("event")
    (value,) = event["exception"]["values"]
    assert value["mechanism"]["handled"] is False  # it escaped the request
    assert event["contexts"]["capture"]["step"] == "reserve"  # the capture point's context
    assert event["fingerprint"] == ["inventory", "out-of-stock"]


def test_capture_errors_on_coroutines_and_without_a_span(sentry_bridge: BridgeCapture) -> None:
    @capture_errors(attempt=1)
    async def fetch() -> None:
        raise TimeoutError("slow upstream")

    with pytest.raises(TimeoutError):
        asyncio.run(fetch())  # no current span: nothing recorded, nothing raised by us
    tracer = sentry_bridge.tracer_provider.get_tracer("app")

    async def job() -> None:
        with tracer.start_as_current_span("sync job"):
            try:
                await fetch()
            except TimeoutError:
                pass

    asyncio.run(job())
    (event,) = sentry_bridge.items("event")
    assert event["contexts"]["capture"] == {"attempt": 1}
    assert "fingerprint" not in event
    with capture_errors():
        pass  # nothing happens without an exception
    with pytest.raises(KeyboardInterrupt):
        with capture_errors():
            raise KeyboardInterrupt  # not recorded, never swallowed


def test_nested_capture_points_innermost_wins(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("order flow"):
        try:
            with capture_errors("flow", step="outer", flow="checkout"):
                with tracer.start_as_current_span("payment"):
                    with capture_errors("payment", step="inner"):
                        charge(1)
        except PaymentDeclined:
            pass
    (event,) = sentry_bridge.items("event")
    assert event["contexts"]["capture"] == {"name": "payment", "step": "inner",
                                            "flow": "checkout"}


def test_the_bridges_own_frames_are_never_in_app() -> None:
    """From a source checkout (an editable install keeps the bridge out of site-packages) the
    bridge's and its instrumentations' frames are still not the application's."""
    from otel_sentry_bridge._mapping.frames import path_frame

    own = path_frame("/src/repo/otel_sentry_bridge/middleware.py", 10, "__call__")
    assert own["in_app"] is False
    assert own["module"] == "otel_sentry_bridge.middleware"
    instr = path_frame(
        "/src/repo/instrumentation/otel_sentry_bridge_instrumentation/websockets/_server.py",
        5, "handshake")
    assert instr["in_app"] is False
    assert instr["module"] == "otel_sentry_bridge_instrumentation.websockets._server"
    assert path_frame("/src/app/shop/views.py", 3, "index")["in_app"] is True
