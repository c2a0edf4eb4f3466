"""What every instrumentation of this package shares (the OpenTelemetry contrib skeleton).

An instrumentation is a package ``otel_sentry_bridge_instrumentation.<name>`` with
``package.py`` (``_instruments``: the target library's requirement), an ``__init__.py`` that
imports the target library at module top (so ``opentelemetry-instrument`` skips a missing
library quietly: ``ModuleNotFoundError``) and defines ``<Name>Instrumentor``, a subclass of
:class:`BridgeInstrumentor`. It is registered as the entry point
``opentelemetry_instrumentor: sentry_bridge_<name>``.

Guarantees, whoever loads the instrumentor (``opentelemetry-instrument`` with any distro, or
``<Name>Instrumentor().instrument()`` in code):

* a target library outside the supported range is left alone (one debug line);
* an exception while patching is logged once and swallowed (re-raised under pytest, like every
  internal error of the bridge): the next instrumentor still runs, the app still starts;
* every wrapper checks :func:`is_instrumentation_enabled` first and never lets an exception of
  its own reach the application (see :func:`call_guarded`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_sentry_bridge._internal_errors import handle_internal_errors, logger
from otel_sentry_bridge.config import BridgeConfig
from otel_sentry_bridge.version import __version__

__all__ = [
    "BridgeInstrumentor",
    "bridge_config",
    "call_guarded",
    "is_instrumentation_enabled",
]

R = TypeVar("R")

#: Semantic-conventions schema of the attributes our instrumentations write.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.30.0"


def bridge_config() -> BridgeConfig:
    """The process's bridge settings (``SENTRY_BRIDGE_*``), read when a span is made, so code
    overrides and tests' pipelines apply. Cheap: no lock after the first call."""
    from otel_sentry_bridge.pipeline import get_pipeline  # noqa: PLC0415 (import cycle)

    return get_pipeline().cfg


def call_guarded(where: str, func: Callable[..., R], *args: Any, **kwargs: Any) -> R | None:
    """``func(*args, **kwargs)`` for the instrumentation's own bookkeeping: an exception is
    logged once (re-raised under pytest) and ``None`` returned. Never wrap the user's call in
    this: their exceptions are theirs to see."""
    with handle_internal_errors(where):
        return func(*args, **kwargs)
    return None


class BridgeInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base of the bridge's instrumentors: guarded ``instrument``/``uninstrument``."""

    #: The target library's requirements (from ``package.py``), e.g. ``("cachetools >= 5",)``.
    _instruments: tuple[str, ...] = ()
    #: Instrumentation scope name (defaults to the module of the subclass).
    scope_name: str = ""

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def tracer(self, **kwargs: Any) -> trace.Tracer:
        """The tracer for this instrumentation (``tracer_provider=`` honoured)."""
        return trace.get_tracer(
            self.scope_name or type(self).__module__,
            __version__,
            tracer_provider=kwargs.get("tracer_provider"),
            schema_url=SCHEMA_URL,
        )

    def _instrument(self, **kwargs: Any) -> None:
        name = type(self).__name__
        with handle_internal_errors(f"{name}.instrument"):
            conflict = get_dependency_conflicts(list(self._instruments))
            if conflict is not None:
                logger.debug("otel-sentry-bridge: %s not applied: %s", name, conflict)
                return
            self._patch(**kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        with handle_internal_errors(f"{type(self).__name__}.uninstrument"):
            self._unpatch(**kwargs)

    def _patch(self, **kwargs: Any) -> None:
        """Apply the wrappers (subclasses)."""
        raise NotImplementedError

    def _unpatch(self, **kwargs: Any) -> None:
        """Remove the wrappers (subclasses)."""
        raise NotImplementedError
