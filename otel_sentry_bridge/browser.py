"""Continue a page's trace in the browser: Sentry's ``<meta>`` tags, and two middlewares.

Sentry's browser SDK reads ``<meta name="sentry-trace">`` and ``<meta name="baggage">`` when a
page loads: its ``pageload`` joins the trace as a child of the server span that rendered the
page, and Session Replay links the replay to that trace. :func:`meta_tags` renders both tags
for the current span (templates); :class:`SentryMetaTagsMiddleware` (WSGI) and
:class:`SentryMetaTagsASGIMiddleware` (ASGI) insert them into HTML responses. docs/browser.md.

The tags carry what an outgoing request of the span would carry (``sentry-trace`` and the
trace's frozen DSC), whatever ``SENTRY_BRIDGE_TRACE_PROPAGATION_TARGETS`` says, but only the
``sentry-*`` members of the baggage: a page is read by anyone who gets it, and the other members
(OpenTelemetry baggage from upstream) may be internal. sentry-sdk's meta tags do the same.

A middleware rewrites a response only when all of these hold, else it passes it through
unchanged (an internal error included, logged once):

* not a ``HEAD`` request; status 2xx-5xx other than 204, 206 and 304;
* ``Content-Type: text/html`` (not UTF-16/32), no ``Content-Encoding``, ``Transfer-Encoding``,
  ``Content-Range``, digest (``Content-MD5``, ``Digest``, ``Content-Digest``, ``Repr-Digest``)
  or trailers;
* a complete body of known size: ``Content-Length`` up to :data:`MAX_BODY` that matches the
  body (ASGI: or, without ``Content-Length``, at most :data:`MAX_BODY` bytes in one message).
  A body is held back only while it stays within that size and, past its first 64 KiB, only if
  they have an insertion point; else what was held goes out unchanged, the rest passes through.
  A streamed body (no ``Content-Length``) is never held back;
* the first 64 KiB of the body have ``<head>`` (the tags go right after it) or ``</head>``
  (right before it), and the body has no ``sentry-trace`` meta tag yet;
* a span is current when the response starts (WSGI ``start_response``, ASGI
  ``http.response.start``): the middleware must run inside the request's server span.

A rewritten response gets its new ``Content-Length``, and a strong ``ETag`` becomes weak: the
bytes differ from one response to the next. ``Last-Modified`` and ``Cache-Control`` stay: a
cached (or 304-revalidated) page carries the trace of the request that rendered it. An ASGI app
that raises after starting its response gets what was held sent first, as without the middleware.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context

from ._html_inject import H, Held, rewritten_headers
from ._html_inject import declared_length as _declared_length
from ._html_inject import insert as _insert
from ._internal_errors import log_internal_error
from ._trace_headers import BAGGAGE, SENTRY_PREFIX, SENTRY_TRACE
from .propagation import trace_headers

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MAX_BODY", "SentryMetaTagsASGIMiddleware", "SentryMetaTagsMiddleware", "meta_tags"]

#: Largest HTML body (bytes) a middleware holds back to insert the tags.
MAX_BODY = 4 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _HTML(str):
    """A ``str`` that template engines (Jinja2/MarkupSafe, Django) insert without escaping."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def meta_tags(context: Context | None = None) -> str:
    """``<meta name="sentry-trace" ...><meta name="baggage" ...>`` for the current span (or the
    span of ``context``), HTML-escaped; ``""`` without a valid span.

    The value is marked safe for Jinja2 and Django templates (``__html__``): use
    ``{{ sentry_meta_tags() }}`` in ``<head>``, not ``|safe``.
    """
    try:
        headers = trace_headers(context)
        sentry_trace = headers.get(SENTRY_TRACE)
        if not sentry_trace:
            return _HTML()
        tags = f'<meta name="sentry-trace" content="{html.escape(sentry_trace)}">'
        members = [m.strip() for m in headers.get(BAGGAGE, "").split(",")]
        dsc = ",".join(m for m in members if m.startswith(SENTRY_PREFIX))
        if dsc:
            tags += f'<meta name="baggage" content="{html.escape(dsc)}">'
        return _HTML(tags)
    except Exception as exc:
        log_internal_error("browser.meta_tags", exc)
        return _HTML()


