"""OpenTelemetry metrics as Sentry trace metrics (OTEL_METRICS_EXPORTER=sentry_bridge)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from apps import opentelemetry_instrument
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from sentry_receiver import SentryReceiver

from otel_sentry_bridge.metrics import SentryMetricExporter
from otel_sentry_bridge.testing import BridgeCapture


def metric_items(capture: BridgeCapture) -> list[dict]:
    capture.flush()
    out = []
    for body in capture.raw:
        lines = body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if orjson.loads(header).get("type") == "trace_metric":
                out.extend(orjson.loads(payload)["items"])
    return out


def test_instruments_become_trace_metrics() -> None:
    capture = BridgeCapture(environment="staging")
    reader = PeriodicExportingMetricReader(SentryMetricExporter(),
                                           export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        meter = provider.get_meter("shop")
        hits = meter.create_counter("cache.hits", unit="1")
        depth = meter.create_up_down_counter("queue.depth")
        took = meter.create_histogram("checkout.duration", unit="ms")
        meter.create_observable_gauge(
            "pool.size", callbacks=[lambda options: [Observation(7, {"pool": "db"})]])
        tracer = capture.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("GET /products"):
            hits.add(3, {"cache": "products"})
            depth.add(5)
            depth.add(-2)
            for value in (12.0, 30.0, 18.0):
                took.record(value, {"step": "pay"})
        provider.force_flush()
        hits.add(1, {"cache": "products"})
        provider.force_flush()  # delta: the second export carries only the new hit
        items = metric_items(capture)
        by_name: dict[str, list[dict]] = {}
        for item in items:
            by_name.setdefault(item["name"], []).append(item)
        assert [(i["type"], i["value"]) for i in by_name["cache.hits"]] == [
            ("counter", 3.0), ("counter", 1.0)]
        assert by_name["cache.hits"][0]["attributes"]["cache"] == {
            "value": "products", "type": "string"}
        assert by_name["cache.hits"][0]["unit"] == "none"
        assert [(i["type"], i["value"]) for i in by_name["queue.depth"]] == [
            ("gauge", 3.0), ("gauge", 3.0)]
        assert by_name["pool.size"][0]["type"] == "gauge" and by_name["pool.size"][0]["value"] == 7
        assert by_name["checkout.duration.count"][0]["value"] == 3.0
        assert by_name["checkout.duration.sum"][0]["value"] == 60.0
        assert by_name["checkout.duration.min"][0]["value"] == 12.0
        assert by_name["checkout.duration.max"][0]["value"] == 30.0
        assert by_name["checkout.duration.max"][0]["unit"] == "millisecond"
        assert all(i["attributes"]["sentry.environment"]["value"] == "staging" for i in items)
        # recorded inside a sampled span: the exemplar links the point to that trace
        (txn,) = capture.transactions()
        assert by_name["cache.hits"][0]["trace_id"] == txn["contexts"]["trace"]["trace_id"]
    finally:
        provider.shutdown()
        capture.close()


METRIC_APP = """\
from opentelemetry import metrics, trace

counter = metrics.get_meter("shop").create_counter("orders.created")
with trace.get_tracer("shop").start_as_current_span("POST /orders"):
    counter.add(2, {"region": "eu"})
"""


@pytest.mark.e2e
def test_zero_code_metrics_exporter(tmp_path: Path) -> None:
    script = tmp_path / "metric_app.py"
    script.write_text(METRIC_APP)
    with SentryReceiver() as receiver:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
               "SENTRY_DSN": receiver.dsn(), "OTEL_METRICS_EXPORTER": "sentry_bridge",
               "OTEL_LOGS_EXPORTER": "none", "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1"}
        result = subprocess.run([str(opentelemetry_instrument()), sys.executable, str(script)],
                                env=env, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        receiver.wait_for(lambda r: bool(r.trace_metrics()), 10.0)
        (item,) = receiver.trace_metrics()
        assert (item["name"], item["type"], item["value"]) == ("orders.created", "counter", 2.0)
        assert item["attributes"]["region"]["value"] == "eu"
        receiver.assert_no_problems()


SIGTERM_APP = """
import sys
import time

from opentelemetry import metrics

metrics.get_meter("shop").create_counter("orders.created").add(3)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.e2e
def test_sigterm_flushes_the_metrics_of_an_app_that_keeps_the_default_handler(
    tmp_path: Path,
) -> None:
    """Python's default SIGTERM skips atexit: the bridge's SIGTERM flush must also have the
    meter provider export what it holds (a long export interval: nothing went out before)."""
    script = tmp_path / "sigterm_app.py"
    script.write_text(SIGTERM_APP)
    with SentryReceiver() as receiver:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
               "SENTRY_DSN": receiver.dsn(), "OTEL_METRICS_EXPORTER": "sentry_bridge",
               "OTEL_METRIC_EXPORT_INTERVAL": "3600000", "OTEL_LOGS_EXPORTER": "none",
               "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1"}
        proc = subprocess.Popen([str(opentelemetry_instrument()), sys.executable, str(script)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == -signal.SIGTERM, stderr  # SIGTERM still ends it as before
        assert "Traceback" not in stderr, stderr
        receiver.wait_for(lambda r: bool(r.trace_metrics()), 10.0)
        (item,) = receiver.trace_metrics()
        assert (item["name"], item["value"]) == ("orders.created", 3.0)
        receiver.assert_no_problems()


LOCKED_APP = """
import threading
import time

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider

lock = threading.Lock()


class Provider(MeterProvider):
    def force_flush(self, timeout_millis=10_000):
        with lock:  # held by the main thread when SIGTERM arrives (as an instrument's is)
            return super().force_flush(timeout_millis)


metrics.set_meter_provider(Provider())
from otel_sentry_bridge.autoinstall import post_instrument  # noqa: E402
from otel_sentry_bridge.metrics import SentryMetricExporter  # noqa: E402

post_instrument()  # what opentelemetry-instrument runs: installs the SIGTERM flush
SentryMetricExporter()  # the pipeline now flushes the meter provider at exit
with lock:
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.e2e
def test_sigterm_never_hangs_on_a_lock_the_main_thread_holds(tmp_path: Path) -> None:
    script = tmp_path / "locked_app.py"
    script.write_text(LOCKED_APP)
    with SentryReceiver() as receiver:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
               "SENTRY_DSN": receiver.dsn(), "SENTRY_BRIDGE_SHUTDOWN_TIMEOUT": "1",
               "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
        proc = subprocess.Popen([sys.executable, str(script)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
            waited = time.monotonic() - started
        finally:
            proc.kill()
        assert proc.returncode == -signal.SIGTERM, stderr
        assert waited < 10, waited  # bounded by the shutdown budget, not stuck on the lock
