"""What the extension reads about an operation and its surroundings (no state)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer

from otel_sentry_bridge.conventions import Op
from otel_sentry_bridge.version import __version__
from otel_sentry_bridge_instrumentation._base import SCHEMA_URL

SCOPE = "otel_sentry_bridge_instrumentation.strawberry"

OPS = {
    "query": Op.GRAPHQL_QUERY,
    "mutation": Op.GRAPHQL_MUTATION,
    "subscription": Op.GRAPHQL_SUBSCRIPTION,
}

_default_tracer: Tracer | None = None


def default_tracer() -> Tracer:
    """The global provider's tracer (an extension the user adds to a schema themselves)."""
    global _default_tracer
    if _default_tracer is None:
        _default_tracer = trace.get_tracer(SCOPE, __version__, schema_url=SCHEMA_URL)
    return _default_tracer


def operation_of(ctx: Any) -> tuple[str, str | None]:
    """``(type, name)`` of the executed operation; the type guessed from the text (as
    sentry-sdk does) when the document did not parse."""
    name = ctx.operation_name
    kind: str | None = None
    if ctx.graphql_document is not None:
        try:
            kind = ctx.operation_type.value
        except Exception:  # no such operation in the document
            kind = None
    if kind not in OPS:
        text = (ctx.query or "").lstrip() if isinstance(ctx.query, str) else ""
        kind = "mutation" if text.startswith("mutation") else (
            "subscription" if text.startswith("subscription") else "query")
    return kind, (name if isinstance(name, str) and name else None)


def pre_execution_errors(ctx: Any) -> list[Any] | None:
    """The errors as raised (``ExecutionContext.errors`` in older strawberry)."""
    errors = getattr(ctx, "pre_execution_errors", None)
    return errors if errors is not None else getattr(ctx, "errors", None)


def names_transaction(parent: Span) -> bool:
    """The operation names the transaction when it is the local root (no parent, or a remote
    one) or runs right in a server span (a request); not inside a task or a custom span."""
    if not parent.get_span_context().is_valid:
        return True
    kind = getattr(parent, "kind", None)
    return kind is None or kind is SpanKind.SERVER