def _rewrite(
    body: bytes, length: int, tags: bytes, headers: list[tuple[H, H]], where: str,
) -> tuple[bytes, list[tuple[H, H]]] | None:
    """Guarded: ``body`` (as long as declared; -1: any) with the tags, and ``headers`` with
    its new ``Content-Length``; ``None``: send both unchanged."""
    try:
        if length >= 0 and len(body) != length:
            return None
        new = _insert(body, tags)
        return None if new is None else (new, rewritten_headers(headers, len(new)))
    except Exception as exc:
        log_internal_error(where, exc)
        return None


def _held(length: int) -> Held:
    """The buffer for a body of declared ``length`` (-1: none, then at most :data:`MAX_BODY`)."""
    return Held(length if length >= 0 else MAX_BODY)


def _hold(held: Held, chunk: bytes, where: str) -> bool:
    """Guarded :meth:`Held.add`: ``False`` (send it all unchanged) on an internal error too."""
    try:
        return held.add(chunk)
    except Exception as exc:
        log_internal_error(where, exc)
        return False


def _plan(
    describe: Callable[[], tuple[int, Iterable[tuple[str, str]]]], where: str,
    unsized: bool = False,
) -> tuple[int, bytes] | None:
    """``(declared length, tags)`` when the response ``describe()`` gives (status, headers) is
    to be rewritten (without ``Content-Length`` only if ``unsized``); guarded."""
    try:
        length = _declared_length(*describe(), MAX_BODY)
        if length is None or (length < 0 and not unsized):
            return None
        tags = meta_tags()
        return (length, tags.encode("utf-8")) if tags else None
    except Exception as exc:
        log_internal_error(where, exc)
        return None


# --------------------------------------------------------------------------------------------
# WSGI
# --------------------------------------------------------------------------------------------

_WSGI = "SentryMetaTagsMiddleware"


class SentryMetaTagsMiddleware:
    """WSGI middleware: Sentry's meta tags in HTML responses (see the module docs).

    It must run inside the server span: wrap the app that OpenTelemetry's instrumentation wraps,
    e.g. ``app.wsgi_app = SentryMetaTagsMiddleware(app.wsgi_app)`` for Flask (its span is
    current when the app calls ``start_response``), or put it inside
    ``OpenTelemetryMiddleware`` (``OpenTelemetryMiddleware(SentryMetaTagsMiddleware(app))``).
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "HEAD":
            return self.app(environ, start_response)
        response = _WsgiResponse(start_response)
        return response.finish(self.app(environ, response.start_response))


class _WsgiResponse:
    """One response: passed through, or held back while its body may still get the tags."""

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self._write: Callable[[bytes], object] | None = None  # the server's, once started
        self.started = False
        self.holding = False
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.length = -1
        self.tags = b""
        self.held = Held(0)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        self.started = True
        self.held = Held(0)  # the app may start over (exc_info): what it sent so far is void
        plan = _plan(lambda: (_status_code(status), headers), _WSGI)
        if plan is None:
            self.holding = False
            self._write = (self._start_response(status, headers) if exc_info is None
                           else self._start_response(status, headers, exc_info))
            return self._write
        self.holding = True
        self.status, self.headers = status, headers
        self.length, self.tags = plan
        self.held = _held(self.length)
        return self.write

    def write(self, data: bytes) -> None:
        for chunk in self.take(data):
            assert self._write is not None
            self._write(chunk)

    def take(self, chunk: bytes) -> list[bytes]:
        """What to send now: nothing while the body is held back; all that was held once the
        body can no longer get the tags (the response starts unchanged then)."""
        if not self.holding:
            return [chunk]
        if _hold(self.held, chunk, _WSGI):
            return []
        chunks, self.held, self.holding = self.held.chunks, Held(0), False
        self._write = self._start_response(self.status, self.headers)
        return chunks

    def finish(self, result: Iterable[bytes]) -> Iterable[bytes]:
        if not self.started:  # the app calls start_response when its body is iterated
            return _Body(self, result)
        if not self.holding:
            return result
        chunks = iter(result)
        try:
            for chunk in chunks:
                sent = self.take(chunk)
                if not self.holding:  # it passes now: the rest is iterated by the server
                    return _Body(self, result, chunks, sent)
        except BaseException:
            _close(result)
            raise
        _close(result)
        return self.release() if self.holding else []

    def release(self) -> list[bytes]:
        """Start the response held back (the tags inserted if all went well): its body."""
        body = b"".join(self.held.chunks)
        self.held = Held(0)
        headers = self.headers
        rewritten = _rewrite(body, self.length, self.tags, headers, _WSGI)
        if rewritten is not None:
            body, headers = rewritten
        self.holding = False
        self._write = self._start_response(self.status, headers)
        return [body]


class _Body:
    """The body the server iterates: ``sent`` first, then the rest of the app's (``chunks``,
    else ``result``), held back while the response is."""

    def __init__(self, response: _WsgiResponse, result: Iterable[bytes],
                 chunks: Iterator[bytes] | None = None, sent: list[bytes] | None = None) -> None:
        self.response = response
        self.result = result
        self.chunks = chunks
        self.sent = sent or []

    def __iter__(self) -> Iterator[bytes]:
        response = self.response
        yield from self.sent
        for chunk in self.result if self.chunks is None else self.chunks:
            yield from response.take(chunk)
        if response.holding:
            yield from response.release()

    def close(self) -> None:
        _close(self.result)


def _close(result: Iterable[bytes]) -> None:
    if hasattr(result, "close"):
        result.close()


def _status_code(status: str) -> int:
    code = status.split(None, 1)[0] if status else ""
    return int(code) if code.isdigit() else 0


# --------------------------------------------------------------------------------------------
# ASGI
# --------------------------------------------------------------------------------------------

_ASGI = "SentryMetaTagsASGIMiddleware"


class SentryMetaTagsASGIMiddleware:
    """ASGI middleware: Sentry's meta tags in HTML responses (see the module docs).

    It must run inside OpenTelemetry's ``OpenTelemetryMiddleware``: FastAPI:
    ``app.add_middleware(SentryMetaTagsASGIMiddleware)``; Starlette: in ``Starlette(middleware=
    [...])`` (``StarletteInstrumentor`` adds its middleware with ``add_middleware``, which wraps
    those added before); else ``OpenTelemetryMiddleware(SentryMetaTagsASGIMiddleware(app))``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        response = _AsgiResponse(send)
        try:
            await self.app(scope, receive, response.send)
        except Exception:
            # Started but failed: what was held goes out, as without the middleware (the server
            # then ends the connection instead of sending its own 500). The app's error wins.
            with contextlib.suppress(Exception):
                await response.flush()
            raise
        await response.flush()  # an app that returned without finishing its body


