"""Concurrency: threads, thread pools and asyncio tasks produce traces at the same time.

Eight threads (released together by a barrier) and 300 asyncio tasks (on a ninth thread that
waits at the same barrier) serve "requests" through one real ``TracerProvider``. Every request
is a trace of known shape:

* an ``http.server`` root (half of them continue an upstream trace: a remote parent taken from
  a small pool of upstream trace ids, so several concurrent local roots share one trace id);
* ``db`` children (``db.system=postgresql``), an ``http.client`` call, nested ``function``
  spans;
* siblings ended out of start order and a grandchild that outlives its own parent;
* spans created on other threads: a ``ThreadPoolExecutor`` job run in a
  ``contextvars.copy_context()`` and one that ``opentelemetry.context.attach``-es the captured
  context; ``asyncio.to_thread`` and ``run_in_executor`` in the async requests;
* in the async requests, ``await asyncio.sleep(0)`` inside open spans, children in concurrent
  sub-tasks (``asyncio.gather``) and a span ended by another task, so that contexts really
  interleave.

For every span the producer records the SDK's own ``(trace_id, span_id, parent_span_id)``, the
op and description the mapping gives it, and the local root it belongs to. After a flush the
transactions captured in memory (``BridgeCapture``) must match exactly: one transaction per
local root, every span in exactly one transaction (its root's), with its trace id, parent,
op and description; nothing dropped (client reports empty) and nothing left in the buffer.

Variants: the processor alone; the processor registered twice plus an exporter (each span
reaches the pipeline twice: deduplication under concurrency); the exporter alone, fed both by a
``SimpleSpanProcessor`` and a ``BatchSpanProcessor`` (grouping without start events, each span
delivered twice at different times).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_sentry_bridge import SentrySpanExporter, SentrySpanProcessor
from otel_sentry_bridge.testing import BridgeCapture

THREADS = 8
REQUESTS_PER_THREAD = 60
TASKS = 300
REQUESTS_PER_TASK = 2
UPSTREAM_TRACES = 6

SYNC_ROUTE = "/orders/{order_id}"
ASYNC_ROUTE = "/carts/{cart_id}/checkout"
SELECT_ORDER = "SELECT id, status, total FROM orders WHERE id = %(id)s"
SELECT_ITEMS = "SELECT sku, quantity FROM order_items WHERE order_id = %(id)s"
UPDATE_ORDER = "UPDATE orders SET status = %(status)s WHERE id = %(id)s"
INSERT_AUDIT = "INSERT INTO audit_log (order_id, action) VALUES (%(id)s, %(action)s)"
SELECT_CART = "SELECT sku, quantity FROM cart_items WHERE cart_id = %(id)s"
SELECT_PRICE = "SELECT price FROM prices WHERE sku = %(sku)s"
INVENTORY_URL = "http://inventory.internal:8080/stock"

PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Expected:
    """What the bridge must send for one span."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    op: str
    description: str
    #: span id of the local root, i.e. of the transaction this span must be in
    root: str


def _hex_span(span_id: int) -> str:
    return f"{span_id:016x}"


