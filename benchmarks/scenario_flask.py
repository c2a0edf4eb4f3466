"""Scenario 5: latency of a real instrumented Flask + SQLAlchemy request on PostgreSQL.

Three servers run at the same time, each in its own process: gunicorn (1 gthread worker,
4 threads, keep-alive) serving the same Flask app, instrumented in code with FlaskInstrumentor and
SQLAlchemyInstrumentor (engine on PostgreSQL, psycopg2, a pool of 4):

* ``otel``   TracerProvider with the instrumentations and no processor (OTel alone)
* ``bridge`` the same + ``otel_sentry_bridge.SentrySpanProcessor`` (DSN -> the loopback sink)
* ``otlp``   the same + BatchSpanProcessor + OTLPSpanExporter (http/protobuf -> the sink)

``GET /items/<id>`` runs three queries (the item by primary key, its 5 latest reviews, the count
and average of its reviews): 4 spans per request (1 server + 3 db). The parent process is the
load generator: one keep-alive connection per server, an open-loop fixed rate (requests are
sent on a fixed schedule; moderate, so latency is measured, not throughput), batches of B
requests per server, interleaved and rotated per repetition (rep 1: A B C, rep 2: B C A, ...).
Latency = from writing the request to having read the whole response, on the client.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from _common import Target, fmt, median, percentile, wrap
from _sink import ENTRY, sink_counts
from _workload import child_env

CONTENDERS = ("otel", "bridge", "otlp")
LABELS = {"otel": "OTel alone", "bridge": "bridge", "otlp": "OTLP exporter"}
RATIO_TARGET = 1.10
DEFAULT_DB_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ITEMS = 1000
REVIEWS_PER_ITEM = 8
THREADS = 4
Q_ITEM = "SELECT id, name, price_cents, stock FROM otel_bench_items WHERE id = :id"
Q_REVIEWS = ("SELECT id, stars, body, created_at FROM otel_bench_reviews WHERE item_id = :id "
             "ORDER BY created_at DESC LIMIT 5")
Q_STATS = "SELECT count(*), avg(stars) FROM otel_bench_reviews WHERE item_id = :id"


# ------------------------------------------------------------------------- server (child)
def build_app(name: str, sink_port: int, db_url: str) -> Any:
    """The instrumented Flask app of one contender (called in the gunicorn worker)."""
    import sqlalchemy as sa
    from flask import Flask, jsonify
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": f"bench-flask-{name}"}))
    if name == "bridge":
        from otel_sentry_bridge import SentrySpanProcessor

        bridge = SentrySpanProcessor()
        if bridge.pipeline is None:
            raise SystemExit("bridge is disabled: SENTRY_DSN not seen by the server")
        provider.add_span_processor(bridge)
    elif name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{sink_port}/v1/traces")))
    elif name != "otel":
        raise SystemExit(f"unknown flask contender {name!r}")
    trace.set_tracer_provider(provider)
    engine = sa.create_engine(db_url, pool_size=THREADS, max_overflow=0)
    SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=provider)
    app = Flask(f"bench_{name}")
    FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
        app, tracer_provider=provider)
    q_item, q_reviews, q_stats = sa.text(Q_ITEM), sa.text(Q_REVIEWS), sa.text(Q_STATS)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        with engine.connect() as conn:
            row = conn.execute(q_item, {"id": item_id}).mappings().first()
            reviews = conn.execute(q_reviews, {"id": item_id}).mappings().all()
            count, stars = conn.execute(q_stats, {"id": item_id}).one()
        if row is None:
            return jsonify({"error": "not found"}), 404
        return jsonify({**row, "reviews": [{**r, "created_at": r["created_at"].isoformat()}
                                           for r in reviews],
                        "review_count": count, "stars": float(stars or 0)})

    return app


def server_main(name: str, params: dict[str, Any]) -> None:
    """Serve one contender's app with gunicorn (gthread) until SIGTERM."""
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {"bind": f"127.0.0.1:{params['listen']}", "workers": 1,
                               "worker_class": "gthread", "threads": THREADS,
                               "keepalive": 300, "timeout": 120, "graceful_timeout": 5,
                               "accesslog": None, "loglevel": "warning",
                               "proc_name": f"bench-flask-{name}"}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return build_app(name, params["sink_port"], params["db_url"])

    Server().run()


