"""websockets instrumentation: real servers and clients (asyncio and sync APIs) on loopback,
their connections through a real TracerProvider and the bridge, every payload checked by
Relay's normalizer (``validate_event``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any, cast

import pytest
import websockets.asyncio.client
import websockets.asyncio.connection
import websockets.asyncio.router
import websockets.asyncio.server
import websockets.sync.client
import websockets.sync.server
from opentelemetry import baggage, propagate
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from otel_sentry_bridge_instrumentation import _ws_common as ws
from otel_sentry_bridge_instrumentation.websockets import WebsocketsInstrumentor
from otel_sentry_bridge_instrumentation.websockets._server import ORIGIN
from sentry_receiver import validate_event
from websockets.exceptions import ConnectionClosed, InvalidStatus
from werkzeug.routing import Map, Rule

from otel_sentry_bridge._mapping.status import derive_status, status_from_close_code
from otel_sentry_bridge._mapping.values import concept_view
from otel_sentry_bridge.conventions import Attr, Op, Source
from otel_sentry_bridge.propagation import SentryBridgePropagator
from otel_sentry_bridge.testing import BridgeCapture

Handler = Callable[[Any], Awaitable[None]]


class Setup:
    """An instrumented capture (tracer and meter providers) for one test."""

    def __init__(self, limit: int = 100, **settings: Any) -> None:
        self.capture = BridgeCapture(websocket_message_spans=limit, **settings)
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.instrumentor = WebsocketsInstrumentor()
        self.instrumentor.instrument(tracer_provider=self.capture.tracer_provider,
                                     meter_provider=self.meters)

    def close(self) -> None:
        self.instrumentor.uninstrument()
        self.capture.close()
        self.meters.shutdown()

    def transactions(self) -> list[dict[str, Any]]:
        found = self.capture.transactions()
        for txn in found:
            assert validate_event(txn, kind="transaction") == [], txn
        return found

    def events(self) -> list[dict[str, Any]]:
        found = self.capture.items("event")
        for event in found:
            assert validate_event(event, kind="event") == [], event
        return found

    def server_transactions(self) -> list[dict[str, Any]]:
        return [t for t in self.transactions() if trace_of(t)["op"] == Op.WEBSOCKET_SERVER]

    def handling_points(self) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        points: list[HistogramDataPoint] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == ws.HANDLING_METRIC:
                        points += [p for p in metric.data.data_points
                                   if isinstance(p, HistogramDataPoint)]
        return points


@pytest.fixture
def setup() -> Iterator[Setup]:
    current = Setup(limit=3)
    yield current
    current.close()


def trace_of(txn: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = txn["contexts"]["trace"]
    return context


def spans_with(txn: dict[str, Any], *ops: str) -> list[dict[str, Any]]:
    return [s for s in txn["spans"] if s["op"] in ops]


async def serve_and(handler: Handler, client: Callable[[int], Awaitable[None]],
                    **kwargs: Any) -> None:
    """Run the asyncio server on a free loopback port while ``client(port)`` runs; the server
    (and its handlers) are closed when this returns."""
    async with websockets.asyncio.server.serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        await client(port)


async def echo(connection: Any) -> None:
    async for message in connection:
        await connection.send(message if isinstance(message, bytes) else "echo:" + message)


# -- asyncio: one transaction per connection, the client's trace continued --------------------

def test_asyncio_connection_is_a_transaction_continuing_the_client_trace(setup: Setup) -> None:
    tracer = setup.capture.tracer_provider.get_tracer("test")

    async def client(port: int) -> None:
        with tracer.start_as_current_span("GET /relay", kind=SpanKind.SERVER):
            url = f"ws://127.0.0.1:{port}/chat?token=secret"
            async with websockets.asyncio.client.connect(url) as conn:
                for i in range(4):
                    await conn.send(f"hello {i}")
                    assert await conn.recv() == f"echo:hello {i}"
                await conn.send(b"\x00\x01\x02")
                assert await conn.recv() == b"\x00\x01\x02"

    asyncio.run(serve_and(echo, client))
    (server,) = setup.server_transactions()
    (caller,) = [t for t in setup.transactions() if t["transaction"] == "GET /relay"]

    # the client's connection span, in the caller's transaction
    (client_span,) = spans_with(caller, Op.WEBSOCKET_CLIENT)
    assert client_span["description"].startswith("WS ws://127.0.0.1:")
    assert client_span["description"].endswith("/chat")  # no query string
    assert client_span["origin"] == ORIGIN
    assert client_span["status"] == "ok"
    assert client_span["data"][ws.CLOSE_CODE] == 1000
    assert client_span["data"][ws.CLOSE_INITIATOR] == ws.CLIENT
    client_messages = spans_with(caller, Op.WEBSOCKET_SEND, Op.WEBSOCKET_RECEIVE)
    assert len(client_messages) == 3  # the limit
    assert {s["parent_span_id"] for s in client_messages} == {client_span["span_id"]}

    # the server's transaction continues it
    context = trace_of(server)
    assert server["transaction"] == "WS /chat"
    assert server["transaction_info"]["source"] == Source.URL
    assert context["op"] == Op.WEBSOCKET_SERVER
    assert context["origin"] == ORIGIN
    assert context["status"] == "ok"
    assert context["trace_id"] == trace_of(caller)["trace_id"]
    assert context["parent_span_id"] == client_span["span_id"]
    data = context["data"]
    assert data[Attr.URL_PATH[0]] == "/chat"
    assert data[ws.CLOSE_CODE] == 1000 and data[ws.CLOSE_INITIATOR] == ws.CLIENT
    assert (data[ws.MESSAGES_RECEIVED], data[ws.MESSAGES_SENT]) == (5, 5)
    assert data[ws.BYTES_RECEIVED] == 4 * len("hello 0") + 3
    assert data[ws.BYTES_SENT] == 4 * len("echo:hello 0") + 3
    assert data[ws.SPANS_DROPPED] == 10 - 3

    messages = spans_with(server, Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND)
    assert [s["op"] for s in messages] == [Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND,
                                           Op.WEBSOCKET_RECEIVE]
    assert {s["parent_span_id"] for s in messages} == {context["span_id"]}
    first = messages[0]
    assert first["description"] == "receive text"
    assert first["data"][ws.MESSAGE_TYPE] == ws.TEXT
    assert first["data"][ws.MESSAGE_SIZE] == len("hello 0")
    assert first["data"][ws.MESSAGE_INDEX] == 1

    measurements = server["measurements"]
    assert measurements[ws.MEASURE_RECEIVED] == {"value": 5.0, "unit": "none"}
    assert measurements[ws.MEASURE_SENT] == {"value": 5.0, "unit": "none"}
    handling = measurements[ws.MEASURE_HANDLING_AVG]
    assert handling["unit"] == "millisecond" and handling["value"] > 0
    assert measurements[ws.MEASURE_HANDLING_MAX]["value"] >= handling["value"]
    assert setup.events() == []


def test_sentry_trace_header_is_continued(setup: Setup) -> None:
    """With the bridge's propagator (what its distro configures), a handshake carrying only
    Sentry's headers (a browser with the Sentry SDK) is continued."""
    trace_id, span_id = "771a43a4192642f0b136d5159a501700", "b0e6f15b45c36b12"
    headers = {"sentry-trace": f"{trace_id}-{span_id}-1",
               "baggage": f"sentry-trace_id={trace_id},sentry-public_key=abc"}
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(SentryBridgePropagator())
    try:
        async def client(port: int) -> None:
            with suppress_instrumentation():  # a client of its own: these headers go as given
                async with websockets.asyncio.client.connect(
                        f"ws://127.0.0.1:{port}/live", additional_headers=headers) as conn:
                    await conn.send("hi")
                    await conn.recv()

        asyncio.run(serve_and(echo, client))
    finally:
        propagate.set_global_textmap(previous)
    (server,) = setup.transactions()  # (no client span: suppressed)
    assert trace_of(server)["op"] == Op.WEBSOCKET_SERVER
    assert trace_of(server)["trace_id"] == trace_id
    assert trace_of(server)["parent_span_id"] == span_id


