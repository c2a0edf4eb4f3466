"""The request's span for :mod:`otel_sentry_bridge.middleware` (WSGI and ASGI alike): whether
to make one, enrich the one the request has, or find the framework's when the response starts;
its route and name; its error and its end. Every step is guarded (an internal error is logged
once and the request goes on untouched)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.utils import (
    is_http_instrumentation_enabled,
    is_instrumentation_enabled,
)
from opentelemetry.semconv.attributes import error_attributes, http_attributes
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import _server_request as req
from . import _server_routes as routes
from ._internal_errors import handle_internal_errors, warn_once
from ._mapping.values import safe_str
from .conventions import Attr, Source
from .pipeline import get_pipeline
from .version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

#: ``sentry.origin`` of the spans the middlewares make.
ORIGIN_WSGI: Final = "auto.http.wsgi"
ORIGIN_ASGI: Final = "auto.http.asgi"
#: Environ/scope key of the span a middleware made (an inner one then passes the request on).
SPAN_KEY: Final = "otel_sentry_bridge.server_span"
#: Longest route a ``route_resolver`` may give (longer ones are cut).
MAX_ROUTE = 1000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteResolver = Callable[[Any], "str | None"]


class Mode(enum.Enum):
    OWN = "own"  # the middleware's span
    ENRICH = "enrich"  # a server span of the request was current when it came in
    DEFER = "defer"  # the framework's span starts inside the app: found at response start
    QUIET = "quiet"  # a span that does not record is current: only the meta tags


class Exchange:
    """One request's telemetry state."""

    __slots__ = ("carrier", "context", "ended", "mode", "named", "request", "root_path", "span",
                 "started")

    def __init__(self, carrier: MutableMapping[str, Any], request: req.Request,
                 mode: Mode) -> None:
        self.carrier = carrier
        self.request = request
        self.mode = mode
        self.span: Span | None = None
        self.context: context.Context | None = None
        self.root_path = ""
        self.started = False
        self.named = False
        self.ended = False


def enabled() -> bool:
    return is_instrumentation_enabled() and is_http_instrumentation_enabled()


def _send_pii() -> bool:
    """``SENTRY_BRIDGE_SEND_DEFAULT_PII`` of the process's pipeline (read per request, so a
    test's or a late configuration applies)."""
    return get_pipeline().cfg.send_default_pii


