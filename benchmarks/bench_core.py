"""Core overhead benchmark: OpenTelemetry spans -> Sentry (and OTLP), one run, five contenders.

Usage::

    python benchmarks/bench_core.py [--transactions N] [--repeats R] [--json out.json] [--quick]

Workload (identical for every contender): N transactions of 21 spans each, built with the
OpenTelemetry span API only (attribute dicts are pre-built): one SERVER root with flask-like
attributes (old semantic conventions), 12 postgresql CLIENT children, 4 ``http.client``
CLIENT children and 4 redis children carrying the attributes the bridge's redis hooks set.
Every span is started with ``start_as_current_span`` like the contrib instrumentations do.

Contenders, each in a fresh interpreter per repetition (isolated globals, threads and peak RSS),
interleaved (rep 1: A B C D E, rep 2: A B C D E, ...):

* ``floor``         TracerProvider without any processor
* ``noop``          SimpleSpanProcessor + a no-op exporter
* ``otlp``          BatchSpanProcessor + OTLPSpanExporter (http/protobuf) to the sink
* ``sentry_legacy`` sentry-sdk's deprecated OpenTelemetry ``SentrySpanProcessor``
* ``bridge``        ``otel_sentry_bridge.SentrySpanProcessor`` (``SENTRY_DSN`` -> the sink)

A loopback sink (a separate process, so its parsing never competes for our GIL) accepts Sentry
envelopes and OTLP/HTTP requests and counts what arrives (``GET /count``, ``POST /reset``).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import http.client
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENDERS: tuple[str, ...] = ("floor", "noop", "otlp", "sentry_legacy", "bridge")
SPANS_PER_TRANSACTION = 21
RESULT_PREFIX = "BENCH-RESULT "
BRIDGE_TOTAL_TARGET = 0.5  # (total - noop) / floor
BRIDGE_HOOK_TARGET = 0.1  # on_start + on_end per span / floor
STRAGGLER_MAX_WAIT = 4.0  # seconds to wait after flush for the sink to see everything
STRAGGLER_SETTLE = 0.6  # ... or until its count has not moved for this long
CACHE_OPS = frozenset({"cache.get", "cache.put", "cache.remove"})
ENV_PREFIXES_STRIPPED = ("SENTRY_", "OTEL_", "_SENTRY_BRIDGE_")
KEY_PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-proto",
    "opentelemetry-instrumentation",
    "sentry-sdk",
    "otel-sentry-bridge",
    "orjson",
    "protobuf",
    "urllib3",
    "requests",
)

# ------------------------------------------------------------------------------------ workload
INSTR_VERSION = "0.66b1"
SCOPE_FLASK = "opentelemetry.instrumentation.flask"
SCOPE_SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"
SCOPE_REQUESTS = "opentelemetry.instrumentation.requests"
SCOPE_REDIS = "opentelemetry.instrumentation.redis"

ROOT_NAME = "GET /api/items/<int:item_id>"
SERVER_ATTRS: dict[str, Any] = {
    "http.method": "GET",
    "http.server_name": "127.0.0.1",
    "http.scheme": "http",
    "net.host.name": "localhost",
    "net.host.port": 5000,
    "http.host": "localhost:5000",
    "http.target": "/api/items/42?page=2",
    "net.peer.ip": "127.0.0.1",
    "net.peer.port": 53124,
    "http.user_agent": "python-requests/2.32.3",
    "http.flavor": "1.1",
    "http.route": "/api/items/<int:item_id>",
    "http.status_code": 200,
}
_DB_STATEMENTS = (
    "SELECT items.id, items.name, items.price, items.stock FROM items WHERE items.id = %(pk_1)s",
    "SELECT reviews.id, reviews.body, reviews.stars FROM reviews "
    "WHERE reviews.item_id = %(item_id_1)s ORDER BY reviews.created_at DESC LIMIT %(param_1)s",
    "UPDATE items SET views=(items.views + %(views_1)s) WHERE items.id = %(id_1)s",
)


def _db_attrs(statement: str) -> dict[str, Any]:
    return {
        "db.system": "postgresql",
        "db.name": "shop",
        "db.statement": statement,
        "db.user": "shop",
        "net.peer.name": "localhost",
        "net.peer.port": 5432,
    }


DB_SPANS: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (f"{stmt.split(' ', 1)[0]} shop", _db_attrs(stmt)) for stmt in _DB_STATEMENTS
)
HTTP_CLIENT_ATTRS: dict[str, Any] = {
    "http.method": "GET",
    "http.url": "http://inventory.internal:8080/api/stock/42",
    "http.status_code": 200,
}
REDIS_ATTRS: dict[str, Any] = {
    "db.system": "redis",
    "db.statement": "GET ?",
    "db.redis.database_index": 0,
    "net.peer.name": "localhost",
    "net.peer.port": 6379,
    "net.transport": "ip_tcp",
    "db.redis.args_length": 2,
    # what otel_sentry_bridge.redis_hooks adds on a cache hit
    "sentry_bridge.redis.keys": ["k:1"],
    "sentry_bridge.redis.command": "GET",
    "cache.hit": True,
    "cache.item_size": 10,
}


@dataclass(frozen=True)
class ChildSpec:
    """One child span of the workload: (tracer scope, name, kind name, attributes)."""

    scope: str
    name: str
    kind: str
    attrs: dict[str, Any]


def child_plan() -> list[ChildSpec]:
    """The 20 children of a transaction: 4 x (redis, db, db, db, http.client)."""
    plan: list[ChildSpec] = []
    for _ in range(4):
        plan.append(ChildSpec(SCOPE_REDIS, "GET", "CLIENT", REDIS_ATTRS))
        for name, attrs in DB_SPANS:
            plan.append(ChildSpec(SCOPE_SQLALCHEMY, name, "CLIENT", attrs))
        plan.append(ChildSpec(SCOPE_REQUESTS, "GET", "CLIENT", HTTP_CLIENT_ATTRS))
    assert len(plan) + 1 == SPANS_PER_TRANSACTION
    return plan


# ------------------------------------------------------------------------------------ sink
class SinkCounts:
    """Thread-safe counters of what the sink received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
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
        return copy


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