def test_handling_time_is_a_histogram_per_message(setup: Setup) -> None:
    async def slow_echo(connection: Any) -> None:
        async for message in connection:
            await asyncio.sleep(0.02)  # the handling
            await connection.send(message)

    async def client(port: int) -> None:
        async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
            for _ in range(3):
                await conn.send("ping")
                await conn.recv()

    asyncio.run(serve_and(slow_echo, client))
    points = {(p.attributes or {}).get(ws.ROLE): p for p in setup.handling_points()}
    server = points[ws.SERVER]
    assert server.count == 3
    assert server.min >= 0.02 and server.sum < 3 * 1.0
    assert dict(server.attributes or {}) == {ws.ROLE: ws.SERVER}
    # the client handled two replies before sending again (the last one: nothing followed)
    assert points[ws.CLIENT].count == 2
    (txn,) = setup.server_transactions()
    assert txn["measurements"][ws.MEASURE_HANDLING_MAX]["value"] >= 20.0


@pytest.mark.parametrize(("code", "status"), [
    (1000, "ok"), (1001, "ok"), (1008, "permission_denied"), (1011, "internal_error"),
    (1013, "unavailable"), (4403, "permission_denied"), (4001, "unknown"),
])
def test_close_code_is_the_status(setup: Setup, code: int, status: str) -> None:
    tracer = setup.capture.tracer_provider.get_tracer("test")

    async def closing(connection: Any) -> None:
        await connection.recv()
        await connection.close(code, "bye")

    async def client(port: int) -> None:
        with tracer.start_as_current_span("caller", kind=SpanKind.SERVER):
            async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/x") as conn:
                await conn.send("hi")
                with pytest.raises(ConnectionClosed):
                    await conn.recv()

    asyncio.run(serve_and(closing, client))
    (server,) = setup.server_transactions()
    assert trace_of(server)["status"] == status
    data = trace_of(server)["data"]
    assert data[ws.CLOSE_CODE] == code
    assert data[ws.CLOSE_INITIATOR] == ws.SERVER
    assert data[ws.CLOSE_REASON] == "bye"
    (caller,) = [t for t in setup.transactions() if t["transaction"] == "caller"]
    (client_span,) = spans_with(caller, Op.WEBSOCKET_CLIENT)
    assert client_span["status"] == status
    assert client_span["data"][ws.CLOSE_CODE] == code
    assert setup.events() == []


