"""``make demo``: two instrumented Flask services, a Celery worker, a monitored job, what
reaches Sentry.

Needs nothing but this repository's virtualenv: no Sentry account, no Docker, no Redis. It

1. starts ``examples/inventory/app.py`` and ``examples/shop/app.py`` under
   ``opentelemetry-instrument`` on free ports of 127.0.0.1, each on its own fresh SQLite file,
   with the bridge writing every envelope to ``.demo-envelopes/<service>/``, and a Celery worker
   (``examples/shop/tasks.py``, service ``shop-worker``) the same way; its broker is kombu's
   SQLAlchemy transport over a SQLite file, no result backend;
2. sends a handful of requests to the shop (which calls the inventory over HTTP); ``POST
   /orders`` enqueues ``shop.send_confirmation``, which the worker runs in the request's trace;
3. runs the monitored job ``examples/jobs/nightly_report.py`` once (Sentry Crons check-ins);
4. stops the three with SIGTERM (at exit the bridge flushes, and OpenTelemetry exports metrics once
   more);
5. reads the envelope folders back and prints every transaction as a waterfall, grouped per
   request (the task's under ``POST /orders``), then the job's transaction and check-ins.
   Start-up work (table creation, seeding, /health polling) is hidden unless ``--all``;
6. lists the metric items (``trace_metric``) the apps' OpenTelemetry metrics became through
   ``OTEL_METRICS_EXPORTER=sentry_bridge``: the shop's own (a cache hit/miss counter and a
   queue-depth gauge) one by one, the instrumentations' (HTTP durations...) summed up unless
   ``--all``.

Your own ``SENTRY_DSN``, ``SENTRY_SPOTLIGHT``, ``SENTRY_ENVIRONMENT`` and ``SENTRY_RELEASE`` are
passed on when set: the same envelopes then also go to Sentry and/or Spotlight.

Run from anywhere: ``python examples/demo.py [--all] [--width N]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from otel_sentry_bridge import console
from otel_sentry_bridge.config import mask_dsn

REPO = Path(__file__).resolve().parent.parent
ENVELOPE_ROOT = REPO / ".demo-envelopes"
APPS = {
    "inventory": REPO / "examples" / "inventory" / "app.py",
    "shop": REPO / "examples" / "shop" / "app.py",
}
SHOP_DIR = REPO / "examples" / "shop"
JOB = REPO / "examples" / "jobs" / "nightly_report.py"
WORKER = "shop-worker"  # the Celery worker's service name
JOB_SERVICE = "nightly-report"
CELERY_QUEUE = "shop"
TASK_NAME = "shop.send_confirmation"
#: Passed through from your environment when set (then envelopes also reach Sentry/Spotlight).
PASS_THROUGH = ("SENTRY_DSN", "SENTRY_SPOTLIGHT", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE")
#: Not inherited: they would change what the demo shows (your SHOP_DATABASE_URL, OTEL_*...).
STRIPPED_PREFIXES = ("SENTRY_", "OTEL_", "SHOP_", "INVENTORY_")

STARTUP_TIMEOUT = 60.0  # opentelemetry-instrument start-up can take seconds on a cold machine
REQUEST_TIMEOUT = 15.0
TASK_TIMEOUT = 30.0  # the SQLAlchemy transport polls its table every second
JOB_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0  # the bridge's flush at exit is bounded by 5 s (SENTRY_BRIDGE_SHUTDOWN_TIMEOUT)
MATCH_SLACK = 0.05  # seconds of clock slack when matching transactions to the requests we sent
METRIC_EXPORT_INTERVAL_MS = 1000

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The demo process itself is not instrumented; these requests never use a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DemoError(Exception):
    """A failure with a message meant for the user."""


@dataclass
class App:
    """One example app running under opentelemetry-instrument."""

    name: str
    port: int
    envelope_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return []
        return [_ANSI.sub("", line) for line in text.splitlines()]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:]) or "(no output)"

    def log_head(self, lines: int = 15) -> str:
        """Start-up problems (e.g. "Failed to auto initialize OpenTelemetry") come first."""
        return "\n".join(self.log_lines()[:lines]) or "(no output)"


@dataclass
class Sent:
    """One request the demo sent."""

    number: int
    method: str
    path: str
    note: str
    status: int = 0
    started: float = 0.0
    ended: float = 0.0
    error: str | None = None
    transactions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


# The requests: (method, path, JSON body, what the shop does).
SCRIPT: list[tuple[str, str, Any, str]] = [
    ("GET", "/products", None, "one SELECT"),
    ("GET", "/products/1", None, "SELECT, then GET inventory /stock/1: one trace, two services"),
    ("GET", "/products/1", None,
     "the same again: a cache hit (the shop's in-process cache; the demo has no Redis)"),
    ("GET", "/products/999", None, "unknown product: 404"),
    ("POST", "/orders", {"product_id": 1, "quantity": 2},
     "SELECT + INSERT in one DB transaction, then POST inventory /reserve; "
     "set_measurement(\"order.items\", 2)"),
    ("GET", "/search?q=mug", None,
     "SELECT ... LIKE; the query string (q=mug) is not sent by default"),
    ("GET", "/fail", None,
     "counts orders, then raises RuntimeError: 500 and an error event with breadcrumbs"),
]


# ----------------------------------------------------------------------------- helpers
def free_port(taken: set[int]) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (and not in ``taken``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise DemoError("could not find a free TCP port on 127.0.0.1")


def send(method: str, url: str, body: Any = None, timeout: float = REQUEST_TIMEOUT) -> int:
    """Send one request; returns the HTTP status (error statuses included)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read()
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        with err:
            err.read()
            return err.code


