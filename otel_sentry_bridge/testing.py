"""Pytest plugin (entry point ``pytest11: otel_sentry_bridge``): assert on what your app sends.

The ``sentry_bridge`` fixture gives a real ``TracerProvider`` wired to a private bridge
pipeline whose envelopes are captured in memory instead of being sent::

    def test_checkout(sentry_bridge):
        FlaskInstrumentor().instrument_app(app, tracer_provider=sentry_bridge.tracer_provider)
        app.test_client().get("/checkout")
        (txn,) = sentry_bridge.transactions()
        assert txn["transaction"] == "GET /checkout"
        assert [s["op"] for s in txn["spans"]] == ["db", "http.client"]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler

from . import console
from .config import BridgeConfig
from .pipeline import Pipeline, create_pipeline, reset_pipeline
from .processor import SentrySpanProcessor

EnvelopeParts = tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]


def parse_envelope(data: bytes) -> EnvelopeParts:
    """Split envelope bytes into its header and ``(item header, payload)`` pairs."""
    triples = console.parse_envelope(data)
    headers = triples[0][0] if triples else console._json_object(data.split(b"\n", 1)[0], "header")
    return headers, [(item_headers, payload) for _, item_headers, payload in triples]


class BridgeCapture:
    """A tracer provider whose spans go through the bridge into memory."""

    def __init__(self, sampler: Sampler | None = None, **settings: Any) -> None:
        """``settings`` as for the processor; ``sampler`` for the provider (default:
        OpenTelemetry's, from ``OTEL_TRACES_SAMPLER``)."""
        settings.setdefault("late_span_grace", 0.0)
        self._lock = threading.Lock()
        self.raw: list[bytes] = []
        cfg = BridgeConfig(dsn=None, **settings)
        self.pipeline: Pipeline = create_pipeline(cfg, sink=self._capture)
        self.pipeline.enabled = True
        self._previous = reset_pipeline(self.pipeline)
        self.processor = SentrySpanProcessor()
        self.tracer_provider = TracerProvider(
            resource=Resource.create({"service.name": "test"}), shutdown_on_exit=False,
            sampler=sampler,
        )
        self.tracer_provider.add_span_processor(self.processor)

    def _capture(self, body: bytes) -> None:
        with self._lock:
            self.raw.append(body)

    def flush(self, timeout: float = 10.0) -> None:
        """Send everything finished (ignoring the late-span grace) and wait for it."""
        self.pipeline.flush(timeout)

    def envelopes(self) -> list[EnvelopeParts]:
        """All captured envelopes (flushes first)."""
        self.flush()
        with self._lock:
            return [parse_envelope(body) for body in self.raw]

    def items(self, item_type: str) -> list[dict[str, Any]]:
        """Payloads of one item type."""
        return [
            orjson.loads(payload)
            for _, items in self.envelopes()
            for headers, payload in items
            if headers.get("type") == item_type
        ]

    def transactions(self) -> list[dict[str, Any]]:
        """Transaction events, in the order they were sent."""
        return self.items("transaction")

    def client_reports(self) -> list[dict[str, Any]]:
        """Client reports (drops)."""
        self.pipeline.transport.maybe_send_client_report(force=True)
        return self.items("client_report")

    def close(self) -> None:
        """Shut the private pipeline down and restore the previous one."""
        self.tracer_provider.shutdown()
        self.pipeline.shutdown(1.0)
        reset_pipeline(self._previous)


@pytest.fixture
def sentry_bridge() -> Iterator[BridgeCapture]:
    """A :class:`BridgeCapture` for one test."""
    capture = BridgeCapture()
    try:
        yield capture
    finally:
        capture.close()
