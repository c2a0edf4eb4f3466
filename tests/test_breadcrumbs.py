"""Breadcrumbs from ``logging`` records and ``add_breadcrumb``, merged with the span trail."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import _internal_errors, _log_breadcrumbs, add_breadcrumb, load_config
from otel_sentry_bridge._log_breadcrumbs import BreadcrumbLogHandler, LogCrumbStore
from otel_sentry_bridge.testing import BridgeCapture

log = logging.getLogger("shop.checkout")


class PaymentDeclined(Exception):
    pass


def charge(amount: int) -> None:
    raise PaymentDeclined(f"card declined for {amount}")


@pytest.fixture(autouse=True)
def _info_logs() -> Iterator[None]:
    """The app's logger lets INFO through (Python's default root level is WARNING)."""
    log.setLevel(logging.INFO)
    yield
    log.setLevel(logging.NOTSET)


def _crumbs(event: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["category"], c.get("message", ""), c["level"])
            for c in event["breadcrumbs"]["values"]]


def test_log_records_are_breadcrumbs_of_their_trace_before_the_error(
    sentry_bridge: BridgeCapture,
) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    db = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    log.info("outside any span")  # no trace: not kept
    with tracer.start_as_current_span("POST /pay", kind=SpanKind.SERVER, attributes={
            "http.method": "POST", "http.route": "/pay", "http.status_code": 402}) as root:
        log.info("checkout of %d items", 3)
        with db.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
                "db.system": "postgresql", "db.statement": "SELECT id FROM carts"}):
            log.debug("below the level: not kept")
        log.warning("psp slow: %s", "https://psp.example/charge?card=4242")
        logging.getLogger("otel_sentry_bridge.pipeline").warning("the bridge's own: skipped")
        logging.getLogger("opentelemetry.sdk.trace").warning("OpenTelemetry's: skipped")
        add_breadcrumb("auth", "user logged in", {"user": {"id": 7}, "password": "hunter2"})
        try:
            charge(9)
        except PaymentDeclined as exc:
            log.error("payment failed", exc_info=True)  # logs the error itself: not a crumb
            root.record_exception(exc)
        log.error("after the error: not a breadcrumb of it")
    with tracer.start_as_current_span("GET /other", kind=SpanKind.SERVER):
        log.warning("another trace")
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    assert _crumbs(event) == [
        ("shop.checkout", "checkout of 3 items", "info"),
        ("query", "SELECT id FROM carts", "info"),
        ("shop.checkout", "psp slow: https://psp.example/charge?[Filtered]", "warning"),
        ("auth", "user logged in", "info"),
    ]
    crumbs = event["breadcrumbs"]["values"]
    assert crumbs[0]["type"] == "log" and crumbs[3]["type"] == "default"
    assert crumbs[3]["data"] == {"user.id": 7, "password": "[Filtered]"}
    assert [c["timestamp"] for c in crumbs] == sorted(c["timestamp"] for c in crumbs)
    assert all(c["timestamp"] <= event["timestamp"] for c in crumbs)
    assert len(_log_breadcrumbs.STORE) == 0  # taken (and freed) when the traces were mapped


def test_a_logged_earlier_exception_stays_a_breadcrumb(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job") as span:
        try:
            int("not a number")
        except ValueError:
            log.warning("cache miss", exc_info=True)
        try:
            charge(1)
        except PaymentDeclined as exc:
            span.record_exception(exc)
    (event,) = sentry_bridge.items("event")
    assert _crumbs(event) == [("shop.checkout", "cache miss", "warning")]


def test_breadcrumbs_are_capped_to_the_latest(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("batch") as span:
        for n in range(40):
            span.add_event(f"step {n}")
        for n in range(150):  # the store keeps the last 100 records of a trace
            log.info("record %d", n)
        try:
            charge(2)
        except PaymentDeclined as exc:
            span.record_exception(exc)
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    crumbs = event["breadcrumbs"]["values"]
    assert len(crumbs) == 100
    assert [c["message"] for c in crumbs] == [f"record {n}" for n in range(50, 150)]


def test_off_keeps_no_log_records() -> None:
    capture = BridgeCapture(breadcrumb_log_level=None)
    try:
        tracer = capture.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("job") as span:
            log.warning("not kept")
            try:
                charge(3)
            except PaymentDeclined as exc:
                span.record_exception(exc)
        (event,) = capture.items("event")
        assert "breadcrumbs" not in event
        assert not any(isinstance(h, BreadcrumbLogHandler) for h in logging.getLogger().handlers)
        assert not _log_breadcrumbs.installed()
    finally:
        capture.close()


def test_level_setting() -> None:
    seen: list[str] = []
    assert load_config({}).breadcrumb_log_level == logging.INFO
    for raw, level in (("off", None), ("OFF", None), ("warning", 30), ("10", 10)):
        cfg = load_config({"SENTRY_BRIDGE_BREADCRUMB_LOG_LEVEL": raw}, None, seen.append)
        assert cfg.breadcrumb_log_level == level
    assert seen == []
    cfg = load_config({"SENTRY_BRIDGE_BREADCRUMB_LOG_LEVEL": "loud"}, None, seen.append)
    assert cfg.breadcrumb_log_level == logging.INFO and len(seen) == 1


def test_the_store_is_bounded_and_frees_what_it_gives() -> None:
    store = LogCrumbStore(max_traces=2, max_records=3)
    for trace_id in (1, 2):
        for n in range(5):
            store.add(trace_id, (float(n), 20, "app", f"m{n}", None, 10 + n % 2))
    store.add(1, (9.0, 20, "app", "m9", None, 10))  # trace 1 is now the most recent
    store.add(3, (0.0, 20, "app", "new", None, 10))  # evicts trace 2
    assert len(store) == 2
    assert store.take(2, {10, 11}) == []
    assert store.take(1, {10}) == [(4.0, 20, "app", "m4", None), (9.0, 20, "app", "m9", None)]
    assert store.take(1, {11}) == [(3.0, 20, "app", "m3", None)]
    assert len(store) == 1


def test_the_handler_never_raises_and_skips_without_a_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = LogCrumbStore()
    handler = BreadcrumbLogHandler(logging.INFO, store)
    bad = logging.LogRecord("shop", logging.INFO, __file__, 1, "%d items", ("x",), None)
    assert handler.handle(bad) is False  # no span: nothing kept
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        assert handler.handle(bad) is True  # a broken format: kept as written
        trace_id = span.get_span_context().trace_id
        monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
        monkeypatch.setattr(store, "add", None)  # a bug in the store
        assert handler.handle(bad) is False
    ((_created, level, name, message, exception),) = store.take(
        trace_id, {span.get_span_context().span_id})
    assert (level, name, message, exception) == (20, "shop", "%d items", None)


def test_add_breadcrumb_is_a_plain_span_event(sentry_bridge: BridgeCapture) -> None:
    add_breadcrumb("noop", "no span: nothing happens")
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job") as span:
        add_breadcrumb("cart", "item added", {"sku": "A-1", "qty": 2, "tags": ["x", "y"],
                                              "price": {"amount": 9.5, "currency": "EUR"},
                                              "when": object}, level="warn")
        add_breadcrumb("cart", "odd level", level="LOUD")
        events = span.events  # type: ignore[attr-defined]
        try:
            charge(4)
        except PaymentDeclined as exc:
            span.record_exception(exc)
    first = events[0]
    assert first.name == "sentry.breadcrumb"
    assert dict(first.attributes) == {
        "sentry.breadcrumb.category": "cart", "sentry.breadcrumb.message": "item added",
        "sentry.breadcrumb.level": "warning", "sentry.breadcrumb.data.sku": "A-1",
        "sentry.breadcrumb.data.qty": 2, "sentry.breadcrumb.data.tags": ("x", "y"),
        "sentry.breadcrumb.data.price.amount": 9.5,
        "sentry.breadcrumb.data.price.currency": "EUR",
        "sentry.breadcrumb.data.when": "<class 'object'>",
    }
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    added, odd = event["breadcrumbs"]["values"]
    assert added == {
        "timestamp": added["timestamp"], "type": "default", "category": "cart",
        "level": "warning", "message": "item added",
        "data": {"sku": "A-1", "qty": 2, "tags": ["x", "y"], "price.amount": 9.5,
                 "price.currency": "EUR", "when": "<class 'object'>"},
    }
    assert (odd["category"], odd["level"], odd["message"]) == ("cart", "info", "odd level")


def test_an_app_without_logging_configuration_still_prints_its_errors(tmp_path: Any) -> None:
    """Python prints WARNING+ records to stderr through its last-resort handler when no
    handler is configured; keeping records for breadcrumbs must not silence that."""
    import subprocess
    import sys

    script = tmp_path / "app.py"
    script.write_text(
        "import logging\n"
        "from otel_sentry_bridge.testing import BridgeCapture\n"
        "capture = BridgeCapture()\n"
        "tracer = capture.tracer_provider.get_tracer('app')\n"
        "with tracer.start_as_current_span('job') as span:\n"
        "    logging.getLogger('app').error('still printed')\n"
        "    span.record_exception(ValueError('x'))\n"
        "(event,) = capture.items('event')\n"
        "print([c['message'] for c in event['breadcrumbs']['values']])\n"
        "capture.close()\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "still printed" in result.stderr
    assert "['still printed']" in result.stdout  # and kept as a breadcrumb