def test_abnormal_closure_is_aborted(setup: Setup) -> None:
    async def waiting(connection: Any) -> None:
        with pytest.raises(ConnectionClosed):
            await connection.recv()

    async def client(port: int) -> None:
        conn = await websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/")
        conn.transport.abort()  # no close frame
        await conn.wait_closed()

    asyncio.run(serve_and(waiting, client))
    (server,) = setup.server_transactions()
    assert trace_of(server)["status"] == "aborted"
    assert trace_of(server)["data"][ws.CLOSE_CODE] == 1006


def test_handler_exception_is_an_error_event(setup: Setup) -> None:
    async def failing(connection: Any) -> None:
        message = await connection.recv()
        raise ValueError(f"cannot handle {message}")

    async def client(port: int) -> None:
        async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/fail") as conn:
            await conn.send("order-7")
            with pytest.raises(ConnectionClosed):
                await conn.recv()

    asyncio.run(serve_and(failing, client))
    (server,) = setup.server_transactions()
    assert trace_of(server)["status"] == "internal_error"
    assert trace_of(server)["data"][ws.CLOSE_CODE] == 1011  # websockets closes with 1011
    (event,) = setup.events()
    (value,) = event["exception"]["values"]
    assert value["type"] == "ValueError" and value["value"] == "cannot handle order-7"
    assert value["mechanism"] == {"type": ORIGIN, "handled": False}
    assert event["contexts"]["trace"]["trace_id"] == trace_of(server)["trace_id"]
    assert event["contexts"]["trace"]["span_id"] == trace_of(server)["span_id"]


