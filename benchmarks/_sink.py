"""The benchmark's loopback sink: a separate process that counts what arrives.

It accepts Sentry envelopes (``POST /api/<project>/envelope/``) and OTLP/HTTP protobuf requests
(``POST /v1/traces``) and counts transactions, spans and client reports (``GET /count``), with
the time each request was answered (``GET /arrivals``: CLOCK_MONOTONIC, comparable with
``time.monotonic()`` in any process of the machine). ``POST /reset`` clears both.

Added receiver latency: ``--delay-ms`` at start, or ``POST /delay?ms=N`` at any time, makes the
sink sleep N ms after reading (and parsing) each envelope/OTLP request and before answering it.
Every connection has its own thread, so the delay is per request and per connection, as with a
slow ingest behind a load balancer: a client with k keep-alive connections gets at most
k / delay requests per second through.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The harness's entry point (it serves the sink with ``--_sink``).
ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_core.py")
CACHE_OPS = frozenset({"cache.get", "cache.put", "cache.remove"})
_ENVELOPE_PATH = re.compile(r"^/api/\d+/envelope/?$")


class SinkCounts:
    """Thread-safe counters of what the sink received (and when)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {}
        #: one ``[monotonic answer time, transactions, OTel spans, OTLP spans]`` per request
        self.arrivals: list[list[float]] = []
        self.delay = 0.0
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.arrivals = []
            self.data = {
                "sentry_requests": 0,
                "sentry_bytes": 0,
                "sentry_transactions": 0,
                "sentry_spans": 0,  # len(spans) + 1 per transaction item
                "sentry_cache_spans": 0,  # synthesized cache.* spans among them
                "sentry_otel_spans": 0,  # sentry_spans - sentry_cache_spans
                "sentry_other_items": {},
                "sentry_discarded": {},  # from client reports: "reason/category" -> quantity
                "otlp_requests": 0,
                "otlp_bytes": 0,
                "otlp_spans": 0,
                "errors": 0,
                "last_error": None,
            }

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            copy: dict[str, Any] = json.loads(json.dumps(self.data))
        copy["delay_ms"] = self.delay * 1000
        return copy

    def add(self, delta: dict[str, Any]) -> None:
        """Add one request's counts (see :func:`envelope_counts`) and stamp its arrival."""
        with self.lock:
            data = self.data
            for key, value in delta.items():
                if isinstance(value, dict):
                    target = data[key]
                    for sub, quantity in value.items():
                        target[sub] = target.get(sub, 0) + quantity
                else:
                    data[key] += value
            self.arrivals.append([time.monotonic(), delta.get("sentry_transactions", 0),
                                  delta.get("sentry_otel_spans", 0), delta.get("otlp_spans", 0)])


def parse_envelope(body: bytes) -> Iterable[tuple[dict[str, Any], bytes]]:
    """Yield ``(item_header, payload)`` of a Sentry envelope (header line is skipped)."""
    end = len(body)
    pos = body.find(b"\n")
    if pos < 0:
        return
    pos += 1
    while pos < end:
        nl = body.find(b"\n", pos)
        if nl < 0:
            nl = end
        line = body[pos:nl].strip()
        pos = nl + 1
        if not line:
            continue
        header = json.loads(line)
        length = header.get("length")
        if isinstance(length, int):
            payload = body[pos:pos + length]
            pos += length
            if body[pos:pos + 1] == b"\n":
                pos += 1
        else:
            nl = body.find(b"\n", pos)
            if nl < 0:
                nl = end
            payload = body[pos:nl]
            pos = nl + 1
        yield header, payload


def _loads(payload: bytes) -> Any:
    try:
        import orjson

        return orjson.loads(payload)
    except ImportError:  # pragma: no cover
        return json.loads(payload)


def envelope_counts(body: bytes) -> dict[str, Any]:
    """One envelope's transactions, spans (OTel ones and synthesized cache.*), client reports."""
    txns = spans = cache_spans = 0
    other: dict[str, int] = {}
    discarded: dict[str, int] = {}
    for header, payload in parse_envelope(body):
        kind = str(header.get("type"))
        if kind == "transaction":
            event = _loads(payload)
            child_spans = event.get("spans") or []
            txns += 1
            spans += len(child_spans) + 1
            cache_spans += sum(1 for s in child_spans if s.get("op") in CACHE_OPS)
        elif kind == "client_report":
            report = _loads(payload)
            for entry in report.get("discarded_events", ()):
                key = f"{entry.get('reason')}/{entry.get('category')}"
                discarded[key] = discarded.get(key, 0) + int(entry.get("quantity", 0))
        else:
            other[kind] = other.get(kind, 0) + 1
    return {"sentry_transactions": txns, "sentry_spans": spans,
            "sentry_cache_spans": cache_spans, "sentry_otel_spans": spans - cache_spans,
            "sentry_other_items": other, "sentry_discarded": discarded}