def count_envelope(body: bytes, counts: SinkCounts) -> None:
    """Add one envelope's transactions/spans/client reports to ``counts``."""
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
    with counts.lock:
        data = counts.data
        data["sentry_transactions"] += txns
        data["sentry_spans"] += spans
        data["sentry_cache_spans"] += cache_spans
        data["sentry_otel_spans"] += spans - cache_spans
        for key, value in other.items():
            data["sentry_other_items"][key] = data["sentry_other_items"].get(key, 0) + value
        for key, value in discarded.items():
            data["sentry_discarded"][key] = data["sentry_discarded"].get(key, 0) + value


def count_otlp(body: bytes, counts: SinkCounts) -> None:
    """Count the spans of one OTLP/HTTP protobuf ``ExportTraceServiceRequest``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    with counts.lock:
        counts.data["otlp_spans"] += n


_ENVELOPE_PATH = re.compile(r"^/api/\d+/envelope/?$")


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
            else:
                self._reply(404, b"{}")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                raw_len = int(self.headers.get("Content-Length") or 0)
                body = self._body()
                if _ENVELOPE_PATH.match(path):
                    with counts.lock:
                        counts.data["sentry_requests"] += 1
                        counts.data["sentry_bytes"] += raw_len
                    count_envelope(body, counts)
                    self._reply(200, b'{"id":null}')
                elif path == "/v1/traces":
                    with counts.lock:
                        counts.data["otlp_requests"] += 1
                        counts.data["otlp_bytes"] += raw_len
                    count_otlp(body, counts)
                    self._reply(200, b"", "application/x-protobuf")
                elif path == "/reset":
                    counts.reset()
                    self._reply(200, b"{}")
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


def sink_main() -> None:
    """Run the sink: print the port, serve until stdin closes (the parent is gone)."""
    counts = SinkCounts()
    server = SinkServer(("127.0.0.1", 0), make_handler(counts))
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # EOF when the parent exits or closes the pipe
    os._exit(0)


def sink_request(port: int, method: str, path: str) -> dict[str, Any]:
    """One request to the sink (plain http.client: nothing here is instrumented)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        response = conn.getresponse()
        data = response.read()
        return dict(json.loads(data or b"{}"))
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ child
@dataclass
class Contender:
    """A configured tracer provider plus how to flush it."""

    provider: Any
    processor: Any | None
    flush: Callable[[], bool]
    sink_key: str | None  # which sink counter holds its delivered spans
    drops: Callable[[], dict[str, int]] | None = None


