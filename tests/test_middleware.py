"""otel_sentry_bridge.middleware, WSGI: the server span (made, enriched, or the framework's),
route names, the request context under Sentry's privacy defaults, meta tags, streaming, errors.
The ASGI side: tests/test_middleware_asgi.py."""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.semconv.attributes import http_attributes, url_attributes
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event
from werkzeug.test import Client, EnvironBuilder

from otel_sentry_bridge import SentryBridgeWSGIMiddleware, _internal_errors, _server_request
from otel_sentry_bridge._server_request import path_template
from otel_sentry_bridge.conventions import Attr, Op, Source
from otel_sentry_bridge.middleware import ORIGIN_WSGI
from otel_sentry_bridge.propagation import SentryBridgePropagator
from otel_sentry_bridge.testing import BridgeCapture

PAGE = b"<!doctype html><html><head><title>shop</title></head><body>hi</body></html>"
META = re.compile(rb'<meta name="sentry-trace" content="([0-9a-f]{32})-([0-9a-f]{16})-([01])">'
                  rb'<meta name="baggage" content="([^"]+)">')
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECRETS = ("s3cr3t-cookie", "Bearer abc.def", "203.0.113.7", "k-123", "t-456", "pw-789",
           "tenant=acme")


class Capture:
    """A BridgeCapture plus the raw spans (what any other exporter would get)."""

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

    def transaction(self) -> dict[str, Any]:
        (txn,) = self.transactions()
        return txn

    def events(self) -> list[dict[str, Any]]:
        events = self.bridge.items("event")
        for event in events:
            assert validate_event(event, kind="event") == []
        return events

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def cap() -> Iterator[Capture]:
    capture = Capture(release="shop@1.0", environment="prod")
    yield capture
    capture.bridge.close()


@pytest.fixture
def pii() -> Iterator[Capture]:
    capture = Capture(send_default_pii=True)
    yield capture
    capture.bridge.close()


@pytest.fixture
def sentry_propagator() -> Iterator[None]:
    previous: TextMapPropagator = propagate.get_global_textmap()
    propagate.set_global_textmap(SentryBridgePropagator())
    yield
    propagate.set_global_textmap(previous)


def html_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(PAGE))), ("ETag", '"v1"')])
    return [PAGE]


def text_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok ", environ["PATH_INFO"].encode("latin-1")]


def get(app: Any, path: str, **kwargs: Any) -> Any:
    response = Client(app).get(path, **kwargs)
    response.get_data()
    response.close()
    return response


# ------------------------------------------------------------------- a bare app, a real server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(app: Any, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}{path}",
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, body = response.status, dict(response.headers), response.read()
    finally:
        thread.join(10)
        server.server_close()
    got.pop("Date", None)
    return status, got, body