# ------------------------------------------------------------------------- parent
def setup_database(db_url: str) -> None:
    """Create and seed ``otel_bench_items`` / ``otel_bench_reviews`` (idempotent)."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(74517)"))
            conn.execute(sa.text(
                "CREATE TABLE IF NOT EXISTS otel_bench_items (id integer PRIMARY KEY, "
                "name text NOT NULL, price_cents integer NOT NULL, stock integer NOT NULL)"))
            conn.execute(sa.text(
                "CREATE TABLE IF NOT EXISTS otel_bench_reviews (id serial PRIMARY KEY, "
                "item_id integer NOT NULL, stars integer NOT NULL, body text NOT NULL, "
                "created_at timestamptz NOT NULL)"))
            conn.execute(sa.text("CREATE INDEX IF NOT EXISTS otel_bench_reviews_item "
                                 "ON otel_bench_reviews (item_id, created_at)"))
            items = conn.execute(sa.text("SELECT count(*) FROM otel_bench_items")).scalar()
            reviews = conn.execute(sa.text("SELECT count(*) FROM otel_bench_reviews")).scalar()
            if items != ITEMS or reviews != ITEMS * REVIEWS_PER_ITEM:
                conn.execute(sa.text("TRUNCATE otel_bench_items, otel_bench_reviews"))
                conn.execute(sa.text(
                    "INSERT INTO otel_bench_items SELECT i, 'item ' || i, 100 + i % 5000, i % 97 "
                    "FROM generate_series(1, :n) AS i"), {"n": ITEMS})
                conn.execute(sa.text(
                    "INSERT INTO otel_bench_reviews (item_id, stars, body, created_at) "
                    "SELECT 1 + i % :n, 1 + i % 5, 'review ' || i, "
                    "now() - make_interval(mins => i) FROM generate_series(1, :r) AS i"),
                    {"n": ITEMS, "r": ITEMS * REVIEWS_PER_ITEM})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text("ANALYZE otel_bench_items, otel_bench_reviews"))
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Client:
    """One keep-alive connection to one server; counts reconnects."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.reconnects = -1  # the first connect is not a reconnect
        self.sock: Any = None
        self.requests = 0

    def get(self, path: str) -> tuple[int, float]:
        """(status, seconds) of one GET; one retry on a fresh connection if the old one died."""
        for attempt in (0, 1):
            try:
                started = time.perf_counter()
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - started
                self.requests += 1
                if self.conn.sock is not self.sock:
                    self.sock = self.conn.sock
                    self.reconnects += 1
                return response.status, elapsed
            except (http.client.HTTPException, OSError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def drive(client: Client, count: int, rate: float, offset: int) -> dict[str, Any]:
    """``count`` requests on a fixed schedule at ``rate``/s; latencies in ms."""
    interval = 1.0 / rate
    latencies: list[float] = []
    errors = late = 0
    start = time.perf_counter()
    for k in range(count):
        due = start + k * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -interval:
            late += 1  # the previous request took longer than the schedule allowed
        status, seconds = client.get(f"/items/{1 + (offset + k) % ITEMS}")
        if status != 200:
            errors += 1
        latencies.append(seconds * 1000)
    return {"latencies_ms": latencies, "errors": errors, "late": late}


def start_servers(sink_port: int, db_url: str) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for name in CONTENDERS:
        listen = _free_port()
        params = {"sink_port": sink_port, "listen": listen, "db_url": db_url}
        cmd = [sys.executable, ENTRY, "--_child", f"flask:{name}", "--_params",
               json.dumps(params)]
        env = child_env("bridge" if name == "bridge" else name, sink_port)
        servers[name] = (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True), listen)
    return servers


def wait_ready(servers: dict[str, tuple[subprocess.Popen[bytes], int]],
               timeout: float = 60.0) -> dict[str, Client]:
    clients: dict[str, Client] = {}
    deadline = time.monotonic() + timeout
    for name, (proc, port) in servers.items():
        client = Client(port)
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{name} server exited ({proc.returncode}): {err[-1500:]}")
            try:
                status, _ = client.get("/items/1")
                if status == 200:
                    break
                raise RuntimeError(f"{name} server answered {status}")
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} server not ready after {timeout:.0f} s") from None
                client.conn.close()
                time.sleep(0.2)
        clients[name] = client
    return clients


