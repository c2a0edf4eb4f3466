"""Ignore rules and before_send hooks, through the real pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from otel_sentry_bridge.config import load_config
from otel_sentry_bridge.testing import BridgeCapture

CALLS: list[str] = []


def scrub_order(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    CALLS.append(event.get("type", "event"))
    if event.get("transaction") == "GET /drop":
        return None
    event.setdefault("tags", {})["scrubbed"] = "yes"
    return event


def broken(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    event["tags"] = {"half": "changed"}
    raise RuntimeError("hook bug")


def not_a_dict(event: dict[str, Any], hint: dict[str, Any]) -> str:
    return "oops"


def request(capture: BridgeCapture, path: str, status: int = 200,
            error: Exception | None = None) -> None:
    """A server request: its transaction is named ``GET <path>``."""
    tracer = capture.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={
            "http.method": "GET", "http.target": path, "http.status_code": status}) as span:
        with tracer.start_as_current_span("work"):
            pass
        if error is not None:
            span.record_exception(error)


def dropped(capture: BridgeCapture) -> dict[tuple[str, str], int]:
    return dict(capture.pipeline.drops.totals)


def test_ignore_rules() -> None:
    capture = BridgeCapture(ignore_errors=("KeyError", "requests.exceptions.ConnectTimeout"),
                            ignore_transactions=("GET /health*",),
                            ignore_status_codes=((404, 404), (500, 599)))
    try:
        request(capture, "/health/live")
        request(capture, "/missing", 404)
        request(capture, "/broken", 503)
        request(capture, "/ok", 200, KeyError("k"))
        request(capture, "/ok2", 200, ValueError("v"))
        assert sorted(t["transaction"] for t in capture.transactions()) == [
            "GET /ok", "GET /ok2"]
        assert [e["exception"]["values"][-1]["type"] for e in capture.items("event")] == [
            "ValueError"]
        drops = dropped(capture)
        assert drops[("event_processor", "transaction")] == 3
        assert drops[("event_processor", "span")] == 6
        assert drops[("event_processor", "error")] == 1
    finally:
        capture.close()


def test_before_send_hooks_change_or_drop() -> None:
    CALLS.clear()
    capture = BridgeCapture(before_send=f"{__name__}:scrub_order",
                            before_send_transaction=f"{__name__}.scrub_order")
    try:
        request(capture, "/keep", error=ValueError("v"))
        request(capture, "/drop")
        (txn,) = capture.transactions()
        (event,) = capture.items("event")
        assert txn["tags"]["scrubbed"] == "yes" and event["tags"]["scrubbed"] == "yes"
        assert sorted(CALLS) == ["event", "transaction", "transaction"]
        assert dropped(capture)[("before_send", "transaction")] == 1
    finally:
        capture.close()


@pytest.mark.parametrize("hook", ["broken", "not_a_dict"])
def test_a_failing_hook_never_stops_sending(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    capture = BridgeCapture(before_send_transaction=f"{__name__}:{hook}")
    try:
        with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
            request(capture, "/first")
            request(capture, "/second")
            txns = capture.transactions()
        assert sorted(t["transaction"] for t in txns) == ["GET /first", "GET /second"]
        assert all("half" not in t.get("tags", {}) for t in txns)  # sent as before the hook
        assert sum("sent unmodified" in r.getMessage() for r in caplog.records) == 1
    finally:
        capture.close()


def test_a_hook_that_cannot_be_imported_is_reported_and_unused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
        capture = BridgeCapture(before_send="no_such_module:hook")
    try:
        request(capture, "/a")
        assert len(capture.transactions()) == 1
        assert any("cannot be imported" in r.getMessage() for r in caplog.records)
    finally:
        capture.close()


@pytest.mark.parametrize(("env", "value"), [
    ("SENTRY_BRIDGE_IGNORE_STATUS_CODES", "404,5xx"),
    ("SENTRY_BRIDGE_IGNORE_STATUS_CODES", "99"),
    ("SENTRY_BRIDGE_BEFORE_SEND", "not a path"),
])
def test_bad_settings_warn(env: str, value: str) -> None:
    warnings: list[str] = []
    cfg = load_config({env: value}, warn=warnings.append)
    assert len(warnings) == 1 and env in warnings[0]
    assert cfg.ignore_status_codes == () and cfg.before_send is None
    assert load_config({"SENTRY_BRIDGE_IGNORE_STATUS_CODES": "404, 500-599"}
                       ).ignore_status_codes == ((404, 404), (500, 599))