def test_bare_app_behind_a_real_server(cap: Capture) -> None:
    app = SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider)
    headers = {"User-Agent": "curl/8.5", "Accept": "text/plain",
               "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    status, got, body = serve(app, "/orders/42/items?expand=1", headers)
    assert (status, body) == (200, b"ok /orders/42/items")
    assert (200, got, body) == serve(text_app, "/orders/42/items?expand=1", headers)  # as without
    txn = cap.transaction()
    trace_ctx = txn["contexts"]["trace"]
    assert (txn["transaction"], txn["transaction_info"]) == (
        "GET /orders/{id}/items", {"source": Source.URL})
    assert (trace_ctx["op"], trace_ctx["status"], trace_ctx["origin"]) == (
        Op.HTTP_SERVER, "ok", ORIGIN_WSGI)
    assert (trace_ctx["trace_id"], trace_ctx["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert txn["contexts"]["response"]["status_code"] == 200
    request = txn["request"]
    assert request["method"] == "GET"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/orders/42/items", request["url"])
    assert "query_string" not in request  # no PII
    assert request["headers"]["User-Agent"] == "curl/8.5"
    assert request["headers"]["Accept"] == "text/plain"
    data = trace_ctx["data"]
    assert data[Attr.PROTOCOL_VERSION[0]] == "1.1"
    assert data[Attr.SERVER_ADDRESS[0]] == "127.0.0.1"
    (span,) = cap.spans()
    assert span.kind is SpanKind.SERVER and span.name == "GET"


def test_body_length_and_identity_are_kept(cap: Capture) -> None:
    """A list body stays countable (the server can still set Content-Length)."""
    app = SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider, meta_tags=False)
    environ = EnvironBuilder(path="/x").get_environ()
    result = app(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert len(result) == 2  # type: ignore[arg-type]
    assert list(result) == [b"ok ", b"/x"]
    cap.transaction()


# ------------------------------------------------------------------------------ route names


def test_route_resolver_names_the_transaction(cap: Capture) -> None:
    seen: list[str] = []

    def resolver(environ: dict[str, Any]) -> str | None:
        seen.append(environ["PATH_INFO"])
        return "/orders/{order_id}" if environ["PATH_INFO"].startswith("/orders/") else None

    app = SentryBridgeWSGIMiddleware(html_app, route_resolver=resolver,
                                     tracer_provider=cap.provider)
    response = get(app, "/orders/7")
    txn = cap.transaction()
    assert (txn["transaction"], txn["transaction_info"]) == (
        "GET /orders/{order_id}", {"source": Source.ROUTE})
    assert seen == ["/orders/7"]  # asked once
    (span,) = cap.spans()
    assert span.name == "GET /orders/{order_id}"
    assert span.attributes[http_attributes.HTTP_ROUTE] == "/orders/{order_id}"  # type: ignore[index]
    match = META.search(response.get_data())  # rendered after the route was known:
    assert match is not None  # the DSC the tags froze names the route
    assert "sentry-transaction=GET%20/orders/%7Border_id%7D" in match.group(4).decode()


def test_a_failing_resolver_warns_once_and_the_request_goes_on(
        cap: Capture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_internal_errors, "_WARNED", set())
    def resolver(environ: dict[str, Any]) -> str:
        raise LookupError("no table")

    app = SentryBridgeWSGIMiddleware(text_app, route_resolver=resolver,
                                     tracer_provider=cap.provider)
    with caplog.at_level(logging.WARNING, "otel_sentry_bridge"):
        assert get(app, "/about").get_data() == b"ok /about"
        assert get(app, "/about").get_data() == b"ok /about"
    assert [t["transaction"] for t in cap.transactions()] == ["GET /about"] * 2
    assert len([r for r in caplog.records if "route_resolver raised" in r.getMessage()]) == 1


@pytest.mark.parametrize(("path", "template"), [
    ("/orders/42", "/orders/{id}"),
    ("/orders/42/items/7", "/orders/{id}/items/{id}"),
    ("/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/users/{uuid}"),
    ("/users/u_3f2504e0-4f89-11d3-9a0c-0305e82c3301.json", "/users/u_{uuid}.json"),
    ("/blobs/d41d8cd98f00b204e9800998ecf8427e", "/blobs/{hash}"),
    ("/objects/507f1f77bcf86cd799439011", "/objects/{hash}"),
    ("/reports/2024-01-31", "/reports/{date}"),
    ("/files/report-2024.pdf", "/files/report-{id}.pdf"),
    ("/c/cus_NffrFeUfNV2Hib", "/c/{token}"),
    ("/api/v2/health", "/api/v2/health"),  # a version is no identifier
    ("/blog/how-to-train-your-dragon", "/blog/how-to-train-your-dragon"),
    ("/static/deadbeefcafebabe", "/static/deadbeefcafebabe"),  # hex words without a digit
    ("/", "/"),
])
def test_path_template(path: str, template: str) -> None:
    assert path_template(path) == template


@given(st.text(max_size=200))
def test_path_template_takes_any_path(path: str) -> None:
    template = path_template(path)
    assert template.count("/") == path.count("/")  # segment by segment
    assert path_template(template) == template  # placeholders are never replaced again


def test_a_path_without_identifiers_keeps_the_mappings_name(cap: Capture) -> None:
    get(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider), "/about")
    txn = cap.transaction()
    assert (txn["transaction"], txn["transaction_info"]) == ("GET /about", {"source": Source.URL})
    (span,) = cap.spans()
    assert Attr.SENTRY_TRANSACTION_NAME[0] not in span.attributes  # type: ignore[operator]


# --------------------------------------------------------------------- streaming and errors


def test_streaming_span_ends_when_the_body_is_done(cap: Capture) -> None:
    tracer = cap.provider.get_tracer("shop")
    closed: list[float] = []

    class Stream:
        def __iter__(self) -> Iterator[bytes]:
            for i in range(3):
                with tracer.start_as_current_span(f"chunk {i}"):
                    time.sleep(0.02)
                yield b"x"

        def close(self) -> None:
            closed.append(time.time())

    def app(environ: dict[str, Any], start_response: Any) -> Stream:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Stream()

    middleware = SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider)
    result = middleware(EnvironBuilder(path="/stream").get_environ(),
                        lambda status, headers, exc_info=None: lambda data: None)
    returned = time.time()
    assert cap.transactions() == []  # the app returned; the body is not sent yet
    assert b"".join(result) == b"xxx"
    result.close()  # type: ignore[attr-defined]
    assert len(closed) == 1  # the app's close(), once
    txn = cap.transaction()
    assert txn["timestamp"] >= closed[0] - 0.001 and txn["timestamp"] - returned >= 0.06
    assert [s["description"] for s in txn["spans"]] == ["chunk 0", "chunk 1", "chunk 2"]
    assert {s["parent_span_id"] for s in txn["spans"]} == {txn["contexts"]["trace"]["span_id"]}


def test_closed_early_by_the_server(cap: Capture) -> None:
    closed: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append(True)

    result = SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider)(
        EnvironBuilder(path="/s").get_environ(), lambda *a: lambda data: None)
    assert next(iter(result)) == b"a"
    result.close()  # type: ignore[attr-defined]  # the client went away
    assert closed == [True]
    assert cap.transaction()["contexts"]["response"]["status_code"] == 200


