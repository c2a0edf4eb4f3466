"""``SentryBridgeSampler``: Sentry's sampling semantics as an OpenTelemetry ``Sampler``.

Per local root (a span without a parent, or with a remote one), first match wins:

1. ``SENTRY_BRIDGE_SKIP_OPTIONS_HEAD`` and an HTTP server root of an OPTIONS/HEAD request:
   not sampled.
2. ``SENTRY_BRIDGE_TRACES_SAMPLER`` (import path): ``traces_sampler(context)`` returns a rate
   (or a bool); ``context`` holds the root's name, kind, a copy of its OTel attributes (also
   flattened into the context), ``trace_id``, ``parent_sampled`` and ``parent_sample_rate``.
3. The parent's decision: ``traceparent`` flags or ``sentry-trace``'s ``-1``/``-0``.
4. ``SENTRY_TRACES_SAMPLE_RATE`` (unset: 1.0).

A rate decides as Sentry does: sampled when ``sample_rand < rate``, with ``sample_rand`` from
the incoming DSC (backfilled when missing) or, at the head, from the trace id (so that services
using OpenTelemetry's ratio sampler agree). Spans with a local parent follow their parent.

Unsampled roots stay *recording* (``RECORD_ONLY``: not exported, not sent as transactions,
counted in client reports) so that their errors still reach Sentry, unless
``SENTRY_BRIDGE_UNSAMPLED_ERRORS=false`` drops them here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.context import Context, get_value
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from ._dsc import INCOMING_KEY, Incoming
from ._internal_errors import log_internal_error, warn_once
from ._trace_headers import parse_rate, rand_from_trace_id
from .filters import resolve_hook
from .pipeline import Pipeline, get_pipeline

_METHOD_KEYS = ("http.request.method", "http.method")
_SKIPPED_METHODS = frozenset({"OPTIONS", "HEAD"})
class SentryBridgeSampler(Sampler):
    """Sentry semantics (rate, ``traces_sampler``, parent-based, consistent ``sample_rand``)."""

    def __init__(self, sample_rate: float | None = None) -> None:
        #: overrides ``SENTRY_TRACES_SAMPLE_RATE`` (``OTEL_TRACES_SAMPLER_ARG``)
        self.sample_rate = sample_rate
        self._hook: tuple[str, Callable[[dict[str, Any]], Any] | None] | None = None

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Decide for one span (guarded: on an internal error the parent's decision, or
        sampled at a root)."""
        parent_span = trace.get_current_span(parent_context)
        parent = parent_span.get_span_context()
        try:
            if parent.is_valid and not parent.is_remote and not parent_span.is_recording():
                # a dropped local parent (e.g. a skipped OPTIONS request): its children too
                return SamplingResult(Decision.DROP, None, parent.trace_state)
            return self._decide(parent_context, parent, trace_id, name, kind, attributes)
        except Exception as exc:
            log_internal_error("SentryBridgeSampler.should_sample", exc)
            sampled = parent.trace_flags.sampled if parent.is_valid else True
            return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
                                  attributes if sampled else None,
                                  parent.trace_state if parent.is_valid else None)

    def _decide(
        self, parent_context: Context | None, parent: trace.SpanContext, trace_id: int,
        name: str, kind: SpanKind | None, attributes: Attributes,
    ) -> SamplingResult:
        pipeline = get_pipeline()
        keep_unsampled = pipeline.cfg.unsampled_errors
        state = parent.trace_state if parent.is_valid else None
        if parent.is_valid and not parent.is_remote:
            return _result(parent.trace_flags.sampled, keep_unsampled, state, attributes)
        incoming: Incoming | None = None
        parent_sampled: bool | None = None
        if parent.is_valid:
            found = get_value(INCOMING_KEY, parent_context)
            if isinstance(found, Incoming) and found.trace_id == trace_id:
                incoming = found
                parent_sampled = found.sampled
            else:
                parent_sampled = parent.trace_flags.sampled
        rand = incoming.sample_rand() if incoming is not None else rand_from_trace_id(trace_id)
        parent_rate = (parse_rate(incoming.dsc.get("sample_rate"))
                       if incoming is not None and incoming.dsc else None)
        rate: float | None
        if pipeline.cfg.skip_options_head and kind is SpanKind.SERVER and _method(
                attributes) in _SKIPPED_METHODS:
            pipeline.drops.record("sample_rate", "transaction", 1)
            return SamplingResult(Decision.DROP, None, state)
        hook = self._traces_sampler(pipeline)
        decided: bool | None = None
        if hook is not None:
            rate = _call_hook(hook, _sampling_context(
                name, kind, attributes, trace_id, parent_sampled, parent_rate))
        else:
            rate = None
        if rate is None:
            if parent_sampled is not None:
                decided = parent_sampled
                # As sentry-sdk does when the parent decided without telling its rate
                rate = parent_rate if parent_rate is not None else float(parent_sampled)
            else:
                rate = self._configured_rate(pipeline)
        sampled = decided if decided is not None else rand < (rate if rate is not None else 1.0)
        if pipeline.enabled:  # the DSC this trace's requests and envelopes carry
            pipeline.traces.start(trace_id, incoming, sampled,
                                  rate if rate is not None else self._configured_rate(pipeline),
                                  rand)
        if not sampled and not keep_unsampled:
            pipeline.drops.record("sample_rate", "transaction", 1)
        return _result(sampled, keep_unsampled, state, attributes)

    def _configured_rate(self, pipeline: Pipeline) -> float:
        if self.sample_rate is not None:
            return self.sample_rate
        rate = pipeline.cfg.traces_sample_rate
        return 1.0 if rate is None else rate

    def _traces_sampler(self, pipeline: Pipeline) -> Callable[[dict[str, Any]], Any] | None:
        path = pipeline.cfg.traces_sampler
        if not path:
            return None
        cached = self._hook
        if cached is not None and cached[0] == path:
            return cached[1]
        hook = _import_hook(path)
        self._hook = (path, hook)
        return hook

    def get_description(self) -> str:
        """Shown by OpenTelemetry's diagnostics."""
        return "SentryBridgeSampler"


