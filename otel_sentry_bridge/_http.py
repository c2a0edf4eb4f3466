"""One HTTP endpoint with one keep-alive connection per sender thread (no sentry-sdk here)."""

from __future__ import annotations

import http.client
import ssl
import threading
import zlib
from urllib.parse import urlsplit


class HttpTarget:
    """One HTTP endpoint (Sentry ingest or Spotlight), one connection per sender thread."""

    def __init__(self, url: str, headers: dict[str, str], gzip_level: int, timeout: float):
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query
        self.headers = headers
        self.gzip_level = gzip_level
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def post(self, body: bytes) -> tuple[int, dict[str, str]]:
        headers = dict(self.headers)
        if self.gzip_level:
            compressor = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
            body = compressor.compress(body) + compressor.flush()
            headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                result = {k.lower(): v for k, v in response.getheaders()}
                if result.get("connection", "").lower() == "close":
                    self.close()
                return response.status, result
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # stale keep-alive connection: retry once on a fresh one
                if attempt:
                    raise
            except Exception:
                self.close()
                raise
        raise ConnectionError("unreachable")