class OutOfStock(Exception):
    pass


def test_exception_is_an_error_event_and_a_500(cap: Capture) -> None:
    error = OutOfStock("sku 7")

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise error

    with pytest.raises(OutOfStock) as raised:
        get(SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider), "/checkout/7")
    assert raised.value is error  # the app's own exception, unchanged
    txn = cap.transaction()
    assert txn["contexts"]["trace"]["status"] == "internal_error"
    assert txn["contexts"]["response"]["status_code"] == 500
    (event,) = cap.events()
    assert validate_event(event, kind="event") == []
    (exc,) = event["exception"]["values"]
    assert (exc["type"], exc["value"]) == ("OutOfStock", "sku 7")
    assert event["contexts"]["trace"]["trace_id"] == txn["contexts"]["trace"]["trace_id"]
    assert event["transaction"] == "GET /checkout/{id}"


def test_exception_while_streaming(cap: Capture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"part"
        raise OutOfStock("midway")

    result = SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider)(
        EnvironBuilder(path="/s").get_environ(), lambda *a: lambda data: None)
    with pytest.raises(OutOfStock):
        list(result)
    txn = cap.transaction()
    assert txn["contexts"]["response"]["status_code"] == 200  # what the client got
    (event,) = cap.events()
    assert event["exception"]["values"][0]["value"] == "midway"


def test_5xx_response_is_an_error(cap: Capture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]

    get(SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider), "/")
    assert cap.transaction()["contexts"]["trace"]["status"] == "unavailable"
    assert cap.events() == []


# ------------------------------------------------------------------- request context, privacy

SENSITIVE = {
    "Cookie": "session=s3cr3t-cookie", "Authorization": "Bearer abc.def",
    "X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Api-Key": "k-123",
    "X-Auth-Token": "t-456", "baggage": "tenant=acme", "Accept-Language": "fr",
}


