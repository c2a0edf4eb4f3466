"""Sentry trace metrics from OpenTelemetry metric data (pure).

Shape: sentry-sdk 2.75's ``trace_metric`` items (``sentry-mapping.md`` section 7.4): ``name``,
``type`` (``counter``, ``gauge``, ``distribution``), ``value``, ``unit``, ``timestamp``,
``trace_id`` (from an exemplar when the point has one), typed ``attributes``.

OpenTelemetry aggregates before it exports. What survives faithfully is sent:

* a monotonic sum (counter) with delta temporality -> one ``counter`` item per point;
* a non-monotonic sum (up-down counter) and a gauge -> one ``gauge`` item per point;
* a histogram (explicit or exponential) -> ``<name>.count`` and ``<name>.sum`` counters and
  ``<name>.min`` / ``<name>.max`` gauges (Sentry cannot take pre-aggregated buckets: they are
  not sent). A cumulative counter is sent as a ``gauge`` of its running total.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricsData

from .logs import typed
from .mapping_context import MappingContext
from .values import hex_span, hex_trace, safe_str

_UNITS = {"1": "none", "": "none", "s": "second", "ms": "millisecond", "us": "microsecond",
          "ns": "nanosecond", "By": "byte", "KiBy": "kibibyte", "MiBy": "mebibyte",
          "%": "percent"}


def _unit(unit: str | None) -> str:
    if not unit:
        return "none"
    return _UNITS.get(unit, unit.strip("{}") or "none")


def _base(point: Any, ctx: MappingContext, fallback_trace_id: int,
          extra: dict[str, Any]) -> dict[str, Any]:
    attributes = {safe_str(k): typed(v) for k, v in list((point.attributes or {}).items())[:50]}
    attributes.update(extra)
    if ctx.environment:
        attributes["sentry.environment"] = typed(ctx.environment)
    if ctx.release:
        attributes["sentry.release"] = typed(ctx.release)
    attributes["sentry.sdk.name"] = typed("sentry.python.otel-bridge")
    attributes["sentry.sdk.version"] = typed(ctx.sdk_version)
    entry: dict[str, Any] = {
        "timestamp": point.time_unix_nano / 1e9,
        "trace_id": hex_trace(fallback_trace_id),
        "attributes": attributes,
    }
    for exemplar in getattr(point, "exemplars", None) or ():
        if exemplar.trace_id and exemplar.span_id:
            entry["trace_id"] = hex_trace(exemplar.trace_id)
            entry["span_id"] = hex_span(exemplar.span_id)
            break
    return entry


def _item(base: dict[str, Any], name: str, kind: str, value: float, unit: str) -> dict[str, Any]:
    return {**base, "name": name, "type": kind, "value": value, "unit": unit}


def metric_entries(
    data: MetricsData, ctx: MappingContext, fallback_trace_id: int
) -> list[dict[str, Any]]:
    """Every trace metric item of one export."""
    out: list[dict[str, Any]] = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                out.extend(_entries(metric, ctx, fallback_trace_id))
    return out


def _entries(metric: Any, ctx: MappingContext, fallback: int) -> list[dict[str, Any]]:
    name, unit, data = metric.name, _unit(metric.unit), metric.data
    out: list[dict[str, Any]] = []
    kind = type(data).__name__
    if kind == "Sum":
        delta = data.aggregation_temporality == AggregationTemporality.DELTA
        item_type = "counter" if data.is_monotonic and delta else "gauge"
        for point in data.data_points:
            base = _base(point, ctx, fallback, {})
            out.append(_item(base, name, item_type, float(point.value), unit))
    elif kind == "Gauge":
        for point in data.data_points:
            out.append(_item(_base(point, ctx, fallback, {}), name, "gauge", float(point.value),
                             unit))
    elif kind in ("Histogram", "ExponentialHistogram"):
        marker = {"otel.metric.kind": typed("histogram")}
        for point in data.data_points:
            base = _base(point, ctx, fallback, marker)
            out.append(_item(base, f"{name}.count", "counter", float(point.count), "none"))
            out.append(_item(base, f"{name}.sum", "counter", float(point.sum), unit))
            if point.count:
                out.append(_item(base, f"{name}.min", "gauge", float(point.min), unit))
                out.append(_item(base, f"{name}.max", "gauge", float(point.max), unit))
    return out
