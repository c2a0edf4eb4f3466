"""The strawberry schema extension: one span per operation, its steps and its resolvers.

Spans (all ``sentry.origin`` ``auto.graphql.strawberry``)::

    query GetOrders            graphql.query / graphql.mutation / graphql.subscription
    ├── parsing                graphql.parse
    ├── validation             graphql.validate
    └── execution              graphql.execute
        ├── resolving Query.orders           graphql.resolve  (depth 1)
        └── resolving Order.customer (x n)    graphql.resolve  (depth 2)

Resolver spans are siblings under ``execution``: graphql-core calls a field's children after
its resolver has returned, so nesting them would put children outside their parent's time
(sentry-sdk's and Apollo's tracing are flat too); ``graphql.path`` gives the tree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from inspect import isawaitable
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer
from strawberry.extensions import SchemaExtension

from otel_sentry_bridge._internal_errors import log_internal_error
from otel_sentry_bridge.conventions import Attr, Op, Source
from otel_sentry_bridge_instrumentation._base import (
    bridge_config,
    call_guarded,
    is_instrumentation_enabled,
)

from ._document import document_text, flat_variables
from ._errors import (
    OPERATION_NAME,
    OPERATION_TYPE,
    PATH,
    VARIABLES,
    ErrorRecorder,
    field_locations,
    path_text,
    set_error_status,
    status_text,
)
from ._operation import (
    OPS,
    default_tracer,
    names_transaction,
    operation_of,
    pre_execution_errors,
)

ORIGIN = "auto.graphql.strawberry"
#: Resolver spans per operation; further resolvers are counted in ``graphql.resolvers.untraced``.
MAX_RESOLVER_SPANS = 250

DOCUMENT = "graphql.document"
FIELD_NAME = "graphql.field_name"
PARENT_TYPE = "graphql.parent_type"
FIELD_PATH = "graphql.field_path"
ERRORS = "graphql.errors"
UNTRACED = "graphql.resolvers.untraced"

# Raised to the caller, who answers them (the HTTP views: 400): no error event.
_REQUEST_ERRORS = frozenset(
    {"MissingQueryError", "CannotGetOperationTypeError", "InvalidOperationTypeError"}
)
_OP, _ORIGIN = Attr.SENTRY_OP[0], Attr.SENTRY_ORIGIN[0]

class BridgeTracingExtension(SchemaExtension):
    """Spans and error events for a strawberry schema (added to every schema by
    :class:`~otel_sentry_bridge_instrumentation.strawberry.StrawberryInstrumentor`, or by
    hand: ``strawberry.Schema(query=Query, extensions=[BridgeTracingExtension])``)."""

    def __init__(
        self, *, execution_context: Any = None, tracer: Tracer | None = None
    ) -> None:
        if execution_context is not None:
            self.execution_context = execution_context
        self._tracer = tracer or default_tracer()
        self._span: Span | None = None
        self._errors: ErrorRecorder | None = None
        self._max_depth = 0
        self._resolver_spans = 0
        self._untraced = 0
        self._names_transaction = False
        self._subscription = False
        self._pii = False
        self._explicit_tracer = tracer is not None
        self._open_step: tuple[Span, object] | None = None

    def use_tracer(self, tracer: Tracer) -> None:
        """The instrumentor's tracer (its ``tracer_provider``), unless one was given."""
        if not self._explicit_tracer:
            self._tracer = tracer

    # -- the operation ---------------------------------------------------------------------

    def on_operation(self) -> Generator[None, None, None]:
        started = call_guarded("strawberry.on_operation", self._start)
        try:
            yield
        except Exception as exc:
            if started:
                call_guarded("strawberry.on_operation", self._escaped, exc)
            raise
        finally:
            if started:
                call_guarded("strawberry.on_operation", self._finish)

    def _start(self) -> bool:
        if not is_instrumentation_enabled():
            return False
        ctx = self.execution_context
        self._names_transaction = names_transaction(trace.get_current_span())
        # the name and op are known after parsing: set when the span ends
        span = self._tracer.start_span(
            "GraphQL operation", kind=SpanKind.INTERNAL, attributes={_ORIGIN: ORIGIN}
        )
        self._span = span
        cfg = bridge_config()
        self._pii = cfg.send_default_pii
        self._errors = ErrorRecorder(cfg.send_default_pii, ctx.variables)
        # resolver spans only in sampled traces (a trace recorded for its errors only gets
        # its resolver errors on the operation span)
        sampled = span.is_recording() and span.get_span_context().trace_flags.sampled
        self._max_depth = cfg.graphql_resolver_depth if sampled else 0
        return True

    def _escaped(self, exc: Exception) -> None:
        span = self._span
        if span is None or self._errors is None:
            return
        if type(exc).__name__ not in _REQUEST_ERRORS:
            self._errors.record(span, exc, None, None)
        set_error_status(span, status_text(exc, self._pii))

    def _finish(self) -> None:
        if self._open_step is not None:
            # strawberry never exits the hooks entered before one that raised on entering
            # (another extension's): the step ends here, in the context it was opened in
            step, token = self._open_step
            self._open_step = None
            otel_context.detach(token)  # type: ignore[arg-type]
            set_error_status(step, "the step's hooks were not exited")
            step.end()
        span, self._span = self._span, None
        self._max_depth = 0
        if span is None or self._errors is None:
            return
        ctx = self.execution_context
        kind, name = self._note_operation()
        span.update_name(f"{kind} {name}" if name else kind)
        if span.is_recording():
            pii = self._pii
            attrs: dict[str, Any] = {_OP: OPS[kind], OPERATION_TYPE: kind}
            if name:
                attrs[OPERATION_NAME] = name
                # a subscription shares its WebSocket connection with other operations
                if self._names_transaction and kind != "subscription":
                    attrs[Attr.SENTRY_TRANSACTION_NAME[0]] = name
                    attrs[Attr.SENTRY_TRANSACTION_SOURCE[0]] = Source.COMPONENT
            if isinstance(ctx.query, str) and ctx.query:
                attrs[DOCUMENT] = document_text(ctx.query, pii)
            if pii and isinstance(ctx.variables, Mapping) and ctx.variables:
                attrs.update(flat_variables(ctx.variables, VARIABLES))
            if self._untraced:
                attrs[UNTRACED] = self._untraced
            span.set_attributes(attrs)
            # the errors as raised: ``result.errors`` may be masked by now (MaskErrors)
            errors = pre_execution_errors(ctx)
            if errors is None:
                errors = getattr(ctx.result, "errors", None)
            if errors:
                span.set_attribute(ERRORS, len(errors))
                self._record_errors(span, errors)
        span.end()

    def _record_errors(self, span: Span, errors: list[Any]) -> None:
        """GraphQL errors, each where it happened: ``span`` unless a resolver span has it."""
        if self._errors is not None:
            for error in errors:
                if isinstance(error, GraphQLError):
                    self._errors.record_result_error(span, error)
        set_error_status(span, status_text(errors[0], self._pii) if len(errors) == 1
                         else f"{len(errors)} GraphQL errors")

    # -- parse, validate, execute ----------------------------------------------------------

    def _step(self, name: str, op: str) -> Generator[None, None, None]:
        step = call_guarded("strawberry.step", self._start_step, name, op)
        failed: Exception | None = None
        closed = False
        try:
            yield
        except GeneratorExit:  # never resumed: closed later, maybe by the garbage collector
            closed = True
            raise
        except Exception as exc:  # not CancelledError: a stream went away
            failed = exc
            raise
        finally:
            if step is not None:
                call_guarded("strawberry.step", self._end_step, op, *step, failed, closed)

    def _start_step(self, name: str, op: str) -> tuple[Span, object] | None:
        if self._span is None:
            return None
        parent = trace.set_span_in_context(self._span)
        span = self._tracer.start_span(
            name, context=parent, attributes={_OP: op, _ORIGIN: ORIGIN}
        )
        if op == Op.GRAPHQL_EXECUTE:
            self._subscription = self._note_operation()[0] == "subscription"
        token = otel_context.attach(trace.set_span_in_context(span))
        self._open_step = (span, token)
        return span, token

    def _note_operation(self) -> tuple[str, str | None]:
        """The operation's type and name, for the error events too (known once parsed)."""
        kind, name = operation_of(self.execution_context)
        if self._errors is not None:
            self._errors.operation_type, self._errors.operation_name = kind, name
        return kind, name

    def _end_step(
        self, op: str, span: Span, token: object, failed: Exception | None, closed: bool
    ) -> None:
        if self._open_step is None or self._open_step[0] is not span:
            return  # the operation's end closed it
        self._open_step = None
        if not closed:
            otel_context.detach(token)  # type: ignore[arg-type]
        errors = pre_execution_errors(self.execution_context)
        if op != Op.GRAPHQL_EXECUTE and errors and self._errors is not None:
            # a syntax error (parsing) or the validation errors, where they were found
            self._note_operation()
            self._record_errors(span, errors)
        elif failed is not None:
            set_error_status(span, status_text(failed, self._pii))
        span.end()
        if op == Op.GRAPHQL_EXECUTE and self._subscription:
            # the subscription is set up; its events come for as long as the client stays
            self._finish()

    def on_parse(self) -> Generator[None, None, None]:
        yield from self._step("parsing", Op.GRAPHQL_PARSE)

    def on_validate(self) -> Generator[None, None, None]:
        yield from self._step("validation", Op.GRAPHQL_VALIDATE)

    def on_execute(self) -> Generator[None, None, None]:
        yield from self._step("execution", Op.GRAPHQL_EXECUTE)

    def on_stream_result(self, result: Any) -> Generator[None, None, None]:
        if self._subscription and self._span is None and getattr(result, "errors", None):
            call_guarded("strawberry.on_stream_result", self._event_errors, result.errors)
        yield

    def _event_errors(self, errors: list[Any]) -> None:
        """Errors of one subscription event: a short span of their own, in the current
        trace (the WebSocket connection's), since the operation's span has ended."""
        recorder = self._errors
        if recorder is None or not is_instrumentation_enabled():
            return
        kind, name = recorder.operation_type or "subscription", recorder.operation_name
        span = self._tracer.start_span(
            f"{kind} {name}" if name else kind,
            attributes={_OP: Op.GRAPHQL_SUBSCRIPTION, _ORIGIN: ORIGIN, OPERATION_TYPE: kind,
                        **({OPERATION_NAME: name} if name else {}), ERRORS: len(errors)},
        )
        self._record_errors(span, errors)
        span.end()

    # -- resolvers -------------------------------------------------------------------------

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo[Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # every field of the result passes here: the common cases (a plain attribute, too
        # deep) leave after a dict lookup and a walk up a short path, without a context manager
        limit = self._max_depth
        if limit <= 0:
            return _next(root, info, *args, **kwargs)
        try:
            span = self._resolver_span(info, limit)
        except Exception as exc:
            log_internal_error("strawberry.resolve", exc)
            span = None
        if span is None:
            return _next(root, info, *args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = _next(root, info, *args, **kwargs)
        except Exception as exc:
            call_guarded("strawberry.resolve", self._resolver_failed, span, exc, info)
            span.end()
            raise
        finally:
            otel_context.detach(token)
        if isawaitable(result):
            return self._await_resolver(span, info, result)
        span.end()
        return result

    async def _await_resolver(
        self, span: Span, info: GraphQLResolveInfo[Any], result: Awaitable[Any]
    ) -> Any:
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await result
        except Exception as exc:
            call_guarded("strawberry.resolve", self._resolver_failed, span, exc, info)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _resolver_span(self, info: GraphQLResolveInfo[Any], limit: int) -> Span | None:
        field = info.parent_type.fields.get(info.field_name)
        resolver = field.resolve if field is not None else None
        if resolver is None or getattr(resolver, "_is_default", False):
            return None  # a plain attribute: strawberry's default resolver
        depth = 0
        path: Any = info.path
        while path is not None:
            key = path.key
            if isinstance(key, str):
                if key.startswith("__"):  # introspection
                    return None
                depth += 1
                if depth > limit:
                    return None
            path = path.prev
        if self._resolver_spans >= MAX_RESOLVER_SPANS:
            self._untraced += 1
            return None
        self._resolver_spans += 1
        parent_type, field_name = info.parent_type.name, info.field_name
        return self._tracer.start_span(
            f"resolving {parent_type}.{field_name}",
            attributes={
                _OP: Op.GRAPHQL_RESOLVE, _ORIGIN: ORIGIN,
                FIELD_NAME: field_name, PARENT_TYPE: parent_type,
                FIELD_PATH: f"{parent_type}.{field_name}",
                PATH: path_text(info.path.as_list()) or field_name,
            },
        )

    def _resolver_failed(self, span: Span, exc: Exception, info: GraphQLResolveInfo[Any]) -> None:
        set_error_status(span, status_text(exc, self._pii))
        if self._errors is not None:
            self._errors.record(
                span, exc, path_text(info.path.as_list()), field_locations(info.field_nodes)
            )


class OperationTracingExtension(BridgeTracingExtension):
    """The same without resolver spans (``SENTRY_BRIDGE_GRAPHQL_RESOLVER_DEPTH=0``): no
    ``resolve`` hook, so strawberry adds no middleware to every field."""

    resolve = SchemaExtension.resolve