def instrument_command() -> Path:
    """``opentelemetry-instrument`` next to this interpreter (no resolve: venv symlinks)."""
    path = Path(sys.executable).parent / "opentelemetry-instrument"
    if not path.exists():
        raise DemoError(
            f"{path} not found. Run `make demo` (it creates .venv with everything needed), "
            "or install requirements/test.txt and this package into the active environment."
        )
    return path


def child_environment(app: App, inventory_url: str, db_dir: Path) -> dict[str, str]:
    """The environment of one app (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    for key in PASS_THROUGH:
        value = os.environ.get(key, "").strip()
        if value:
            env[key] = value
    no_proxy = ",".join(filter(None, (os.environ.get("NO_PROXY"), "127.0.0.1,localhost")))
    env.update({
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": no_proxy,  # the shop's requests -> inventory call stays on loopback
        "no_proxy": no_proxy,
        "OTEL_SERVICE_NAME": app.name,
        # opentelemetry-distro (often installed next to opentelemetry-instrument) defaults
        # every exporter to OTLP; without an OTLP exporter package start-up then fails and the
        # app runs uninstrumented, and with one it sends to a collector on localhost:4317. The
        # bridge is a span processor, not an exporter: "none" leaves it as the only destination.
        # (OTEL_PYTHON_DISTRO=sentry_bridge + OTEL_PYTHON_CONFIGURATOR=sentry_bridge also work.)
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        # Metrics go through the bridge's exporter (docs/metrics.md) as Sentry trace metrics,
        # exported every second (default 60 s) and once more at exit.
        "OTEL_METRICS_EXPORTER": "sentry_bridge",
        "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_EXPORT_INTERVAL_MS),
        # An envelope folder counts as a destination: no SENTRY_DSN needed.
        "SENTRY_BRIDGE_ENVELOPE_DIR": str(app.envelope_dir),
        # Send a transaction 0.2 s after its root span ends (default 1 s).
        "SENTRY_BRIDGE_LATE_SPAN_GRACE": "0.2",
    })
    if app.name in ("shop", WORKER, JOB_SERVICE):
        env["SHOP_DATABASE_URL"] = f"sqlite:///{db_dir / 'shop.db'}"
        # kombu's SQLAlchemy transport: the queue is a table of a SQLite file (no Redis/RabbitMQ)
        env["SHOP_CELERY_BROKER"] = f"sqla+sqlite:///{db_dir / 'broker.db'}"
        env["SHOP_CELERY_QUEUE"] = CELERY_QUEUE
    if app.name == "shop":
        env["SHOP_PORT"] = str(app.port)
        env["SHOP_INVENTORY_URL"] = inventory_url
        env["SHOP_MEMORY_CACHE"] = "1"  # no Redis here: cache products in the shop's process
    elif app.name == "inventory":
        env["INVENTORY_PORT"] = str(app.port)
        env["INVENTORY_DATABASE_URL"] = f"sqlite:///{db_dir / 'inventory.db'}"
    return env


def command(app: App) -> tuple[list[str], Path]:
    """What runs under ``opentelemetry-instrument`` for ``app``, and in which folder."""
    if app.name == WORKER:  # -l info: its "ready." line is what wait_worker() waits for
        return [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo",
                "--concurrency=1", "--without-heartbeat", "--without-gossip", "--without-mingle",
                "-Q", CELERY_QUEUE, "-l", "info"], SHOP_DIR
    if app.name == JOB_SERVICE:
        return [sys.executable, str(JOB)], REPO
    return [sys.executable, str(APPS[app.name])], REPO


def start(app: App, env: Mapping[str, str], instrument: Path) -> int:
    """Start one app (its output goes to ``app.log_path``); returns its process id."""
    argv, cwd = command(app)
    app.log = open(app.log_path, "wb")  # noqa: SIM115 (closed in stop())
    app.proc = subprocess.Popen(
        [str(instrument), *argv], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=app.log, stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C in the terminal reaches the demo only; we stop them
    )
    return app.proc.pid


def wait_healthy(apps: list[App], timeout: float) -> None:
    """Poll ``GET /health`` of every app until it answers 200."""
    deadline = time.monotonic() + timeout
    pending = list(apps)
    while pending:
        for app in list(pending):
            assert app.proc is not None
            if app.proc.poll() is not None:
                raise DemoError(
                    f"{app.name} exited with code {app.proc.returncode} during start-up. "
                    f"Last lines of {rel(app.log_path)}:\n{indent(app.log_tail())}"
                )
            try:
                if send("GET", app.base_url + "/health", timeout=1.0) == 200:
                    pending.remove(app)
            except (OSError, http.client.HTTPException):
                pass
        if pending and time.monotonic() > deadline:
            names = ", ".join(a.name for a in pending)
            tails = "\n".join(f"{a.name} ({rel(a.log_path)}):\n{indent(a.log_tail())}"
                              for a in pending)
            raise DemoError(f"{names} did not answer GET /health within {timeout:g} s.\n{tails}")
        if pending:
            time.sleep(0.1)


def wait_log(app: App, pattern: str, timeout: float, what: str) -> None:
    """Wait until a line of ``app``'s output matches ``pattern`` (e.g. the worker's "ready.")."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while not any(regex.search(line) for line in app.log_lines()):
        assert app.proc is not None
        if app.proc.poll() is not None:
            raise DemoError(
                f"{app.name} exited with code {app.proc.returncode} before {what}. "
                f"Last lines of {rel(app.log_path)}:\n{indent(app.log_tail())}"
            )
        if time.monotonic() > deadline:
            raise DemoError(f"{app.name}: no {what} within {timeout:g} s. Last lines of "
                            f"{rel(app.log_path)}:\n{indent(app.log_tail())}")
        time.sleep(0.1)