def count_envelope(body: bytes, counts: SinkCounts) -> None:
    """Add one envelope's transactions/spans/client reports to ``counts``."""
    counts.add(envelope_counts(body))


def otlp_span_count(body: bytes) -> int:
    """The number of spans in one OTLP/HTTP protobuf ``ExportTraceServiceRequest``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def make_handler(counts: SinkCounts) -> type[BaseHTTPRequestHandler]:
    """A keep-alive HTTP/1.1 handler class bound to ``counts``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in one write and without Nagle: otherwise every keep-alive
        # response stalls ~40 ms on the client's delayed ACK.
        # (handle_one_request flushes the buffered wfile once per request).
        disable_nagle_algorithm = True
        wbufsize = 1 << 16

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                raw = b"".join(chunks)
            else:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = self.headers.get("Content-Encoding", "").lower()
            if encoding == "gzip":
                return gzip.decompress(raw)
            if encoding == "deflate":
                return zlib.decompress(raw)
            if encoding == "br":
                import brotli  # type: ignore[import-not-found,unused-ignore]

                return bytes(brotli.decompress(raw))
            return raw

        def do_GET(self) -> None:
            if self.path.startswith("/count"):
                self._reply(200, json.dumps(counts.snapshot()).encode())
            elif self.path.startswith("/arrivals"):
                with counts.lock:
                    body = json.dumps(counts.arrivals).encode()
                self._reply(200, body)
            else:
                self._reply(404, b"{}")

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            try:
                raw_len = int(self.headers.get("Content-Length") or 0)
                body = self._body()
                if _ENVELOPE_PATH.match(path):
                    delta = envelope_counts(body)
                    delta.update(sentry_requests=1, sentry_bytes=raw_len)
                    if counts.delay:
                        time.sleep(counts.delay)
                    counts.add(delta)
                    self._reply(200, b'{"id":null}')
                elif path == "/v1/traces":
                    delta = {"otlp_requests": 1, "otlp_bytes": raw_len,
                             "otlp_spans": otlp_span_count(body)}
                    if counts.delay:
                        time.sleep(counts.delay)
                    counts.add(delta)
                    self._reply(200, b"", "application/x-protobuf")
                elif path == "/reset":
                    counts.reset()
                    self._reply(200, b"{}")
                elif path == "/delay":
                    ms = float(parse_qs(parts.query).get("ms", ["0"])[0])
                    counts.delay = max(0.0, ms) / 1000
                    self._reply(200, json.dumps({"delay_ms": ms}).encode())
                else:
                    self._reply(404, b"{}")
            except Exception as exc:  # count, never crash the server
                with counts.lock:
                    counts.data["errors"] += 1
                    counts.data["last_error"] = f"{type(exc).__name__}: {exc}"
                self._reply(400, b"{}")

    return Handler


class SinkServer(ThreadingHTTPServer):
    """Quiet about clients that drop keep-alive connections (contenders exit with os._exit)."""

    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


def sink_main(delay_ms: float = 0.0) -> None:
    """Run the sink: print the port, serve until stdin closes (the parent is gone)."""
    counts = SinkCounts()
    counts.delay = max(0.0, delay_ms) / 1000
    server = SinkServer(("127.0.0.1", 0), make_handler(counts))
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # EOF when the parent exits or closes the pipe
    os._exit(0)


def sink_request(port: int, method: str, path: str) -> Any:
    """One request to the sink (plain http.client: nothing here is instrumented)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        response = conn.getresponse()
        data = response.read()
        return json.loads(data or b"{}")
    finally:
        conn.close()


def sink_counts(port: int) -> dict[str, Any]:
    """``GET /count`` as a dict."""
    counts: dict[str, Any] = sink_request(port, "GET", "/count")
    return counts


class SinkProcess:
    """The sink in its own process (``with SinkProcess(env, delay_ms) as sink: sink.port``)."""

    def __init__(self, env: dict[str, str], delay_ms: float = 0.0) -> None:
        self.env = env
        self.delay_ms = delay_ms
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SinkProcess:
        self.proc = subprocess.Popen(
            [sys.executable, ENTRY, "--_sink", "--_sink-delay-ms", str(self.delay_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
