"""``SentrySpanExporter``: the bridge as ``OTEL_TRACES_EXPORTER=sentry_bridge``."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._internal_errors import handle_internal_errors
from .pipeline import Pipeline, get_pipeline


class SentrySpanExporter(SpanExporter):
    """Exporter form of the bridge (zero-argument constructor; settings from the environment).

    It feeds the same per-process pipeline as :class:`SentrySpanProcessor`. When a processor is
    also registered, the processor already sees every span, so the exporter forwards nothing
    (no double reports). Never raises: failures return ``FAILURE``.
    """

    def __init__(self) -> None:
        self._pipeline: Pipeline | None = None
        with handle_internal_errors("SentrySpanExporter.__init__"):
            pipeline = get_pipeline()
            if pipeline.enabled:
                self._pipeline = pipeline

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Hand finished spans to the pipeline."""
        pipeline = self._pipeline
        if pipeline is None:
            return SpanExportResult.SUCCESS
        with handle_internal_errors("SentrySpanExporter.export"):
            if pipeline.processors <= 0:
                pipeline.export(spans)
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything finished now."""
        pipeline = self._pipeline
        if pipeline is None:
            return True
        with handle_internal_errors("SentrySpanExporter.force_flush"):
            return pipeline.flush(timeout_millis / 1000.0)
        return False

    def shutdown(self) -> None:
        """Flush (bounded)."""
        pipeline = self._pipeline
        if pipeline is not None:
            with handle_internal_errors("SentrySpanExporter.shutdown"):
                pipeline.flush()