def run_job(job: App, env: Mapping[str, str], instrument: Path) -> int:
    """Run the monitored job once, to the end; returns its exit code."""
    start(job, env, instrument)
    assert job.proc is not None
    try:
        code = job.proc.wait(JOB_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise DemoError(f"{job.name} did not finish within {JOB_TIMEOUT:g} s. Last lines of "
                        f"{rel(job.log_path)}:\n{indent(job.log_tail())}") from exc
    finally:
        stop(job, STOP_TIMEOUT)
    return code


def stop(app: App, timeout: float) -> None:
    """SIGTERM (the apps exit through sys.exit, so the bridge flushes), then SIGKILL."""
    proc = app.proc
    if proc is not None and proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {app.name} did not exit within {timeout:g} s after SIGTERM; killing it",
                  file=sys.stderr)
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    if app.log is not None:
        app.log.close()
        app.log = None


def kill(app: App) -> None:
    """Last resort in ``finally``: make sure no child outlives the demo."""
    proc = app.proc
    if proc is not None and proc.poll() is None:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    if app.log is not None:
        app.log.close()
        app.log = None


def shown_dsn(dsn: str) -> str:
    """The DSN with its key masked (never the key, even for a malformed DSN)."""
    try:
        return mask_dsn(dsn) or ""
    except ValueError:
        return "<malformed DSN>"


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


