"""A Starlette (or FastAPI) WebSocket route's connection: its span (the server span the ASGI
layer made, or one of ours), its messages (the ASGI events below the route), its close code and
the handler's exception."""

from __future__ import annotations

from typing import Any, Final, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Tracer
from starlette.websockets import WebSocketDisconnect

from otel_sentry_bridge._internal_errors import guarded
from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation import _ws_patching as patching
from otel_sentry_bridge_instrumentation._base import is_instrumentation_enabled

ORIGIN: Final = "auto.websocket.starlette"
#: Scope key of a connection a route handles (OpenTelemetry's ASGI middleware then leaves its
#: messages to us: see ``_asgi.py``).
SCOPE_KEY: Final = "sentry_bridge.websocket"


def route_template(route: Any, scope: dict[str, Any]) -> str:
    """The route's path template, behind the prefix of the mounts it is in."""
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not path:
        path = str(scope.get("path") or "/")
    root, app_root = scope.get("root_path"), scope.get("app_root_path")
    if isinstance(root, str) and isinstance(app_root, str) and root.startswith(app_root):
        return root[len(app_root):] + path
    return path


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def _headers(scope: dict[str, Any]) -> list[tuple[str, str]]:
    return [(_text(name), _text(value)) for name, value in scope.get("headers") or ()]


class RouteHooks:
    """The wrapper of ``WebSocketRoute.handle``."""

    def __init__(self, tracer: Tracer, histogram: Histogram | None) -> None:
        self.tracer = tracer
        self.histogram = histogram

    @guarded("starlette websocket connection", cast("ws.ConnectionTrace | None", None))
    def start(self, route: Any, scope: dict[str, Any]) -> ws.ConnectionTrace | None:
        """The connection's state: on the current server span (OpenTelemetry's ASGI
        middleware's, FastAPI's own), else on a new one continuing the handshake's trace."""
        template = route_template(route, scope)
        current = trace.get_current_span()
        valid = current.get_span_context().is_valid
        if valid and (not current.is_recording()
                      or getattr(current, "kind", None) is SpanKind.SERVER):
            span, own, parent = current, False, None
            if current.is_recording():
                current.set_attribute(Attr.SENTRY_OP[0], Op.WEBSOCKET_SERVER)
        else:
            parent = otel_context.get_current() if valid else ws.extract_parent(_headers(scope))
            span, own = self.tracer.start_span(
                f"WS {template}", context=parent, kind=SpanKind.SERVER,
                attributes=self._attributes(scope)), True
        state = ws.ConnectionTrace(self.tracer, span, ws.SERVER, own_span=own, origin=ORIGIN,
                                   histogram=self.histogram, context=parent)
        state.set_route(template)
        return state

    @staticmethod
    def _attributes(scope: dict[str, Any]) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            Attr.SENTRY_OP[0]: Op.WEBSOCKET_SERVER,
            Attr.SENTRY_ORIGIN[0]: ORIGIN,
            ws.PROTOCOL_NAME: "websocket",
            Attr.URL_SCHEME[0]: str(scope.get("scheme") or "ws"),
        }
        path = scope.get("path")
        if isinstance(path, str) and path:
            attributes[Attr.URL_PATH[0]] = path
        attributes.update(ws.address_attributes(scope.get("server"), scope.get("client")))
        for name, value in _headers(scope):
            if name.lower() == "user-agent":
                attributes[Attr.USER_AGENT[0]] = value
                break
        return attributes

    async def handle(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        scope = patching.arg(args, kwargs, 0, "scope")
        if (not isinstance(scope, dict) or scope.get("type") != "websocket"
                or SCOPE_KEY in scope or not is_instrumentation_enabled()):
            return await wrapped(*args, **kwargs)
        state = self.start(instance, scope)
        if state is None:
            return await wrapped(*args, **kwargs)
        connection = AsgiConnection(state, patching.arg(args, kwargs, 1, "receive"),
                                    patching.arg(args, kwargs, 2, "send"))
        args, kwargs = patching.with_arg(args, kwargs, 1, "receive", connection.receive)
        args, kwargs = patching.with_arg(args, kwargs, 2, "send", connection.send)
        scope[SCOPE_KEY] = True
        state.enter()
        try:
            return await wrapped(*args, **kwargs)
        except BaseException as exc:
            connection.failed(exc)
            raise
        finally:
            scope.pop(SCOPE_KEY, None)
            if state.exit():
                state.finish()


def _payload(message: dict[str, Any]) -> Any:
    """The text or bytes of a ``websocket.receive`` / ``websocket.send`` event."""
    text = message.get("text")
    return text if text is not None else message.get("bytes")


class AsgiConnection:
    """The ASGI ``receive`` / ``send`` of one connection, as the route's application sees
    them: messages counted (and traced up to the limit), close and refusal noted."""

    __slots__ = ("_receive", "_send", "accepted", "state")

    def __init__(self, state: ws.ConnectionTrace, receive: Any, send: Any) -> None:
        self.state = state
        self._receive = receive
        self._send = send
        self.accepted = False

    async def receive(self) -> Any:
        begun = self.state.begin()
        message = await self._receive()
        self._received(message, begun)
        return message

    async def send(self, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "websocket.send":
            begun = self.state.begin()
            await self._send(message)
            self.state.message(False, begun, _payload(message))
            return
        self._sending(message)
        await self._send(message)

    @guarded("starlette websocket receive", None)
    def _received(self, message: Any, begun: tuple[int, Any]) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "websocket.receive":
            self.state.message(True, begun, _payload(message))
        elif kind == "websocket.disconnect":
            self.state.closed(message.get("code", 1005), message.get("reason"), ws.CLIENT)

    @guarded("starlette websocket send", None)
    def _sending(self, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        state = self.state
        if kind == "websocket.accept":
            self.accepted = True
            subprotocol = message.get("subprotocol")
            if subprotocol and state.recording:
                state.span.set_attribute(ws.SUBPROTOCOL, str(subprotocol))
        elif kind == "websocket.close":
            if self.accepted:
                state.closed(message.get("code", 1000), message.get("reason"), ws.SERVER)
            elif state.recording:  # closed before accepting: the server answers HTTP 403
                state.span.set_attribute(Attr.HTTP_STATUS[0], 403)
        elif kind == "websocket.http.response.start" and state.recording:
            status = message.get("status")
            if type(status) is int:
                state.span.set_attribute(Attr.HTTP_STATUS[0], status)

    @guarded("starlette websocket failure", None)
    def failed(self, exc: BaseException) -> None:
        """The route's application raised: a disconnect is no error (its code is the close
        code), anything else is."""
        if isinstance(exc, WebSocketDisconnect):
            code = exc.code
            self.state.closed(code, exc.reason, None if code == 1006 else ws.CLIENT)
        else:
            self.state.failed(exc)
