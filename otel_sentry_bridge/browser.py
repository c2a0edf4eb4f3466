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
  ``Content-Range`` or trailers;
* a complete body of known size: ``Content-Length`` up to :data:`MAX_BODY` that matches the
  body (ASGI: or, without ``Content-Length``, a body sent in one message); a streamed body is
  never held back;
* the body has ``<head>`` (the tags go right after it) or ``</head>`` (right before it), and no
  ``sentry-trace`` meta tag yet;
* a span is current when the response starts (WSGI ``start_response``, ASGI
  ``http.response.start``): the middleware must run inside the request's server span.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.context import Context

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
H = TypeVar("H", str, bytes)

_HEAD_OPEN = re.compile(rb"<head(?:\s[^>]*)?>", re.IGNORECASE)
_HEAD_CLOSE = re.compile(rb"</head\s*>", re.IGNORECASE)
_TAGGED = re.compile(rb"<meta\s[^>]*name\s*=\s*[\"']?sentry-trace[\"'\s/>]", re.IGNORECASE)
_NO_BODY = frozenset({204, 206, 304})
_WIDE_CHARSETS = ("utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs2", "ucs-4", "ucs4")
_UNTOUCHABLE = frozenset({"content-encoding", "transfer-encoding", "content-range"})


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


def _declared_length(status: int, headers: Iterable[tuple[str, str]]) -> int | None:
    """The ``Content-Length`` of a response a middleware may rewrite (-1: none declared);
    ``None``: pass it through."""
    if status < 200 or status in _NO_BODY:
        return None
    content_type: str | None = None
    length: str | None = None
    for name, value in headers:
        name = name.lower()
        if name in _UNTOUCHABLE:
            return None
        if name == "content-type":
            if content_type is not None:
                return None
            content_type = value
        elif name == "content-length":
            if length is not None:
                return None
            length = value.strip()
    if content_type is None:
        return None
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "text/html" or any(w in params.lower() for w in _WIDE_CHARSETS):
        return None
    if length is None:
        return -1
    if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:
        return None
    return int(length)


def _insert(body: bytes, tags: bytes) -> bytes | None:
    """``body`` with ``tags`` right after ``<head>``, else right before ``</head>``; ``None``
    when it has neither or already has a ``sentry-trace`` meta tag."""
    if _TAGGED.search(body):
        return None
    match = _HEAD_OPEN.search(body)
    if match is not None:
        at = match.end()
    else:
        match = _HEAD_CLOSE.search(body)
        if match is None:
            return None
        at = match.start()
    return body[:at] + tags + body[at:]


def _rewrite(
    body: bytes, length: int, tags: bytes, headers: list[tuple[H, H]], where: str,
) -> tuple[bytes, list[tuple[H, H]]] | None:
    """Guarded: ``body`` (as long as declared; -1: any) with the tags, and ``headers`` with
    its new ``Content-Length``; ``None``: send both unchanged."""
    try:
        if length >= 0 and len(body) != length:
            return None
        new = _insert(body, tags)
        if new is None:
            return None
        size = str(len(new))
        return new, [(name, _same_type(value, size) if _lower(name) == "content-length"
                      else value) for name, value in headers]
    except Exception as exc:
        log_internal_error(where, exc)
        return None


def _lower(name: str | bytes) -> str:
    return (name.decode("latin-1") if isinstance(name, bytes) else name).lower()


def _same_type(like: H, text: str) -> H:  # ``text`` as str or as bytes, as ``like`` is
    return text.encode("latin-1") if isinstance(like, bytes) else text


def _plan(
    describe: Callable[[], tuple[int, Iterable[tuple[str, str]]]], where: str,
    unsized: bool = False,
) -> tuple[int, bytes] | None:
    """``(declared length, tags)`` when the response ``describe()`` gives (status, headers) is
    to be rewritten (without ``Content-Length`` only if ``unsized``); guarded."""
    try:
        length = _declared_length(*describe())
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
    """One response: passed through, or held back until its body is complete."""

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.started = False
        self.holding = False
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.length = -1
        self.tags = b""
        self.chunks: list[bytes] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        self.started = True
        if self.holding:  # the app starts over (exc_info): what it sent so far is void
            self.chunks.clear()
        plan = _plan(lambda: (_status_code(status), headers), _WSGI)
        if plan is None:
            self.holding = False
            if exc_info is None:
                return self._start_response(status, headers)
            return self._start_response(status, headers, exc_info)
        self.holding = True
        self.status, self.headers = status, headers
        self.length, self.tags = plan
        return self.chunks.append

    def finish(self, result: Iterable[bytes]) -> Iterable[bytes]:
        if not self.started:  # the app calls start_response when its body is iterated
            return _LazyBody(self, result)
        if not self.holding:
            return result
        try:
            self.chunks.extend(result)
        finally:
            _close(result)
        if not self.holding:  # the app started over with a response that passes
            return self.chunks
        return self.release()

    def release(self) -> list[bytes]:
        """Start the response held back (the tags inserted if all went well): its body."""
        body = b"".join(self.chunks)
        self.chunks = []
        headers = self.headers
        rewritten = _rewrite(body, self.length, self.tags, headers, _WSGI)
        if rewritten is not None:
            body, headers = rewritten
        self.holding = False
        self._start_response(self.status, headers)
        return [body]


class _LazyBody:
    """The body of an app that starts its response lazily (from its iterator)."""

    def __init__(self, response: _WsgiResponse, result: Iterable[bytes]) -> None:
        self.response = response
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        response = self.response
        for chunk in self.result:
            if response.holding:
                response.chunks.append(chunk)
            else:
                yield chunk
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

    It must run inside OpenTelemetry's ``OpenTelemetryMiddleware`` (FastAPI/Starlette:
    ``app.add_middleware(SentryMetaTagsASGIMiddleware)`` after instrumenting the app, or
    ``OpenTelemetryMiddleware(SentryMetaTagsASGIMiddleware(app))``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        response = _AsgiResponse(send)
        await self.app(scope, receive, response.send)
        await response.flush()  # an app that returned without finishing its body


class _AsgiResponse:
    """One response: passed through, or its messages held back until the body is complete."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.passing = False
        self.start: Message | None = None
        self.held: list[Message] = []
        self.size = 0
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
                    return
            self.passing = True
            await self._send(message)
            return
        if kind != "http.response.body":
            await self.flush()
            await self._send(message)
            return
        self.held.append(message)
        self.size += len(message.get("body", b""))
        if message.get("more_body", False):
            if self.length < 0 or self.size > self.length:
                await self.flush()  # streamed, or longer than declared: not ours to hold
            return
        await self._release()

    async def _release(self) -> None:
        start, held = self.start, self.held
        assert start is not None
        body = b"".join(message.get("body", b"") for message in held)
        rewritten = _rewrite(body, self.length, self.tags, _raw_headers(start), _ASGI)
        self.passing, self.start, self.held = True, None, []
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
        self.passing, self.start, self.held = True, None, []
        if start is not None:
            await self._send(start)
            for message in held:
                await self._send(message)


def _raw_headers(message: Message) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]


def _asgi_headers(message: Message) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1"))
            for name, value in _raw_headers(message)]
