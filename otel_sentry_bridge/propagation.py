"""``SentryBridgePropagator``: Sentry's ``sentry-trace`` + ``baggage`` beside W3C trace context.

One propagator for both formats (``OTEL_PROPAGATORS=sentry_bridge``, or the default when the
bridge is installed and ``OTEL_PROPAGATORS`` is unset):

* **extract** reads W3C ``traceparent``/``tracestate`` and ``baggage`` (every member lands in
  OpenTelemetry's baggage, as the ``baggage`` propagator does) and Sentry's ``sentry-trace``.
  When both trace headers are valid, ``traceparent`` wins (it is the closest hop: a W3C-only
  proxy in between rewrites it but passes ``sentry-trace`` on); Sentry's DSC (``sentry-*``
  baggage members) is kept only when its trace id is the one continued. A malformed header is
  ignored (no header valid: a new trace starts).
* **inject** writes ``traceparent`` (+ ``tracestate``), ``sentry-trace`` with the same ids and
  decision, and one ``baggage``: the non-Sentry members of OpenTelemetry's baggage followed by
  the trace's frozen DSC. Limited by ``SENTRY_BRIDGE_TRACE_PROPAGATION_TARGETS``.

Every call is guarded: on an internal error extract returns the context it was given and
inject writes nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current, get_value, set_value
from opentelemetry.propagators import textmap
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._dsc import INCOMING_KEY, Incoming
from ._internal_errors import log_internal_error
from ._mapping.head import describe_root
from ._trace_headers import (
    BAGGAGE,
    SENTRY_PREFIX,
    SENTRY_TRACE,
    format_sentry_trace,
    join_baggage,
    parse_sentry_trace,
    sentry_members,
    split_baggage,
)
from .pipeline import Pipeline, get_pipeline

_TRACECONTEXT = TraceContextTextMapPropagator()
_W3C_BAGGAGE = W3CBaggagePropagator()
_URL_KEYS = ("url.full", "http.url")
_HEX32 = re.compile(r"[0-9a-f]{32}")
#: Characters a baggage key may keep unencoded (W3C token characters).
_KEY_SAFE = "!#$%&'*+-.^_`|~"


def _first(values: Any) -> str | None:
    if not values:
        return None
    if isinstance(values, str):
        return values
    parts = [v for v in values if isinstance(v, str) and v]
    return ",".join(parts) if parts else None


class SentryBridgePropagator(textmap.TextMapPropagator):
    """W3C trace context + W3C baggage + Sentry's ``sentry-trace`` and DSC, in one."""

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Continue the incoming trace (see the module docs for which header wins)."""
        if context is None:
            context = get_current()
        try:
            return self._extract(carrier, context, getter)
        except Exception as exc:
            log_internal_error("SentryBridgePropagator.extract", exc)
            return context

    def _extract(
        self, carrier: textmap.CarrierT, context: Context, getter: textmap.Getter[Any],
    ) -> Context:
        context = _W3C_BAGGAGE.extract(carrier, context, getter)
        w3c = trace.get_current_span(_TRACECONTEXT.extract(carrier, context, getter))
        w3c_ctx = w3c.get_span_context()
        sentry = parse_sentry_trace(_first(getter.get(carrier, SENTRY_TRACE)))
        items, _ = split_baggage(_first(getter.get(carrier, BAGGAGE)))
        dsc = items or None
        if w3c_ctx.is_valid:
            sampled: bool | None = w3c_ctx.trace_flags.sampled
            if sentry is not None and sentry.trace_id != w3c_ctx.trace_id:
                dsc = None  # it describes the trace of sentry-trace: not the one continued
            elif _dsc_trace(dsc) not in ((None, w3c_ctx.trace_id) if sentry is not None
                                         else (w3c_ctx.trace_id,)):
                dsc = None  # it names another trace (or, W3C alone, none)
            incoming = Incoming(w3c_ctx.trace_id, w3c_ctx.span_id, sampled, dsc)
            parent = w3c_ctx
        elif sentry is not None:
            if _dsc_trace(dsc) not in (None, sentry.trace_id):
                dsc = None
            incoming = Incoming(sentry.trace_id, sentry.span_id, sentry.sampled, dsc)
            # A deferred decision is passed as "sampled" so that OpenTelemetry's parent-based
            # samplers record; the bridge's sampler decides by itself (Incoming.sampled None).
            flags = TraceFlags(TraceFlags.DEFAULT if sentry.sampled is False
                               else TraceFlags.SAMPLED)
            parent = SpanContext(sentry.trace_id, sentry.span_id, is_remote=True,
                                 trace_flags=flags)
        else:
            return context
        pipeline = _pipeline()
        if pipeline is not None and not _continues_org(
                pipeline, incoming.dsc.get("org_id") if incoming.dsc else None):
            return context  # another organization's trace: start a new one
        context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        return set_value(INCOMING_KEY, incoming, context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write ``traceparent``, ``sentry-trace`` and one merged ``baggage``."""
        try:
            self._inject(carrier, context, setter)
        except Exception as exc:
            log_internal_error("SentryBridgePropagator.inject", exc)

    def _inject(
        self, carrier: textmap.CarrierT, context: Context | None, setter: textmap.Setter[Any],
        check_targets: bool = True,
    ) -> None:
        span = trace.get_current_span(context)
        span_ctx = span.get_span_context()
        pipeline = _pipeline()
        members = _other_members(baggage.get_all(context))
        if not span_ctx.is_valid:
            if members:
                setter.set(carrier, BAGGAGE, join_baggage(members))
            return
        if check_targets and pipeline is not None and not _targeted(pipeline, span):
            return
        # Everything is worked out before anything is written: a failure writes nothing.
        headers: dict[str, str] = {}
        _TRACECONTEXT.inject(headers, context)
        headers[SENTRY_TRACE] = format_sentry_trace(
            span_ctx.trace_id, span_ctx.span_id, span_ctx.trace_flags.sampled)
        dsc = _dsc_for(pipeline, span_ctx.trace_id, context)
        # Sentry's members first (as sentry-sdk writes them): the W3C size limits cut the
        # others, never the DSC.
        all_members = [*(sentry_members(dsc) if dsc else ()), *members]
        if all_members:
            headers[BAGGAGE] = join_baggage(all_members)
        for name, value in headers.items():
            setter.set(carrier, name, value)

    @property
    def fields(self) -> set[str]:
        """The headers ``inject`` may write."""
        return {"traceparent", "tracestate", SENTRY_TRACE, BAGGAGE}