def sensitive_environ(path: str = "/search?q=shoes&token=pw-789") -> dict[str, Any]:
    environ: dict[str, Any] = EnvironBuilder(path=path).get_environ()
    for name, value in SENSITIVE.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ["REMOTE_ADDR"] = "198.51.100.2"
    return environ


def call(app: Any, environ: dict[str, Any]) -> bytes:
    result = app(environ, lambda *a: lambda data: None)
    try:
        return b"".join(result)
    finally:
        result.close()


def test_no_secrets_without_pii(cap: Capture) -> None:
    call(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider), sensitive_environ())
    txn = cap.transaction()
    sent = orjson.dumps(txn).decode()
    for secret in (*SECRETS, "198.51.100.2", "shoes"):
        assert secret not in sent, secret
    request = txn["request"]
    assert "query_string" not in request and "REMOTE_ADDR" not in request.get("env", {})
    assert "user" not in txn or "ip_address" not in txn["user"]
    headers = request["headers"]
    for name in ("Cookie", "Authorization", "X-Forwarded-For", "X-Api-Key", "X-Auth-Token",
                 "Baggage"):
        assert headers[name] == "[Filtered]", name
    assert headers["Accept-Language"] == "fr"
    (span,) = cap.spans()  # what any other exporter gets: no secret either
    raw = repr(dict(span.attributes or {}))
    for secret in (*SECRETS, "198.51.100.2", "shoes"):
        assert secret not in raw, secret
    assert url_attributes.URL_QUERY not in (span.attributes or {})


def test_request_context_with_pii(pii: Capture) -> None:
    call(SentryBridgeWSGIMiddleware(text_app, tracer_provider=pii.provider), sensitive_environ())
    txn = pii.transaction()
    request = txn["request"]
    assert request["query_string"] == "q=shoes&token=[Filtered]"
    assert request["headers"]["Cookie"] == "session=s3cr3t-cookie"
    assert request["headers"]["X-Api-Key"] == "k-123"
    assert request["env"]["REMOTE_ADDR"] == "203.0.113.7"  # X-Forwarded-For's client
    assert txn["user"]["ip_address"] == "203.0.113.7"


def test_capture_only_named_headers_or_none(cap: Capture) -> None:
    call(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider,
                                    capture_headers=["Accept-Language", "Cookie"]),
         sensitive_environ())
    call(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider,
                                    capture_headers=False), sensitive_environ())
    named, none = (dict(s.attributes or {}) for s in cap.spans())
    assert {k for k in named if k.startswith(Attr.HTTP_REQUEST_HEADER_PREFIX)} == {
        "http.request.header.accept-language", "http.request.header.cookie"}
    assert named["http.request.header.cookie"] == ("[Filtered]",)
    assert not any(k.startswith(Attr.HTTP_REQUEST_HEADER_PREFIX) for k in none)


# ------------------------------------------------------------------------- trace continuation


def test_trace_continued_from_sentry_trace(cap: Capture, sentry_propagator: None) -> None:
    headers = {"sentry-trace": f"{TRACE_ID}-{PARENT_ID}-1",
               "baggage": f"sentry-trace_id={TRACE_ID},sentry-public_key=abc,"
                          "sentry-sample_rate=0.5,sentry-sample_rand=0.25,sentry-sampled=true"}
    response = get(SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider), "/",
                   headers=headers)
    txn = cap.transaction()
    assert (txn["contexts"]["trace"]["trace_id"], txn["contexts"]["trace"]["parent_span_id"]) == (
        TRACE_ID, PARENT_ID)
    (envelope, _), = [e for e in cap.bridge.envelopes() if e[0].get("trace")]
    assert envelope["trace"]["public_key"] == "abc" and envelope["trace"]["sample_rate"] == "0.5"
    match = META.search(response.get_data())
    assert match is not None and match.group(1).decode() == TRACE_ID
    assert "sentry-public_key=abc" in match.group(4).decode()  # the upstream DSC, passed on


