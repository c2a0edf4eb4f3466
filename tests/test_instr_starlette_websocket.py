"""Starlette / FastAPI WebSocket routes: a transaction per connection whether OpenTelemetry's
ASGI middleware, FastAPI's own telemetry or nothing made the server span; real uvicorn servers
and websockets clients on loopback, and a zero-code FastAPI app under
``opentelemetry-instrument``. Every payload goes through ``validate_event``."""

from __future__ import annotations

import logging
import socket
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import opentelemetry.instrumentation.asgi as otel_asgi
import pytest
import starlette.routing
import uvicorn
import websockets.sync.client
from apps import AppProcess
from e2e_support import assert_clean_output, assert_receiver_clean, bridge_env, summary
from fastapi import FastAPI
from opentelemetry import baggage
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation._ws_patching import ClassPatches
from otel_sentry_bridge_instrumentation.starlette_websocket import (
    StarletteWebSocketInstrumentor,
)
from otel_sentry_bridge_instrumentation.starlette_websocket._asgi import patch_middleware
from otel_sentry_bridge_instrumentation.starlette_websocket._route import ORIGIN
from otel_sentry_bridge_instrumentation.websockets import WebsocketsInstrumentor
from sentry_receiver import SentryReceiver, validate_event
from starlette.applications import Starlette
from starlette.exceptions import WebSocketException
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus

from otel_sentry_bridge.conventions import Attr, Op, Source
from otel_sentry_bridge.testing import BridgeCapture


class Setup:
    def __init__(self, limit: int = 3) -> None:
        self.capture = BridgeCapture(websocket_message_spans=limit)
        self.provider = self.capture.tracer_provider
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.instrumentor = StarletteWebSocketInstrumentor()
        self.instrumentor.instrument(tracer_provider=self.provider, meter_provider=self.meters)

    def close(self) -> None:
        self.instrumentor.uninstrument()
        self.capture.close()
        self.meters.shutdown()

    def handling(self) -> dict[str, int]:
        """Counts of the handling histogram, by route."""
        data = self.reader.get_metrics_data()
        return {str((p.attributes or {}).get(ws.ROUTE)): p.count
                for r in (data.resource_metrics if data else ())
                for s in r.scope_metrics for m in s.metrics if m.name == ws.HANDLING_METRIC
                for p in m.data.data_points if isinstance(p, HistogramDataPoint)}

    def transactions(self) -> list[dict[str, Any]]:
        found = self.capture.transactions()
        for txn in found:
            assert validate_event(txn, kind="transaction") == [], txn
        return found

    def server_transactions(self) -> list[dict[str, Any]]:
        return [t for t in self.transactions() if trace_of(t)["op"] == Op.WEBSOCKET_SERVER]

    def events(self) -> list[dict[str, Any]]:
        found = self.capture.items("event")
        for event in found:
            assert validate_event(event, kind="event") == [], event
        return found


@pytest.fixture
def setup() -> Iterator[Setup]:
    current = Setup()
    yield current
    current.close()


