"""Client connections of websockets' asyncio and sync APIs (a ``websocket.client`` span from the
handshake, whose headers carry the trace, to the end of the connection), and the messages of
every traced connection."""

from __future__ import annotations

from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Tracer
from websockets.datastructures import Headers

from otel_sentry_bridge._internal_errors import guarded
from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation import _ws_patching as patching
from otel_sentry_bridge_instrumentation._base import is_instrumentation_enabled

from ._server import ORIGIN, STATE, close_info, state_of


class ClientHooks:
    """The wrappers of ``ClientConnection`` (asyncio and sync)."""

    def __init__(self, tracer: Tracer, histogram: Histogram | None) -> None:
        self.tracer = tracer
        self.histogram = histogram

    @guarded("websockets client connection", cast("ws.ConnectionTrace | None", None))
    def start(self, connection: Any) -> ws.ConnectionTrace | None:
        protocol = connection.protocol
        uri = getattr(protocol, "uri", None) or protocol.wsuri  # (``wsuri`` before 15)
        scheme = "wss" if uri.secure else "ws"
        host = f"[{uri.host}]" if ":" in uri.host else uri.host
        default_port = 443 if uri.secure else 80
        netloc = host if uri.port == default_port else f"{host}:{uri.port}"
        url = f"{scheme}://{netloc}{uri.path or '/'}"  # no query, no user info
        attributes: dict[str, Any] = {
            Attr.SENTRY_OP[0]: Op.WEBSOCKET_CLIENT,
            Attr.SENTRY_ORIGIN[0]: ORIGIN,
            ws.PROTOCOL_NAME: "websocket",
            Attr.URL_SCHEME[0]: scheme,
            Attr.URL_FULL[0]: url,
            "server.address": uri.host,
            "server.port": uri.port,
        }
        span = self.tracer.start_span(f"WS {url}", context=otel_context.get_current(),
                                      kind=SpanKind.CLIENT, attributes=attributes)
        state = ws.ConnectionTrace(self.tracer, span, ws.CLIENT, own_span=True, origin=ORIGIN,
                                   histogram=self.histogram)
        setattr(connection, STATE, state)
        return state

    @guarded("websockets client headers", cast("Headers | None", None))
    def headers(self, state: ws.ConnectionTrace, given: Any) -> Headers | None:
        """The handshake's additional headers plus the trace's (replacing any given)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=state.parent)
        headers = Headers(given) if given is not None else Headers()
        for name, value in carrier.items():
            if name in headers:
                del headers[name]
            headers[name] = value
        return headers

    def _prepare(self, instance: Any, args: Any, kwargs: Any) -> tuple[Any, Any, Any]:
        state = self.start(instance)
        if state is not None:
            headers = self.headers(state, patching.arg(args, kwargs, 0, "additional_headers"))
            if headers is not None:
                args, kwargs = patching.with_arg(args, kwargs, 0, "additional_headers", headers)
        return state, args, kwargs

    async def handshake_async(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        state, args, kwargs = self._prepare(instance, args, kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            if state is not None:
                _refused(state, instance, exc)
            raise
        if state is not None:
            _opened(state, instance)
        return result

    def handshake_sync(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        state, args, kwargs = self._prepare(instance, args, kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            if state is not None:
                _refused(state, instance, exc)
            raise
        if state is not None:
            _opened(state, instance)
        return result

    def closed(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """``connection_lost`` (asyncio) / ``close_socket`` (sync): the connection's end (its
        span ends even where instrumentation is suppressed)."""
        try:
            return wrapped(*args, **kwargs)
        finally:
            state = state_of(instance)
            if state is not None and not state.finished:
                _ended(state, instance)


@guarded("websockets client handshake", None)
def _opened(state: ws.ConnectionTrace, connection: Any) -> None:
    subprotocol = connection.subprotocol
    if subprotocol and state.recording:
        state.span.set_attribute(ws.SUBPROTOCOL, str(subprotocol))


@guarded("websockets client handshake", None)
def _refused(state: ws.ConnectionTrace, connection: Any, exc: BaseException) -> None:
    """A failed handshake: the server's HTTP status (a refusal), the error's type; no error
    event (the exception reaches the caller, whose code decides)."""
    response = connection.response
    if response is not None and state.recording:
        state.span.set_attribute(Attr.HTTP_STATUS[0], int(response.status_code))
    state.failed(exc, record=False)
    state.finish()


@guarded("websockets client close", None)
def _ended(state: ws.ConnectionTrace, connection: Any) -> None:
    state.closed(*close_info(connection.protocol, ws.CLIENT))
    state.finish()


class MessageHooks:
    """``recv`` and ``send`` of every traced connection (server or client)."""

    async def recv_async(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = state_of(instance)
        if state is None or state.finished or not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        begun = state.begin()
        data = await wrapped(*args, **kwargs)
        state.message(True, begun, data)
        return data

    async def send_async(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = state_of(instance)
        if state is None or state.finished or not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        begun = state.begin()
        result = await wrapped(*args, **kwargs)
        state.message(False, begun, patching.arg(args, kwargs, 0, "message"),
                      patching.arg(args, kwargs, 1, "text"))
        return result

    def recv_sync(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = state_of(instance)
        if state is None or state.finished or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        begun = state.begin()
        data = wrapped(*args, **kwargs)
        state.message(True, begun, data)
        return data

    def send_sync(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = state_of(instance)
        if state is None or state.finished or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        begun = state.begin()
        result = wrapped(*args, **kwargs)
        state.message(False, begun, patching.arg(args, kwargs, 0, "message"),
                      patching.arg(args, kwargs, 1, "text"))
        return result