def test_trace_continued_from_traceparent(cap: Capture) -> None:
    get(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider), "/",
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    trace_ctx = cap.transaction()["contexts"]["trace"]
    assert (trace_ctx["trace_id"], trace_ctx["parent_span_id"]) == (TRACE_ID, PARENT_ID)


def test_unsampled_upstream_costs_nothing_and_tags_say_so(cap: Capture,
                                                         sentry_propagator: None) -> None:
    response = get(SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider), "/",
                   headers={"sentry-trace": f"{TRACE_ID}-{PARENT_ID}-0"})
    assert cap.transactions() == [] and cap.spans() == ()
    match = re.search(rb'<meta name="sentry-trace" content="([0-9a-f]{32})-[0-9a-f]{16}-0">',
                      response.get_data())
    assert match is not None and match.group(1).decode() == TRACE_ID  # the browser follows


# ---------------------------------------------------------------------------------- meta tags


def test_meta_tags_carry_the_server_span(cap: Capture) -> None:
    response = get(SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider), "/page")
    body = response.get_data()
    match = META.search(body)
    txn = cap.transaction()
    assert match is not None
    assert (match.group(1).decode(), match.group(2).decode()) == (
        txn["contexts"]["trace"]["trace_id"], txn["contexts"]["trace"]["span_id"])
    assert body.replace(match.group(0), b"") == PAGE
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["ETag"] == 'W/"v1"'


def test_meta_tags_off(cap: Capture) -> None:
    app = SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider, meta_tags=False)
    response = get(app, "/page")
    assert response.get_data() == PAGE and response.headers["ETag"] == '"v1"'
    cap.transaction()


# ------------------------------------------------------------------------------ guarded paths


@pytest.mark.parametrize(("helper", "spans"), [
    ("request_attributes", 0),  # the request comes in: passed through untouched, no span
    ("header_attributes", 1),  # the span is made, then its headers fail
    ("path_template", 1),  # the response starts: no name, the span still ends
])
def test_internal_errors_leave_the_response_alone(
        cap: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        helper: str, spans: int) -> None:
    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_internal_errors, "_seen", set())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(_server_request, helper, broken)
    app = SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider, meta_tags=False)
    for _ in range(2):
        response = get(app, "/orders/1")
        assert response.get_data() == PAGE and response.headers["ETag"] == '"v1"'
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "SentryBridgeWSGIMiddleware" in errors[0].getMessage()
    assert len(cap.spans()) == 2 * spans


def test_an_internal_error_after_an_app_error_still_ends_the_span(
        cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_internal_errors, "_seen", set())
    monkeypatch.setattr(_server_request, "path_template", lambda path: 1 / 0)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise OutOfStock("before the response")

    with pytest.raises(OutOfStock):
        get(SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider), "/a/1")
    txn = cap.transaction()  # named by path, as without the middleware's fallback
    assert (txn["transaction"], txn["contexts"]["response"]["status_code"]) == ("GET /a/1", 500)


def test_internal_errors_raise_under_the_test_suite(cap: Capture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_server_request, "path_template", lambda path: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        get(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider), "/a/1")


def test_sampled_out_and_suppressed(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    capture = Capture(sampler=ALWAYS_OFF)
    try:
        app = SentryBridgeWSGIMiddleware(text_app, tracer_provider=capture.provider)
        assert get(app, "/x").get_data() == b"ok /x"
        with suppress_instrumentation():
            assert get(app, "/y").get_data() == b"ok /y"
        assert capture.transactions() == []
    finally:
        capture.bridge.close()


def test_tracing_off_passes_the_app_through() -> None:
    from opentelemetry.trace import NoOpTracerProvider

    body = [b"as", b"is"]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return body

    middleware = SentryBridgeWSGIMiddleware(app, tracer_provider=NoOpTracerProvider())
    assert middleware(EnvironBuilder(path="/").get_environ(), lambda *a: None) is body


def test_two_layers_make_one_span(cap: Capture) -> None:
    inner = SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider)
    response = get(SentryBridgeWSGIMiddleware(inner, tracer_provider=cap.provider), "/")
    assert response.get_data().count(b'name="sentry-trace"') == 1
    assert len(cap.spans()) == 1


