"""Starlette and FastAPI WebSocket routes: one ``websocket.server`` transaction per connection,
named after the route (``WS /ws/{room}``), with ``websocket.receive`` / ``websocket.send`` spans
for the first ``SENTRY_BRIDGE_WEBSOCKET_MESSAGE_SPANS`` messages, counts and bytes for all of
them, the close code as the status, the handler's exception as an error event and the
``websocket.message.handling.duration`` histogram.

``WebSocketRoute.handle`` (FastAPI's ``APIWebSocketRoute`` is one) is wrapped. The connection's
span is the server span already current there (OpenTelemetry's ASGI middleware, from the
Starlette/FastAPI instrumentations, or FastAPI's own telemetry), else one this instrumentation
starts, continuing the trace of the handshake's headers. OpenTelemetry's ASGI middleware's
unbounded per-event spans are replaced by this instrumentation's for the connections a route
handles. See docs/instrumentation/websockets.md.
"""

from __future__ import annotations

from typing import Any

import starlette.routing
from opentelemetry import metrics

from otel_sentry_bridge.version import __version__
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation import _ws_patching as patching
from otel_sentry_bridge_instrumentation._base import SCHEMA_URL, BridgeInstrumentor

from ._asgi import MODULE, patch_middleware
from ._route import RouteHooks
from .package import _instruments

__all__ = ["StarletteWebSocketInstrumentor"]


class StarletteWebSocketInstrumentor(BridgeInstrumentor):
    """Traces the connections of Starlette / FastAPI WebSocket routes.

    ``instrument(tracer_provider=..., meter_provider=...)``: both default to the global ones.
    """

    _instruments = _instruments

    def __init__(self) -> None:
        super().__init__()
        self._patches = patching.ClassPatches()

    def _patch(self, **kwargs: Any) -> None:
        meter = metrics.get_meter(__name__, __version__, kwargs.get("meter_provider"),
                                  schema_url=SCHEMA_URL)
        hooks = RouteHooks(self.tracer(**kwargs), ws.handling_histogram(meter))
        self._patches.wrap(starlette.routing.WebSocketRoute, "handle", hooks.handle)
        self._patches.when_imported(MODULE, lambda m: patch_middleware(self._patches, m),
                                    "StarletteWebSocketInstrumentor.instrument")

    def _unpatch(self, **kwargs: Any) -> None:
        self._patches.restore()
