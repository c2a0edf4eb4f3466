"""A tracing middleware for WSGI and ASGI apps: the request's server span with route-based
names, request context under Sentry's privacy defaults, and Sentry's meta tags in HTML pages.
docs/instrumentation/middleware.md.

Per request (ASGI: ``http`` scopes; ``websocket`` and ``lifespan`` pass through untouched):

* **A server span of this request is current** (OpenTelemetry's WSGI/ASGI middleware, or a
  framework's instrumentation, runs outside): no second span. That span is enriched: the route
  when it has none (or only the path of the mount the request went through: OpenTelemetry's
  Starlette and FastAPI instrumentations match the outer router only), the request headers.
  Its owner records errors and ends it.
* **OpenTelemetry instruments the wrapped app itself** (Flask, Starlette or FastAPI
  instrumented by OpenTelemetry, one of OpenTelemetry's middlewares inside): no span either;
  the framework's span, found when the response starts, is enriched the same way.
* **Otherwise** the middleware makes the ``SERVER`` span, continuing the trace of the incoming
  headers (the global propagator: ``traceparent``, ``sentry-trace``, ``baggage``), with the
  stable HTTP attributes; a 5xx is an error; an exception the app raises is recorded (a Sentry
  error event) and re-raised, and the span ends when the response body is exhausted or
  closed (WSGI), or when the app returns (ASGI).

The route (``http.route``: the transaction ``GET /orders/<int:order_id>``, source ``route``)
comes from ``route_resolver(environ | scope)``, else from the framework (Flask's URL rule,
Starlette's and FastAPI's ``scope["route"]``, with its mounts), when the response starts. A
request without a route whose path has identifiers gets a name from the path with them
replaced (``GET /orders/{id}``), source ``url``: Sentry still clusters it.

Every internal error is logged once and swallowed: the app's response is the same as without
the middleware, apart from the meta tags (see :mod:`otel_sentry_bridge.browser`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from opentelemetry import context, trace

from . import _server_request as req
from . import _server_routes as routes
from ._internal_errors import handle_internal_errors, log_internal_error
from ._server_span import (
    ORIGIN_ASGI,
    ORIGIN_WSGI,
    ASGIApp,
    Exchange,
    Message,
    Mode,
    Receive,
    Scope,
    Send,
    ServerMiddleware,
    enabled,
)
from .browser import SentryMetaTagsASGIMiddleware, SentryMetaTagsMiddleware

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["SentryBridgeASGIMiddleware", "SentryBridgeWSGIMiddleware"]


def _status_code(status: str) -> int:
    code = status.split(None, 1)[0] if isinstance(status, str) and status else ""
    return int(code) if code.isascii() and code.isdigit() else 0


# --------------------------------------------------------------------------------------------
# WSGI
# --------------------------------------------------------------------------------------------


class SentryBridgeWSGIMiddleware(ServerMiddleware):
    """WSGI middleware: the request's server span, its route, its request context and the
    meta tags (see the module docs). ``app`` is the WSGI app (for Flask: ``app.wsgi_app``)."""

    _origin = ORIGIN_WSGI
    _where = "SentryBridgeWSGIMiddleware"

    app: WSGIApplication

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not enabled():
            return self.app(environ, start_response)
        exchange = self._begin(environ, req.from_environ)
        if exchange is None:
            return self.app(environ, start_response)
        app = self._chain(exchange)
        if exchange.mode is not Mode.OWN or exchange.context is None:
            try:
                return app(environ, start_response)
            except BaseException as exc:
                self._raised(exchange, exc)
                raise
        token = context.attach(exchange.context)
        try:
            result = app(environ, start_response)
        except Exception as exc:
            self._failed(exchange, exc)
            self._finish(exchange)
            raise
        except BaseException:
            self._finish(exchange)
            raise
        finally:
            context.detach(token)
        return self._body(exchange, environ, result)

    def _chain(self, exchange: Exchange) -> WSGIApplication:
        """The app, with the response start observed, inside the meta-tag middleware."""
        app, started = self.app, self._started

        def observed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            def observe(status: str, headers: list[tuple[str, str]],
                        exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
                started(exchange, _status_code(status))
                if exc_info is None:
                    return start_response(status, headers)
                return start_response(status, headers, exc_info)

            return app(environ, observe)

        return SentryMetaTagsMiddleware(observed) if self.meta_tags else observed

    def _body(self, exchange: Exchange, environ: WSGIEnvironment,
              result: Iterable[bytes]) -> Iterable[bytes]:
        """The body the server iterates: the span ends when it is exhausted or closed. A
        ``wsgi.file_wrapper`` goes back as it is (the server may send the file itself): its
        span ends now."""
        try:
            wrapper = environ.get("wsgi.file_wrapper")
            if isinstance(wrapper, type) and isinstance(result, wrapper):
                self._finish(exchange)
                return result
            if isinstance(result, (list, tuple)):
                return _SizedBody(self, exchange, result)
            return _Body(self, exchange, result)
        except Exception as exc:
            log_internal_error(self._where, exc)
            self._finish(exchange)
            return result

    def _detect_route(self, exchange: Exchange) -> str | None:
        return routes.werkzeug_route(exchange.carrier)


class _Body:
    """The app's body, iterated in the span's context; the span ends once it is exhausted or
    closed (the app's ``close()`` first)."""

    __slots__ = ("_closed", "_exchange", "_middleware", "_result")

    def __init__(self, middleware: SentryBridgeWSGIMiddleware, exchange: Exchange,
                 result: Iterable[bytes]) -> None:
        self._middleware = middleware
        self._exchange = exchange
        self._result = result
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        ctx = self._exchange.context
        assert ctx is not None
        try:
            token = context.attach(ctx)
            try:
                chunks = iter(self._result)
            finally:
                context.detach(token)
            while True:
                token = context.attach(ctx)
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                finally:
                    context.detach(token)
                yield chunk
        except Exception as exc:
            self._middleware._failed(self._exchange, exc)
            raise
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ctx = self._exchange.context
        token = context.attach(ctx) if ctx is not None else None
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            if token is not None:
                context.detach(token)
            self._middleware._finish(self._exchange)


class _SizedBody(_Body):
    """A body of known length (a list): the server may still count it (``Content-Length``)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# ASGI
# --------------------------------------------------------------------------------------------


class SentryBridgeASGIMiddleware(ServerMiddleware):
    """ASGI middleware: the request's server span, its route, its request context and the
    meta tags (see the module docs). ``websocket`` and ``lifespan`` scopes pass through."""

    _origin = ORIGIN_ASGI
    _where = "SentryBridgeASGIMiddleware"

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not enabled():
            await self.app(scope, receive, send)
            return
        exchange = self._begin(scope, req.from_scope)
        if exchange is None:
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path")
        exchange.root_path = root if isinstance(root, str) else ""
        app = self._chain(exchange)
        if exchange.mode is not Mode.OWN or exchange.context is None:
            try:
                await app(scope, receive, send)
            except BaseException as exc:
                self._raised(exchange, exc)
                raise
            return
        token = context.attach(exchange.context)
        try:
            await app(scope, receive, send)
        except Exception as exc:
            self._failed(exchange, exc)
            raise
        finally:
            context.detach(token)
            self._finish(exchange)

    def _chain(self, exchange: Exchange) -> ASGIApp:
        """The app, with the response start observed, inside the meta-tag middleware."""
        app, started = self.app, self._started

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            async def observe(message: Message) -> None:
                if message.get("type") != "http.response.start":
                    await send(message)
                    return
                status = message.get("status")
                started(exchange, status if isinstance(status, int) else 0)
                server = _server_context(exchange)
                if server is None:
                    await send(message)
                    return
                token = context.attach(server)
                try:
                    await send(message)
                finally:
                    context.detach(token)

            await app(scope, receive, observe)

        return SentryMetaTagsASGIMiddleware(observed) if self.meta_tags else observed

    def _detect_route(self, exchange: Exchange) -> str | None:
        return routes.starlette_route(exchange.carrier, exchange.root_path,
                                      exchange.request.route_path)

    def _detect_inner_route(self, exchange: Exchange) -> str | None:
        if routes.starlette_mount_matched(exchange.carrier):
            return None
        return self._detect_route(exchange)


def _server_context(exchange: Exchange) -> context.Context | None:
    """When the framework's span could not be found at response start (``DEFER``) because
    OpenTelemetry's ASGI middleware made its ``http send`` span current: a context with the
    server span (its parent) current, for the meta tags; else ``None``."""
    if exchange.mode is not Mode.DEFER or exchange.span is not None:
        return None
    with handle_internal_errors(SentryBridgeASGIMiddleware._where):
        current = trace.get_current_span()
        scope = getattr(getattr(current, "instrumentation_scope", None), "name", None)
        parent = getattr(current, "parent", None)
        name = getattr(current, "name", None)
        if scope == routes.OTEL_ASGI_SCOPE and isinstance(name, str) and \
                name.endswith(" send") and isinstance(parent, trace.SpanContext) and \
                parent.is_valid:
            return trace.set_span_in_context(trace.NonRecordingSpan(parent))
    return None
