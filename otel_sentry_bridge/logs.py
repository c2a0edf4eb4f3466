"""Logs to Sentry: a ``logging`` handler and an OpenTelemetry log record exporter.

Off by default. ``SENTRY_BRIDGE_LOGS=true`` attaches :class:`SentryLogHandler` to the root
logger when the bridge is installed by ``opentelemetry-instrument``; in code::

    logging.getLogger().addHandler(SentryLogHandler())

With OpenTelemetry's own logging pipeline (``OTEL_LOGS_EXPORTER=sentry_bridge`` and
``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true``), :class:`SentryLogExporter` receives
its log records instead. Either way the application's thread only formats the message and
appends to a bounded queue; the bridge's worker batches the items (at most 100 per envelope).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from ._internal_errors import handle_internal_errors
from .pipeline import Pipeline, get_pipeline

#: Loggers whose records are never sent (the bridge's own, and OpenTelemetry's).
_SKIPPED = ("otel_sentry_bridge", "opentelemetry")


class SentryLogHandler(logging.Handler):
    """Sends ``logging`` records at or above ``level`` as Sentry logs, with the trace and span
    ids of the span that is current where the record is made."""

    def __init__(self, level: int = logging.INFO, **settings: Any) -> None:
        super().__init__(level)
        self._pipeline: Pipeline | None = None
        with handle_internal_errors("SentryLogHandler.__init__"):
            pipeline = get_pipeline(settings)
            self._pipeline = pipeline if pipeline.enabled else None

    def emit(self, record: logging.LogRecord) -> None:
        pipeline = self._pipeline
        if pipeline is None or record.name.startswith(_SKIPPED):
            return
        try:
            try:
                body = record.getMessage()
            except Exception:  # a bad format string is the app's bug: send it as written
                body = str(record.msg)
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                pipeline.on_log(("python", record, body, context.trace_id, context.span_id))
            else:
                pipeline.on_log(("python", record, body, None, None))
        except Exception:
            self.handleError(record)


class SentryLogExporter(LogRecordExporter):
    """OpenTelemetry log record exporter (``OTEL_LOGS_EXPORTER=sentry_bridge``)."""

    def __init__(self, **settings: Any) -> None:
        self._pipeline: Pipeline | None = None
        with handle_internal_errors("SentryLogExporter.__init__"):
            pipeline = get_pipeline(settings)
            self._pipeline = pipeline if pipeline.enabled else None
            if self._pipeline is not None:
                self._pipeline.log_exporters += 1

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        pipeline = self._pipeline
        if pipeline is not None:
            with handle_internal_errors("SentryLogExporter.export"):
                for item in batch:
                    pipeline.on_log(("otel", item.log_record))
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pipeline = self._pipeline
        if pipeline is not None:
            with handle_internal_errors("SentryLogExporter.shutdown"):
                pipeline.flush()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        pipeline = self._pipeline
        if pipeline is None:
            return True
        with handle_internal_errors("SentryLogExporter.force_flush"):
            return pipeline.flush(timeout_millis / 1000.0)
        return False
