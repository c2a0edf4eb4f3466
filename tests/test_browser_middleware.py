"""otel_sentry_bridge.browser: meta tags for the current span, and the WSGI/ASGI middlewares."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.trace import SpanKind

from otel_sentry_bridge import (
    SentryMetaTagsASGIMiddleware,
    SentryMetaTagsMiddleware,
    _internal_errors,
    browser,
    meta_tags,
)
from otel_sentry_bridge._trace_headers import split_baggage
from otel_sentry_bridge.propagation import SentryBridgePropagator
from otel_sentry_bridge.testing import BridgeCapture

PAGE = b"<!doctype html><html><head><title>t</title></head><body>hi</body></html>"
META = re.compile(rb'<meta name="sentry-trace" content="([0-9a-f]{32})-([0-9a-f]{16})-1">'
                  rb'<meta name="baggage" content="([^"]+)">')
SERVER = {"http.request.method": "GET", "http.route": "/page", "url.scheme": "http",
          "http.url": "http://shop.example/page", "url.full": "http://shop.example/page"}

Headers = list[tuple[str, str]]


@pytest.fixture
def bridge() -> Iterator[BridgeCapture]:
    capture = BridgeCapture(release="shop@1.0", environment="prod")
    yield capture
    capture.close()


@pytest.fixture
def tolerant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal errors are logged (as in production), each call site once."""
    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_internal_errors, "_seen", set())


def server_span(bridge: BridgeCapture) -> Any:
    tracer = bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    return tracer.start_as_current_span("GET /page", kind=SpanKind.SERVER, attributes=SERVER)


def ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


# --------------------------------------------------------------------------------- meta_tags


def test_no_span_no_tags() -> None:
    assert meta_tags() == ""


def test_tags_carry_what_an_outgoing_request_carries(bridge: BridgeCapture) -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with server_span(bridge) as span:
            tags = meta_tags()
            sent: dict[str, str] = {}
            SentryBridgePropagator().inject(sent)
    finally:
        context.detach(token)
    match = META.fullmatch(tags.encode())
    assert match is not None, tags
    trace_id, span_id = ids(span)
    assert match.group(1).decode() == trace_id and match.group(2).decode() == span_id
    assert sent["sentry-trace"] == f"{trace_id}-{span_id}-1"
    sentry_members = ",".join(m for m in sent["baggage"].split(",") if m.startswith("sentry-"))
    assert match.group(3).decode() == sentry_members  # same frozen DSC; "tenant" left out
    assert "tenant" in sent["baggage"]
    dsc = split_baggage(sentry_members)[0]
    assert dsc["trace_id"] == trace_id and dsc["transaction"] == "GET /page"
    (txn,) = bridge.transactions()
    assert txn["contexts"]["trace"]["span_id"] == span_id


def test_tags_ignore_propagation_targets() -> None:
    capture = BridgeCapture(trace_propagation_targets=(r"^http://internal\.",))
    try:
        with server_span(capture):
            sent: dict[str, str] = {}
            SentryBridgePropagator().inject(sent)
            tags = meta_tags()
        assert sent == {}  # the server span's URL is no target...
        assert META.fullmatch(tags.encode())  # ...but the page still continues the trace
    finally:
        capture.close()


def test_tags_are_escaped_and_template_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "trace_headers", lambda context=None: {
        "sentry-trace": 'a"b<c>&d', "baggage": "other=1,sentry-x=\"'<&>"})
    tags = meta_tags()
    assert tags == ('<meta name="sentry-trace" content="a&quot;b&lt;c&gt;&amp;d">'
                    '<meta name="baggage" content="sentry-x=&quot;&#x27;&lt;&amp;&gt;">')
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(autoescape=True)
    env.globals["sentry_meta_tags"] = meta_tags
    assert env.from_string("{{ sentry_meta_tags() }}").render() == tags


def test_meta_tags_swallow_errors(monkeypatch: pytest.MonkeyPatch, tolerant: None,
                                  caplog: pytest.LogCaptureFixture) -> None:
    def broken(context: Any = None) -> dict[str, str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(browser, "trace_headers", broken)
    assert meta_tags() == "" and meta_tags() == ""
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # logged once


# -------------------------------------------------------------------------------------- WSGI


def html_app(body: bytes = PAGE, content_type: str = "text/html; charset=utf-8",
             extra: Headers | None = None, length: bool = True) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = [("Content-Type", content_type), *(extra or [])]
        if length:
            headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body[:10], body[10:]]
    return app


