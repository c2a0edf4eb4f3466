"""Real OpenTelemetry spans for unit tests (a real TracerProvider, never mocks)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

RESOURCE = Resource.create({
    "service.name": "shop",
    "service.version": "1.2.3",
    "deployment.environment.name": "staging",
    "host.name": "web-1",
})


class SpanFactory:
    """Make finished spans with a real provider; ``finished()`` returns them in end order."""

    def __init__(self, resource: Resource = RESOURCE) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def tracer(self, lib: str = "flask") -> trace.Tracer:
        name = lib if "." in lib else f"opentelemetry.instrumentation.{lib}"
        return self.provider.get_tracer(name, "0.66b1")

    @contextmanager
    def span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        lib: str = "flask",
        status: StatusCode | None = None,
        context: Any = None,
    ) -> Iterator[trace.Span]:
        with self.tracer(lib).start_as_current_span(
            name, kind=kind, attributes=dict(attributes or {}), context=context,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            yield span
            if status is not None:
                span.set_status(Status(status))

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def split(self) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The single parentless span and the rest."""
        spans = self.finished()
        roots = [s for s in spans if s.parent is None or s.parent.is_remote]
        assert len(roots) == 1, roots
        return roots[0], [s for s in spans if s is not roots[0]]


def remote_parent(trace_id: int = 0x4BF92F3577B34DA6A3CE929D0E0E4736,
                  span_id: int = 0x00F067AA0BA902B7) -> Any:
    """A context whose current span is a remote parent (as an HTTP server extracts)."""
    ctx = trace.SpanContext(trace_id, span_id, is_remote=True,
                            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))