def _result(
    sampled: bool, keep_unsampled: bool, state: TraceState | None, attributes: Attributes,
) -> SamplingResult:
    """The decision; the span's attributes are the ones returned here (OpenTelemetry starts
    the span with them), so a recording span gets the caller's attributes back as they came."""
    if sampled:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
    if keep_unsampled:
        return SamplingResult(Decision.RECORD_ONLY, attributes, state)
    return SamplingResult(Decision.DROP, None, state)


def _method(attributes: Attributes) -> str | None:
    if not attributes:
        return None
    for key in _METHOD_KEYS:
        value = attributes.get(key)
        if isinstance(value, str):
            return value.upper()
    return None


def _sampling_context(
    name: str, kind: SpanKind | None, attributes: Attributes, trace_id: int,
    parent_sampled: bool | None, parent_rate: float | None,
) -> dict[str, Any]:
    """What ``traces_sampler`` receives (copies: the caller's attributes are never touched)."""
    attrs = dict(attributes) if attributes else {}
    context: dict[str, Any] = dict(attrs)
    context.update({
        "name": name,
        "kind": kind.name.lower() if kind is not None else "internal",
        "attributes": attrs,
        "trace_id": f"{trace_id:032x}",
        "parent_sampled": parent_sampled,
        "parent_sample_rate": parent_rate,
        "transaction_context": {"name": name, "trace_id": f"{trace_id:032x}",
                                "parent_sampled": parent_sampled},
    })
    return context


def _import_hook(path: str) -> Callable[[dict[str, Any]], Any] | None:
    def warn(problem: str) -> None:
        warn_once(f"import:{path}", "SENTRY_BRIDGE_TRACES_SAMPLER: %s; SENTRY_TRACES_SAMPLE_RATE "
                  "applies", problem)

    return cast("Callable[[dict[str, Any]], Any] | None", resolve_hook(path, warn))


def _call_hook(hook: Callable[[dict[str, Any]], Any], context: Mapping[str, Any]) -> float | None:
    """The hook's rate; ``None`` (the next rule applies) when it fails or returns nonsense."""
    try:
        value = hook(dict(context))
    except Exception as exc:
        warn_once("raised", "traces_sampler raised %r; the next sampling rule applies", exc)
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    rate = parse_rate(value) if isinstance(value, (int, float)) else None
    if rate is None:
        warn_once("value", "traces_sampler returned %r (not a number from 0 to 1 or a "
                   "bool); the next sampling rule applies", value)
    return rate


def sentry_bridge_sampler(argument: str = "") -> Sampler:
    """Entry point ``opentelemetry_traces_sampler: sentry_bridge``; a non-empty
    ``OTEL_TRACES_SAMPLER_ARG`` is the sample rate."""
    rate = parse_rate(argument) if argument and argument.strip() else None
    if argument and argument.strip() and rate is None:
        warn_once("arg", "OTEL_TRACES_SAMPLER_ARG=%r is not a rate from 0 to 1; "
                   "SENTRY_TRACES_SAMPLE_RATE applies", argument)
    return SentryBridgeSampler(rate)