class Recorder:
    """Expected spans, recorded by the producers from the SDK's own span contexts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: dict[str, Expected] = {}
        #: the harness checking itself: a span whose SDK parent is not the intended one
        self.harness_errors: list[str] = []

    def record(
        self,
        span: trace.Span,
        *,
        parent: trace.Span | SpanContext | None,
        root: trace.Span | None,
        op: str,
        description: str,
    ) -> None:
        assert isinstance(span, ReadableSpan)
        ctx = span.get_span_context()
        sdk_parent = span.parent
        intended = parent.get_span_context() if isinstance(parent, trace.Span) else parent
        span_id = _hex_span(ctx.span_id)
        if (sdk_parent is None) != (intended is None) or (
            sdk_parent is not None and intended is not None
            and (sdk_parent.span_id, sdk_parent.trace_id)
            != (intended.span_id, intended.trace_id)
        ):
            self.harness_errors.append(
                f"{description}: SDK parent {sdk_parent} is not the intended {intended}")
        root_id = span_id if root is None else _hex_span(root.get_span_context().span_id)
        expected = Expected(
            trace_id=f"{ctx.trace_id:032x}",
            span_id=span_id,
            parent_span_id=None if sdk_parent is None else _hex_span(sdk_parent.span_id),
            op=op,
            description=description,
            root=root_id,
        )
        with self._lock:
            assert span_id not in self.spans, "the SDK generated a span id twice"
            self.spans[span_id] = expected

    def roots(self) -> dict[str, Expected]:
        return {sid: e for sid, e in self.spans.items() if e.root == sid}


def _db_attrs(statement: str) -> dict[str, Any]:
    return {
        "db.system": "postgresql",
        "db.name": "shop",
        "db.statement": statement,
        "net.peer.name": "db.internal",
        "net.peer.port": 5432,
    }


class Shop:
    """The application: the same requests served by threads and by asyncio tasks."""

    def __init__(self, provider: TracerProvider, pool: ThreadPoolExecutor) -> None:
        self.tracer = provider.get_tracer("opentelemetry.instrumentation.flask")
        self.db_tracer = provider.get_tracer("opentelemetry.instrumentation.psycopg2")
        self.http_tracer = provider.get_tracer("opentelemetry.instrumentation.requests")
        self.app_tracer = provider.get_tracer("shop.app")
        self.pool = pool
        self.rec = Recorder()
        upstream = random.Random(1234)
        self.upstream_traces = [upstream.getrandbits(128) | 1 for _ in range(UPSTREAM_TRACES)]

    # ------------------------------------------------------------ span helpers
    def upstream(self, rng: random.Random) -> tuple[Context | None, SpanContext | None]:
        """Half of the requests continue an upstream trace (W3C ``traceparent``)."""
        if rng.random() < 0.5:
            return None, None
        trace_id = rng.choice(self.upstream_traces)
        headers = {"traceparent": f"00-{trace_id:032x}-{rng.getrandbits(64) | 1:016x}-01"}
        ctx = PROPAGATOR.extract(headers)
        remote = trace.get_current_span(ctx).get_span_context()
        assert remote.is_remote and remote.trace_id == trace_id
        return ctx, remote

    @contextmanager
    def server(
        self, method: str, route: str, path: str, rng: random.Random
    ) -> Iterator[trace.Span]:
        ctx, remote = self.upstream(rng)
        attributes: dict[str, Any] = {
            "http.method": method,
            "http.route": route,
            "http.target": path,
            "http.scheme": "http",
            "http.status_code": 200,
        }
        with self.tracer.start_as_current_span(
            f"{method} {route}", context=ctx, kind=SpanKind.SERVER, attributes=attributes
        ) as root:
            self.rec.record(root, parent=remote, root=None, op="http.server",
                            description=f"{method} {route}")
            yield root

    @contextmanager
    def query(
        self, statement: str, *, parent: trace.Span, root: trace.Span
    ) -> Iterator[trace.Span]:
        """A db span as the current span (its parent must be the current span)."""
        name = statement.split(" ", 1)[0] + " shop"
        with self.db_tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=_db_attrs(statement)
        ) as span:
            self.rec.record(span, parent=parent, root=root, op="db", description=statement)
            yield span

    @contextmanager
    def function(self, name: str, *, parent: trace.Span, root: trace.Span) -> Iterator[trace.Span]:
        with self.app_tracer.start_as_current_span(name) as span:
            self.rec.record(span, parent=parent, root=root, op="function", description=name)
            yield span

    def call_inventory(self, n: int, *, parent: trace.Span, root: trace.Span) -> None:
        url = f"{INVENTORY_URL}/{n}"
        with self.http_tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT,
            attributes={"http.method": "GET", "http.url": f"{url}?warehouse=eu",
                        "http.status_code": 200},
        ) as span:
            self.rec.record(span, parent=parent, root=root, op="http.client",
                            description=f"GET {url}")

    def out_of_order_start(self, parent: trace.Span, root: trace.Span) -> list[trace.Span]:
        """Two siblings and a grandchild, none current; end them with :meth:`end_in_order`."""
        ctx = trace.set_span_in_context(parent)
        render = self.app_tracer.start_span("render_invoice", context=ctx)
        self.rec.record(render, parent=parent, root=root, op="function",
                        description="render_invoice")
        update = self.db_tracer.start_span("UPDATE shop", context=ctx, kind=SpanKind.CLIENT,
                                           attributes=_db_attrs(UPDATE_ORDER))
        self.rec.record(update, parent=parent, root=root, op="db", description=UPDATE_ORDER)
        encode = self.app_tracer.start_span("pdf.encode",
                                            context=trace.set_span_in_context(render))
        self.rec.record(encode, parent=render, root=root, op="function",
                        description="pdf.encode")
        # End order: the later sibling first, then the grandchild's parent before it.
        return [update, render, encode]

    def audit(self, how: str, *, parent: trace.Span, root: trace.Span) -> None:
        """Runs on another thread, in a context propagated from the request."""
        assert trace.get_current_span() is parent, f"{how}: context not propagated"
        with self.query(INSERT_AUDIT, parent=parent, root=root) as insert:
            with self.function(f"audit.{how}", parent=insert, root=root):
                pass

    def audit_attached(self, ctx: Context, *, parent: trace.Span, root: trace.Span) -> None:
        token = otel_context.attach(ctx)
        try:
            self.audit("attach", parent=parent, root=root)
        finally:
            otel_context.detach(token)

    # ------------------------------------------------------------ sync request
    def handle_sync(self, n: int, rng: random.Random) -> None:
        with self.server("GET", SYNC_ROUTE, f"/orders/{n}", rng) as root:
            with self.query(SELECT_ORDER, parent=root, root=root):
                pass
            with self.function("load_order", parent=root, root=root) as load:
                with self.query(SELECT_ITEMS, parent=load, root=root):
                    pass
                self.call_inventory(n, parent=load, root=root)
            pending = self.out_of_order_start(root, root)
            copied = self.pool.submit(contextvars.copy_context().run,
                                      self.audit, "copy_context", parent=root, root=root)
            attached = self.pool.submit(self.audit_attached, otel_context.get_current(),
                                        parent=root, root=root)
            for span in pending:
                span.end()
            copied.result()
            attached.result()

    # ------------------------------------------------------------ async request
    async def price(self, sku: int, *, parent: trace.Span, root: trace.Span) -> None:
        with self.query(SELECT_PRICE, parent=parent, root=root) as select:
            await asyncio.sleep(0)
            with self.function("price.convert", parent=select, root=root):
                await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def finish_later(self, span: trace.Span) -> None:
        await asyncio.sleep(0)
        span.end()

    async def handle_async(self, n: int, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        with self.server("POST", ASYNC_ROUTE, f"/carts/{n}/checkout", rng) as root:
            await asyncio.sleep(0)
            with self.query(SELECT_CART, parent=root, root=root):
                await asyncio.sleep(0)
            with self.function("price_cart", parent=root, root=root) as pricing:
                await asyncio.gather(*(self.price(i, parent=pricing, root=root)
                                       for i in range(3)))
            stream = self.app_tracer.start_span("stream_response")
            self.rec.record(stream, parent=root, root=root, op="function",
                            description="stream_response")
            ender = asyncio.create_task(self.finish_later(stream))
            await asyncio.to_thread(self.audit, "to_thread", parent=root, root=root)
            await loop.run_in_executor(
                self.pool, contextvars.copy_context().run,
                lambda: self.audit("run_in_executor", parent=root, root=root))
            pending = self.out_of_order_start(root, root)
            for span in pending:
                await asyncio.sleep(0)
                span.end()
            await ender


def run_producers(shop: Shop) -> None:
    """Eight threads and 300 asyncio tasks at once (a producer that hangs fails the test)."""
    barrier = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(timeout=10)
                target()
            except BaseException as exc:  # re-raised on the test's thread
                errors.append(exc)
                barrier.abort()
        return run

    def thread_producer(index: int) -> Callable[[], None]:
        def produce() -> None:
            rng = random.Random(index)
            for i in range(REQUESTS_PER_THREAD):
                shop.handle_sync(index * 1000 + i, rng)
        return produce

    async def async_producers() -> None:
        go = asyncio.Event()

        async def task(index: int) -> None:
            rng = random.Random(10_000 + index)
            await go.wait()
            for i in range(REQUESTS_PER_TASK):
                await shop.handle_async(index * 1000 + i, rng)

        tasks = [asyncio.create_task(task(i)) for i in range(TASKS)]
        await asyncio.sleep(0)
        go.set()
        await asyncio.gather(*tasks)

    threads = [threading.Thread(target=guarded(thread_producer(i)), name=f"producer-{i}")
               for i in range(THREADS)]
    threads.append(threading.Thread(target=guarded(lambda: asyncio.run(async_producers())),
                                    name="producer-asyncio"))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a producer hung"
    if errors:
        raise errors[0]


def check(capture: BridgeCapture, rec: Recorder) -> None:
    """Every expected span exactly once, in its root's transaction, ids and mapping intact."""
    assert rec.harness_errors == []
    roots = rec.roots()
    assert len(roots) == THREADS * REQUESTS_PER_THREAD + TASKS * REQUESTS_PER_TASK
    txns = capture.transactions()
    problems: list[str] = []
    seen: Counter[str] = Counter()
    per_root: Counter[str] = Counter()
    for txn in txns:
        trace_ctx = txn["contexts"]["trace"]
        root_id = trace_ctx["span_id"]
        seen[root_id] += 1
        root = roots.get(root_id)
        if root is None:
            kind = "a child span" if root_id in rec.spans else "an unknown span"
            problems.append(f"transaction {txn['transaction']!r} rooted at {kind} {root_id}")
            continue
        got = (trace_ctx["trace_id"], trace_ctx.get("parent_span_id"), trace_ctx["op"],
               txn["transaction"])
        want = (root.trace_id, root.parent_span_id, root.op, root.description)
        if got != want:
            problems.append(f"transaction {root_id}: {got} != {want}")
        for span in txn["spans"]:
            span_id = span["span_id"]
            seen[span_id] += 1
            per_root[root_id] += 1
            expected = rec.spans.get(span_id)
            if expected is None:
                problems.append(f"transaction {root_id}: unknown span {span_id}")
                continue
            if expected.root != root_id:
                problems.append(f"span {span_id} ({expected.description}) is in transaction "
                                f"{root_id}, not in {expected.root}")
            got = (span["trace_id"], span["parent_span_id"], span["op"], span["description"])
            want = (expected.trace_id, expected.parent_span_id, expected.op,
                    expected.description)
            if got != want:
                problems.append(f"span {span_id}: {got} != {want}")
    missing = sorted(set(rec.spans) - set(seen))
    for span_id in missing[:10]:
        problems.append(f"lost: {rec.spans[span_id]}")
    duplicated = sorted(sid for sid, count in seen.items() if count > 1)
    for span_id in duplicated[:10]:
        problems.append(f"sent {seen[span_id]} times: {rec.spans.get(span_id, span_id)}")
    children = Counter(e.root for e in rec.spans.values() if e.root != e.span_id)
    wrong_size = [r for r in roots if per_root[r] != children[r]]
    summary = (f"{len(txns)} transactions for {len(roots)} roots, {len(missing)} spans lost, "
               f"{len(duplicated)} duplicated, {len(wrong_size)} transactions of the wrong size "
               f"({len(rec.spans)} spans produced)")
    assert not problems, summary + "\n" + "\n".join(problems[:30])
    assert len(txns) == len(roots), summary

    pipeline = capture.pipeline
    assert dict(pipeline.drops.totals) == {}
    assert [e for r in capture.client_reports() for e in r["discarded_events"]] == []
    buffer = pipeline.buffer
    assert (buffer.pending, buffer.span_count, buffer.byte_count, len(buffer.owner),
            len(buffer.waiting)) == (0, 0, 0, 0, 0), "spans left behind in the buffer"