def test_cancelled_handler_is_cancelled_whatever_the_close_code(setup: Setup) -> None:
    """websockets closes a failed handler's connection with 1011: the exception, not that
    code, decides the status (a cancellation is ``cancelled``), and it is no error event."""
    handlers: list[asyncio.Task[Any]] = []

    async def waiting(connection: Any) -> None:
        handlers.append(cast("asyncio.Task[Any]", asyncio.current_task()))
        await connection.recv()
        await asyncio.sleep(10)

    async def client(port: int) -> None:
        async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
            await conn.send("hi")
            while not handlers:
                await asyncio.sleep(0.01)
            handlers[0].cancel()
            with pytest.raises(ConnectionClosed):
                await conn.recv()

    asyncio.run(serve_and(waiting, client))
    (server,) = setup.server_transactions()
    assert trace_of(server)["data"][ws.CLOSE_CODE] == 1011
    assert trace_of(server)["status"] == "cancelled"
    assert setup.events() == []


def test_connection_closed_in_the_handler_is_no_error(setup: Setup) -> None:
    async def reading(connection: Any) -> None:
        while True:  # ConnectionClosedOK escapes the handler once the client has closed
            await connection.recv()

    async def client(port: int) -> None:
        async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
            await conn.send("one")

    asyncio.run(serve_and(reading, client))
    (server,) = setup.server_transactions()
    assert trace_of(server)["status"] == "ok"
    assert setup.events() == []


def test_process_request_runs_in_the_connection_span_and_can_refuse(setup: Setup) -> None:
    tracer = setup.capture.tracer_provider.get_tracer("test")

    def authenticate(connection: Any, request: Any) -> Any:
        with tracer.start_as_current_span("check token"):
            if "token" not in request.path:
                return connection.respond(HTTPStatus.FORBIDDEN, "no token\n")
        return None

    async def client(port: int) -> None:
        with tracer.start_as_current_span("caller", kind=SpanKind.SERVER):
            with pytest.raises(InvalidStatus):
                await websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/private")

    asyncio.run(serve_and(echo, client, process_request=authenticate))
    (server,) = setup.server_transactions()
    assert trace_of(server)["status"] == "permission_denied"
    assert trace_of(server)["data"][Attr.HTTP_STATUS[0]] == 403
    assert [s["description"] for s in server["spans"]] == ["check token"]
    (caller,) = [t for t in setup.transactions() if t["transaction"] == "caller"]
    (client_span,) = spans_with(caller, Op.WEBSOCKET_CLIENT)
    assert client_span["status"] == "permission_denied"
    assert client_span["data"][Attr.ERROR_TYPE[0]].endswith("InvalidStatus")
    assert setup.events() == []  # a refusal is no error


def test_failing_process_request_is_an_error_event(setup: Setup) -> None:
    async def broken(connection: Any, request: Any) -> None:
        raise KeyError("session store down")

    async def client(port: int) -> None:
        with pytest.raises(InvalidStatus):
            await websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/")

    asyncio.run(serve_and(echo, client, process_request=broken))
    (server,) = setup.server_transactions()
    assert trace_of(server)["status"] == "internal_error"
    assert trace_of(server)["data"][Attr.HTTP_STATUS[0]] == 500
    (event,) = setup.events()
    assert event["exception"]["values"][-1]["type"] == "KeyError"