def call_wsgi(app: Any, method: str = "GET") -> tuple[str, Headers, bytes, Any]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Any:
        seen.update(status=status, headers=headers)
        return lambda data: None

    result = app({"REQUEST_METHOD": method, "PATH_INFO": "/page"}, start_response)
    body = b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return seen["status"], seen["headers"], body, result


def header(headers: Headers, name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name.lower()]
    return values[0] if values else None


def test_wsgi_inserts_tags_after_head_and_fixes_content_length(bridge: BridgeCapture) -> None:
    with server_span(bridge) as span:
        status, headers, body, _ = call_wsgi(SentryMetaTagsMiddleware(html_app()))
    assert status == "200 OK"
    assert body.startswith(b"<!doctype html><html><head><meta name=\"sentry-trace\"")
    match = META.search(body)
    assert match is not None and (match.group(1).decode(), match.group(2).decode()) == ids(span)
    assert body.replace(match.group(0), b"") == PAGE
    assert header(headers, "Content-Length") == str(len(body))


def test_wsgi_flask_server_span_is_current(bridge: BridgeCapture) -> None:
    flask = pytest.importorskip("flask")
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = flask.Flask("shop")
    app.jinja_env.globals["sentry_meta_tags"] = meta_tags

    @app.route("/page")
    def page() -> str:
        return "<html><head><title>t</title></head><body>hi</body></html>"

    @app.route("/jinja")
    def jinja() -> str:
        return flask.render_template_string(
            "<html><head>{{ sentry_meta_tags() }}</head><body>x</body></html>")

    FlaskInstrumentor().instrument_app(app, tracer_provider=bridge.tracer_provider)
    try:
        app.wsgi_app = SentryMetaTagsMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        client = app.test_client()
        pages = [client.get(path) for path in ("/page", "/jinja", "/page")]
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    txns = bridge.transactions()
    assert [t["transaction"] for t in txns] == ["GET /page", "GET /jinja", "GET /page"]
    for response, txn in zip(pages, txns, strict=True):
        body = response.get_data()
        assert response.headers["Content-Length"] == str(len(body))
        assert body.count(b'name="sentry-trace"') == 1, body  # the middleware left /jinja alone
        match = META.search(body)
        assert match is not None, body
        root = txn["contexts"]["trace"]
        assert (match.group(1).decode(), match.group(2).decode()) == (
            root["trace_id"], root["span_id"])


@pytest.mark.parametrize(("app", "method"), [
    pytest.param(html_app(content_type="application/json"), "GET", id="json"),
    pytest.param(html_app(extra=[("Content-Encoding", "gzip")]), "GET", id="compressed"),
    pytest.param(html_app(content_type="text/html; charset=utf-16"), "GET", id="utf-16"),
    pytest.param(html_app(extra=[("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ==")]), "GET", id="md5"),
    pytest.param(html_app(extra=[("Digest", "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kb=")]),
                 "GET", id="digest"),
    pytest.param(html_app(extra=[("Content-Digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OW=:")]),
                 "GET", id="content-digest"),
    pytest.param(html_app(body=PAGE.replace(b"<head>", b"<head><meta name=\"sentry-trace\" "
                                                      b"content=\"x\">")), "GET", id="tagged"),
    pytest.param(html_app(body=b"<p>a fragment</p>"), "GET", id="no-head"),
    pytest.param(html_app(), "HEAD", id="head-request"),
])
def test_wsgi_leaves_other_responses_alone(bridge: BridgeCapture, app: Any, method: str) -> None:
    _, expected_headers, expected_body, _ = call_wsgi(app, method)
    with server_span(bridge):
        _, headers, body, _ = call_wsgi(SentryMetaTagsMiddleware(app), method)
    assert (headers, body) == (expected_headers, expected_body)