def test_a_request_inside_another_gets_its_own_server_span(cap: Capture) -> None:
    inner = SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider)
    tracer = cap.provider.get_tracer("shop")
    with tracer.start_as_current_span("GET /outer", kind=SpanKind.SERVER, attributes={
            "http.request.method": "GET", "url.path": "/outer"}):
        get(inner, "/inner/5")
    inner_span, outer = cap.spans()
    assert inner_span.kind is SpanKind.SERVER and inner_span.parent is not None
    assert inner_span.parent.span_id == outer.context.span_id  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN


# ------------------------------------------------------------- Flask and OpenTelemetry's WSGI


def flask_app() -> Any:
    import flask

    app = flask.Flask("shop")

    @app.route("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        return f"<html><head><title>{order_id}</title></head><body>order</body></html>"

    @app.route("/fail")
    def fail() -> str:
        raise OutOfStock("flask")

    return app


@pytest.mark.parametrize("wrap_first", [True, False])
def test_flask_instrumentation_keeps_its_span(cap: Capture, wrap_first: bool) -> None:
    """One server span (Flask's), whichever is wrapped first; its route kept, its request
    context enriched, and the tags name it."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = flask_app()
    if wrap_first:
        app.wsgi_app = SentryBridgeWSGIMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, tracer_provider=cap.provider)
    FlaskInstrumentor().instrument_app(app, tracer_provider=cap.provider)
    try:
        if not wrap_first:
            app.wsgi_app = SentryBridgeWSGIMiddleware(  # type: ignore[method-assign]
                app.wsgi_app, tracer_provider=cap.provider)
        client = app.test_client()
        client.set_cookie("session", "s3cr3t-cookie")
        page = client.get("/orders/7", headers={"Accept-Language": "de"}).get_data()
        missing = client.get("/nope/123")
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert missing.status_code == 404
    order, nope = cap.transactions()
    for txn in (order, nope):
        assert validate_event(txn, kind="transaction") == []
        assert txn["contexts"]["trace"]["origin"] == "auto.otel.flask"
        assert txn["spans"] == []
    assert [s.kind for s in cap.spans()] == [SpanKind.SERVER, SpanKind.SERVER]
    assert (order["transaction"], order["transaction_info"]) == (
        "GET /orders/<int:order_id>", {"source": Source.ROUTE})
    assert order["request"]["headers"]["Accept-Language"] == "de"
    assert order["request"]["headers"]["Cookie"] == "[Filtered]"
    assert "s3cr3t-cookie" not in orjson.dumps(order).decode()
    assert (nope["transaction"], nope["transaction_info"]) == (
        "GET /nope/{id}", {"source": Source.URL})
    match = META.search(page)
    assert match is not None and match.group(2).decode() == order["contexts"]["trace"]["span_id"]


def test_flask_without_instrumentation_gets_its_route(cap: Capture) -> None:
    app = flask_app()
    app.wsgi_app = SentryBridgeWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, tracer_provider=cap.provider)
    get(app, "/orders/7")
    assert get(app, "/fail").status_code == 500  # Flask answers 500 itself
    order, fail = cap.transactions()
    assert (order["transaction"], order["transaction_info"]) == (
        "GET /orders/<int:order_id>", {"source": Source.ROUTE})
    assert order["contexts"]["trace"]["origin"] == ORIGIN_WSGI
    assert (fail["transaction"], fail["contexts"]["trace"]["status"]) == (
        "GET /fail", "internal_error")


def test_opentelemetry_wsgi_middleware_outside(cap: Capture) -> None:
    """OpenTelemetry's middleware made the span: it gets the route, no second span, and the
    error it records once."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"].startswith("/boom"):
            raise OutOfStock("wsgi")
        return html_app(environ, start_response)

    stack = OpenTelemetryMiddleware(
        SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider,
                                   route_resolver=lambda environ: "/items/{sku}"),
        tracer_provider=cap.provider)
    page = get(stack, "/items/9", headers={"Accept-Language": "it"}).get_data()
    with pytest.raises(OutOfStock):
        get(stack, "/boom/1")
    items, boom = cap.transactions()
    assert (items["transaction"], items["transaction_info"]) == (
        "GET /items/{sku}", {"source": Source.ROUTE})
    assert items["contexts"]["trace"]["origin"] == "auto.otel.wsgi"
    assert items["request"]["headers"]["Accept-Language"] == "it"
    assert [s.name for s in cap.spans()] == ["GET /items/{sku}", "GET /items/{sku}"]
    match = META.search(page)
    assert match is not None and match.group(2).decode() == items["contexts"]["trace"]["span_id"]
    assert validate_event(boom, kind="transaction") == []
    assert len(cap.events()) == 1  # recorded by OpenTelemetry's middleware only