VARIANTS = ["processor", "processor_twice_and_exporter", "exporter_only"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_concurrent_producers_lose_duplicate_and_misattribute_nothing(
    variant: str, figures: dict[str, Any]
) -> None:
    capture = BridgeCapture()
    provider = capture.tracer_provider
    own_provider: TracerProvider | None = None
    try:
        if variant == "processor_twice_and_exporter":
            provider.add_span_processor(SentrySpanProcessor())
            provider.add_span_processor(BatchSpanProcessor(
                SentrySpanExporter(), max_queue_size=100_000, schedule_delay_millis=50))
            assert capture.pipeline.processors == 2
        elif variant == "exporter_only":
            capture.pipeline.processors = 0  # only the exporters feed this pipeline
            provider = own_provider = TracerProvider(shutdown_on_exit=False)
            provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter()))
            provider.add_span_processor(BatchSpanProcessor(
                SentrySpanExporter(), max_queue_size=100_000, schedule_delay_millis=50))
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="shop-pool") as pool:
            shop = Shop(provider, pool)
            started = time.monotonic()
            run_producers(shop)
            produced_in = time.monotonic() - started
        # The worker assembled transactions while the producers ran, not only at the flush.
        assert capture.raw, "nothing was sent while the producers ran"
        assert provider.force_flush(30_000)
        check(capture, shop.rec)
        figures[f"concurrency.{variant}"] = (
            f"{len(shop.rec.spans)} spans in {len(shop.rec.roots())} transactions "
            f"({THREADS} threads x {REQUESTS_PER_THREAD} + {TASKS} tasks x "
            f"{REQUESTS_PER_TASK} requests, produced in {produced_in:.1f} s) checked: each "
            f"span once, in its root's transaction; drops {capture.pipeline.drops.total()}")
    finally:
        if own_provider is not None:
            own_provider.shutdown()
        capture.close()