def test_wsgi_without_span_or_length_passes_the_same_iterable(bridge: BridgeCapture) -> None:
    streamed = html_app(length=False)
    result = [b"x"]
    with server_span(bridge):
        _, headers, streamed_body, _ = call_wsgi(SentryMetaTagsMiddleware(streamed))
        assert header(headers, "Content-Length") is None and streamed_body == PAGE

        def same(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return result

        assert call_wsgi(SentryMetaTagsMiddleware(same))[3] is result
    _, _, body, _ = call_wsgi(SentryMetaTagsMiddleware(html_app()))  # no span: no tags
    assert body == PAGE


def test_wsgi_before_closing_head_and_lazy_start(bridge: BridgeCapture) -> None:
    page = b"<html><HEAD lang=en><title>t</title></HEAD></html>"
    closed: list[bool] = []

    class Lazy:
        def __init__(self, start_response: Any) -> None:
            self.start_response = start_response

        def __iter__(self) -> Iterator[bytes]:
            write = self.start_response("200 OK", [("Content-Type", "text/html"),
                                                   ("Content-Length", str(len(page)))])
            write(page[:6])
            yield page[6:]

        def close(self) -> None:
            closed.append(True)

    with server_span(bridge):
        _, headers, body, _ = call_wsgi(SentryMetaTagsMiddleware(
            lambda environ, start_response: Lazy(start_response)))
        head_only = b"<html><title>t</title></head></html>"
        _, _, body2, _ = call_wsgi(SentryMetaTagsMiddleware(html_app(body=head_only)))
    assert body.startswith(b"<html><HEAD lang=en><meta name=\"sentry-trace\"")
    assert header(headers, "Content-Length") == str(len(body)) and closed == [True]
    assert body2.startswith(b"<html><title>t</title><meta name=\"sentry-trace\"")
    assert body2.endswith(b"\"></head></html>")


def test_wsgi_swallows_internal_errors(bridge: BridgeCapture, tolerant: None,
                                       monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    expected = call_wsgi(html_app())[:3]

    def boom(*args: Any) -> Any:
        raise RuntimeError("boom")

    with server_span(bridge):
        monkeypatch.setattr(browser, "_insert", boom)
        assert call_wsgi(SentryMetaTagsMiddleware(html_app()))[:3] == expected
        assert call_wsgi(SentryMetaTagsMiddleware(html_app()))[:3] == expected
        monkeypatch.setattr(browser, "_declared_length", boom)
        assert call_wsgi(SentryMetaTagsMiddleware(html_app()))[:3] == expected
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "SentryMetaTagsMiddleware" in errors[0].getMessage()


def test_wsgi_errors_raise_under_the_test_suite(bridge: BridgeCapture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "_insert", lambda body, tags: 1 / 0)
    with server_span(bridge), pytest.raises(ZeroDivisionError):
        call_wsgi(SentryMetaTagsMiddleware(html_app()))


# -------------------------------------------------------------------------------------- ASGI

Message = dict[str, Any]


def asgi_app(messages: list[Message]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
    return app


def start(content_type: bytes = b"text/html", length: int | None = len(PAGE),
          extra: list[tuple[bytes, bytes]] | None = None) -> Message:
    headers = [(b"content-type", content_type), *(extra or [])]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


def body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def run_asgi(app: Any, method: str = "GET", scope_type: str = "http") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app({"type": scope_type, "method": method, "path": "/page"}, receive, send))
    return sent


def test_asgi_inserts_tags_and_fixes_content_length(bridge: BridgeCapture) -> None:
    chunked = [start(), body(PAGE[:20], more=True), body(PAGE[20:])]
    whole = [start(length=None), body(PAGE)]
    with server_span(bridge) as span:
        results = [run_asgi(SentryMetaTagsASGIMiddleware(asgi_app(m))) for m in (chunked, whole)]
    for sent in results:
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        data = sent[1]["body"]
        match = META.search(data)
        assert match is not None and (match.group(1).decode(), match.group(2).decode()) == ids(span)
        assert data.replace(match.group(0), b"") == PAGE and sent[1]["more_body"] is False
    assert dict(results[0][0]["headers"])[b"content-length"] == str(len(results[0][1]["body"])
                                                                   ).encode()
    assert b"content-length" not in dict(results[1][0]["headers"])


@pytest.mark.parametrize("messages", [
    pytest.param([start(b"application/json"), body(PAGE)], id="json"),
    pytest.param([start(extra=[(b"content-encoding", b"br")]), body(PAGE)], id="compressed"),
    pytest.param([start(extra=[(b"repr-digest", b"sha-256=:AAAA:")]), body(PAGE)], id="digest"),
    pytest.param([start(length=None), body(PAGE[:20], more=True), body(PAGE[20:])],
                 id="streamed"),
    pytest.param([start(length=5), body(PAGE)], id="wrong-length"),
    pytest.param([start(), body(PAGE[:20], more=True), {"type": "http.response.trailers"}],
                 id="other-message"),
    pytest.param([start(length=len(PAGE) + 36), body(PAGE.replace(
        b"<head>", b"<head><meta name='sentry-trace' content='x'>"))], id="tagged"),
])
def test_asgi_leaves_other_responses_alone(bridge: BridgeCapture, messages: list[Message]
                                           ) -> None:
    with server_span(bridge):
        sent = run_asgi(SentryMetaTagsASGIMiddleware(asgi_app(messages)))
    assert sent == messages


def test_asgi_head_websocket_and_no_span(bridge: BridgeCapture) -> None:
    messages = [start(), body(PAGE)]
    app = SentryMetaTagsASGIMiddleware(asgi_app(messages))
    assert run_asgi(app) == messages  # no span
    with server_span(bridge):
        assert run_asgi(app, method="HEAD") == messages
        assert run_asgi(app, scope_type="websocket") == messages


def test_asgi_app_returning_early_gets_its_messages_sent(bridge: BridgeCapture) -> None:
    messages = [start(), body(PAGE[:20], more=True)]
    with server_span(bridge):
        assert run_asgi(SentryMetaTagsASGIMiddleware(asgi_app(messages))) == messages


def test_asgi_swallows_internal_errors(bridge: BridgeCapture, tolerant: None,
                                       monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("boom")

    messages = [start(), body(PAGE)]
    with server_span(bridge):
        monkeypatch.setattr(browser, "_insert", boom)
        assert run_asgi(SentryMetaTagsASGIMiddleware(asgi_app(messages))) == messages
        monkeypatch.setattr(browser, "_declared_length", boom)
        assert run_asgi(SentryMetaTagsASGIMiddleware(asgi_app(messages))) == messages
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "SentryMetaTagsASGIMiddleware" in errors[0]
    assert trace.get_current_span().get_span_context().is_valid is False


def test_wsgi_app_starting_over_with_exc_info(bridge: BridgeCapture) -> None:
    calls: list[tuple[str, Any]] = []

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html"),
                                  ("Content-Length", str(len(PAGE)))])

        def body() -> Iterator[bytes]:
            yield PAGE[:10]
            try:
                raise RuntimeError("template failed")
            except RuntimeError:
                start_response("500 Internal Server Error",
                               [("Content-Type", "text/plain")], sys.exc_info())
            yield b"oops"
        return body()

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Any:
        calls.append((status, exc_info is not None))
        return lambda data: None

    with server_span(bridge):
        result = SentryMetaTagsMiddleware(app)({"REQUEST_METHOD": "GET"}, start_response)
        assert b"".join(result) == b"oops"
    assert calls == [("500 Internal Server Error", True)]


# ------------------------------------------------------------------- bounds, validators, errors

KIB = 1024


def padded(before_head: int, size: int) -> bytes:
    """An HTML page of ``size`` bytes whose ``<head>`` comes after ``before_head`` bytes."""
    start = b"<html><!--" + b"p" * before_head + b"--><head><title>t</title></head><body>"
    end = b"</body></html>"
    return start + b"b" * (size - len(start) - len(end)) + end


def counted_app(chunks: list[bytes], consumed: list[int], length: int | None,
                lazy: bool = False) -> Any:
    """A WSGI app whose body generator records in ``consumed`` how many chunks it yielded (and
    starts the response, if ``lazy``)."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        headers = [("Content-Type", "text/html")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        if not lazy:
            start_response("200 OK", headers)

        def generate() -> Iterator[bytes]:
            if lazy:
                start_response("200 OK", headers)
            for chunk in chunks:
                consumed.append(1)
                yield chunk
        return generate()
    return app


def serve_wsgi(app: Any, consumed: list[int]) -> tuple[Headers, bytes, int]:
    """Like a server: the headers, the body and how many chunks the app had yielded when the
    first one reached the server."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Any:
        seen.update(headers=headers)
        return lambda data: None

    result = app({"REQUEST_METHOD": "GET"}, start_response)
    received: list[bytes] = []
    first_at = -1
    try:
        for chunk in result:
            if chunk and first_at < 0:
                assert "headers" in seen  # started before its first chunk
                first_at = len(consumed)
            received.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    return seen["headers"], b"".join(received), first_at


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy-start"])
def test_wsgi_body_longer_than_content_length_is_not_read_whole(bridge: BridgeCapture,
                                                                lazy: bool) -> None:
    chunks = [PAGE[:30], PAGE[30:], *[b"x" * KIB] * 200]
    consumed: list[int] = []
    with server_span(bridge):
        headers, data, first_at = serve_wsgi(SentryMetaTagsMiddleware(
            counted_app(chunks, consumed, len(PAGE), lazy)), consumed)
    assert first_at == 3  # the chunk that went past Content-Length, not all 202
    assert data == b"".join(chunks) and header(headers, "Content-Length") == str(len(PAGE))


def test_wsgi_large_streamed_body_passes_at_once(bridge: BridgeCapture) -> None:
    chunks = [PAGE[:40], *[b"x" * (64 * KIB)] * 100, PAGE[40:]]  # 6.4 MB, no Content-Length
    consumed: list[int] = []
    with server_span(bridge):
        headers, data, first_at = serve_wsgi(SentryMetaTagsMiddleware(
            counted_app(chunks, consumed, None)), consumed)
    assert first_at == 1 and len(consumed) == len(chunks)
    assert data == b"".join(chunks) and header(headers, "Content-Length") is None


@pytest.mark.parametrize(("before_head", "rewritten", "first_at"), [
    pytest.param(60 * KIB - 16, True, 256, id="head-in-first-64KiB"),
    pytest.param(70 * KIB, False, 16, id="no-head-in-first-64KiB"),
])
def test_wsgi_head_is_looked_for_in_the_first_64_kib(bridge: BridgeCapture, before_head: int,
                                                     rewritten: bool, first_at: int) -> None:
    page = padded(before_head, 1024 * KIB)
    chunks = [page[i:i + 4 * KIB] for i in range(0, len(page), 4 * KIB)]
    assert len(page) == 1024 * KIB and len(chunks) == 256
    if rewritten:  # <head> spans two chunks
        assert chunks[14].endswith(b"<he") and chunks[15].startswith(b"ad>")
    consumed: list[int] = []
    with server_span(bridge):
        headers, data, first = serve_wsgi(SentryMetaTagsMiddleware(
            counted_app(chunks, consumed, len(page))), consumed)
    assert first == first_at  # 256: held to the end; 16: given up after 64 KiB
    assert (META.search(data) is not None) is rewritten
    assert header(headers, "Content-Length") == str(len(data))
    if not rewritten:
        assert data == page


def test_wsgi_write_past_content_length_goes_out_at_once(bridge: BridgeCapture) -> None:
    written: list[bytes] = []
    events: list[str] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/html"),
                                          ("Content-Length", str(len(PAGE)))])
        write(PAGE)
        events.append("held")
        write(b"too long")
        events.append("past")
        write(b"!")
        return [b"end"]

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Any:
        events.append("start")
        assert header(headers, "Content-Length") == str(len(PAGE))
        return written.append

    with server_span(bridge):
        result = SentryMetaTagsMiddleware(app)({"REQUEST_METHOD": "GET"}, start_response)
    assert events == ["held", "start", "past"] and written == [PAGE, b"too long", b"!"]
    assert list(result) == [b"end"]


