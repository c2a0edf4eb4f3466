"""otel_sentry_bridge.middleware, ASGI: a bare app, Starlette with and without OpenTelemetry's
ASGI middleware and Starlette instrumentation, uvicorn, and the scopes it leaves alone."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from otel_sentry_bridge import SentryBridgeASGIMiddleware
from otel_sentry_bridge.conventions import Op, Source
from otel_sentry_bridge.middleware import ORIGIN_ASGI
from otel_sentry_bridge.testing import BridgeCapture

PAGE = "<!doctype html><html><head><title>shop</title></head><body>hi</body></html>"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
Message = dict[str, Any]


class Capture:
    def __init__(self, **settings: Any) -> None:
        self.bridge = BridgeCapture(**settings)
        self.exporter = InMemorySpanExporter()
        self.bridge.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider = self.bridge.tracer_provider

    def transactions(self) -> list[dict[str, Any]]:
        txns = self.bridge.transactions()
        for txn in txns:
            assert validate_event(txn, kind="transaction") == []
        return txns

    def events(self) -> list[dict[str, Any]]:
        events = self.bridge.items("event")
        for event in events:
            assert validate_event(event, kind="event") == []
        return events

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


@pytest.fixture
def cap() -> Iterator[Capture]:
    capture = Capture()
    yield capture
    capture.bridge.close()


def scope_for(path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None,
              kind: str = "http") -> dict[str, Any]:
    raw_path, _, query = path.partition("?")
    return {
        "type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "root_path": "",
        "query_string": query.encode(), "server": ("shop.test", 8000),
        "client": ("198.51.100.2", 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers or []],
    }


def call(app: Any, path: str, **kwargs: Any) -> list[Message]:
    scope = scope_for(path, **kwargs)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def body_of(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def meta_span_id(sent: list[Message]) -> str:
    body = body_of(sent).decode()
    start = body.index('<meta name="sentry-trace" content="') + 35
    return body[start:start + 32 + 1 + 16].split("-")[1]


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


class OutOfStock(Exception):
    pass


async def order(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def item(request: Request) -> Response:
    return PlainTextResponse(f"item {request.path_params['item_id']}")


async def fail(request: Request) -> Response:
    raise OutOfStock("sku 7")


def starlette(middleware: list[Middleware] | None = None) -> Starlette:
    return Starlette(routes=[
        Route("/orders/{order_id:int}", order),
        Route("/fail", fail),
        Mount("/api/{version}", routes=[Route("/items/{item_id}", item)]),
        Mount("/static", app=bare_app),
    ], middleware=middleware)


# ---------------------------------------------------------------------------- a bare ASGI app


def test_bare_asgi_app(cap: Capture) -> None:
    app = SentryBridgeASGIMiddleware(bare_app, tracer_provider=cap.provider)
    sent = call(app, "/carts/81/lines?x=1", headers=[
        ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("accept", "a"), ("accept", "b"),
        ("cookie", "session=s3cr3t-cookie"), ("user-agent", "curl/8")])
    assert sent == [{"type": "http.response.start", "status": 200,
                     "headers": [(b"content-type", b"text/plain")]},
                    {"type": "http.response.body", "body": b"ok"}]  # untouched
    (txn,) = cap.transactions()
    trace_ctx = txn["contexts"]["trace"]
    assert (txn["transaction"], txn["transaction_info"]) == (
        "GET /carts/{id}/lines", {"source": Source.URL})
    assert (trace_ctx["op"], trace_ctx["origin"], trace_ctx["status"]) == (
        Op.HTTP_SERVER, ORIGIN_ASGI, "ok")
    assert (trace_ctx["trace_id"], trace_ctx["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    request = txn["request"]
    assert request["url"] == "http://shop.test:8000/carts/81/lines"
    assert request["headers"]["Accept"] == "a, b" and request["headers"]["Cookie"] == "[Filtered]"
    assert "query_string" not in request and "198.51.100.2" not in orjson.dumps(txn).decode()
    assert "s3cr3t-cookie" not in orjson.dumps(txn).decode()


def test_asgi_with_pii(cap: Capture) -> None:
    capture = Capture(send_default_pii=True)
    try:
        call(SentryBridgeASGIMiddleware(bare_app, tracer_provider=capture.provider),
             "/?q=shoes&api_key=k-1", headers=[("cookie", "session=s3cr3t-cookie")])
        (txn,) = capture.transactions()
    finally:
        capture.bridge.close()
    assert txn["request"]["query_string"] == "q=shoes&api_key=[Filtered]"
    assert txn["request"]["headers"]["Cookie"] == "session=s3cr3t-cookie"
    assert txn["user"]["ip_address"] == "198.51.100.2"


def test_asgi_exception_is_an_error_event_and_a_500(cap: Capture) -> None:
    error = OutOfStock("asgi")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    with pytest.raises(OutOfStock) as raised:
        call(SentryBridgeASGIMiddleware(app, tracer_provider=cap.provider), "/checkout")
    assert raised.value is error
    (txn,) = cap.transactions()
    assert txn["contexts"]["trace"]["status"] == "internal_error"
    assert txn["contexts"]["response"]["status_code"] == 500
    (event,) = cap.events()
    assert validate_event(event, kind="event") == []
    assert event["exception"]["values"][0]["type"] == "OutOfStock"


def test_websocket_and_lifespan_pass_through_untouched(cap: Capture) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    middleware = SentryBridgeASGIMiddleware(app, tracer_provider=cap.provider)
    for kind in ("websocket", "lifespan"):
        scope = scope_for("/ws", kind=kind)
        before = dict(scope)

        async def receive() -> Message:
            return {}

        async def send(message: Message) -> None:
            pass

        asyncio.run(middleware(scope, receive, send))
        assert seen[-1] == (scope, receive, send) and seen[-1][0] is scope
        assert scope == before
    assert cap.exporter.get_finished_spans() == ()


# --------------------------------------------------------------------------------- Starlette


def test_starlette_routes_and_mounts(cap: Capture) -> None:
    app = SentryBridgeASGIMiddleware(starlette(), tracer_provider=cap.provider)
    sent = call(app, "/orders/7")
    for path in ("/api/v2/items/9", "/static/css/site.css", "/missing/12"):
        call(app, path)
    names = [(t["transaction"], t["transaction_info"]["source"]) for t in cap.transactions()]
    assert names == [("GET /orders/{order_id:int}", Source.ROUTE),
                     ("GET /api/{version}/items/{item_id}", Source.ROUTE),
                     ("GET /static/{path}", Source.ROUTE),
                     ("GET /missing/{id}", Source.URL)]
    assert meta_span_id(sent) == cap.server_spans()[0].context.span_id.to_bytes(8, "big").hex()


def test_asgi_route_resolver_wins_over_the_framework(cap: Capture) -> None:
    def resolver(scope: dict[str, Any]) -> str | None:
        return "/o/{id}" if scope["path"].startswith("/orders/") else None

    app = SentryBridgeASGIMiddleware(starlette(), tracer_provider=cap.provider,
                                     route_resolver=resolver)
    call(app, "/orders/7")
    call(app, "/api/v1/items/2")
    assert [t["transaction"] for t in cap.transactions()] == [
        "GET /o/{id}", "GET /api/{version}/items/{item_id}"]


def test_starlette_app_error(cap: Capture) -> None:
    with pytest.raises(OutOfStock):
        call(SentryBridgeASGIMiddleware(starlette(), tracer_provider=cap.provider), "/fail")
    (txn,) = cap.transactions()
    assert (txn["transaction"], txn["contexts"]["response"]["status_code"]) == ("GET /fail", 500)
    assert len(cap.events()) == 1


def test_opentelemetry_asgi_middleware_outside(cap: Capture) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].startswith("/boom"):
            raise OutOfStock("asgi")
        await starlette()(scope, receive, send)

    stack = OpenTelemetryMiddleware(SentryBridgeASGIMiddleware(app, tracer_provider=cap.provider),
                                    tracer_provider=cap.provider)
    sent = call(stack, "/orders/7", headers=[("accept-language", "pt")])
    with pytest.raises(OutOfStock):
        call(stack, "/boom/3")
    order_txn, boom = cap.transactions()
    assert (order_txn["transaction"], order_txn["transaction_info"]) == (
        "GET /orders/{order_id:int}", {"source": Source.ROUTE})
    assert order_txn["contexts"]["trace"]["origin"] == "auto.otel.asgi"
    assert order_txn["request"]["headers"]["Accept-Language"] == "pt"
    assert [s.name for s in cap.server_spans()] == ["GET /orders/{order_id:int}", "GET /boom/3"]
    assert meta_span_id(sent) == order_txn["contexts"]["trace"]["span_id"]
    assert (boom["transaction"], boom["transaction_info"]["source"]) == (
        "GET /boom/{id}", Source.URL)
    (event,) = cap.events()  # recorded by both middlewares: one event
    assert event["exception"]["values"][0]["value"] == "asgi"


def test_starlette_instrumentation_with_the_middleware_inside(cap: Capture) -> None:
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    app = starlette([Middleware(SentryBridgeASGIMiddleware, tracer_provider=cap.provider)])
    StarletteInstrumentor.instrument_app(app, tracer_provider=cap.provider)
    try:
        sent = call(app, "/orders/7", headers=[("accept-language", "pt")])
        call(app, "/missing/12")
        with pytest.raises(OutOfStock):
            call(app, "/fail")
    finally:
        StarletteInstrumentor.uninstrument_app(app)
    order_txn, missing, fail_txn = cap.transactions()
    # Starlette answers 500 (OpenTelemetry's span ends with it) before the error leaves it:
    # the middleware, inside, recorded it first.
    (event,) = cap.events()
    assert event["contexts"]["trace"]["span_id"] == fail_txn["contexts"]["trace"]["span_id"]
    assert order_txn["transaction"] == "GET /orders/{order_id:int}"
    assert order_txn["request"]["headers"]["Accept-Language"] == "pt"
    assert (missing["transaction"], missing["transaction_info"]["source"]) == (
        "GET /missing/{id}", Source.URL)
    assert len(cap.server_spans()) == 3
    assert meta_span_id(sent) == order_txn["contexts"]["trace"]["span_id"]


def test_starlette_instrumentation_with_the_middleware_outside(cap: Capture) -> None:
    """The app is instrumented inside: no span of ours; the tags still name the server span
    (not OpenTelemetry's ``http send`` span current when the response starts)."""
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    inner = starlette()
    StarletteInstrumentor.instrument_app(inner, tracer_provider=cap.provider)
    try:
        sent = call(SentryBridgeASGIMiddleware(inner, tracer_provider=cap.provider), "/orders/7")
    finally:
        StarletteInstrumentor.uninstrument_app(inner)
    (txn,) = cap.transactions()
    assert txn["transaction"] == "GET /orders/{order_id:int}"
    assert txn["contexts"]["trace"]["origin"] == "auto.otel.starlette"
    assert len(cap.server_spans()) == 1
    assert meta_span_id(sent) == txn["contexts"]["trace"]["span_id"]


# ----------------------------------------------------------------------------- a real server


def test_uvicorn(cap: Capture) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    lifespan: list[str] = []

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                lifespan.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await starlette()(scope, receive, send)

    app = SentryBridgeASGIMiddleware(lifespan_app, tracer_provider=cap.provider)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/orders/7",
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read()
    finally:
        server.should_exit = True
        thread.join(10)
    assert status == 200 and b'<meta name="sentry-trace" content="' + TRACE_ID.encode() in body
    assert lifespan == ["lifespan.startup", "lifespan.shutdown"]
    (txn,) = cap.transactions()
    assert txn["transaction"] == "GET /orders/{order_id:int}"
    assert txn["contexts"]["trace"]["parent_span_id"] == PARENT_ID
    assert txn["contexts"]["trace"]["data"]["network.protocol.version"] == "1.1"


def test_odd_scope_values_are_dropped_cleanly(cap: Capture) -> None:
    scope = scope_for("/x")
    scope.update(headers=[("str", "pair"), (b"x-ok", b"1"), (b"only-one",), None],
                 server=None, client="nope", query_string="q=1", method=None)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(SentryBridgeASGIMiddleware(bare_app, tracer_provider=cap.provider)(
        scope, receive, send))
    assert body_of(sent) == b"ok"
    (txn,) = cap.transactions()
    assert txn["request"]["headers"] == {"X-Ok": "1"} and txn["transaction"] == "GET /x"


@pytest.mark.parametrize("instrumented", [True, False])
def test_fastapi_with_the_middleware_added(cap: Capture, instrumented: bool) -> None:
    fastapi = pytest.importorskip("fastapi")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/fail")
    async def failing() -> None:
        raise OutOfStock("fastapi")

    app.add_middleware(SentryBridgeASGIMiddleware, tracer_provider=cap.provider)
    if instrumented:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=cap.provider)
    try:
        sent = call(app, "/items/3", headers=[("accept-language", "nl")])
        with pytest.raises(OutOfStock):
            call(app, "/fail")
    finally:
        if instrumented:
            FastAPIInstrumentor.uninstrument_app(app)
    assert body_of(sent) == b'{"item_id":3}'
    item_txn, fail_txn = cap.transactions()
    assert (item_txn["transaction"], item_txn["transaction_info"]) == (
        "GET /items/{item_id}", {"source": Source.ROUTE})
    assert item_txn["contexts"]["trace"]["origin"] == (
        "auto.otel.fastapi" if instrumented else ORIGIN_ASGI)
    assert item_txn["request"]["headers"]["Accept-Language"] == "nl"
    assert len(cap.server_spans()) == 2
    (event,) = cap.events()
    assert event["contexts"]["trace"]["trace_id"] == fail_txn["contexts"]["trace"]["trace_id"]


