"""Server connections of websockets' asyncio and sync APIs: a ``websocket.server`` span per
connection, from the handshake request (continuing its trace) to the end of the handler."""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, cast
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Tracer
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from otel_sentry_bridge._internal_errors import guarded
from otel_sentry_bridge.conventions import Attr, Op, Source
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation import _ws_patching as patching
from otel_sentry_bridge_instrumentation._base import is_instrumentation_enabled

ORIGIN: Final = "auto.websocket.websockets"
#: The attribute of a websockets connection holding its :class:`ConnectionTrace`.
STATE: Final = "_sentry_bridge_ws"


def state_of(connection: object) -> ws.ConnectionTrace | None:
    """The bookkeeping of a traced connection."""
    state = getattr(connection, STATE, None)
    return state if isinstance(state, ws.ConnectionTrace) else None


def close_info(protocol: Any, role: str) -> tuple[int | None, str | None, str | None]:
    """``(code, reason, initiator)`` of a closed connection: the code of the side that closed
    first (1006 when no close frame went either way)."""
    if protocol.state is not State.CLOSED:
        return None, None, None
    peer = ws.CLIENT if role == ws.SERVER else ws.SERVER
    rcvd, sent = protocol.close_rcvd, protocol.close_sent
    if rcvd is not None and (protocol.close_rcvd_then_sent or sent is None):
        return int(rcvd.code), rcvd.reason, peer
    if sent is not None:
        return int(sent.code), sent.reason, role
    return 1006, "", None


def _first(headers: Any, name: str) -> str | None:
    values = headers.get_all(name)
    return values[0] if values else None


