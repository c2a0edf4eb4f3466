"""Transport against a real loopback ingest server: auth, gzip, rate limits, drops, sinks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from sentry_receiver import SentryReceiver, parse_envelope

from otel_sentry_bridge.config import BridgeConfig
from otel_sentry_bridge.pipeline import Pipeline, create_pipeline, reset_pipeline
from otel_sentry_bridge.processor import SentrySpanProcessor


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with SentryReceiver() as server:
        yield server
        server.assert_no_problems()


class Bridge:
    """A provider + processor on a private pipeline configured in code."""

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("late_span_grace", 0.0)
        self.pipeline: Pipeline = create_pipeline(BridgeConfig(**settings))
        reset_pipeline(self.pipeline)
        self.processor = SentrySpanProcessor()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(self.processor)

    def request(self, n: int = 1, children: int = 2) -> None:
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.flask")
        for _ in range(n):
            with tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER, attributes={
                    "http.method": "GET", "http.route": "/a", "http.status_code": 200}):
                for i in range(children):
                    with tracer.start_as_current_span(f"c{i}"):
                        pass

    def flush(self, timeout: float = 10.0) -> bool:
        return self.pipeline.flush(timeout)


def discarded_counts(receiver: SentryReceiver) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for report in receiver.client_reports():
        for entry in report["discarded_events"]:
            key = (entry["reason"], entry["category"])
            totals[key] = totals.get(key, 0) + entry["quantity"]
    return totals


def test_delivers_with_auth_gzip_and_dsc(receiver: SentryReceiver) -> None:
    bridge = Bridge(dsn=receiver.dsn())
    bridge.request(3)
    assert bridge.flush()
    txns = receiver.wait_for_transactions(3)
    assert len(txns) == 3
    envelope = receiver.envelopes[0]
    assert envelope.request_headers["content-encoding"] == "gzip"
    assert "sentry_key=publickey" in envelope.request_headers["x-sentry-auth"]
    assert envelope.headers["trace"]["public_key"] == "publickey"
    assert envelope.headers["trace"]["trace_id"] == txns[0]["contexts"]["trace"]["trace_id"]
    assert receiver.auth_failures == []


def test_uncompressed_when_level_zero(receiver: SentryReceiver) -> None:
    bridge = Bridge(dsn=receiver.dsn(), compression_level=0)
    bridge.request()
    bridge.flush()
    assert receiver.wait_for_transactions(1)
    assert "content-encoding" not in receiver.envelopes[0].request_headers


def test_burst_of_2000_transactions_arrives_whole(receiver: SentryReceiver) -> None:
    bridge = Bridge(dsn=receiver.dsn())
    bridge.request(2000, children=3)
    assert bridge.flush(60)
    assert len(receiver.wait_for_transactions(2000, timeout=30)) == 2000
    assert bridge.pipeline.drops.total() == 0


def test_rate_limits_are_honoured_and_reported(receiver: SentryReceiver) -> None:
    bridge = Bridge(dsn=receiver.dsn())
    receiver.set_mode("status", status=429,
                      headers={"X-Sentry-Rate-Limits": "60:transaction:key", "Retry-After": "60"},
                      times=1)
    bridge.request()
    bridge.flush()
    bridge.request(5)
    bridge.flush()
    # rate limited: nothing more was even sent, except the client report
    assert receiver.transactions() == []
    reports = receiver.client_reports()
    assert receiver.request_count == 1 + len(reports)
    discarded = discarded_counts(receiver)
    assert discarded[("ratelimit_backoff", "transaction")] == 6
    assert discarded[("ratelimit_backoff", "span")] == 6 * 3


@pytest.mark.parametrize(("status", "reason"), [(500, "network_error"), (413, "send_error")])
def test_server_errors_are_counted(receiver: SentryReceiver, status: int, reason: str) -> None:
    bridge = Bridge(dsn=receiver.dsn())
    receiver.set_mode("status", status=status, times=2)
    bridge.request(2)
    bridge.flush()
    bridge.request(1)
    bridge.flush()
    assert len(receiver.wait_for_transactions(1)) == 1
    discarded = discarded_counts(receiver)
    assert discarded[(reason, "transaction")] == 2


def test_receiver_down_never_blocks_the_app_and_counts_the_loss() -> None:
    server = SentryReceiver().start()
    dsn = server.dsn()
    server.stop()
    bridge = Bridge(dsn=dsn)
    started = time.perf_counter()
    bridge.request(20)
    elapsed = time.perf_counter() - started
    assert elapsed < 5  # app thread only appends to a queue (a generous, non-benchmark bound)
    started = time.perf_counter()
    bridge.flush(timeout=1)  # bounded, whatever happens
    assert time.perf_counter() - started < 3
    bridge.pipeline.shutdown(timeout=0.5)
    assert bridge.pipeline.drops.total("network_error", "transaction") == 20


def test_outage_then_recovery_delivers_what_was_retried() -> None:
    server = SentryReceiver().start()
    dsn = server.dsn()
    server.stop()
    bridge = Bridge(dsn=dsn, sender_threads=1)
    bridge.request(1)
    bridge.pipeline.process(force=True)
    time.sleep(0.1)
    server.start()
    try:
        assert bridge.flush(10)
        assert len(server.wait_for_transactions(1)) == 1
    finally:
        server.stop()


def test_spotlight_and_envelope_folder(receiver: SentryReceiver, tmp_path: Path) -> None:
    with SentryReceiver() as spotlight:
        url = spotlight.envelope_url() + "?sentry_key=publickey&sentry_version=7"
        bridge = Bridge(dsn=receiver.dsn(), spotlight=url, envelope_dir=str(tmp_path / "env"))
        bridge.request(2)
        bridge.flush()
        assert len(receiver.wait_for_transactions(2)) == 2
        assert len(spotlight.wait_for_transactions(2)) == 2
        assert "content-encoding" not in spotlight.envelopes[0].request_headers
        spotlight.assert_no_problems()
    files = sorted((tmp_path / "env").glob("*.envelope"))
    assert len(files) == 2
    _headers, items = parse_envelope(files[0].read_bytes())
    assert items[0].type == "transaction"


def test_envelope_folder_without_dsn(tmp_path: Path) -> None:
    bridge = Bridge(envelope_dir=str(tmp_path))
    bridge.request(1)
    bridge.flush()
    assert len(list(tmp_path.glob("*.envelope"))) == 1


def test_malformed_dsn_logs_one_line_and_disables(caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_DSN", "https://nokey-here")
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
        processor = SentrySpanProcessor()
    assert processor.pipeline is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "SENTRY_DSN is malformed" in lines[0]
    reset_pipeline(None)


def test_dsn_key_never_logged(receiver: SentryReceiver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="otel_sentry_bridge"):
        bridge = Bridge(dsn=receiver.dsn(key="supersecretkey"), debug=True)
        bridge.request(1)
        bridge.flush()
    assert all("supersecretkey" not in r.getMessage() for r in caplog.records)