@pytest.mark.parametrize("mount", ["fastapi", "starlette"])
def test_fastapi_instrumented_mount_gets_the_full_route(cap: Capture, mount: str) -> None:
    """OpenTelemetry's FastAPI instrumentation matches only the outer router: a request into
    a mounted app gets ``http.route`` ``/api/v2`` (the mount). The middleware, inside its span,
    knows the route inside the mount and replaces that prefix with the full template; a route
    that is not a prefix of it, or a mount whose app has no routes, keeps the framework's."""
    fastapi = pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = fastapi.FastAPI()
    if mount == "fastapi":
        api = fastapi.FastAPI()

        @api.get("/items/{item_id}")
        async def read_item(item_id: int) -> dict[str, int]:
            return {"item_id": item_id}

        app.mount("/api/v2", api)
        prefix, full = "/api/v2", "/api/v2/items/{item_id}"
    else:
        app.router.routes.append(Mount("/api/{version}", routes=[Route("/items/{item_id}", item)]))
        prefix, full = "/api/{version}", "/api/{version}/items/{item_id}"
    app.mount("/static", bare_app)

    @app.get("/orders/{order_id}")
    async def read_order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    def hook(span: Any, scope: dict[str, Any]) -> None:
        if scope["path"] == "/api/v2/items/8":  # a prefix of the string, not of the path
            span.set_attribute("http.route", prefix[:-1])

    app.add_middleware(SentryBridgeASGIMiddleware, tracer_provider=cap.provider)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=cap.provider,
                                       server_request_hook=hook)

    async def run() -> list[tuple[str, int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            paths = ["/api/v2/items/7", "/api/v2/items/8", "/api/v2/nowhere/9",
                     "/static/css/site.css", "/orders/3"]
            return [(p, (await client.get(p)).status_code) for p in paths]

    try:
        statuses = asyncio.run(run())
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert [s for _, s in statuses] == [200, 200, 404, 200, 200]
    names = [(t["transaction"], t["transaction_info"]["source"]) for t in cap.transactions()]
    assert names == [
        (f"GET {full}", Source.ROUTE),
        # a route the framework set that does not prefix the route in the mount: kept
        (f"GET {prefix[:-1]}", Source.ROUTE),
        # nothing matched inside the mount: the framework's route stays
        (f"GET {prefix}", Source.ROUTE),
        # a mounted app without routes: nothing more specific than the framework's route
        ("GET /static", Source.ROUTE),
        ("GET /orders/{order_id}", Source.ROUTE)]
    spans = cap.server_spans()
    assert [s.name for s in spans] == [
        f"GET {full}", f"GET {prefix}", f"GET {prefix}", "GET /static", "GET /orders/{order_id}"]
    assert [(s.attributes or {}).get("http.route") for s in spans] == [
        full, prefix[:-1], prefix, "/static", "/orders/{order_id}"]
    assert {s.instrumentation_scope.name for s in spans if s.instrumentation_scope} == {
        "opentelemetry.instrumentation.fastapi"}


def test_repeated_baggage_header_lines_are_one_baggage() -> None:
    """Two ``baggage`` lines (an ASGI scope keeps them apart) are read as one list: the W3C
    baggage propagator reads only the first value it is given. The WebSocket instrumentations
    use the same getter."""
    from opentelemetry import baggage
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    from otel_sentry_bridge._server_request import HEADER_GETTER

    ctx = W3CBaggagePropagator().extract({"baggage": ["tenant=acme", "plan=pro"]},
                                         getter=HEADER_GETTER)
    assert baggage.get_all(ctx) == {"tenant": "acme", "plan": "pro"}
    assert HEADER_GETTER.get({"traceparent": ["x"]}, "Traceparent") == ["x"]
    assert HEADER_GETTER.get({}, "baggage") is None