def trace_headers(context: Context | None = None) -> dict[str, str]:
    """The headers ``inject`` writes for ``context`` (default: the current one), without the
    ``SENTRY_BRIDGE_TRACE_PROPAGATION_TARGETS`` check: for a page that continues the trace in
    the browser (``otel_sentry_bridge.browser.meta_tags``). Without a valid span: at most
    OpenTelemetry's own baggage."""
    carrier: dict[str, str] = {}
    try:
        SentryBridgePropagator()._inject(carrier, context, textmap.default_setter, False)
    except Exception as exc:
        log_internal_error("trace_headers", exc)
        return {}
    return carrier


def _pipeline() -> Pipeline | None:
    return get_pipeline()


def _dsc_trace(dsc: Mapping[str, str] | None) -> int | None:
    """The trace id a DSC names: ``None`` when it names none, ``0`` (no trace's) when its
    ``trace_id`` is not 32 hex digits, so that such a DSC is never passed on."""
    if not dsc or "trace_id" not in dsc:
        return None
    value = dsc["trace_id"]
    return int(value, 16) if _HEX32.fullmatch(value) else 0


def _continues_org(pipeline: Pipeline, incoming_org: str | None) -> bool:
    """Sentry's trace continuation rule for organization ids."""
    ours = pipeline.traces.defaults.org_id
    if pipeline.cfg.strict_trace_continuation:
        return incoming_org == ours or (incoming_org is None and ours is None)
    return incoming_org is None or ours is None or incoming_org == ours


def _other_members(entries: Mapping[str, object]) -> list[str]:
    """OpenTelemetry baggage entries except Sentry's, encoded as W3C members."""
    return [f"{quote(key, safe=_KEY_SAFE)}={quote(str(value), safe='')}"
            for key, value in entries.items() if not key.startswith(SENTRY_PREFIX)]


def _dsc_for(
    pipeline: Pipeline | None, trace_id: int, context: Context | None,
) -> dict[str, str] | None:
    """The trace's DSC (frozen now if this is its first outgoing request). Without a
    configured bridge (no DSN) an upstream DSC is passed on, but none is made here (it would
    lack the public key that Relay needs)."""
    if pipeline is not None and pipeline.enabled:
        entry = pipeline.traces.get(trace_id)
        if entry is not None:
            if entry.frozen:
                return entry.dsc
            mapping = pipeline.mapping
            return pipeline.traces.freeze(entry, lambda root: describe_root(root, mapping))
    incoming = get_value(INCOMING_KEY, context)
    if isinstance(incoming, Incoming) and incoming.trace_id == trace_id:
        return incoming.frozen_dsc()
    return None


def _targeted(pipeline: Pipeline, span: trace.Span) -> bool:
    """Whether the outgoing request of ``span`` may carry trace headers."""
    targets = pipeline.cfg.trace_propagation_targets
    if not targets:
        return True
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_KEYS:
        url = attributes.get(key)
        if isinstance(url, str) and url:
            return _matcher(targets).search(url) is not None
    return False  # targets are set and the URL is unknown (e.g. a non-recording span)


@lru_cache(maxsize=8)
def _matcher(targets: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{t})" for t in targets))