def test_opentelemetry_wsgi_middleware_inside(cap: Capture) -> None:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    stack = SentryBridgeWSGIMiddleware(
        OpenTelemetryMiddleware(html_app, tracer_provider=cap.provider),
        tracer_provider=cap.provider)
    page = get(stack, "/orders/5").get_data()
    txn = cap.transaction()
    assert (txn["transaction"], txn["transaction_info"]) == (
        "GET /orders/{id}", {"source": Source.URL})
    assert len(cap.spans()) == 1
    match = META.search(page)
    assert match is not None and match.group(2).decode() == txn["contexts"]["trace"]["span_id"]


def test_create_span_false_only_enriches(cap: Capture) -> None:
    get(SentryBridgeWSGIMiddleware(text_app, tracer_provider=cap.provider, create_span=False),
        "/x")
    assert cap.spans() == ()


def test_odd_environ_values_are_dropped_cleanly(cap: Capture) -> None:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "BREW", "PATH_INFO": b"/not-a-str", "SERVER_PORT": "eighty",
        "HTTP_X_NUMBER": 7, "HTTP_ACCEPT": "", "HTTP_X_HUGE": "v" * 100_000,
        "HTTP_HOST": "[::1]:8443", "wsgi.url_scheme": "https", "SERVER_PROTOCOL": "HTTP/2",
        "QUERY_STRING": None,
    }
    app = SentryBridgeWSGIMiddleware(html_app, tracer_provider=cap.provider, meta_tags=False)
    assert call(app, dict(environ)) == PAGE
    (span,) = cap.spans()
    attrs = dict(span.attributes or {})
    assert attrs[http_attributes.HTTP_REQUEST_METHOD] == "_OTHER"
    assert attrs[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] == "BREW"
    assert (attrs["server.address"], attrs["server.port"], attrs[url_attributes.URL_PATH]) == (
        "::1", 8443, "/")
    assert len(attrs["http.request.header.x-huge"][0]) == _server_request.MAX_HEADER_CHARS
    assert "http.request.header.x-number" not in attrs
    txn = cap.transaction()
    assert txn["transaction"] == "_OTHER /"


@pytest.mark.parametrize(("path", "name"), [
    ("/graphql", "query Cart"),  # no identifiers: the operation below names it
    ("/graphql/7", "POST /graphql/{id}"),  # the fallback on the server span comes first
])
def test_fallback_name_and_a_name_set_below(cap: Capture, path: str, name: str) -> None:
    tracer = cap.provider.get_tracer("shop")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with tracer.start_as_current_span("query", attributes={
                Attr.SENTRY_TRANSACTION_NAME[0]: "query Cart",
                Attr.SENTRY_TRANSACTION_SOURCE[0]: Source.CUSTOM}):
            pass
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    response = Client(SentryBridgeWSGIMiddleware(app, tracer_provider=cap.provider)).post(path)
    response.close()
    assert cap.transaction()["transaction"] == name