def make_contender(name: str, port: int) -> Contender:
    """Build the tracer provider of one contender (in the child process)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    provider = TracerProvider(resource=Resource.create({
        "service.name": "bench-shop",
        "service.version": "1.2.3",
        "deployment.environment": "bench",
    }))
    if name == "floor":
        return Contender(provider, None, lambda: provider.force_flush(60_000), None)
    if name == "noop":

        class _Noop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

            def shutdown(self) -> None:
                return None

        processor: Any = SimpleSpanProcessor(_Noop())
        provider.add_span_processor(processor)
        return Contender(provider, processor, lambda: provider.force_flush(60_000), None)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30)
        processor = BatchSpanProcessor(
            exporter, max_queue_size=65_536, max_export_batch_size=512
        )
        provider.add_span_processor(processor)
        return Contender(provider, processor, lambda: provider.force_flush(60_000), "otlp_spans")
    if name == "sentry_legacy":
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import sentry_sdk
        from sentry_sdk.integrations.opentelemetry import SentrySpanProcessor as LegacyProcessor

        sentry_sdk.init(
            dsn=f"http://key@127.0.0.1:{port}/1",
            instrumenter="otel",
            traces_sample_rate=1.0,
            default_integrations=False,
            auto_enabling_integrations=False,
        )
        processor = LegacyProcessor()
        provider.add_span_processor(processor)

        def flush_legacy() -> bool:
            sentry_sdk.flush(timeout=60)
            return True

        return Contender(provider, processor, flush_legacy, "sentry_otel_spans")
    if name == "bridge":
        from otel_sentry_bridge import SentrySpanProcessor

        bridge = SentrySpanProcessor()
        if bridge.pipeline is None:
            raise SystemExit("bridge is disabled: SENTRY_DSN not seen by the child")
        provider.add_span_processor(bridge)
        pipeline = bridge.pipeline

        def drops() -> dict[str, int]:
            return {f"{r}/{c}": q for (r, c), q in pipeline.drops.totals.items()}

        return Contender(provider, bridge, lambda: provider.force_flush(60_000),
                         "sentry_otel_spans", drops)
    raise SystemExit(f"unknown contender {name!r}")


Workload = Callable[[int], None]


def attribute_variants(vary: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Pre-built ``(root attrs, child attrs)`` per transaction.

    ``vary == 0``: one variant, the fixed dicts of the brief (every transaction identical).
    ``vary > 0``: that many variants whose per-request values differ the way they do in a real
    service (client port, request target, outgoing URL, cache key); SQL stays parameterized.
    """
    plan = child_plan()
    if vary <= 0:
        return [(SERVER_ATTRS, [c.attrs for c in plan])]
    variants = []
    for i in range(vary):
        root = {**SERVER_ATTRS, "net.peer.port": 30_000 + i % 30_000,
                "http.target": f"/api/items/{i}?page=2"}
        children: list[dict[str, Any]] = []
        for j, spec in enumerate(plan):
            if spec.scope == SCOPE_REQUESTS:
                children.append({**spec.attrs,
                                 "http.url": f"http://inventory.internal:8080/api/stock/{i}/{j}"})
            elif spec.scope == SCOPE_REDIS:
                children.append({**spec.attrs, "sentry_bridge.redis.keys": [f"k:{i}:{j}"]})
            else:
                children.append(spec.attrs)
        variants.append((root, children))
    return variants


def make_workload(provider: Any, vary: int = 0) -> Workload:
    """The transaction loop, closed over pre-built tracers and attribute dicts."""
    from opentelemetry.trace import SpanKind

    tracers = {
        scope: provider.get_tracer(scope, INSTR_VERSION,
                                   schema_url="https://opentelemetry.io/schemas/1.11.0")
        for scope in (SCOPE_FLASK, SCOPE_SQLALCHEMY, SCOPE_REQUESTS, SCOPE_REDIS)
    }
    server = tracers[SCOPE_FLASK]
    plan = [(tracers[c.scope], c.name, SpanKind[c.kind]) for c in child_plan()]
    variants = [(root, list(zip(plan, children, strict=True)))
                for root, children in attribute_variants(vary)]
    count = len(variants)
    server_kind = SpanKind.SERVER

    def run(transactions: int) -> None:
        for i in range(transactions):
            root_attrs, children = variants[i % count]
            with server.start_as_current_span(ROOT_NAME, kind=server_kind,
                                              attributes=root_attrs):
                for (tracer, name, kind), attrs in children:
                    with tracer.start_as_current_span(name, kind=kind, attributes=attrs):
                        pass

    return run


