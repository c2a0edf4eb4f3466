"""websockets: a ``websocket.server`` transaction per server connection (continuing the trace
of the handshake's headers) and a ``websocket.client`` span per client connection (whose
handshake carries the trace), with ``websocket.receive`` / ``websocket.send`` spans for the
first ``SENTRY_BRIDGE_WEBSOCKET_MESSAGE_SPANS`` messages of each connection, counts and bytes
for all of them, the close code as the status, the handler's exception as an error event, and
the ``websocket.message.handling.duration`` histogram.

Both of websockets' current APIs are covered: ``websockets.asyncio`` (``serve``, ``route``,
``connect``) and ``websockets.sync`` (the same names). The deprecated legacy API
(``websockets.legacy``) and the trio API are not. See docs/instrumentation/websockets.md.
"""

from __future__ import annotations

from typing import Any

import websockets
import websockets.asyncio.client
import websockets.asyncio.connection
import websockets.asyncio.server
import websockets.sync.client
import websockets.sync.connection
import websockets.sync.server
from opentelemetry import metrics

from otel_sentry_bridge.version import __version__
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation import _ws_patching as patching
from otel_sentry_bridge_instrumentation._base import SCHEMA_URL, BridgeInstrumentor

from ._client import ClientHooks, MessageHooks
from ._server import ServerHooks
from .package import _instruments

__all__ = ["WebsocketsInstrumentor"]


class WebsocketsInstrumentor(BridgeInstrumentor):
    """Traces websockets' server and client connections (asyncio and sync APIs).

    ``instrument(tracer_provider=..., meter_provider=...)``: both default to the global ones.
    """

    _instruments = _instruments

    def __init__(self) -> None:
        super().__init__()
        self._patches = patching.ClassPatches()

    def _patch(self, **kwargs: Any) -> None:
        tracer = self.tracer(**kwargs)
        meter = metrics.get_meter(__name__, __version__, kwargs.get("meter_provider"),
                                  schema_url=SCHEMA_URL)
        histogram = ws.handling_histogram(meter)
        server = ServerHooks(tracer, histogram)
        client = ClientHooks(tracer, histogram)
        messages = MessageHooks()
        aio, sync = websockets.asyncio, websockets.sync
        wrap = self._patches.wrap
        wrap(aio.server.ServerConnection, "handshake", server.handshake_async)
        wrap(aio.server.ServerConnection, "__aenter__", server.aenter)
        wrap(aio.server.ServerConnection, "__aexit__", server.aexit)
        wrap(sync.server.ServerConnection, "handshake", server.handshake_sync)
        wrap(sync.server.ServerConnection, "__enter__", server.enter)
        wrap(sync.server.ServerConnection, "__exit__", server.exit)
        # The routers import werkzeug (60 ms): patched once the application imports them.
        for module in ("websockets.asyncio.router", "websockets.sync.router"):
            self._patches.when_imported(
                module, lambda m: wrap(m.Router, "route_request", server.route_request),
                "WebsocketsInstrumentor.instrument")
        wrap(aio.client.ClientConnection, "handshake", client.handshake_async)
        wrap(aio.client.ClientConnection, "connection_lost", client.closed)
        wrap(sync.client.ClientConnection, "handshake", client.handshake_sync)
        wrap(sync.client.ClientConnection, "close_socket", client.closed)
        wrap(aio.connection.Connection, "recv", messages.recv_async)
        wrap(aio.connection.Connection, "send", messages.send_async)
        wrap(sync.connection.Connection, "recv", messages.recv_sync)
        wrap(sync.connection.Connection, "send", messages.send_sync)

    def _unpatch(self, **kwargs: Any) -> None:
        self._patches.restore()
