"""Strawberry GraphQL: operation, parse, validate, execute and resolver spans; GraphQL errors
as Sentry error events; the transaction named after the operation (docs/instrumentation/
graphql.md).

``StrawberryInstrumentor().instrument()`` (or ``opentelemetry-instrument``, through the entry
point ``sentry_bridge_strawberry``) wraps ``strawberry.Schema.get_extensions``, which every
execution path calls once per operation (``execute``, ``execute_sync``, ``subscribe``,
``stream``, so every HTTP and WebSocket view): the bridge's extension is put first (outermost)
in the list, unless the schema already has one. Schemas created before ``instrument()`` are
covered too, and ``uninstrument()`` takes it away from all of them.
"""

from __future__ import annotations

from typing import Any

import strawberry  # noqa: F401  (a missing library: ModuleNotFoundError, skipped quietly)
from opentelemetry import trace
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Tracer
from strawberry.schema.schema import Schema
from wrapt import wrap_function_wrapper

from otel_sentry_bridge_instrumentation._base import (
    BridgeInstrumentor,
    bridge_config,
    call_guarded,
    is_instrumentation_enabled,
)

from ._extension import BridgeTracingExtension, OperationTracingExtension
from .package import _instruments

__all__ = ["BridgeTracingExtension", "StrawberryInstrumentor"]


def _add_extension(extensions: Any, tracer: Tracer) -> None:
    if not isinstance(extensions, list):
        return
    present = False
    for extension in extensions:  # the user added it (or a subclass): not twice, our tracer
        if isinstance(extension, BridgeTracingExtension):
            extension.use_tracer(tracer)
            present = True
        elif isinstance(extension, type) and issubclass(extension, BridgeTracingExtension):
            present = True  # older strawberry lists classes, instantiated later
    if present:
        return
    # no resolver spans (depth 0, or a parent trace that is not sampled): no resolver hook, so
    # strawberry adds no middleware to each field of the result
    parent = trace.get_current_span().get_span_context()
    resolvers = bridge_config().graphql_resolver_depth > 0 and (
        not parent.is_valid or parent.trace_flags.sampled)
    kind = BridgeTracingExtension if resolvers else OperationTracingExtension
    extensions.insert(0, kind(tracer=tracer))


class StrawberryInstrumentor(BridgeInstrumentor):
    """Adds :class:`BridgeTracingExtension` to every strawberry schema's operations."""

    _instruments = _instruments

    def _patch(self, **kwargs: Any) -> None:
        tracer = self.tracer(**kwargs)

        def get_extensions(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            extensions = wrapped(*args, **kw)
            if is_instrumentation_enabled():
                call_guarded("strawberry.get_extensions", _add_extension, extensions, tracer)
            return extensions

        wrap_function_wrapper(Schema, "get_extensions", get_extensions)

    def _unpatch(self, **kwargs: Any) -> None:
        unwrap(Schema, "get_extensions")