class ServerMiddleware:
    """What the WSGI and ASGI middlewares share: the options and the span's life."""

    _origin: str = ORIGIN_WSGI
    _where: str = "middleware"

    def __init__(
        self,
        app: Any,
        *,
        route_resolver: RouteResolver | None = None,
        meta_tags: bool = True,
        capture_headers: bool | Collection[str] = True,
        create_span: bool | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """Wrap ``app`` (docs/instrumentation/middleware.md).

        Args:
            app: the WSGI or ASGI application.
            route_resolver: ``resolver(environ | scope) -> str | None``, the request's route
                template, asked once when the response starts, before the framework's.
            meta_tags: insert Sentry's meta tags into HTML responses.
            capture_headers: the request headers recorded: ``True`` all, or these names,
                ``False`` none; sensitive values are ``[Filtered]`` unless
                ``SENTRY_BRIDGE_SEND_DEFAULT_PII``.
            create_span: ``None``: make the server span unless the request has one or
                OpenTelemetry instruments ``app`` itself; ``False``: never (only enrich the
                request's span); ``True``: unless the request has one.
            tracer_provider: the provider of the middleware's spans (default: the global one).
        """
        self.app = app
        self.route_resolver = route_resolver
        self.meta_tags = meta_tags
        self.create_span = create_span
        self._capture = capture_headers is not False
        self._wanted: frozenset[str] | None = (
            None if isinstance(capture_headers, bool)
            else frozenset(name.lower() for name in capture_headers))
        self._tracer = trace.get_tracer(__name__, __version__, tracer_provider,
                                        schema_url=Schemas.V1_30_0.value)

    # ------------------------------------------------------------------ the request comes in

    def _begin(self, carrier: MutableMapping[str, Any],
               read: Callable[[Any], req.Request]) -> Exchange | None:
        """The request's state; ``None``: pass it through (an outer middleware of ours has it,
        or an internal error)."""
        with handle_internal_errors(self._where):
            if carrier.get(SPAN_KEY) is not None:
                return None
            request = read(carrier)
            current = trace.get_current_span()
            if current.get_span_context().is_valid:
                if not current.is_recording():
                    return Exchange(carrier, request, Mode.QUIET)
                if routes.is_server_span_of(current, request):
                    exchange = Exchange(carrier, request, Mode.ENRICH)
                    exchange.span = current
                    self._add_headers(exchange, current)
                    return exchange
            if self.create_span is False or (
                    self.create_span is None and routes.instrumented_inside(self.app)):
                return Exchange(carrier, request, Mode.DEFER)
            exchange = self._start(carrier, request)
            # Tracing off (no SDK, no incoming trace): nothing to time, tag or propagate.
            return exchange if exchange.context is not None else None
        return None

    def _start(self, carrier: MutableMapping[str, Any], request: req.Request) -> Exchange:
        parent = propagate.extract(request.headers, context.get_current(), req.HEADER_GETTER)
        pii = _send_pii()
        attributes = req.request_attributes(request, pii)
        attributes[Attr.SENTRY_ORIGIN[0]] = self._origin
        name = "HTTP" if request.method == "_OTHER" else request.method
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                       attributes=attributes)
        try:
            if span.is_recording() and self._capture:
                span.set_attributes(req.header_attributes(request.headers, self._wanted, pii))
            exchange = Exchange(carrier, request, Mode.OWN)
            exchange.span = span
            if span.get_span_context().is_valid:
                exchange.context = trace.set_span_in_context(span, parent)
                carrier[SPAN_KEY] = span
        except BaseException:
            span.end()  # the request then passes through: no span left open
            raise
        return exchange

    def _add_headers(self, exchange: Exchange, span: Span) -> None:
        if self._capture and span.is_recording():
            span.set_attributes(req.header_attributes(
                exchange.request.headers, self._wanted, _send_pii(),
                routes.span_attribute_keys(span)))

    # ------------------------------------------------------------------ the response starts

    def _started(self, exchange: Exchange, status: int) -> None:
        """The app starts its response (before the meta tags are rendered, so that the DSC
        they freeze has the route's name)."""
        with handle_internal_errors(self._where):
            exchange.started = True
            span = exchange.span
            if exchange.mode is Mode.DEFER and span is None:
                span = exchange.span = self._framework_span(exchange)
                if span is None:
                    return
                self._add_headers(exchange, span)
            if span is None or not span.is_recording():
                return
            if exchange.mode is Mode.OWN:
                span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            self._name(exchange, span)

    def _framework_span(self, exchange: Exchange) -> Span | None:
        """The span the framework made inside the app, when its response starts."""
        found = exchange.carrier.get(routes.FLASK_SPAN_KEY)
        if isinstance(found, Span) and found.is_recording() and \
                getattr(found, "end_time", None) is None:
            return found
        current = trace.get_current_span()
        if current.is_recording() and routes.is_server_span_of(current, exchange.request):
            return current
        return None

    def _name(self, exchange: Exchange, span: Span) -> None:
        """``http.route`` (and the span's name) when the span has none, or when the one it has
        is only the prefix of a mount the request went through; else the path with its
        identifiers replaced, as ``sentry.transaction.name`` with source ``url``, when that
        differs from the path."""
        if exchange.named:
            return
        exchange.named = True
        request = exchange.request
        existing = routes.span_route(span)
        route = self._mounted_route(exchange, existing) if existing else self._route(exchange)
        if route:
            span.set_attribute(http_attributes.HTTP_ROUTE, route)
            span.update_name(f"{'HTTP' if request.method == '_OTHER' else request.method} "
                             f"{route}")
            return
        if existing:
            return
        template = req.path_template(request.path)
        if template != request.path:
            span.set_attributes({Attr.SENTRY_TRANSACTION_NAME[0]: f"{request.method} {template}",
                                 Attr.SENTRY_TRANSACTION_SOURCE[0]: Source.URL})

    def _route(self, exchange: Exchange) -> str | None:
        resolver = self.route_resolver
        if resolver is not None:
            try:
                route = resolver(exchange.carrier)
            except Exception as exc:  # the user's code: never the app's problem
                warn_once("middleware.route_resolver", "route_resolver raised %s: %s; the "
                          "framework's route (or the path) names the request instead",
                          type(exc).__name__, safe_str(exc))
                route = None
            if isinstance(route, str) and route:
                return route[:MAX_ROUTE]
            if route is not None and not isinstance(route, str):
                warn_once("middleware.route_type", "route_resolver returned a %s, not a str or "
                          "None; ignored", type(route).__name__)
        return self._detect_route(exchange)

    def _detect_route(self, exchange: Exchange) -> str | None:
        raise NotImplementedError

    def _mounted_route(self, exchange: Exchange, existing: str) -> str | None:
        """The framework's route of a request that went through a mount, when the span's
        ``http.route`` (``existing``) is only that mount's prefix: OpenTelemetry's Starlette
        and FastAPI instrumentations match the outer router only (``/api/v2`` for
        ``/api/v2/items/{item_id}``). ``None`` keeps ``existing``: no route found, a route
        ending in a mounted app without routes, or one that ``existing`` does not prefix (the
        framework knows better). The ``route_resolver`` is not asked."""
        route = self._detect_inner_route(exchange)
        if route is None or existing.endswith("/") or \
                not route.startswith(existing + "/") or len(route) > MAX_ROUTE:
            return None
        return route

    def _detect_inner_route(self, exchange: Exchange) -> str | None:
        """The framework's route when it is a route inside the innermost mount (not a mount
        itself); ``None`` when the framework has no mounts."""
        return None

    # ------------------------------------------------------------------ the request ends

    def _failed(self, exchange: Exchange, exc: Exception) -> None:
        """The app raised: recorded on the span (a Sentry error event), ours or the one we
        enrich while it still records (its owner may record it too: the mapping makes one
        event of the same exception recorded by several spans)."""
        with handle_internal_errors(self._where):
            span = exchange.span
            if exchange.mode not in (Mode.OWN, Mode.ENRICH) or span is None or \
                    not span.is_recording():
                return
            span.record_exception(exc, escaped=True)
            kind = type(exc)
            span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {safe_str(exc)}"))
            if exchange.mode is not Mode.OWN:
                return
            span.set_attribute(error_attributes.ERROR_TYPE, kind.__qualname__ if
                               kind.__module__ == "builtins" else
                               f"{kind.__module__}.{kind.__qualname__}")
            if not exchange.started:  # the server answers 500
                span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, 500)

    def _raised(self, exchange: Exchange, exc: BaseException) -> None:
        """The app raised (not ``OWN``): the span it enriches records the error, and gets its
        route if its response never started (its owner ends it)."""
        if isinstance(exc, Exception):
            self._failed(exchange, exc)
        with handle_internal_errors(self._where):
            span = exchange.span
            if exchange.mode is Mode.ENRICH and span is not None and span.is_recording():
                self._name(exchange, span)

    def _finish(self, exchange: Exchange) -> None:
        with handle_internal_errors(self._where):
            span = exchange.span
            if exchange.ended or exchange.mode is not Mode.OWN or span is None:
                return
            exchange.ended = True
            try:
                if span.is_recording():
                    self._name(exchange, span)
            finally:
                span.end()