@contextmanager
def temporary_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="otel-sentry-bridge-demo-") as name:
        yield Path(name)


# ----------------------------------------------------------------------------- reading back
def read_items(app: App, wanted: str) -> tuple[list[dict[str, Any]], int]:
    """Items of one type (``transaction``, ``event``) in one app's envelope folder, and the
    number of unreadable files."""
    found: list[dict[str, Any]] = []
    bad = 0
    if not app.envelope_dir.is_dir():
        return found, bad
    for path in console.envelope_files([app.envelope_dir]):
        try:
            found.extend(p for kind, p in console.read_items(path) if kind == wanted)
        except (OSError, ValueError) as exc:
            bad += 1
            print(f"warning: cannot read {rel(path)}: {exc}", file=sys.stderr)
    return found, bad


def read_metric_items(app: App) -> tuple[list[dict[str, Any]], int]:
    """The entries of every ``trace_metric`` item in one app's envelope folder."""
    payloads, bad = read_items(app, "trace_metric")
    entries = [entry for payload in payloads
               for entry in (payload.get("items") if isinstance(payload.get("items"), list)
                             else [])
               if isinstance(entry, dict)]
    return entries, bad


def own_metric(app_name: str, item: Mapping[str, Any]) -> bool:
    """The app's own metrics are named after it (``shop.*``); the rest are instrumentations'."""
    return str(item.get("name", "")).startswith(app_name + ".")


def base_metric_name(item: Mapping[str, Any]) -> str:
    """``http.server.duration`` for the ``.count``/``.sum``/``.min``/``.max`` of a histogram."""
    name = str(item.get("name", ""))
    attributes = item.get("attributes")
    kind = attributes.get("otel.metric.kind") if isinstance(attributes, Mapping) else None
    if isinstance(kind, Mapping) and kind.get("value") == "histogram":
        return name.rsplit(".", 1)[0] + ".*"
    return name


def show_metrics(
    metrics: list[tuple[str, dict[str, Any]]], notes: Mapping[str, str], width: int,
    color: bool, show_all: bool,
) -> None:
    """The metric section: own items one by one, the instrumentations' summed up (or all)."""
    rule = "-" * width
    own = [(name, item) for name, item in metrics if own_metric(name, item)]
    other = [(name, item) for name, item in metrics if not own_metric(name, item)]
    print(rule)
    print(f"Metrics: {len(metrics)} trace_metric items (OTEL_METRICS_EXPORTER=sentry_bridge, "
          f"exported every {METRIC_EXPORT_INTERVAL_MS / 1000:g} s and at exit)")
    print(rule)
    print(textwrap.fill(
        "service, name, type, value, attributes, and the trace the value was recorded in (when "
        "OpenTelemetry kept an exemplar: counted inside a request; a gauge read by a callback "
        "has none):", width))
    shown = own + (other if show_all else [])
    if shown:
        print(console.render_metric_items([item for _, item in shown], width, color=color,
                                          labels=[name for name, _ in shown], trace_notes=notes))
    if other and not show_all:
        names = sorted({base_metric_name(item) for _, item in other})
        print(textwrap.fill(
            f"+ {len(other)} items of the instrumentations' metrics, not listed (--all lists "
            f"them): {', '.join(names)}", width, initial_indent="  ", subsequent_indent="    "))
    print()


def queue_note(event: Mapping[str, Any]) -> str | None:
    """What a task transaction's ``queue.process`` span says about its message."""
    for span in event.get("spans") or ():
        data = span.get("data") if isinstance(span, Mapping) else None
        if not isinstance(data, Mapping) or span.get("op") != "queue.process":
            continue
        latency = data.get("messaging.message.receive.latency")
        parts = [f"queue {data.get('messaging.destination.name')!s}",
                 f"message {str(data.get('messaging.message.id'))[:8]}..",
                 f"{data.get('messaging.message.body.size')} bytes",
                 f"retries {data.get('messaging.message.retry.count')}"]
        if isinstance(latency, (int, float)):
            parts.append(f"receive latency {console.format_ms(latency / 1000).strip()} (enqueued "
                         "by the shop -> started by the worker; the SQLAlchemy transport polls "
                         "every second)")
        return "queue.process: " + ", ".join(parts)
    return None


