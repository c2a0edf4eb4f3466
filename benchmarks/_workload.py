"""The span workload and the contenders (tracer providers) shared by the scenarios.

Workload (identical for every contender): transactions of 21 spans, built with the OpenTelemetry
span API only (attribute dicts are pre-built): one SERVER root with flask-like attributes (old
semantic conventions), 12 postgresql CLIENT children, 4 ``http.client`` CLIENT children and 4
redis children carrying the attributes the bridge's redis hooks set. Every span is started with
``start_as_current_span`` like the contrib instrumentations do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SPANS_PER_TRANSACTION = 21
ENV_PREFIXES_STRIPPED = ("SENTRY_", "OTEL_", "_SENTRY_BRIDGE_")

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


def attribute_variants(vary: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Pre-built ``(root attrs, child attrs)`` per transaction.

    ``vary == 0``: one variant, the fixed dicts above (every transaction identical).
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


class Workload:
    """The transaction loop, closed over pre-built tracers and attribute dicts.

    ``workload(n)`` runs n transactions of 21 spans; ``workload.spans(n)`` produces exactly n
    spans: n // 21 full transactions, then one transaction with the remaining spans (a root
    and the first children of the plan).
    """

    def __init__(self, provider: Any, vary: int = 0) -> None:
        from opentelemetry.trace import SpanKind

        tracers = {
            scope: provider.get_tracer(scope, INSTR_VERSION,
                                       schema_url="https://opentelemetry.io/schemas/1.11.0")
            for scope in (SCOPE_FLASK, SCOPE_SQLALCHEMY, SCOPE_REQUESTS, SCOPE_REDIS)
        }
        self.server = tracers[SCOPE_FLASK]
        plan = [(tracers[c.scope], c.name, SpanKind[c.kind]) for c in child_plan()]
        self.variants = [(root, list(zip(plan, children, strict=True)))
                         for root, children in attribute_variants(vary)]
        self.server_kind = SpanKind.SERVER

    def __call__(self, transactions: int, children: int = SPANS_PER_TRANSACTION - 1) -> None:
        variants = self.variants
        count = len(variants)
        server, server_kind = self.server, self.server_kind
        for i in range(transactions):
            root_attrs, kids = variants[i % count]
            if children < len(kids):
                kids = kids[:children]
            with server.start_as_current_span(ROOT_NAME, kind=server_kind,
                                              attributes=root_attrs):
                for (tracer, name, kind), attrs in kids:
                    with tracer.start_as_current_span(name, kind=kind, attributes=attrs):
                        pass

    def spans(self, total: int) -> tuple[int, int]:
        """Produce exactly ``total`` spans; returns (transactions, spans in the last one)."""
        full, rest = divmod(total, SPANS_PER_TRANSACTION)
        self(full)
        if rest:
            self(1, children=rest - 1)
        return full + (1 if rest else 0), rest or SPANS_PER_TRANSACTION


def make_workload(provider: Any, vary: int = 0) -> Workload:
    """The workload bound to ``provider`` (callable: ``workload(transactions)``)."""
    return Workload(provider, vary)


@dataclass
class Contender:
    """A configured tracer provider plus how to flush it."""

    provider: Any
    processor: Any | None
    flush: Callable[[float], bool]  # timeout in seconds
    sink_key: str | None  # which sink counter holds its delivered spans
    drops: Callable[[], dict[str, int]] | None = None


#: Contenders of the ``unsampled`` scenario: the bridge's sampler at rate 1, at rate 0 keeping
#: unsampled roots recording (for their errors), and at rate 0 dropping them at the sampler.
BRIDGE_SAMPLED_VARIANTS: dict[str, dict[str, str]] = {
    "bridge_sampler": {"SENTRY_TRACES_SAMPLE_RATE": "1.0"},
    "bridge_rate0": {"SENTRY_TRACES_SAMPLE_RATE": "0"},
    "bridge_rate0_drop": {"SENTRY_TRACES_SAMPLE_RATE": "0",
                          "SENTRY_BRIDGE_UNSAMPLED_ERRORS": "false"},
}


def make_contender(name: str, port: int) -> Contender:
    """Build the tracer provider of one contender (in the child process).

    ``floor`` (no processor), ``noop`` (SimpleSpanProcessor + no-op exporter), ``otlp``
    (BatchSpanProcessor + OTLP/HTTP to the sink), ``sentry_legacy`` (sentry-sdk's deprecated
    ``SentrySpanProcessor`` with sentry-sdk's default transport, DSN -> the sink), ``bridge``
    (``otel_sentry_bridge.SentrySpanProcessor``, configured by the environment: SENTRY_DSN).
    """
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

    def flush_provider(timeout: float) -> bool:
        return bool(provider.force_flush(int(timeout * 1000)))

    if name == "floor":
        return Contender(provider, None, flush_provider, None)
    if name == "noop":

        class _Noop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

            def shutdown(self) -> None:
                return None

        processor: Any = SimpleSpanProcessor(_Noop())
        provider.add_span_processor(processor)
        return Contender(provider, processor, flush_provider, None)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30)
        processor = BatchSpanProcessor(
            exporter, max_queue_size=65_536, max_export_batch_size=512
        )
        provider.add_span_processor(processor)
        return Contender(provider, processor, flush_provider, "otlp_spans")
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

        def flush_legacy(timeout: float) -> bool:
            sentry_sdk.flush(timeout=timeout)
            return True

        return Contender(provider, processor, flush_legacy, "sentry_otel_spans")
    if name in ("bridge", *BRIDGE_SAMPLED_VARIANTS):
        from otel_sentry_bridge import SentrySpanProcessor

        if name != "bridge":  # the bridge's sampler; the rate comes from child_env
            from otel_sentry_bridge.sampler import SentryBridgeSampler

            provider.sampler = SentryBridgeSampler()

        bridge = SentrySpanProcessor()
        if bridge.pipeline is None:
            raise SystemExit("bridge is disabled: SENTRY_DSN not seen by the child")
        provider.add_span_processor(bridge)
        pipeline = bridge.pipeline

        def drops() -> dict[str, int]:
            return {f"{r}/{c}": q for (r, c), q in pipeline.drops.totals.items()}

        sink_key = "sentry_otel_spans" if name in ("bridge", "bridge_sampler") else None
        return Contender(provider, bridge, flush_provider, sink_key, drops)
    raise SystemExit(f"unknown contender {name!r}")


def child_env(name: str, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without SENTRY_*/OTEL_* (plus the bridge's DSN -> ``port``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES_STRIPPED)}
    env["PYTHONUNBUFFERED"] = "1"
    if name in ("bridge", *BRIDGE_SAMPLED_VARIANTS):
        env["SENTRY_DSN"] = f"http://key@127.0.0.1:{port}/1"
        env.update(BRIDGE_SAMPLED_VARIANTS.get(name, {}))
    env.update(extra or {})
    return env


def proc_status_mb() -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of this process from /proc/self/status, in MB (MiB)."""
    out = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def current_rss_mb() -> float:
    """Current resident set size (MB) from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


def source_digest(package: str) -> str:
    """Short hash of a package's .py sources (to spot edits between repetitions)."""
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