def test_router_names_the_transaction_after_the_rule(setup: Setup) -> None:
    async def room(connection: Any, room_id: int) -> None:
        await connection.send(f"room {room_id}")

    async def main() -> None:
        url_map = Map([Rule("/rooms/<int:room_id>", endpoint=room)])
        async with websockets.asyncio.router.route(url_map, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with websockets.asyncio.client.connect(
                    f"ws://127.0.0.1:{port}/rooms/42") as conn:
                assert await conn.recv() == "room 42"

    asyncio.run(main())
    (server,) = setup.server_transactions()
    assert server["transaction"] == "WS /rooms/<int:room_id>"
    assert server["transaction_info"]["source"] == Source.ROUTE
    assert trace_of(server)["data"][Attr.HTTP_ROUTE[0]] == "/rooms/<int:room_id>"


@pytest.mark.parametrize(("code", "status"), [
    (1005, "ok"), (1002, "invalid_argument"), (1007, "invalid_argument"),
    (1009, "failed_precondition"), (1010, "unimplemented"), (1012, "unavailable"),
    (1014, "internal_error"), (3000, "unauthenticated"), (3003, "permission_denied"),
    (3008, "deadline_exceeded"), (4400, "invalid_argument"), (4401, "unauthenticated"),
    (4429, "resource_exhausted"), (4500, "internal_error"), (4999, "unknown"), (2000, "unknown"),
])
def test_close_code_table(code: int, status: str) -> None:
    assert status_from_close_code(code) == status
    view = concept_view({ws.CLOSE_CODE: code})
    assert derive_status(view, StatusCode.UNSET) == status
    # an exception decides, whatever the close code (websockets answers one with 1011); an
    # HTTP 200 (ASGI's, per message) never does
    assert derive_status(view, StatusCode.ERROR, "ValueError") == "internal_error"
    assert derive_status(view, StatusCode.ERROR, "CancelledError") == "cancelled"
    view = concept_view({ws.CLOSE_CODE: code, "http.status_code": 200})
    assert derive_status(view, StatusCode.UNSET) == status


# -- the sync API -------------------------------------------------------------------------------

def test_sync_server_and_client(setup: Setup) -> None:
    tracer = setup.capture.tracer_provider.get_tracer("test")

    def handler(connection: Any) -> None:
        with tracer.start_as_current_span("lookup"):
            name = connection.recv()
        connection.send(b"hi " + name.encode())
        connection.close(1001, "shutting down")

    server = websockets.sync.server.serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        with tracer.start_as_current_span("caller", kind=SpanKind.SERVER):
            with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/greet") as conn:
                conn.send("ada")
                assert conn.recv() == b"hi ada"
                with pytest.raises(ConnectionClosed):
                    conn.recv()
    finally:
        server.shutdown()
        thread.join(10)
    (txn,) = setup.server_transactions()
    context = trace_of(txn)
    assert txn["transaction"] == "WS /greet"
    assert context["status"] == "ok"
    assert context["data"][ws.CLOSE_CODE] == 1001
    assert context["data"][ws.CLOSE_REASON] == "shutting down"
    (lookup,) = [s for s in txn["spans"] if s["description"] == "lookup"]
    (received,) = spans_with(txn, Op.WEBSOCKET_RECEIVE)
    assert received["parent_span_id"] == lookup["span_id"]  # inside the handler's span
    (sent,) = spans_with(txn, Op.WEBSOCKET_SEND)
    assert sent["data"][ws.MESSAGE_TYPE] == ws.BINARY
    assert sent["parent_span_id"] == context["span_id"]
    (caller,) = [t for t in setup.transactions() if t["transaction"] == "caller"]
    (client_span,) = spans_with(caller, Op.WEBSOCKET_CLIENT)
    assert context["parent_span_id"] == client_span["span_id"]
    assert client_span["data"][ws.CLOSE_INITIATOR] == ws.SERVER


# -- settings and switches ----------------------------------------------------------------------

def test_no_message_spans_with_a_limit_of_zero() -> None:
    current = Setup(limit=0)
    try:
        async def client(port: int) -> None:
            async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
                await conn.send("a")
                await conn.recv()

        asyncio.run(serve_and(echo, client))
        (txn,) = current.server_transactions()
        assert spans_with(txn, Op.WEBSOCKET_RECEIVE, Op.WEBSOCKET_SEND) == []
        assert trace_of(txn)["data"][ws.MESSAGES_RECEIVED] == 1
        assert trace_of(txn)["data"][ws.SPANS_DROPPED] == 2
    finally:
        current.close()


def test_unsampled_connections_still_feed_the_histogram() -> None:
    current = Setup(sampler=ALWAYS_OFF)
    try:
        async def client(port: int) -> None:
            async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
                for _ in range(2):
                    await conn.send("a")
                    await conn.recv()

        asyncio.run(serve_and(echo, client))
        assert current.transactions() == []
        counts = {(p.attributes or {}).get(ws.ROLE): p.count for p in current.handling_points()}
        assert counts[ws.SERVER] == 2
    finally:
        current.close()


def test_uninstrument_restores_the_library() -> None:
    originals = {
        (cls, name): vars(cls).get(name)
        for cls, name in [
            (websockets.asyncio.server.ServerConnection, "handshake"),
            (websockets.asyncio.server.ServerConnection, "__aenter__"),
            (websockets.asyncio.client.ClientConnection, "connection_lost"),
            (websockets.asyncio.connection.Connection, "recv"),
            (websockets.asyncio.router.Router, "route_request"),
            (websockets.sync.server.ServerConnection, "__exit__"),
        ]
    }
    current = Setup()
    assert vars(websockets.asyncio.server.ServerConnection).get("__aenter__") is not None
    current.instrumentor.uninstrument()
    try:
        for (cls, name), original in originals.items():
            assert vars(cls).get(name) is original, (cls, name)

        async def client(port: int) -> None:
            async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
                await conn.send("a")
                await conn.recv()

        asyncio.run(serve_and(echo, client))
        assert current.transactions() == []
    finally:
        current.capture.close()
        current.meters.shutdown()


# -- privacy and context -----------------------------------------------------------------------

@pytest.mark.parametrize("pii", [False, True])
def test_client_address_only_with_pii(pii: bool) -> None:
    """No exporter gets the client's address without SENTRY_BRIDGE_SEND_DEFAULT_PII (as the
    HTTP middleware): not only the Sentry payload, the span itself."""
    current = Setup(send_default_pii=pii)
    exporter = InMemorySpanExporter()
    current.capture.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        async def client(port: int) -> None:
            async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/") as conn:
                await conn.send("a")
                await conn.recv()

        asyncio.run(serve_and(echo, client))
        (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
        attributes = dict(span.attributes or {})
        assert attributes["server.address"] == "127.0.0.1"
        (txn,) = current.server_transactions()
        if pii:
            assert attributes["client.address"] == "127.0.0.1"
            assert trace_of(txn)["data"]["client.address"] == "127.0.0.1"
        else:
            assert "client.address" not in attributes and "client.port" not in attributes
    finally:
        current.close()


def test_handler_sees_the_handshake_baggage(setup: Setup) -> None:
    """The handler runs in the context the handshake's headers carry (its baggage too, which
    the handler's own outgoing calls then pass on), as OpenTelemetry's HTTP servers do."""
    seen: list[dict[str, object]] = []
    trace_id = "771a43a4192642f0b136d5159a501700"
    headers = [("traceparent", f"00-{trace_id}-b0e6f15b45c36b12-01"),
               ("baggage", "tenant=acme")]

    async def handler(connection: Any) -> None:
        seen.append(dict(baggage.get_all()))
        await connection.send("ok")

    async def client(port: int) -> None:
        with suppress_instrumentation():  # a client of its own: these headers go as given
            async with websockets.asyncio.client.connect(
                    f"ws://127.0.0.1:{port}/", additional_headers=headers) as conn:
                await conn.recv()

    asyncio.run(serve_and(handler, client))
    assert seen == [{"tenant": "acme"}]
    (txn,) = setup.server_transactions()
    assert trace_of(txn)["trace_id"] == trace_id