def check_in_order(payload: Mapping[str, Any]) -> int:
    """in_progress before the final status (the files' order is not the sending order)."""
    return 0 if payload.get("status") == "in_progress" else 1


def show_job(
    transactions: list[dict[str, Any]], check_ins: list[dict[str, Any]],
    errors: list[dict[str, Any]], width: int, color: bool,
) -> None:
    """The monitored job: its transaction(s), then its check-ins (Sentry Crons)."""
    rule = "-" * width
    print(rule)
    print(f"Monitored job: {rel(JOB)}  |  @monitor(\"nightly-report\", schedule=\"0 3 * * *\", "
          "max_runtime=10): a check-in when it starts and one when it ends, in the run's trace")
    print(rule)
    for event in sorted(transactions, key=start_of):
        print(console.render_transaction(event, width, color=color))
        print()
        for error in errors:
            if trace_id_of(error) == trace_id_of(event):
                print(console.render_error(error, width, color=color))
                print()
    print(f"{len(check_ins)} check-ins (check_in items), linked to the trace of the run above:")
    print(console.render_check_ins(sorted(check_ins, key=check_in_order), width, color=color))
    print()


def start_of(event: Mapping[str, Any]) -> float:
    value = console.timestamp(event.get("start_timestamp"))
    return value if value is not None else 0.0


def trace_id_of(event: Mapping[str, Any]) -> str:
    contexts = event.get("contexts")
    trace = contexts.get("trace") if isinstance(contexts, Mapping) else None
    value = trace.get("trace_id") if isinstance(trace, Mapping) else None
    return str(value or "")


def op_of(event: Mapping[str, Any]) -> str:
    contexts = event.get("contexts")
    trace = contexts.get("trace") if isinstance(contexts, Mapping) else None
    return str(trace.get("op") or "") if isinstance(trace, Mapping) else ""


def service_of(event: Mapping[str, Any]) -> str:
    contexts = event.get("contexts")
    otel = contexts.get("otel") if isinstance(contexts, Mapping) else None
    resource = otel.get("resource") if isinstance(otel, Mapping) else None
    name = resource.get("service.name") if isinstance(resource, Mapping) else None
    return str(name or "?")


def cross_service_link(event: Mapping[str, Any], group: list[dict[str, Any]]) -> str | None:
    """``<- continues ...`` when ``event``'s parent span is a span of another transaction."""
    contexts = event.get("contexts")
    trace = contexts.get("trace") if isinstance(contexts, Mapping) else None
    parent = trace.get("parent_span_id") if isinstance(trace, Mapping) else None
    if not parent:
        return None
    for other in group:
        for span in other.get("spans") or ():
            if isinstance(span, Mapping) and span.get("span_id") == parent:
                return (f"(continues the trace from {service_of(other)}: its parent is the "
                        f"{span.get('op')} span {parent[:8]}.. above)")
    return None


def closest_request(sent: list[Sent], begin: float) -> Sent | None:
    """The request in flight at ``begin`` (or the nearest one within ``MATCH_SLACK``)."""
    best: Sent | None = None
    best_gap = MATCH_SLACK
    for item in sent:
        gap = max(item.started - begin, begin - item.ended, 0.0)
        if gap <= best_gap:
            best, best_gap = item, gap
            if gap == 0.0:
                break
    return best