@pytest.mark.parametrize(("etag", "expected"), [
    ('"v1-abc"', 'W/"v1-abc"'),
    (' "v1-abc"', 'W/"v1-abc"'),
    ('W/"v1-abc"', 'W/"v1-abc"'),
])
def test_strong_etag_becomes_weak_when_the_body_changes(bridge: BridgeCapture, etag: str,
                                                         expected: str) -> None:
    extra = [("ETag", etag), ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
             ("Cache-Control", "max-age=60")]
    raw_extra = [(k.lower().encode(), v.encode()) for k, v in extra]
    with server_span(bridge):
        _, headers, data, _ = call_wsgi(SentryMetaTagsMiddleware(html_app(extra=extra)))
        sent = run_asgi(SentryMetaTagsASGIMiddleware(asgi_app([start(extra=raw_extra),
                                                               body(PAGE)])))
        _, untagged, _, _ = call_wsgi(SentryMetaTagsMiddleware(html_app(
            body=b"<p>no head</p>", extra=extra)))
    assert META.search(data) is not None and META.search(sent[1]["body"]) is not None
    assert header(headers, "ETag") == expected
    assert dict(sent[0]["headers"])[b"etag"] == expected.encode()
    for name, value in extra[1:]:  # the other validators and the cache policy stay
        assert header(headers, name) == value
        assert dict(sent[0]["headers"])[name.lower().encode()] == value.encode()
    assert header(untagged, "ETag") == etag  # unchanged body: unchanged ETag


