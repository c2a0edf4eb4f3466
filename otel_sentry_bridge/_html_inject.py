"""Byte- and header-level helpers of the meta-tag middlewares in :mod:`otel_sentry_bridge.browser`
(pure: no OpenTelemetry, no I/O): which responses may get the tags, where the tags go in an HTML
body, the headers of the rewritten response, and the bounded buffer a body is held back in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

H = TypeVar("H", str, bytes)

#: The tags go into ``<head>`` (or before ``</head>``) only when it is in this many first bytes.
HEAD_WINDOW = 64 * 1024

_HEAD_OPEN = re.compile(rb"<head(?:\s[^>]*)?>", re.IGNORECASE)
_HEAD_CLOSE = re.compile(rb"</head\s*>", re.IGNORECASE)
_TAGGED = re.compile(rb"<meta\s[^>]*name\s*=\s*[\"']?sentry-trace[\"'\s/>]", re.IGNORECASE)
_NO_BODY = frozenset({204, 206, 304})
_WIDE_CHARSETS = ("utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs2", "ucs-4", "ucs4")
# Compressed, ranged or chunked bodies, and digests that would no longer match the body.
_UNTOUCHABLE = frozenset({"content-encoding", "transfer-encoding", "content-range", "content-md5",
                          "digest", "content-digest", "repr-digest"})


def declared_length(status: int, headers: Iterable[tuple[str, str]], max_body: int) -> int | None:
    """The ``Content-Length`` (at most ``max_body``) of a response a middleware may rewrite (-1:
    none declared); ``None``: pass it through."""
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
    if not (length.isascii() and length.isdigit()) or int(length) > max_body:
        return None
    return int(length)


def insertion_point(start: bytes) -> int | None:
    """Where the tags go in a body that starts with ``start`` (its first :data:`HEAD_WINDOW`
    bytes): right after ``<head>``, else right before ``</head>``; ``None`` when ``start`` has
    neither or already has a ``sentry-trace`` meta tag."""
    start = start[:HEAD_WINDOW]
    if _TAGGED.search(start):
        return None
    match = _HEAD_OPEN.search(start)
    if match is not None:
        return match.end()
    match = _HEAD_CLOSE.search(start)
    return None if match is None else match.start()


def insert(body: bytes, tags: bytes) -> bytes | None:
    """``body`` with ``tags`` at its :func:`insertion_point`; ``None`` when it has none or has a
    ``sentry-trace`` meta tag anywhere."""
    at = insertion_point(body)
    if at is None or _TAGGED.search(body):
        return None
    return body[:at] + tags + body[at:]


def rewritten_headers(headers: list[tuple[H, H]], length: int) -> list[tuple[H, H]]:
    """``headers`` of a body rewritten to ``length`` bytes: that ``Content-Length``, and a
    strong ``ETag`` made weak (``W/``): the bytes differ from one response to the next."""
    new: list[tuple[H, H]] = []
    for name, value in headers:
        lower = _lower(name)
        if lower == "content-length":
            value = _same_type(value, str(length))
        elif lower == "etag" and not _lower(value).lstrip().startswith("w/"):
            value = _same_type(value, "W/") + value.lstrip()
        new.append((name, value))
    return new


def _lower(text: str | bytes) -> str:
    return (text.decode("latin-1") if isinstance(text, bytes) else text).lower()


def _same_type(like: H, text: str) -> H:  # ``text`` as str or as bytes, as ``like`` is
    return text.encode("latin-1") if isinstance(like, bytes) else text


class Held:
    """A body held back, at most ``limit`` bytes, in the chunks it came in."""

    __slots__ = ("chunks", "limit", "looked", "size")

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.looked = False  # for the insertion point, once HEAD_WINDOW bytes were held

    def add(self, chunk: bytes) -> bool:
        """Hold ``chunk``; ``False`` once the body can no longer get the tags: longer than
        ``limit``, or its first :data:`HEAD_WINDOW` bytes have no insertion point."""
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > self.limit:
            return False
        if self.looked or self.size < HEAD_WINDOW:
            return True
        self.looked = True
        start = bytearray()
        for held in self.chunks:
            start += held[:HEAD_WINDOW - len(start)]
            if len(start) >= HEAD_WINDOW:
                break
        return insertion_point(bytes(start)) is not None