def stop_servers(servers: dict[str, tuple[subprocess.Popen[bytes], int]]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for proc, _port in servers.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for name, (proc, _port) in servers.items():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if "Traceback" in err or "ERROR" in err:
            errors[name] = err[-1500:]
    return errors


def run(sink_port: int, db_url: str, rate: float, batch: int, repeats: int,
        warmup: int) -> dict[str, Any]:
    setup_database(db_url)
    servers = start_servers(sink_port, db_url)
    samples: dict[str, list[list[float]]] = {n: [] for n in CONTENDERS}
    meta: dict[str, dict[str, int]] = {n: {"errors": 0, "late": 0} for n in CONTENDERS}
    try:
        clients = wait_ready(servers)
        for name in CONTENDERS:
            drive(clients[name], warmup, rate, 0)
        time.sleep(1.0)
        for rep in range(repeats):
            order = CONTENDERS[rep % 3:] + CONTENDERS[:rep % 3]
            for name in order:
                out = drive(clients[name], batch, rate, rep * batch)
                samples[name].append(out["latencies_ms"])
                meta[name]["errors"] += out["errors"]
                meta[name]["late"] += out["late"]
                print(f"  rep {rep + 1} {name:<7} p50 {percentile(out['latencies_ms'], 50):6.2f}"
                      f" ms  p90 {percentile(out['latencies_ms'], 90):6.2f} ms  p99 "
                      f"{percentile(out['latencies_ms'], 99):6.2f} ms  errors {out['errors']}  "
                      f"late {out['late']}", flush=True)
                time.sleep(0.3)
        for name, client in clients.items():
            meta[name]["requests"] = client.requests
            meta[name]["reconnects"] = client.reconnects
            client.close()
        time.sleep(1.5)  # the bridge releases each request's transaction at once; let it send
    finally:
        server_errors = stop_servers(servers)
    counts = sink_counts(sink_port)
    return {"samples": samples, "meta": meta, "sink": counts, "server_errors": server_errors,
            "rate": rate, "batch": batch, "repeats": repeats, "warmup": warmup}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": raw["rate"], "batch": raw["batch"], "repeats": raw["repeats"]}
    for name in CONTENDERS:
        pooled = [v for batch in raw["samples"][name] for v in batch]
        out[name] = {"n": len(pooled), **{f"p{p}": percentile(pooled, p) for p in (50, 90, 99)},
                     "mean": sum(pooled) / len(pooled) if pooled else None,
                     "max": max(pooled, default=None),
                     "rep_p50": [percentile(b, 50) for b in raw["samples"][name]],
                     **raw["meta"][name]}
    for name in ("bridge", "otlp"):
        for p in (50, 90, 99):
            base, value = out["otel"][f"p{p}"], out[name][f"p{p}"]
            out[name][f"p{p}_ratio"] = value / base if base and value else None
        reps = zip(out[name]["rep_p50"], out["otel"]["rep_p50"], strict=True)
        out[name]["rep_p50_ratios"] = [a / b for a, b in reps if a and b]
        out[name]["rep_p50_ratio_median"] = median(out[name]["rep_p50_ratios"])
    sink = raw["sink"]
    out["bridge_transactions_at_sink"] = sink.get("sentry_transactions")
    out["otlp_spans_at_sink"] = sink.get("otlp_spans")
    out["server_errors"] = raw["server_errors"]
    return out


def report(s: dict[str, Any]) -> list[str]:
    lines = [f"GET /items/<id> (3 queries, 4 spans) at {s['rate']:.0f} req/s, {s['repeats']} "
             f"interleaved batches of {s['batch']} per server; client-side latency, pooled",
             f"{'contender':<14} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'mean ms':>8} {'p50/OTel':>9} {'p90/OTel':>9} {'p99/OTel':>9} "
             f"{'per-rep p50 ratios':>26}"]
    for name in CONTENDERS:
        c = s[name]
        ratios = " ".join(f"{r:.2f}" for r in c.get("rep_p50_ratios", []))
        lines.append(f"{LABELS[name]:<14} {c['n']:6d} {fmt(c['p50'], '.2f'):>8} "
                     f"{fmt(c['p90'], '.2f'):>8} {fmt(c['p99'], '.2f'):>8} "
                     f"{fmt(c['mean'], '.2f'):>8} {fmt(c.get('p50_ratio', 1.0), '.3f'):>9} "
                     f"{fmt(c.get('p90_ratio', 1.0), '.3f'):>9} "
                     f"{fmt(c.get('p99_ratio', 1.0), '.3f'):>9} {ratios:>26}")
    bridge = s["bridge"]
    lines.append("requests answered per server: " + ", ".join(
        f"{LABELS[n]} {s[n].get('requests', 0)} ({s[n]['errors']} errors, {s[n]['late']} sent "
        f"late, {s[n].get('reconnects', 0)} reconnects)" for n in CONTENDERS))
    lines.append(f"bridge transactions at the sink: {s['bridge_transactions_at_sink']} of "
                 f"{bridge.get('requests', 0)} requests; OTLP spans at the sink: "
                 f"{s['otlp_spans_at_sink']} (4 per request, incl. warm-up)")
    lines += wrap("How to read it: percentiles of all batches pooled (linear interpolation); "
                 "ratios = contender / OTel alone; per-rep p50 ratios use batches that ran "
                 "back to back, so they show the noise of the machine. 'sent late' = requests "
                 "that left more than one interval behind schedule (should be 0: not "
                 "saturated).")
    for name, err in s["server_errors"].items():
        lines.append(f"server {name} stderr: {err[-400:]}")
    return lines


def targets(s: dict[str, Any]) -> list[Target]:
    bridge, otel, otlp = s["bridge"], s["otel"], s["otlp"]
    ratio = bridge["p50_ratio"]
    return [Target("5 Flask+SQLAlchemy", "request p50 (p90, p99) ms",
                   f"{fmt(bridge['p50'], '.2f')} ({fmt(bridge['p90'], '.2f')}, "
                   f"{fmt(bridge['p99'], '.2f')})",
                   f"OTel {fmt(otel['p50'], '.2f')} ({fmt(otel['p90'], '.2f')}, "
                   f"{fmt(otel['p99'], '.2f')}); OTLP {fmt(otlp['p50'], '.2f')}",
                   fmt(ratio, ".3f") + "x", f"<= {RATIO_TARGET:.2f}x",
                   None if ratio is None else ratio <= RATIO_TARGET)]
