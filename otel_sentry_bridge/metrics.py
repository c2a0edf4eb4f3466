"""``OTEL_METRICS_EXPORTER=sentry_bridge``: OpenTelemetry metrics as Sentry trace metrics.

OpenTelemetry's ``PeriodicExportingMetricReader`` calls :meth:`SentryMetricExporter.export` on
its own thread (never the application's); the items go to the bridge's send queue, at most 100
per envelope. Counters are asked for in delta temporality, so each export carries what was
counted since the last one (see ``_mapping/metrics.py`` for what is sent of each instrument).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from ._internal_errors import handle_internal_errors
from ._mapping.metrics import metric_entries
from .pipeline import Pipeline, get_pipeline

#: Items per envelope.
METRIC_BATCH = 100

_TEMPORALITY: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


class SentryMetricExporter(MetricExporter):
    """OpenTelemetry metric exporter sending Sentry ``trace_metric`` items."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(preferred_temporality=dict(_TEMPORALITY))  # a copy per exporter
        self._pipeline: Pipeline | None = None
        with handle_internal_errors("SentryMetricExporter.__init__"):
            pipeline = get_pipeline(settings)
            self._pipeline = pipeline if pipeline.enabled else None
            if self._pipeline is not None:
                self._pipeline.metric_exporters += 1  # flushed at exit and on SIGTERM

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        pipeline = self._pipeline
        if pipeline is None:
            return MetricExportResult.SUCCESS
        with handle_internal_errors("SentryMetricExporter.export"):
            entries = metric_entries(metrics_data, pipeline.mapping,
                                     pipeline.fallback_trace_id)
            for start in range(0, len(entries), METRIC_BATCH):
                pipeline.transport.submit_batch(
                    "trace_metric", entries[start:start + METRIC_BATCH], "trace_metric")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        pipeline = self._pipeline
        if pipeline is None:
            return True
        with handle_internal_errors("SentryMetricExporter.force_flush"):
            return pipeline.transport.flush(timeout_millis / 1000.0)
        return False

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.force_flush(min(timeout_millis, 5_000))