def trace_of(txn: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = txn["contexts"]["trace"]
    return context


def spans_with(txn: dict[str, Any], *ops: str) -> list[dict[str, Any]]:
    return [s for s in txn["spans"] if s["op"] in ops]


async def chat(websocket: WebSocket) -> None:
    """Echoes text; ``bye`` closes with 4000, ``boom`` raises, ``deny`` is refused."""
    if websocket.query_params.get("deny"):
        await websocket.close()
        return
    await websocket.accept(subprotocol="chat.v1" if websocket.scope["subprotocols"] else None)
    while True:
        message = await websocket.receive_text()
        if message == "boom":
            raise ValueError("cannot parse boom")
        if message == "policy":
            raise WebSocketException(code=1008, reason="not allowed")
        if message == "bye":
            await websocket.close(code=4000, reason="see you")
            return
        await websocket.send_text("echo:" + message)


def starlette_app() -> Starlette:
    return Starlette(routes=[Mount("/api", routes=[WebSocketRoute("/rooms/{room}", chat)])])


def fastapi_app(**options: Any) -> FastAPI:
    app = FastAPI(**options)

    @app.websocket("/ws/{room}")
    async def room(websocket: WebSocket, room: str) -> None:
        await chat(websocket)

    return app


class Uvicorn:
    """An app served by uvicorn on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run)

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def connect(server: Uvicorn, path: str, **kwargs: Any) -> Any:
    return websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}{path}", **kwargs)


# -- real uvicorn, real websockets client -------------------------------------------------------

def test_uvicorn_route_continues_the_client_trace(setup: Setup) -> None:
    client_instrumentor = WebsocketsInstrumentor()
    client_instrumentor.instrument(tracer_provider=setup.provider)
    tracer = setup.provider.get_tracer("test")
    try:
        with Uvicorn(starlette_app()) as server, tracer.start_as_current_span(
                "GET /lobby", kind=SpanKind.SERVER):
            url = f"ws://127.0.0.1:{server.port}/api/rooms/7?token=secret"
            with websockets.sync.client.connect(url, subprotocols=["chat.v1"]) as conn:
                for i in range(3):
                    conn.send(f"hi {i}")
                    assert conn.recv() == f"echo:hi {i}"
    finally:
        client_instrumentor.uninstrument()
    (txn,) = setup.server_transactions()
    (caller,) = [t for t in setup.transactions() if t["transaction"] == "GET /lobby"]
    (client_span,) = spans_with(caller, Op.WEBSOCKET_CLIENT)
    context = trace_of(txn)
    assert txn["transaction"] == "WS /api/rooms/{room}"
    assert txn["transaction_info"]["source"] == Source.ROUTE
    assert context["origin"] == ORIGIN
    assert context["trace_id"] == trace_of(caller)["trace_id"]
    assert context["parent_span_id"] == client_span["span_id"]
    assert context["status"] == "ok"
    data = context["data"]
    assert data[Attr.HTTP_ROUTE[0]] == "/api/rooms/{room}"
    assert data[Attr.URL_PATH[0]] == "/api/rooms/7"
    assert data[ws.SUBPROTOCOL] == "chat.v1"
    assert data[ws.CLOSE_CODE] == 1000 and data[ws.CLOSE_INITIATOR] == ws.CLIENT
    assert (data[ws.MESSAGES_RECEIVED], data[ws.MESSAGES_SENT]) == (3, 3)
    assert data[ws.BYTES_SENT] == 3 * len("echo:hi 0")
    assert data[ws.SPANS_DROPPED] == 6 - 3
    messages = spans_with(txn, Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND)
    assert [(s["op"], s["data"][ws.MESSAGE_INDEX]) for s in messages] == [
        (Op.WEBSOCKET_RECEIVE, 1), (Op.WEBSOCKET_SEND, 1), (Op.WEBSOCKET_RECEIVE, 2)]
    assert txn["measurements"][ws.MEASURE_RECEIVED]["value"] == 3
    assert txn["measurements"][ws.MEASURE_HANDLING_AVG]["unit"] == "millisecond"
    assert setup.handling() == {"/api/rooms/{room}": 3}
    assert setup.events() == []


def test_uvicorn_fastapi_under_the_otel_middleware_has_bounded_spans(setup: Setup) -> None:
    app = fastapi_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=setup.provider)
    try:
        with Uvicorn(app) as server:
            with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/ws/9") as conn:
                for i in range(10):
                    conn.send(str(i))
                    conn.recv()
                conn.send("bye")
                with pytest.raises(ConnectionClosed):
                    conn.recv()
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    (txn,) = setup.transactions()  # the middleware's span is the connection's: one
    context = trace_of(txn)
    assert context["op"] == Op.WEBSOCKET_SERVER
    assert context["origin"] == "auto.otel.fastapi"
    assert txn["transaction"] == "WS /ws/{room}"
    assert txn["transaction_info"]["source"] == Source.ROUTE
    assert context["data"][ws.CLOSE_CODE] == 4000
    assert context["status"] == "unknown"  # an application's own code
    # no per-event middleware spans: the instrumentation's, up to the limit
    assert sorted(s["op"] for s in txn["spans"]) == [
        Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND]
    assert context["data"][ws.MESSAGES_RECEIVED] == 11
    assert context["data"][ws.SPANS_DROPPED] == 21 - 3


# -- every way the connection's span comes about ------------------------------------------------

def test_fastapi_own_telemetry_span_is_the_connection(setup: Setup) -> None:
    app = fastapi_app(telemetry={"tracer_provider": setup.provider, "metrics": False,
                                 "logs": False})
    with Uvicorn(app) as server, connect(server, "/ws/3") as conn:
        conn.send("one")
        assert conn.recv() == "echo:one"
    (txn,) = setup.server_transactions()
    assert txn["transaction"] == "WS /ws/{room}"
    assert trace_of(txn)["data"][ws.MESSAGES_RECEIVED] == 1
    assert trace_of(txn)["origin"] != ORIGIN  # FastAPI's span, not a second one


def test_raw_asgi_websocket_under_the_otel_middleware_maps_its_spans(setup: Setup) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        await send({"type": "websocket.close", "code": 1000})

    wrapped = OpenTelemetryMiddleware(app, tracer_provider=setup.provider)
    with Uvicorn(wrapped) as server, connect(server, "/feed") as conn:
        conn.send("x")
        assert conn.recv() == "x"
        with pytest.raises(ConnectionClosed):
            conn.recv()
    (txn,) = setup.transactions()  # no route: OpenTelemetry's own spans, mapped
    assert trace_of(txn)["op"] == Op.WEBSOCKET_SERVER
    ops = {s["op"] for s in txn["spans"]}
    assert {Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND} <= ops


def test_handler_sees_the_handshake_baggage(setup: Setup) -> None:
    seen: list[dict[str, object]] = []

    async def handler(websocket: WebSocket) -> None:
        seen.append(dict(baggage.get_all()))
        await websocket.accept()
        await websocket.send_text("ok")
        await websocket.close()

    trace_id = "771a43a4192642f0b136d5159a501700"
    headers = {"traceparent": f"00-{trace_id}-b0e6f15b45c36b12-01", "baggage": "tenant=acme"}
    app = Starlette(routes=[WebSocketRoute("/feed", handler)])
    with Uvicorn(app) as server, connect(server, "/feed", additional_headers=headers) as conn:
        assert conn.recv() == "ok"
    assert seen == [{"tenant": "acme"}]
    (txn,) = setup.server_transactions()
    assert trace_of(txn)["trace_id"] == trace_id


# -- close codes, refusals and errors -----------------------------------------------------------

def test_handler_exception_is_an_error_event(setup: Setup) -> None:
    with Uvicorn(starlette_app()) as server, connect(server, "/api/rooms/1") as conn:
        conn.send("boom")
        with pytest.raises(ConnectionClosed):
            conn.recv()
    (txn,) = setup.server_transactions()
    assert trace_of(txn)["status"] == "internal_error"
    (event,) = setup.events()
    value = event["exception"]["values"][-1]
    assert (value["type"], value["value"]) == ("ValueError", "cannot parse boom")
    assert value["mechanism"]["handled"] is False
    assert event["contexts"]["trace"]["span_id"] == trace_of(txn)["span_id"]


def test_client_going_away_is_no_error(setup: Setup) -> None:
    with Uvicorn(starlette_app()) as server, connect(server, "/api/rooms/1") as conn:
        conn.send("hi")
        conn.recv()
        conn.close(1001)
    (txn,) = setup.server_transactions()
    context = trace_of(txn)
    assert context["status"] == "ok"
    assert context["data"][ws.CLOSE_CODE] == 1001
    assert context["data"][ws.CLOSE_INITIATOR] == ws.CLIENT
    assert setup.events() == []


def test_policy_violation_is_permission_denied(setup: Setup) -> None:
    with Uvicorn(starlette_app()) as server, connect(server, "/api/rooms/1") as conn:
        conn.send("policy")
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    (txn,) = setup.server_transactions()
    assert trace_of(txn)["status"] == "permission_denied"
    assert trace_of(txn)["data"][ws.CLOSE_CODE] == 1008
    assert trace_of(txn)["data"][ws.CLOSE_REASON] == "not allowed"
    assert trace_of(txn)["data"][ws.CLOSE_INITIATOR] == ws.SERVER
    assert setup.events() == []


def test_refused_handshake_is_http_403(setup: Setup) -> None:
    with Uvicorn(starlette_app()) as server, pytest.raises(InvalidStatus):
        connect(server, "/api/rooms/1?deny=1")
    (txn,) = setup.server_transactions()
    assert trace_of(txn)["status"] == "permission_denied"
    assert trace_of(txn)["data"][Attr.HTTP_STATUS[0]] == 403


def test_client_address_is_not_recorded_without_pii(setup: Setup) -> None:
    exporter = InMemorySpanExporter()
    setup.provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Uvicorn(starlette_app()) as server, connect(server, "/api/rooms/1") as conn:
        conn.send("hi")
        conn.recv()
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    attributes = dict(span.attributes or {})
    assert attributes["server.address"] == "127.0.0.1"
    assert "client.address" not in attributes and "client.port" not in attributes


def test_uninstrument_restores_starlette_and_the_middleware() -> None:
    route_handle = vars(starlette.routing.WebSocketRoute)["handle"]
    middleware = {name: vars(OpenTelemetryMiddleware)[name]
                  for name in ("_get_otel_receive", "_set_send_span")}
    current = Setup()
    assert vars(starlette.routing.WebSocketRoute)["handle"] is not route_handle
    assert vars(otel_asgi.OpenTelemetryMiddleware)["_set_send_span"] is not (
        middleware["_set_send_span"])
    current.instrumentor.uninstrument()
    try:
        assert vars(starlette.routing.WebSocketRoute)["handle"] is route_handle
        for name, original in middleware.items():
            assert vars(OpenTelemetryMiddleware)[name] is original
        with Uvicorn(starlette_app()) as server, connect(server, "/api/rooms/1") as conn:
            conn.send("hi")
            assert conn.recv() == "echo:hi"
        assert current.transactions() == []
    finally:
        current.capture.close()
        current.meters.shutdown()


def test_middleware_of_another_shape_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    """The private methods are wrapped only with the parameters this instrumentation reads
    (0.66b's): another version's keeps its own spans, with a debug line, never a crash."""

    class Middleware:
        def _get_otel_receive(self, scope: Any, receive: Any, server_span_name: str) -> Any:
            return receive

        def _set_send_span(self, scope: Any, send: Any, message: Any) -> bool:
            return False

    module = types.SimpleNamespace(OpenTelemetryMiddleware=Middleware)
    patches = ClassPatches()
    originals = dict(vars(Middleware))
    with caplog.at_level(logging.DEBUG, logger="otel_sentry_bridge"):
        patch_middleware(patches, module)
    assert dict(vars(Middleware)) == originals
    assert "left as they are" in caplog.text
    patches.restore()


# -- zero code: opentelemetry-instrument, uvicorn, FastAPI --------------------------------------

APP = '''
import os

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"ok": True}


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "boom":
                raise RuntimeError("room " + room + " exploded")
            await websocket.send_text(text.upper())
    except WebSocketDisconnect:
        pass


uvicorn.run(app, host="127.0.0.1", port=int(os.environ["CHAT_PORT"]), log_level="warning")
'''


@pytest.mark.e2e
def test_zero_code_fastapi_websocket(tmp_path: Path) -> None:
    script = tmp_path / "chat" / "chat.py"
    script.parent.mkdir()
    script.write_text(APP)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with SentryReceiver() as receiver:
        env = bridge_env(receiver, "chat", SENTRY_BRIDGE_WEBSOCKET_MESSAGE_SPANS="2")
        port = _free_port()
        app = AppProcess(script, env, port)
        try:
            url = f"ws://127.0.0.1:{port}/ws/lobby"
            headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
            with websockets.sync.client.connect(url, additional_headers=headers) as conn:
                for word in ("a", "b", "c", "d"):
                    conn.send(word)
                    assert conn.recv() == word.upper()
            with websockets.sync.client.connect(url) as conn, pytest.raises(ConnectionClosed):
                conn.send("boom")
                conn.recv()
            receiver.wait_for_transactions(3, timeout=20)  # with the readiness check's
        finally:
            output = app.stop()
        assert_clean_output(output, tracebacks=1)  # uvicorn logs the handler's exception
        transactions = [t for t in receiver.transactions()
                        if trace_of(t)["op"] != Op.HTTP_SERVER]
        assert len(transactions) == 2, summary(receiver)
        for txn in transactions:
            assert validate_event(txn, kind="transaction") == []
            assert txn["transaction"] == "WS /ws/{room}", summary(receiver)
            assert trace_of(txn)["op"] == Op.WEBSOCKET_SERVER
        (chat,) = [t for t in transactions if trace_of(t)["trace_id"] == trace_id]
        assert trace_of(chat)["parent_span_id"] == parent_id
        assert trace_of(chat)["status"] == "ok"
        assert trace_of(chat)["data"][ws.MESSAGES_RECEIVED] == 4
        assert len(spans_with(chat, Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND)) == 2
        assert not [s for s in chat["spans"] if s["op"].startswith("middleware.asgi")]
        (failed,) = [t for t in transactions if t is not chat]
        assert trace_of(failed)["status"] == "internal_error"
        events = receiver.events()
        assert [e["exception"]["values"][-1]["type"] for e in events] == ["RuntimeError"]
        assert validate_event(events[0], kind="event") == []
        assert events[0]["contexts"]["trace"]["trace_id"] == trace_of(failed)["trace_id"]
        assert_receiver_clean(receiver)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

