"""``SentrySpanProcessor``: the bridge as an OpenTelemetry span processor."""

from __future__ import annotations

from typing import Any

from opentelemetry import baggage
from opentelemetry.context import Context, get_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._checkins import root_ended, root_started
from ._dsc import INCOMING_KEY, Incoming
from ._internal_errors import handle_internal_errors, log_internal_error
from ._mapping.checkins import SLUG as MONITOR_SLUG
from ._mapping.spans import raw_attributes
from .business import from_baggage
from .pipeline import Pipeline, get_pipeline


class SentrySpanProcessor(SpanProcessor):
    """Sends every sampled trace to Sentry as transactions.

    Keyword arguments are settings (see ``docs/configuration.md``) and win over environment
    variables. All processors in a process share one pipeline: adding the processor twice, or
    also naming ``sentry_bridge`` in ``OTEL_TRACES_EXPORTER``, never reports a span twice.
    ``on_start`` and ``on_end`` only append to a bounded queue; everything else happens on the
    bridge's own threads.
    """

    def __init__(self, **settings: Any) -> None:
        self._pipeline: Pipeline | None = None
        with handle_internal_errors("SentrySpanProcessor.__init__"):
            pipeline = get_pipeline(settings)
            if pipeline.enabled:
                pipeline.processors += 1
                self._pipeline = pipeline

    @property
    def pipeline(self) -> Pipeline | None:
        """The shared pipeline (``None`` when the bridge is off)."""
        return self._pipeline

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Remember the start (cheap: one append)."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            pipeline.on_start(span)
            parent = span.parent
            if parent is None or parent.is_remote:
                # The trace's DSC: the sampler made it; with another sampler, made here.
                context = span.context
                traces = pipeline.traces
                if traces.get(context.trace_id) is None:
                    incoming = get_value(INCOMING_KEY, parent_context)
                    traces.start(context.trace_id,
                                 incoming if isinstance(incoming, Incoming) else None,
                                 context.trace_flags.sampled, pipeline.cfg.traces_sample_rate)
                traces.root_started(context.trace_id, span)
                # A local root takes over the business context that came in as baggage (and
                # the entries named by baggage: rules; usually none).
                entries = baggage.get_all(parent_context)
                if entries:
                    adopted = from_baggage(entries, pipeline.mapping.rules.baggage)
                    own = span.attributes or {}
                    span.set_attributes({k: v for k, v in adopted.items() if k not in own})
                if pipeline.cfg.monitor_spans or MONITOR_SLUG in raw_attributes(span):
                    root_started(pipeline, span)  # Sentry Crons: in_progress (_checkins.py)
        except Exception as exc:
            log_internal_error("SentrySpanProcessor.on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the finished span (cheap: one append)."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            pipeline.on_end(span)
            parent = span.parent
            if parent is None or parent.is_remote:
                context = span.context
                pipeline.traces.root_ended(context.trace_id, context.span_id)
                if pipeline.cfg.monitor_spans or MONITOR_SLUG in raw_attributes(span):
                    root_ended(pipeline, span)  # Sentry Crons: ok / error
        except Exception as exc:
            log_internal_error("SentrySpanProcessor.on_end", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything finished now, ignoring the late-span grace."""
        pipeline = self._pipeline
        if pipeline is None:
            return True
        with handle_internal_errors("SentrySpanProcessor.force_flush"):
            return pipeline.flush(timeout_millis / 1000.0)
        return False

    def shutdown(self) -> None:
        """Flush (bounded by ``SENTRY_BRIDGE_SHUTDOWN_TIMEOUT``) and stop."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        with handle_internal_errors("SentrySpanProcessor.shutdown"):
            pipeline.processors -= 1
            if pipeline.processors <= 0:
                pipeline.shutdown()
            else:
                pipeline.flush()
