"""Logs: Python logging records and OpenTelemetry log records become Sentry log items."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apps import opentelemetry_instrument
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.trace import SpanKind
from sentry_receiver import SentryReceiver

from otel_sentry_bridge import pipeline as pipeline_module
from otel_sentry_bridge.logs import SentryLogExporter, SentryLogHandler
from otel_sentry_bridge.testing import BridgeCapture


def logs_of(capture: BridgeCapture) -> list[dict]:
    capture.flush()
    return [entry for body in capture.raw for entry in _entries(body)]


def _entries(body: bytes) -> list[dict]:
    import orjson

    lines = body.split(b"\n")
    out = []
    for header, payload in zip(lines[1::2], lines[2::2], strict=False):
        if orjson.loads(header).get("type") == "log":
            out.extend(orjson.loads(payload)["items"])
    return out


def test_records_carry_trace_level_template_and_code_location() -> None:
    capture = BridgeCapture(environment="staging", release="shop@1.2")
    handler = SentryLogHandler(logging.INFO)
    log = logging.getLogger("shop.payments")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        tracer = capture.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("POST /pay", kind=SpanKind.SERVER) as span:
            log.warning("payment declined for order %s (%d EUR)", "o-7", 12)
            log.debug("not sent: below the handler's level")
        log.error("outside any span: %(what)s", {"what": "cron"})
        entries = logs_of(capture)
        assert [e["body"] for e in entries] == ["payment declined for order o-7 (12 EUR)",
                                               "outside any span: cron"]
        inside, outside = entries
        context = span.get_span_context()
        assert inside["trace_id"] == f"{context.trace_id:032x}"
        assert inside["span_id"] == f"{context.span_id:016x}"
        assert inside["level"] == "warn" and outside["level"] == "error"
        attrs = inside["attributes"]
        assert attrs["sentry.message.template"]["value"] == "payment declined for order %s (%d EUR)"
        assert attrs["sentry.message.parameter.0"] == {"value": "o-7", "type": "string"}
        assert attrs["sentry.message.parameter.1"] == {"value": 12, "type": "integer"}
        assert attrs["sentry.severity_number"]["value"] == 13
        assert attrs["logger.name"]["value"] == "shop.payments"
        assert attrs["code.function.name"]["value"].startswith("test_records")
        assert attrs["sentry.environment"]["value"] == "staging"
        assert attrs["sentry.release"]["value"] == "shop@1.2"
        assert outside["attributes"]["sentry.message.parameter.what"]["value"] == "cron"
        assert "span_id" not in outside and len(outside["trace_id"]) == 32
    finally:
        log.removeHandler(handler)
        capture.close()


def test_otel_log_records_through_the_exporter() -> None:
    capture = BridgeCapture()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(SentryLogExporter()))
    try:
        tracer = capture.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("job"):
            provider.get_logger("shop").emit(
                severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                body="disk almost full", attributes={"disk.free": 0.03, "host": "web-1"})
        (entry,) = logs_of(capture)
        assert entry["level"] == "error" and entry["body"] == "disk almost full"
        assert entry["attributes"]["disk.free"] == {"value": 0.03, "type": "double"}
        (txn,) = capture.transactions()
        assert entry["trace_id"] == txn["contexts"]["trace"]["trace_id"]
    finally:
        provider.shutdown()
        capture.close()


def test_the_queue_is_bounded_and_drops_are_counted(monkeypatch) -> None:
    monkeypatch.setattr(pipeline_module, "LOG_QUEUE_CAP", 10)
    capture = BridgeCapture()
    handler = SentryLogHandler()
    log = logging.getLogger("noisy")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        pipeline = capture.pipeline
        pipeline._worker = __import__("threading").current_thread()  # hold the worker
        for i in range(25):
            log.info("line %d", i)
        assert len(pipeline.logs) == 10
        assert pipeline.drops.total("queue_overflow", "log_item") == 15
        pipeline.process(force=True)
        assert len(logs_of(capture)) == 10
    finally:
        log.removeHandler(handler)
        capture.close()


def test_items_pass_the_receiver_checks() -> None:
    with SentryReceiver() as receiver:
        handler = SentryLogHandler(dsn=receiver.dsn(), late_span_grace=0.0)
        log = logging.getLogger("checked")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            for i in range(150):  # two envelopes: 100 + 50
                log.info("item %d %s", i, ["a", "b"] if i % 2 else {"k": object()})
            assert handler._pipeline is not None
            handler._pipeline.flush(5.0)
        finally:
            log.removeHandler(handler)
        deadline = time.monotonic() + 5
        while len(receiver.logs()) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.logs()) == 150
        receiver.assert_no_problems()


LOG_APP = """\
import logging
from opentelemetry import trace

log = logging.getLogger("demo.app")
log.setLevel(logging.INFO)
with trace.get_tracer("demo").start_as_current_span("job"):
    log.warning("hello from %s", "the app")
log.info("after the span")
"""


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["setting", "otel-exporter"])
def test_zero_code_logs_under_opentelemetry_instrument(tmp_path: Path, how: str) -> None:
    script = tmp_path / "log_app.py"
    script.write_text(LOG_APP)
    with SentryReceiver() as receiver:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
               "SENTRY_DSN": receiver.dsn(), "OTEL_METRICS_EXPORTER": "none",
               "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1"}
        if how == "setting":
            env["SENTRY_BRIDGE_LOGS"] = "true"
        else:
            env["OTEL_LOGS_EXPORTER"] = "sentry_bridge"
            env["OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"] = "true"
        result = subprocess.run([str(opentelemetry_instrument()), sys.executable, str(script)],
                                env=env, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        receiver.wait_for(lambda r: len(r.logs()) >= 2 and r.transactions(), 10.0)
        (txn,) = receiver.transactions()
        inside, after = sorted(receiver.logs(), key=lambda e: e["timestamp"])
        assert inside["body"] == "hello from the app" and inside["level"] == "warn"
        assert inside["trace_id"] == txn["contexts"]["trace"]["trace_id"]
        assert inside["span_id"] == txn["contexts"]["trace"]["span_id"]
        assert after["body"] == "after the span" and "span_id" not in after
        receiver.assert_no_problems()