class ServerHooks:
    """The wrappers of ``ServerConnection`` (asyncio and sync) and of the routers."""

    def __init__(self, tracer: Tracer, histogram: Histogram | None) -> None:
        self.tracer = tracer
        self.histogram = histogram

    @guarded("websockets server connection", cast("ws.ConnectionTrace | None", None))
    def start(self, connection: Any, request: Any, secure: bool) -> ws.ConnectionTrace | None:
        """The connection's span, once its handshake request arrived."""
        path = urlsplit(request.path).path or "/"
        name = f"WS {path}"
        attributes: dict[str, Any] = {
            Attr.SENTRY_OP[0]: Op.WEBSOCKET_SERVER,
            Attr.SENTRY_ORIGIN[0]: ORIGIN,
            Attr.SENTRY_TRANSACTION_NAME[0]: name,
            Attr.SENTRY_TRANSACTION_SOURCE[0]: Source.URL,
            ws.PROTOCOL_NAME: "websocket",
            Attr.URL_SCHEME[0]: "wss" if secure else "ws",
            Attr.URL_PATH[0]: path,
        }
        attributes.update(ws.address_attributes(connection.local_address,
                                                connection.remote_address))
        agent = _first(request.headers, "User-Agent")
        if agent:
            attributes[Attr.USER_AGENT[0]] = agent
        parent = ws.extract_parent(request.headers.raw_items())
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes)
        state = ws.ConnectionTrace(self.tracer, span, ws.SERVER, own_span=True, origin=ORIGIN,
                                   histogram=self.histogram, context=parent)
        setattr(connection, STATE, state)
        return state

    # -- handshake --------------------------------------------------------------------------

    def _async_hook(self, user: Callable[..., Any] | None) -> Callable[..., Any]:
        async def process_request(connection: Any, request: Any) -> Any:
            secure = connection.transport.get_extra_info("ssl_object") is not None
            state = self.start(connection, request, secure)
            if user is None:
                return None
            with _user_hook(state):
                response = user(connection, request)
                if inspect.isawaitable(response):
                    response = await response
            return response

        return process_request

    def _sync_hook(self, user: Callable[..., Any] | None) -> Callable[..., Any]:
        def process_request(connection: Any, request: Any) -> Any:
            secure = isinstance(connection.socket, ssl.SSLSocket)
            state = self.start(connection, request, secure)
            if user is None:
                return None
            with _user_hook(state):
                return user(connection, request)

        return process_request

    async def handshake_async(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        hook = self._async_hook(patching.arg(args, kwargs, 0, "process_request"))
        args, kwargs = patching.with_arg(args, kwargs, 0, "process_request", hook)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _handshake_failed(instance, exc)
            raise
        _handshake_done(instance)
        return result

    def handshake_sync(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        hook = self._sync_hook(patching.arg(args, kwargs, 0, "process_request"))
        args, kwargs = patching.with_arg(args, kwargs, 0, "process_request", hook)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _handshake_failed(instance, exc)
            raise
        _handshake_done(instance)
        return result

    # -- the handler: ``async with connection: await handler(connection)`` -------------------
    # (the end of a started connection is recorded even where instrumentation is suppressed:
    # its span must end)

    async def aenter(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        result = await wrapped(*args, **kwargs)
        state = state_of(instance)
        if state is not None:
            state.enter()
        return result

    async def aexit(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = state_of(instance)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            if state is not None:
                _handler_done(state, instance, patching.arg(args, kwargs, 1, "exc_value"))

    def enter(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        result = wrapped(*args, **kwargs)
        state = state_of(instance)
        if state is not None:
            state.enter()
        return result

    def exit(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = state_of(instance)
        try:
            return wrapped(*args, **kwargs)
        finally:
            if state is not None:
                _handler_done(state, instance, patching.arg(args, kwargs, 1, "exc_value"))

    # -- routers (werkzeug URL maps) ---------------------------------------------------------

    def route_request(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        response = wrapped(*args, **kwargs)
        if response is None:
            _name_route(instance, patching.arg(args, kwargs, 0, "connection"),
                        patching.arg(args, kwargs, 1, "request"))
        return response


@contextmanager
def _user_hook(state: ws.ConnectionTrace | None) -> Iterator[None]:
    """The application's ``process_request`` inside the connection's span; its exception is
    the connection's error (websockets then answers 500)."""
    if state is None:
        yield
        return
    with trace.use_span(state.span, end_on_exit=False, record_exception=False,
                        set_status_on_exception=False):
        try:
            yield
        except Exception as exc:
            state.failed(exc)
            raise


@guarded("websockets handshake", None)
def _handshake_done(connection: Any) -> None:
    state = state_of(connection)
    if state is None:
        return
    if connection.protocol.state is State.OPEN:
        subprotocol = connection.subprotocol
        if subprotocol and state.recording:
            state.span.set_attribute(ws.SUBPROTOCOL, str(subprotocol))
        return
    # refused (an HTTP response instead of 101) or the client went away
    response = connection.response
    if response is not None and state.recording:
        state.span.set_attribute(Attr.HTTP_STATUS[0], int(response.status_code))
    state.finish()


@guarded("websockets handshake", None)
def _handshake_failed(connection: Any, exc: BaseException) -> None:
    state = state_of(connection)
    if state is not None:
        state.failed(exc, record=False)  # a timeout (cancellation) or a broken connection
        state.finish()


@guarded("websockets handler", None)
def _handler_done(state: ws.ConnectionTrace, connection: Any, exc: Any) -> None:
    if isinstance(exc, BaseException) and not isinstance(exc, ConnectionClosed):
        state.failed(exc)
    state.closed(*close_info(connection.protocol, ws.SERVER))
    if state.exit():
        state.finish()


@guarded("websockets router", None)
def _name_route(router: Any, connection: Any, request: Any) -> None:
    state = state_of(connection)
    if state is None:
        return
    adapter = router.url_map.bind(server_name=router.get_server_name(connection, request),
                                  url_scheme=router.url_scheme)
    rule, _ = adapter.match(path_info=urlsplit(request.path).path, return_rule=True)
    state.set_route(str(rule.rule))
