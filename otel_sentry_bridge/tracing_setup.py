"""Sampler and propagator set-up (the ``opentelemetry_pre_instrument`` hook, and code).

Tracers copy their provider's sampler when they are created, so the sampler must be in place
before the instrumentors run: ``opentelemetry-instrument`` calls :func:`pre_instrument` after the
distro and the configurator and before any instrumentor. The propagator is read at each request,
but is set here too so that everything about traces is decided in one place.

* ``OTEL_TRACES_SAMPLER`` unset (or ``sentry_bridge``): the provider gets
  :class:`~otel_sentry_bridge.sampler.SentryBridgeSampler`. Any other value is honoured.
* ``OTEL_PROPAGATORS`` unset: the global propagator becomes
  :class:`~otel_sentry_bridge.propagation.SentryBridgePropagator` (W3C trace context, W3C
  baggage and Sentry's headers). Set, it is honoured; when it names ``sentry_bridge`` next to
  ``tracecontext``/``baggage``, those two are left out (``sentry_bridge`` writes the same headers,
  with one merged ``baggage``), so that each request carries one set of trace headers.
"""

from __future__ import annotations

import os

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._internal_errors import handle_internal_errors, logger
from .autoinstall import ensure_provider
from .pipeline import get_pipeline
from .propagation import SentryBridgePropagator
from .sampler import SentryBridgeSampler, sentry_bridge_sampler

ENTRY_POINT_NAME = "sentry_bridge"


def install_sampler(provider: TracerProvider) -> bool:
    """Give ``provider`` the bridge's sampler unless ``OTEL_TRACES_SAMPLER`` names another.

    Only tracers created afterwards use it (OpenTelemetry copies the sampler into each
    tracer)."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if name and name != ENTRY_POINT_NAME:
        logger.debug("otel-sentry-bridge: OTEL_TRACES_SAMPLER=%s is kept", name)
        return False
    if isinstance(provider.sampler, SentryBridgeSampler):
        return False
    provider.sampler = sentry_bridge_sampler(os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""))
    return True


def install_propagator() -> bool:
    """Make the global propagator write both formats (see the module docs)."""
    current = propagate.get_global_textmap()
    if not os.environ.get("OTEL_PROPAGATORS", "").strip():
        if isinstance(current, SentryBridgePropagator):
            return False
        propagate.set_global_textmap(SentryBridgePropagator())
        return True
    members = list(getattr(current, "_propagators", None) or [current])
    ours = [p for p in members if isinstance(p, SentryBridgePropagator)]
    if not ours:
        return False
    kept = [p for p in members if not isinstance(
        p, (SentryBridgePropagator, TraceContextTextMapPropagator, W3CBaggagePropagator))]
    if len(kept) + 1 == len(members) and members[-1] is ours[0]:
        return False
    propagate.set_global_textmap(CompositePropagator([*kept, ours[0]]))
    return True


def pre_instrument() -> None:
    """Entry point ``opentelemetry_pre_instrument: sentry_bridge``."""
    with handle_internal_errors("pre_instrument"):
        pipeline = get_pipeline()
        if not pipeline.enabled:
            return
        provider = ensure_provider()
        with handle_internal_errors("pre_instrument.sampler"):
            install_sampler(provider)
        with handle_internal_errors("pre_instrument.propagator"):
            install_propagator()