def serve_asgi(app: Any, sent: list[Message], progress: list[int] | None = None) -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append({**message, "app_sent": len(progress or [])})

    asyncio.run(app({"type": "http", "method": "GET", "path": "/page"}, receive, send))


def counted_asgi_app(messages: list[Message], progress: list[int]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            progress.append(1)
            await send(message)
    return app


def test_asgi_body_longer_than_content_length_is_not_held_whole(bridge: BridgeCapture) -> None:
    messages = [start(), body(PAGE, more=True), *[body(b"x" * KIB, more=True)] * 100, body(b"")]
    progress: list[int] = []
    sent: list[Message] = []
    with server_span(bridge):
        serve_asgi(SentryMetaTagsASGIMiddleware(counted_asgi_app(messages, progress)), sent,
                   progress)
    assert sent[0]["app_sent"] == 3  # start and PAGE held; sent at the chunk past the length
    assert [{k: v for k, v in m.items() if k != "app_sent"} for m in sent] == messages


def test_asgi_no_head_in_first_64_kib_and_absolute_cap(bridge: BridgeCapture) -> None:
    page = padded(70 * KIB, 512 * KIB)
    messages = [start(length=len(page)),
                *[body(page[i:i + 8 * KIB], more=True) for i in range(0, len(page), 8 * KIB)],
                body(b"")]
    progress: list[int] = []
    sent: list[Message] = []
    huge = padded(0, browser.MAX_BODY + 1)  # no Content-Length, one message: over the cap
    with server_span(bridge):
        serve_asgi(SentryMetaTagsASGIMiddleware(counted_asgi_app(messages, progress)), sent,
                   progress)
        assert run_asgi(SentryMetaTagsASGIMiddleware(asgi_app(
            [start(length=None), body(huge)]))) == [start(length=None), body(huge)]
        fits = padded(0, browser.MAX_BODY)
        tagged = run_asgi(SentryMetaTagsASGIMiddleware(asgi_app([start(length=None),
                                                                 body(fits)])))
    assert sent[0]["app_sent"] == 1 + 8  # start and 64 KiB: no <head> there, sent unchanged
    assert [{k: v for k, v in m.items() if k != "app_sent"} for m in sent] == messages
    assert META.search(tagged[1]["body"]) is not None


@pytest.mark.parametrize("messages", [
    pytest.param([start()], id="start"),
    pytest.param([start(), body(PAGE[:20], more=True)], id="start-and-body"),
])
def test_asgi_app_raising_after_start_gets_its_messages_sent(
        bridge: BridgeCapture, messages: list[Message]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        raise RuntimeError("template failed")

    sent: list[Message] = []
    with server_span(bridge), pytest.raises(RuntimeError, match="template failed"):
        serve_asgi(SentryMetaTagsASGIMiddleware(app), sent)
    assert [{k: v for k, v in m.items() if k != "app_sent"} for m in sent] == messages


def test_asgi_app_error_wins_over_a_failing_send(bridge: BridgeCapture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        raise RuntimeError("template failed")

    async def send(message: Message) -> None:
        raise OSError("client went away")

    async def receive() -> Message:
        return {"type": "http.request"}

    with server_span(bridge), pytest.raises(RuntimeError, match="template failed"):
        asyncio.run(SentryMetaTagsASGIMiddleware(app)({"type": "http", "method": "GET"},
                                                      receive, send))