class _AsgiResponse:
    """One response: passed through, or its messages held back while the body may still get
    the tags."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.passing = False
        self.start: Message | None = None
        self.held: list[Message] = []
        self.body = Held(0)
        self.length = -1
        self.tags = b""

    async def send(self, message: Message) -> None:
        if self.passing:
            await self._send(message)
            return
        kind = message.get("type")
        if self.start is None:
            if kind == "http.response.start":
                plan = None if message.get("trailers") else _plan(
                    lambda: (int(message["status"]), _asgi_headers(message)), _ASGI, True)
                if plan is not None:
                    self.start = message
                    self.length, self.tags = plan
                    self.body = _held(self.length)
                    return
            self.passing = True
            await self._send(message)
            return
        if kind != "http.response.body":
            await self.flush()
            await self._send(message)
            return
        self.held.append(message)
        more = message.get("more_body", False)
        if not _hold(self.body, message.get("body", b""), _ASGI) or (more and self.length < 0):
            await self.flush()  # too long, no <head> at its start, or streamed: not ours to hold
        elif not more:
            await self._release()

    async def _release(self) -> None:
        start, held = self.start, self.held
        assert start is not None
        body = b"".join(self.body.chunks)
        rewritten = _rewrite(body, self.length, self.tags, _raw_headers(start), _ASGI)
        self.passing, self.start, self.held, self.body = True, None, [], Held(0)
        if rewritten is None:
            await self._send(start)
            for message in held:
                await self._send(message)
            return
        new, headers = rewritten
        await self._send({**start, "headers": headers})
        await self._send({**held[-1], "body": new, "more_body": False})

    async def flush(self) -> None:
        """Send what is held back, unchanged, and pass the rest through."""
        start, held = self.start, self.held
        self.passing, self.start, self.held, self.body = True, None, [], Held(0)
        if start is not None:
            await self._send(start)
            for message in held:
                await self._send(message)


def _raw_headers(message: Message) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]


def _asgi_headers(message: Message) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1"))
            for name, value in _raw_headers(message)]