def wait_for_sink(port: int, key: str | None, expected: int) -> tuple[dict[str, Any], float]:
    """Poll the sink until ``key`` reaches ``expected`` or stops moving; (counts, waited s)."""
    start = time.monotonic()
    counts = sink_request(port, "GET", "/count")
    if key is None:
        return counts, 0.0
    last = counts[key]
    last_change = start
    while counts[key] < expected:
        now = time.monotonic()
        if now - start >= STRAGGLER_MAX_WAIT or now - last_change >= STRAGGLER_SETTLE:
            break
        time.sleep(0.05)
        counts = sink_request(port, "GET", "/count")
        if counts[key] != last:
            last = counts[key]
            last_change = time.monotonic()
    return counts, time.monotonic() - start


class GcTimer:
    """Wall time spent in the cyclic garbage collector (any thread), via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total_ns = 0
        self.collections = [0, 0, 0]
        self._started = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.total_ns += time.perf_counter_ns() - self._started
            self.collections[int(info.get("generation", 0))] += 1

    def reset(self) -> None:
        self.total_ns = 0
        self.collections = [0, 0, 0]


def current_rss_mb() -> float:
    """Current resident set size (MB) from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


def timer_overhead_ns(calls: int) -> tuple[float, float]:
    """(mean, median) ns of an empty ``t = perf_counter_ns(); add(perf_counter_ns() - t)``."""
    pc = time.perf_counter_ns
    values: list[int] = []
    add = values.append
    for _ in range(calls):
        t = pc()
        add(pc() - t)
    return statistics.fmean(values), float(statistics.median(values))


def probe_hooks(processor: Any, workload: Workload, transactions: int) -> dict[str, float]:
    """Time the app thread spends inside ``processor.on_start`` + ``on_end``, per span.

    The processor's bound methods are replaced on the instance by wrappers that time every call
    with ``perf_counter_ns``; the measured cost of an empty timing pair is subtracted. Two
    figures: the mean (everything, including GIL hand-offs to the contender's background threads
    that happen to land inside a hook) and the median call (the intrinsic cost of the hook).
    """
    pc = time.perf_counter_ns
    starts: list[int] = []
    ends: list[int] = []
    add_start = starts.append
    add_end = ends.append
    orig_start = processor.on_start
    orig_end = processor.on_end

    def on_start(span: Any, parent_context: Any = None) -> None:
        t = pc()
        orig_start(span, parent_context)
        add_start(pc() - t)

    def on_end(span: Any) -> None:
        t = pc()
        orig_end(span)
        add_end(pc() - t)

    processor.on_start = on_start
    processor.on_end = on_end
    try:
        workload(transactions)
    finally:
        processor.on_start = orig_start
        processor.on_end = orig_end
    spans = transactions * SPANS_PER_TRANSACTION
    overhead, overhead_median = timer_overhead_ns(2 * spans)

    def net(values: list[int]) -> float:
        return max(0.0, statistics.fmean(values) - overhead) / 1000 if values else 0.0

    def net_median(values: list[int]) -> float:
        return max(0.0, statistics.median(values) - overhead_median) / 1000 if values else 0.0

    slow = sum(1 for v in starts + ends if v > 100_000)
    return {
        "probe_transactions": transactions,
        "timer_overhead_ns": overhead,
        "on_start_us": net(starts),
        "on_end_us": net(ends),
        "hooks_us": net(starts) + net(ends),
        "hooks_median_us": net_median(starts) + net_median(ends),
        "hook_calls_over_100us": slow,
    }


