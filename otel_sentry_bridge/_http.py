"""A minimal HTTP/1.1 client: one keep-alive connection per sender thread (no sentry-sdk here).

The bridge only ever POSTs an envelope and reads a small JSON answer. ``http.client`` parses
every response header through ``email.parser``, which was a quarter of the sender threads' CPU
in the benchmark, so requests are written and answers read directly on the socket.
"""

from __future__ import annotations

import socket
import ssl
import threading
import zlib
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 1 << 20


class HttpError(OSError):
    """The server's answer could not be read (the connection is closed and retried)."""


def gzip_body(body: bytes, level: int) -> bytes:
    """Gzip ``body`` (``level`` 1-9)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _fill(self) -> None:
        if len(self.buffer) > MAX_RESPONSE_BYTES:
            raise HttpError("response too large")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("connection closed by the server")
        self.buffer += chunk


class HttpTarget:
    """One HTTP endpoint (Sentry ingest or Spotlight), one connection per sender thread."""

    def __init__(self, url: str, headers: dict[str, str], gzip_level: int, timeout: float):
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}", "Connection: keep-alive"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.gzip_level = gzip_level
        self.timeout = timeout
        self._local = threading.local()
        self._ssl = ssl.create_default_context() if self.https else None

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            conn = _Connection(sock)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close the calling thread's connection."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            try:
                conn.sock.close()
            except OSError:
                pass

    def post(
        self, body: bytes, compressed: bool = False, timeout: float | None = None
    ) -> tuple[int, dict[str, str]]:
        """POST ``body`` (gzipped here unless ``compressed``); returns status and headers.

        ``timeout`` (seconds) bounds this one request instead of the target's socket timeout.
        """
        extra = ""
        if compressed:
            extra = "Content-Encoding: gzip\r\n"
        elif self.gzip_level:
            body = gzip_body(body, self.gzip_level)
            extra = "Content-Encoding: gzip\r\n"
        request = self._head + f"{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._connection()
            try:
                conn.sock.settimeout(self.timeout if timeout is None else timeout)
                conn.sock.sendall(request)
                status, headers = self._read_response(conn)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                self.close()
                if attempt or not reused:
                    raise
                continue  # a stale keep-alive connection: retry once on a fresh one
            except Exception:
                self.close()
                raise
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers
        raise ConnectionError("unreachable")

    def _read_response(self, conn: _Connection) -> tuple[int, dict[str, str]]:
        head = conn.read_until(b"\r\n\r\n").decode("latin-1")
        status_line, _, header_block = head.partition("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in header_block.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(conn.read_until(b"\r\n").split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    conn.read_until(b"\r\n")
                    break
                conn.read_exactly(size + 2)
        elif "content-length" in headers:
            conn.read_exactly(int(headers["content-length"]))
        elif status >= 200 and status not in (204, 304):
            headers["connection"] = "close"  # body ends at EOF: never reuse this connection
        return status, headers