def assign(sent: list[Sent], transactions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Attach each trace (all transactions sharing a trace id) to the request that caused it.

    A trace belongs to a request when its shop ``http.server`` transaction started while that
    request was in flight. Returns the traces that belong to no request (start-up, /health).
    """
    traces: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(transactions, key=start_of):
        traces.setdefault(trace_id_of(event), []).append(event)
    unmatched: list[list[dict[str, Any]]] = []
    for events in traces.values():
        entry = next((e for e in events if op_of(e) == "http.server"
                      and service_of(e) == "shop"), None)
        owner = None
        if entry is not None and not str(entry.get("transaction", "")).endswith("/health"):
            owner = closest_request(sent, start_of(entry))
        if owner is None:
            unmatched.append(events)
        else:
            owner.transactions.extend(events)
    return unmatched


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the shop + inventory example under opentelemetry-instrument and show "
                    "the Sentry transactions the bridge produced (no Sentry account needed).")
    parser.add_argument("--all", action="store_true",
                        help="also show start-up transactions (schema, seeding, /health polls) "
                             "and the instrumentations' metric items")
    parser.add_argument("--width", type=int, default=None,
                        help="output width (default: the terminal's, 80..140)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    instrument = instrument_command()
    width = args.width or max(80, min(140, shutil.get_terminal_size((100, 24)).columns))
    color = console.use_color(sys.stdout)
    rule = "-" * width

    try:  # start clean: only this run's envelopes are read back
        shutil.rmtree(ENVELOPE_ROOT, ignore_errors=False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DemoError(f"cannot clean {ENVELOPE_ROOT}: {exc}") from exc
    ENVELOPE_ROOT.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    apps = [
        App(name, free_port(taken), ENVELOPE_ROOT / name, ENVELOPE_ROOT / f"{name}.log")
        for name in ("inventory", "shop")
    ]
    inventory, shop = apps
    worker = App(WORKER, 0, ENVELOPE_ROOT / WORKER, ENVELOPE_ROOT / f"{WORKER}.log")
    job = App(JOB_SERVICE, 0, ENVELOPE_ROOT / JOB_SERVICE, ENVELOPE_ROOT / f"{JOB_SERVICE}.log")
    dsn = os.environ.get("SENTRY_DSN", "").strip()
    spotlight = os.environ.get("SENTRY_SPOTLIGHT", "").strip()

    print("otel-sentry-bridge demo: shop + inventory + a Celery worker under "
          "opentelemetry-instrument, then a monitored job")
    print(f"  envelopes -> {rel(ENVELOPE_ROOT)}/<service>/"
          + (f", Sentry ({shown_dsn(dsn)})" if dsn else "")
          + (f", Spotlight ({spotlight})" if spotlight else ""))
    sent: list[Sent] = []
    with temporary_folder() as db_dir:
        try:
            for app in apps:
                env = child_environment(app, inventory.base_url, db_dir)
                pid = start(app, env, instrument)
                print(f"  started {app.name:<9} on {app.base_url}  (pid {pid}, output in "
                      f"{rel(app.log_path)})")
            pid = start(worker, child_environment(worker, inventory.base_url, db_dir),
                        instrument)
            print(f"  started {worker.name} (Celery, queue {CELERY_QUEUE!r}, broker "
                  f"sqla+sqlite:///<tmp>/broker.db; pid {pid}, output in "
                  f"{rel(worker.log_path)})")
            wait_healthy(apps, STARTUP_TIMEOUT)
            wait_log(worker, r"celery@\S+ ready\.", STARTUP_TIMEOUT, "\"ready.\" line")
            print("  both answer GET /health and the worker is ready; sending requests to the "
                  "shop:")
            label_w = max(len(f"{method} {path}") for method, path, _, _ in SCRIPT)
            for number, (method, path, body, note) in enumerate(SCRIPT, 1):
                item = Sent(number, method, path, note)
                item.started = time.time()
                try:
                    item.status = send(method, shop.base_url + path, body)
                except (OSError, http.client.HTTPException) as exc:
                    item.error = f"{type(exc).__name__}: {exc}"
                item.ended = time.time()
                sent.append(item)
                outcome = item.error or str(item.status)
                took = console.format_ms(item.ended - item.started)
                print(f"    {number}. {item.label:<{label_w}}  -> {outcome:<3} {took:>9}")
            wait_log(worker, rf"Task {re.escape(TASK_NAME)}\[\S+\] (succeeded|failed|raised)",
                     TASK_TIMEOUT, f"{TASK_NAME} run")
            print(f"  the worker ran {TASK_NAME}; running the monitored job "
                  f"{rel(JOB)} once:")
            code = run_job(job, child_environment(job, inventory.base_url, db_dir), instrument)
            print(f"    {JOB_SERVICE} -> exit code {code} (output in {rel(job.log_path)})")
            print("  stopping the apps and the worker with SIGTERM (at exit: spans flushed, "
                  "last metric export)")
            for app in (shop, inventory, worker):
                stop(app, STOP_TIMEOUT)
        finally:
            for app in (*apps, worker, job):
                kill(app)

    transactions: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    metrics: list[tuple[str, dict[str, Any]]] = []
    unreadable = 0
    for app in (*apps, worker):
        found, bad = read_items(app, "transaction")
        transactions.extend(found)
        unreadable += bad
        errors.extend(read_items(app, "event")[0])
        metrics.extend((app.name, item) for item in read_metric_items(app)[0])
    job_transactions, bad = read_items(job, "transaction")
    unreadable += bad
    check_ins, bad = read_items(job, "check_in")
    unreadable += bad
    errors.extend(read_items(job, "event")[0])
    if not transactions:
        raise DemoError(
            f"no transaction arrived: nothing in {rel(ENVELOPE_ROOT)}/<service>/.\n"
            "The requests were answered, so the apps ran, but the bridge sent nothing. Look for "
            "an OpenTelemetry or otel-sentry-bridge message at the start of the apps' output:\n"
            + "\n".join(f"  {a.name} ({rel(a.log_path)}):\n{indent(a.log_head())}" for a in apps)
        )
    startup = assign(sent, transactions)

    print()
    for item in sent:
        outcome = item.error or str(item.status)
        print(rule)
        print(f"Request {item.number}/{len(sent)}: {item.label} -> {outcome}  |  {item.note}")
        print(rule)
        if not item.transactions:
            print("  (no transaction for this request)\n")
            continue
        for event in sorted(item.transactions, key=start_of):
            link = cross_service_link(event, item.transactions)
            if link:
                print(link)
            print(console.render_transaction(event, width, color=color))
            queue = queue_note(event)
            if queue:
                print(textwrap.fill(queue, width, initial_indent="  ", subsequent_indent="    "))
            print()
        traces = {trace_id_of(event) for event in item.transactions}
        for error in errors:
            if trace_id_of(error) in traces:
                print(console.render_error(error, width, color=color))
                print()
    hidden = sum(len(events) for events in startup)
    if args.all and startup:
        print(rule)
        print(f"Not caused by a demo request ({hidden}): start-up work and /health polling")
        print(rule)
        for events in sorted(startup, key=lambda group: start_of(group[0])):
            for event in events:
                print(console.render_transaction(event, width, color=color))
                print()

    show_job(job_transactions, check_ins, errors, width, color)

    notes = {trace_id_of(event): f"request {item.number}"
             for item in sent for event in item.transactions}
    show_metrics(metrics, notes, width, color, args.all)

    missing = [item for item in sent if not item.transactions]
    tasks = [event for event in transactions if service_of(event) == WORKER
             and op_of(event).startswith("queue.task")]
    order_traces = {trace_id_of(event) for item in sent if item.label == "POST /orders"
                    for event in item.transactions}
    task_apart = not any(trace_id_of(event) in order_traces for event in tasks)
    statuses = [str(c.get("status")) for c in sorted(check_ins, key=check_in_order)]
    no_metrics = not any(own_metric(name, item) for name, item in metrics)
    shown = len(transactions) - hidden
    print(rule)
    print(f"{len(transactions)} transactions received: {shown} from the {len(sent)} requests"
          + (f", {hidden} start-up/health ones "
             + ("shown above" if args.all else "hidden (--all shows them)") if hidden else ""))
    print(f"Raw envelopes kept in {rel(ENVELOPE_ROOT)}/<service> (shop, inventory, {WORKER}, "
          f"{JOB_SERVICE}); show them again with:")
    print(f"  python -m otel_sentry_bridge show {rel(ENVELOPE_ROOT)}")
    if dsn:
        print(f"The same envelopes were also sent to Sentry ({shown_dsn(dsn)}).")
    no_check_ins = statuses[:1] != ["in_progress"] or "ok" not in statuses
    if unreadable or missing or no_metrics or task_apart or no_check_ins:
        names = ", ".join(f"{m.number}. {m.label}" for m in missing)
        raise DemoError(
            (f"{unreadable} envelope file(s) could not be read. " if unreadable else "")
            + (f"No transaction for request(s) {names}. " if missing else "")
            + ("No metric item of the shop's own metrics arrived. " if no_metrics else "")
            + (f"No {TASK_NAME} transaction in the trace of POST /orders. "
               if task_apart else "")
            + (f"Expected the check-ins in_progress then ok, got {statuses}. "
               if no_check_ins else "")
            + f"See the logs in {rel(ENVELOPE_ROOT)}/ (<service>.log)."
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted; the apps and the worker were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