def child_main(name: str, port: int, transactions: int, vary: int) -> None:
    """One contender, one repetition: prints one ``BENCH-RESULT {json}`` line."""
    t_boot = time.perf_counter()
    bridge_src = source_digest("otel_sentry_bridge") if name == "bridge" else None
    contender = make_contender(name, port)
    workload = make_workload(contender.provider, vary)
    spans = transactions * SPANS_PER_TRANSACTION
    warmup = max(10, min(50, transactions // 20))
    workload(warmup)
    contender.flush()
    if contender.sink_key is not None:
        wait_for_sink(port, contender.sink_key, warmup * SPANS_PER_TRANSACTION)
    sink_request(port, "POST", "/reset")
    gc.collect()
    rss_before = current_rss_mb()
    setup_s = time.perf_counter() - t_boot

    load_1min = os.getloadavg()[0]
    gc_timer = GcTimer()
    c0, a0 = time.process_time_ns(), time.thread_time_ns()
    t0 = time.perf_counter_ns()
    workload(transactions)
    t1 = time.perf_counter_ns()
    a1 = time.thread_time_ns()
    flushed = contender.flush()
    t2 = time.perf_counter_ns()
    c2 = time.process_time_ns()
    gc.callbacks.remove(gc_timer._callback)

    counts, waited = wait_for_sink(port, contender.sink_key, spans)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    delivered = counts[contender.sink_key] if contender.sink_key else None
    result: dict[str, Any] = {
        "contender": name,
        "pid": os.getpid(),
        "bridge_src": bridge_src,
        "transactions": transactions,
        "spans": spans,
        "warmup_transactions": warmup,
        "setup_s": setup_s,
        "app_s": (t1 - t0) / 1e9,
        "flush_s": (t2 - t1) / 1e9,
        "total_s": (t2 - t0) / 1e9,
        "app_us": (t1 - t0) / 1e3 / spans,
        "total_us": (t2 - t0) / 1e3 / spans,
        # CPU time (noise cross-check): app thread during the loop; whole process loop..flush
        "app_cpu_us": (a1 - a0) / 1e3 / spans,
        "cpu_us": (c2 - c0) / 1e3 / spans,
        "gc_us": gc_timer.total_ns / 1e3 / spans,  # cyclic GC, loop..flush, all threads
        "gc_collections": gc_timer.collections,
        "flush_ok": bool(flushed),
        "straggler_wait_s": waited,
        "delivered_spans": delivered,
        "delivered_pct": None if delivered is None else 100.0 * delivered / spans,
        "delivered_transactions": counts["sentry_transactions"] if name != "otlp" else None,
        "rss_before_mb": rss_before,
        "load_1min": load_1min,
        "peak_rss_mb": peak_rss,
        "sink": counts,
        "drops": contender.drops() if contender.drops is not None else {},
    }
    if contender.processor is not None:
        probe = max(20, transactions // 4)
        result.update(probe_hooks(contender.processor, workload, probe))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip atexit flushes: nothing measured happens after this line


# ------------------------------------------------------------------------------------ parent
def child_env(name: str, port: int) -> dict[str, str]:
    """The parent's environment without SENTRY_*/OTEL_* (plus the bridge's DSN)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES_STRIPPED)}
    env["PYTHONUNBUFFERED"] = "1"
    if name == "bridge":
        env["SENTRY_DSN"] = f"http://key@127.0.0.1:{port}/1"
    return env


def run_child(name: str, port: int, transactions: int, vary: int) -> dict[str, Any]:
    """Run one contender in a fresh interpreter and parse its result line.

    A failed child (e.g. the bridge caught mid-edit) is retried once after a pause; a second
    failure is returned as ``{"error": ...}`` and that repetition is left out of the summary.
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", name, "--_port", str(port),
           "--transactions", str(transactions), "--vary", str(vary)]
    error = ""
    for attempt in (1, 2):
        proc = subprocess.run(cmd, env=child_env(name, port), capture_output=True, text=True,
                              timeout=600, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
                if proc.stderr.strip():
                    result["stderr"] = proc.stderr.strip()[-2000:]
                result["attempts"] = attempt
                return result
        error = f"rc={proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1500:]}"
        if attempt == 1:
            time.sleep(3.0)
    return {"contender": name, "error": error}


def source_digest(package: str) -> str:
    """Short hash of a package's .py sources (to spot edits between repetitions)."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return "-"
    digest = hashlib.sha1()
    for root in spec.submodule_search_locations:
        for folder, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as handle:
                        digest.update(name.encode() + handle.read())
    return digest.hexdigest()[:10]


def versions() -> dict[str, str]:
    """Versions of the key packages, the interpreter and the checkout."""
    out = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": str(os.cpu_count())}
    for package in KEY_PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "-"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--",
                                "otel_sentry_bridge"], capture_output=True, text=True,
                               check=False).stdout.strip()
        out["checkout"] = f"{head}{' (otel_sentry_bridge/ modified)' if dirty else ''}"
    except OSError:
        out["checkout"] = "-"
    return out


def median(values: Iterable[float | None]) -> float | None:
    """Median of the non-None values (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Medians per contender; ratios are computed per repetition, then their median.

    Failed runs are left out; a ratio needs the same repetition's floor (and noop) run.
    """
    def ok(name: str) -> dict[int, dict[str, Any]]:
        return {r["repetition"]: r for r in runs.get(name, []) if "error" not in r}

    floors, noops = ok("floor"), ok("noop")
    summary: dict[str, dict[str, Any]] = {}
    for name, all_runs in runs.items():
        good = ok(name)
        results = list(good.values())
        if not results:
            continue
        ratio: list[float] = []
        over_noop: list[float] = []
        hooks_ratio: list[float] = []
        hooks_median_ratio: list[float] = []
        app_over_floor: list[float] = []
        cpu_ratio: list[float] = []
        cpu_over_noop: list[float] = []
        for rep, r in good.items():
            if rep not in floors:
                continue
            floor = floors[rep]["total_us"]
            ratio.append(r["total_us"] / floor)
            app_over_floor.append((r["app_us"] - floors[rep]["app_us"]) / floor)
            floor_cpu = floors[rep]["cpu_us"]
            cpu_ratio.append(r["cpu_us"] / floor_cpu)
            if rep in noops:
                over_noop.append((r["total_us"] - noops[rep]["total_us"]) / floor)
                cpu_over_noop.append((r["cpu_us"] - noops[rep]["cpu_us"]) / floor_cpu)
            if r.get("hooks_us") is not None:
                hooks_ratio.append(r["hooks_us"] / floor)
                hooks_median_ratio.append(r["hooks_median_us"] / floor)
        totals = [r["total_us"] for r in results]
        summary[name] = {
            "app_us": median(r["app_us"] for r in results),
            "total_us": median(totals),
            "total_us_min": min(totals),
            "total_us_max": max(totals),
            "flush_s": median(r["flush_s"] for r in results),
            "total_over_floor": median(ratio),
            "over_noop_per_floor": median(over_noop),
            "app_overhead_per_floor": median(app_over_floor),
            "app_cpu_us": median(r["app_cpu_us"] for r in results),
            "cpu_us": median(r["cpu_us"] for r in results),
            "gc_us": median(r["gc_us"] for r in results),
            "cpu_over_floor": median(cpu_ratio),
            "cpu_over_noop_per_floor": median(cpu_over_noop),
            "hooks_us": median(r.get("hooks_us") for r in results),
            "hooks_per_floor": median(hooks_ratio),
            "hooks_median_us": median(r.get("hooks_median_us") for r in results),
            "hooks_median_per_floor": median(hooks_median_ratio),
            "load_1min": median(r["load_1min"] for r in results),
            "delivered_pct": median(r["delivered_pct"] for r in results),
            "delivered_pct_min": min((r["delivered_pct"] for r in results
                                      if r["delivered_pct"] is not None), default=None),
            "peak_rss_mb": median(r["peak_rss_mb"] for r in results),
            "rss_before_mb": median(r["rss_before_mb"] for r in results),
            "repetitions": len(results),
            "failed_repetitions": len(all_runs) - len(results),
        }
    return summary


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


Column = tuple[str, str, str]  # (header, summary key, format); key "" = total min..max

WALL_COLUMNS: tuple[Column, ...] = (
    ("app us/span", "app_us", ".2f"),
    ("total us/span", "total_us", ".2f"),
    ("(min..max)", "", ""),
    ("total/floor", "total_over_floor", ".2f"),
    ("(tot-noop)/floor", "over_noop_per_floor", ".2f"),
    ("hooks us/span", "hooks_us", ".3f"),
    ("hooks/floor", "hooks_per_floor", ".3f"),
    ("delivered %", "delivered_pct", ".1f"),
    ("peak RSS MB", "peak_rss_mb", ".1f"),
)
DETAIL_COLUMNS: tuple[Column, ...] = (
    ("flush s", "flush_s", ".2f"),
    ("app cpu us/span", "app_cpu_us", ".2f"),
    ("cpu us/span", "cpu_us", ".2f"),
    ("cpu/floor", "cpu_over_floor", ".2f"),
    ("(cpu-noop)/floor", "cpu_over_noop_per_floor", ".2f"),
    ("gc us/span", "gc_us", ".2f"),
    ("hook med us", "hooks_median_us", ".3f"),
    ("med/floor", "hooks_median_per_floor", ".3f"),
    ("RSS before MB", "rss_before_mb", ".1f"),
    ("load 1m", "load_1min", ".2f"),
)
_NOT_FOR_BASELINES = frozenset({"over_noop_per_floor", "cpu_over_noop_per_floor"})


def render_table(summary: dict[str, dict[str, Any]],
                 columns: tuple[Column, ...] = WALL_COLUMNS) -> str:
    """A results table (medians over repetitions)."""
    widths = [max(len(h), 11) if key else 17 for h, key, _ in columns]
    head = f"{'contender':<14}" + "".join(
        f" {h:>{w}}" for (h, _, _), w in zip(columns, widths, strict=True))
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        cells = []
        for (_, key, spec), width in zip(columns, widths, strict=True):
            if not key:
                text = f"({s['total_us_min']:.1f}..{s['total_us_max']:.1f})"
            elif key in _NOT_FOR_BASELINES and name in ("floor", "noop"):
                text = "-"
            else:
                text = _fmt(s[key], spec)
            cells.append(f" {text:>{width}}")
        lines.append(f"{name:<14}" + "".join(cells))
    return "\n".join(lines)


NOTES = """\
How to read it (all values are medians over repetitions; ratios are computed per repetition
against that repetition's floor/noop, then the median is taken):
  app us/span      wall time of the span loop (start/end of every span, incl. any GIL time lost
                   to the contender's background threads) / spans produced.
  total us/span    (span loop + flush) / spans; flush = provider.force_flush(60 s), or
                   sentry_sdk.flush(timeout=60) for sentry_legacy. Includes mapping,
                   serialization and sending done by background threads until flush returns.
  total/floor      total us/span / floor's total us/span.
  (tot-noop)/floor (total - noop total) / floor total: the cost of getting spans to the
                   destination beyond a do-nothing synchronous processor. Bridge target <= {tt}.
  hooks us/span    time the app thread spends inside processor.on_start + on_end per span,
                   measured in a separate pass (N/4 transactions, after the timed run and its
                   flush) by wrapping the processor instance's methods with perf_counter_ns; the
                   cost of an empty timing pair is subtracted. Mean over all calls: background
                   threads keep running, so GIL hand-offs that land inside a hook count.
                   Bridge target: hooks/floor <= {ht}.
  hook med us      median on_start + median on_end (same pass): the hooks' intrinsic cost,
                   without the rare calls that lost the GIL to a background thread.
  app cpu us/span  CPU time of the app thread during the span loop / spans (thread_time).
  cpu us/span      CPU time of the whole contender process (all threads: app, worker,
                   senders) from loop start until flush returns / spans (process_time).
  gc us/span       wall time inside the cyclic garbage collector (gc.callbacks, any thread),
                   loop start until flush returns / spans. Contenders that keep spans alive
                   (queues, buffers) make every collection of the older generations longer.
  delivered %      spans counted at the sink / spans produced, after flush plus up to {mw:.0f} s
                   for stragglers. Sentry: len(spans)+1 per transaction item, minus the bridge's
                   synthesized cache.* parents (so 100% = every OTel span arrived); OTLP: spans
                   decoded from ExportTraceServiceRequest.
  peak RSS MB      ru_maxrss of the contender's own process (fresh interpreter per run).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--transactions", type=int, default=None,
                        help="transactions per run (default 2000; --quick: 200)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved repetitions (default 5; --quick: 2)")
    parser.add_argument("--json", metavar="PATH", help="also write raw runs + summary as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=200, 2 repetitions")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma list (floor and noop are always included)")
    parser.add_argument("--vary", type=int, default=0, metavar="K",
                        help="K pre-built attribute variants (client port, target, URL, cache "
                             "key differ per transaction) instead of identical transactions")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    parser.add_argument("--_port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._sink:
        sink_main()
        return 0
    transactions = args.transactions or (200 if args.quick else 2000)
    if args._child:
        child_main(args._child, args._port, transactions, args.vary)
        return 0
    repeats = args.repeats or (2 if args.quick else 5)
    wanted = {c.strip() for c in args.contenders.split(",") if c.strip()} | {"floor", "noop"}
    unknown = wanted - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    contenders = [c for c in CONTENDERS if c in wanted]

    command = shlex.join([sys.executable, *sys.argv])
    info = versions()
    print(f"command: {command}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"workload: {transactions} transactions x {SPANS_PER_TRANSACTION} spans "
          f"(1 server + 12 db + 4 http.client + 4 redis/cache), "
          + (f"{args.vary} attribute variants, " if args.vary else "identical attributes, ")
          + f"{repeats} interleaved "
          f"repetitions of {' '.join(contenders)}; each run in a fresh interpreter")
    load_start = os.getloadavg()
    print("load average at start: " + " ".join(f"{v:.2f}" for v in load_start)
          + f" ({os.cpu_count()} CPUs; other work on the machine adds noise)")

    sink = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_sink"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=child_env("sink", 0))
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        print(f"sink: http://127.0.0.1:{port} (pid {sink.pid})", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
        started = time.monotonic()
        for rep in range(1, repeats + 1):
            for name in contenders:
                result = run_child(name, port, transactions, args.vary)
                result["repetition"] = rep
                runs[name].append(result)
                if "error" in result:
                    print(f"  rep {rep} {name:<14} FAILED twice, left out: "
                          f"{result['error'][-300:]}", flush=True)
                    continue
                delivered = result["delivered_pct"]
                hooks = result.get("hooks_us")
                print(f"  rep {rep} {name:<14} app {result['app_us']:7.2f} us/span  total "
                      f"{result['total_us']:7.2f} us/span  flush {result['flush_s']:6.2f} s  "
                      f"hooks {_fmt(hooks, '.3f'):>6} us  delivered "
                      f"{_fmt(delivered, '.1f'):>5}%  peak RSS {result['peak_rss_mb']:.0f} MB  "
                      f"load {result['load_1min']:.2f}",
                      flush=True)
        elapsed = time.monotonic() - started
    finally:
        if sink.stdin is not None:
            sink.stdin.close()
        try:
            sink.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sink.kill()

    summary = summarize(runs)
    print()
    print(render_table(summary))
    print()
    print("details / noise cross-check (CPU time is far less sensitive to other load on the "
          "machine than wall time):")
    print(render_table(summary, DETAIL_COLUMNS))
    print()
    bridge = summary.get("bridge")
    if bridge is not None and bridge["over_noop_per_floor"] is not None:
        ok_total = bridge["over_noop_per_floor"] <= BRIDGE_TOTAL_TARGET
        ok_hooks = (bridge["hooks_per_floor"] or 0.0) <= BRIDGE_HOOK_TARGET
        print(f"bridge (total - noop) / floor = {bridge['over_noop_per_floor']:.2f} "
              f"(target <= {BRIDGE_TOTAL_TARGET}): {'OK' if ok_total else 'ABOVE TARGET'}")
        print(f"bridge on_start+on_end / floor = {_fmt(bridge['hooks_per_floor'], '.3f')} "
              f"(mean; median call: {_fmt(bridge['hooks_median_per_floor'], '.3f')}) "
              f"(target <= {BRIDGE_HOOK_TARGET}): {'OK' if ok_hooks else 'ABOVE TARGET'}")
        print(f"bridge app-thread overhead incl. GIL contention, (app - floor app) / floor = "
              f"{bridge['app_overhead_per_floor']:.2f}")
        print(f"bridge CPU cross-check, (cpu - noop cpu) / floor cpu = "
              f"{_fmt(bridge['cpu_over_noop_per_floor'], '.2f')}")
        digests = {r.get("bridge_src") for r in runs["bridge"] if "error" not in r}
        if len(digests) > 1:
            print(f"WARNING: otel_sentry_bridge sources changed during the run "
                  f"({len(digests)} versions: {', '.join(sorted(map(str, digests)))})")
    for name in contenders:
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            print(f"{name}: every repetition failed")
            continue
        last = good[-1]
        extra = []
        if last.get("drops"):
            extra.append(f"processor drops {last['drops']}")
        if last["sink"].get("sentry_discarded"):
            extra.append(f"client reports {last['sink']['sentry_discarded']}")
        if last["sink"].get("errors"):
            extra.append(f"sink errors {last['sink']['errors']} ({last['sink']['last_error']})")
        if not last["flush_ok"]:
            extra.append("flush returned False")
        pct = [r["delivered_pct"] for r in good if r["delivered_pct"] is not None]
        if pct and min(pct) < 100.0:
            extra.append("delivered % per repetition " + " ".join(f"{p:.1f}" for p in pct))
        if extra:
            print(f"{name} (last repetition): " + "; ".join(extra))
    print()
    print(NOTES.format(tt=BRIDGE_TOTAL_TARGET, ht=BRIDGE_HOOK_TARGET, mw=STRAGGLER_MAX_WAIT))
    print(f"wall time of all runs: {elapsed:.0f} s; load average at end: "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": command, "versions": info,
                       "config": {"transactions": transactions, "repeats": repeats,
                                  "vary": args.vary,
                                  "spans_per_transaction": SPANS_PER_TRANSACTION,
                                  "contenders": contenders},
                       "load_start": load_start, "load_end": os.getloadavg(),
                       "elapsed_s": elapsed, "summary": summary, "runs": runs}, handle,
                      indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
