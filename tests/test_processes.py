"""Process models: gunicorn pre-forked workers and ``multiprocessing`` fork children.

The bridge keeps one pipeline per process; ``os.register_at_fork`` gives a forked child fresh
queues, locks and threads, and each process flushes what it buffered when it exits. These tests
run real process trees under ``opentelemetry-instrument`` against a loopback ``SentryReceiver``
and check that every transaction arrives exactly once, from the process that produced it, with
bounded waits everywhere (a hang fails the test instead of stalling the suite).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apps import opentelemetry_instrument
from e2e_support import (
    INTERNAL_ERROR_MARKER,
    TRACEBACK_MARKER,
    assert_no_duplicates,
    bridge_env,
    free_ports,
    request_path,
    summary,
    trace_of,
)
from sentry_receiver import SentryReceiver

pytestmark = pytest.mark.e2e

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_STRIPPED_ENV_PREFIXES = ("SENTRY_", "OTEL_")

WORK_TXN = "GET /work/<int:n>"
REQUESTS = 200
CONCURRENCY = 8
#: Upper bound for gunicorn to stop after SIGTERM: its workers flush (bounded by the bridge's
#: SENTRY_BRIDGE_SHUTDOWN_TIMEOUT, 5 s by default) while the arbiter waits for them.
GUNICORN_STOP_TIMEOUT = 30.0


def child_env(receiver: SentryReceiver, service: str, **extra: str | None) -> dict[str, str]:
    """The test process's environment without SENTRY_*/OTEL_*, plus the bridge settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update(bridge_env(receiver, service, **extra))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


class Server:
    """A server process started from ``argv``; ready once ``GET /health`` answers 200."""

    def __init__(self, argv: list[str], env: Mapping[str, str], port: int, cwd: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        fd, name = tempfile.mkstemp(prefix="server-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.exit_seconds: float | None = None
        self.killed = False
        try:
            self._wait_ready(30.0)
        except BaseException:
            self.stop(5.0)
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early ({self.proc.returncode}):\n"
                                   f"{self.output()}")
            try:
                if http_get(self.base_url + "/health", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float) -> str:
        """SIGTERM; SIGKILL (and ``killed``) after ``timeout``. Returns the output."""
        if self.proc.poll() is None:
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                # its whole process group: gunicorn workers must not outlive the test
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
            self.exit_seconds = time.monotonic() - started
        output = self.output()
        self.log_path.unlink(missing_ok=True)
        return output


def assert_clean(output: str) -> None:
    assert INTERNAL_ERROR_MARKER not in output, output
    assert "internal error" not in output.lower(), output
    assert TRACEBACK_MARKER not in output, output
    assert "Exception in thread" not in output, output
    assert "Failed to auto initialize OpenTelemetry" not in output, output


# --------------------------------------------------------------------------------------------
# gunicorn: 4 pre-forked sync workers
# --------------------------------------------------------------------------------------------

GUNICORN_APP = '''\
"""Tiny Flask app for gunicorn (written by tests/test_processes.py)."""

import os
import time

from flask import Flask, jsonify
from opentelemetry import trace

tracer = trace.get_tracer("test-processes")

# A span at import: with --preload it is created in the arbiter, which therefore has started
# the bridge's threads before it forks the workers.
with tracer.start_as_current_span("startup") as _span:
    _span.set_attribute("app.pid", os.getpid())

app = Flask(__name__)


@app.get("/health")
def health():
    return "ok"


@app.get("/work/<int:n>")
def work(n):
    trace.get_current_span().set_attribute("app.pid", os.getpid())
    with tracer.start_as_current_span("compute") as span:
        span.set_attribute("app.n", n)
        time.sleep(0.003)
    return jsonify(n=n, pid=os.getpid())
'''


def gunicorn_bin() -> Path:
    return Path(sys.executable).parent / "gunicorn"


@contextmanager
def gunicorn(
    tmp_path: Path, receiver: SentryReceiver, *, preload: bool
) -> Iterator[Server]:
    app_dir = tmp_path / "gapp"
    app_dir.mkdir()
    (app_dir / "gapp.py").write_text(GUNICORN_APP)
    (port,) = free_ports(1)
    argv = [
        str(opentelemetry_instrument()), str(gunicorn_bin()),
        "--bind", f"127.0.0.1:{port}", "--workers", "4", "--worker-class", "sync",
        "--graceful-timeout", "20", "--timeout", "30", "--no-control-socket",
        "--chdir", str(app_dir),
        *(["--preload"] if preload else []),
        "gapp:app",
    ]
    env = child_env(receiver, "gunicorn-app", OTEL_PYTHON_FLASK_EXCLUDED_URLS="health")
    server = Server(argv, env, port, app_dir)
    try:
        yield server
    finally:
        server.stop(GUNICORN_STOP_TIMEOUT)


def drive(base_url: str, count: int) -> dict[int, int]:
    """GET /work/<n> for n < count, ``CONCURRENCY`` at a time; returns n -> worker pid."""

    def one(n: int) -> tuple[int, int]:
        status, body = http_get(f"{base_url}/work/{n}")
        assert status == 200, (n, status, body[:200])
        answer = json.loads(body)
        assert answer["n"] == n
        return n, int(answer["pid"])

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return dict(pool.map(one, range(count)))


def booted_workers(output: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", output)}


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_gunicorn_prefork_workers_each_deliver_exactly_once(
    tmp_path: Path, preload: bool, figures: dict[str, Any]
) -> None:
    with SentryReceiver() as receiver:
        with gunicorn(tmp_path, receiver, preload=preload) as server:
            arbiter_pid = server.proc.pid  # opentelemetry-instrument execs gunicorn
            served = drive(server.base_url, REQUESTS)
            output = server.stop(GUNICORN_STOP_TIMEOUT)
        assert not server.killed, f"gunicorn did not stop within {GUNICORN_STOP_TIMEOUT} s " \
                                  f"of SIGTERM (deadlock?):\n{output}"
        assert server.proc.returncode == 0, output
        assert_clean(output)

        # Every worker flushed at exit: nothing may still be on its way, but give the
        # receiver's connection threads a moment to record the last answers.
        receiver.wait_for(
            lambda r: len([t for t in r.transactions() if t["transaction"] == WORK_TXN])
            >= REQUESTS, timeout=5.0)
        txns = receiver.transactions()
        listing = summary(receiver)
        receiver.assert_no_problems()
        assert receiver.auth_failures == []
        assert receiver.rejected == []
        assert_no_duplicates(txns)

        work = [t for t in txns if t["transaction"] == WORK_TXN]
        by_n: Counter[int] = Counter()
        delivered_pid: dict[int, int] = {}
        for txn in work:
            path = request_path(txn)
            assert path is not None and path.startswith("/work/"), txn.get("request")
            n = int(path.rsplit("/", 1)[1])
            by_n[n] += 1
            delivered_pid[n] = trace_of(txn)["data"]["app.pid"]
        missing = sorted(set(range(REQUESTS)) - set(by_n))
        repeated = {n: c for n, c in by_n.items() if c != 1}
        assert not missing, f"{len(missing)} requests never arrived: {missing[:20]}"
        assert not repeated, f"requests reported more than once: {repeated}"
        assert set(by_n) == set(range(REQUESTS))
        # ... and each from the worker that served it.
        wrong = {n: (served[n], delivered_pid[n]) for n in served if delivered_pid[n] != served[n]}
        assert not wrong, wrong

        served_pids = set(served.values())
        assert len(served_pids) >= 2, f"only {served_pids} served: no multi-process coverage"
        assert arbiter_pid not in served_pids
        workers = booted_workers(output)
        assert served_pids <= workers, (served_pids, workers)

        startups = [t for t in txns if t["transaction"] == "startup"]
        startup_pids = sorted(trace_of(t)["data"]["app.pid"] for t in startups)
        if preload:
            # imported once, in the arbiter, which flushed at its own exit
            assert startup_pids == [arbiter_pid], (startup_pids, arbiter_pid, listing)
        else:
            assert startup_pids == sorted(workers), (startup_pids, workers, listing)
        assert len(txns) == REQUESTS + len(startups), listing
        figures[f"processes.gunicorn.{'preload' if preload else 'fork-then-import'}"] = (
            f"{REQUESTS} requests ({CONCURRENCY} concurrent) served by {len(served_pids)} of "
            f"{len(workers)} workers: {len(work)} transactions, each once, from its worker "
            f"(+ {len(startups)} startup); gunicorn stopped {server.exit_seconds:.1f} s "
            f"after SIGTERM")


# --------------------------------------------------------------------------------------------
# multiprocessing, start method "fork"
# --------------------------------------------------------------------------------------------

MP_SCRIPT = '''\
"""multiprocessing (fork) parent and children (written by tests/test_processes.py)."""

import json
import multiprocessing
import os
import sys
import threading
import time

from opentelemetry import trace

OUT = sys.argv[1]
PREFIX = "otel-sentry-bridge-"
tracer = trace.get_tracer("test-processes")


def txn(name):
    with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as span:
        span.set_attribute("app.pid", os.getpid())
        with tracer.start_as_current_span(name + " child"):
            pass


def bridge_threads():
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith(PREFIX) and t.is_alive())


def wait_for_threads(timeout=10.0):
    """The worker and at least one sender alive (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        names = bridge_threads()
        if PREFIX + "worker" in names and any(n.startswith(PREFIX + "sender-") for n in names):
            return names
        if time.monotonic() > deadline:
            return names
        time.sleep(0.01)


def report(name, **data):
    with open(os.path.join(OUT, name + ".json"), "w") as handle:
        json.dump({"pid": os.getpid(), **data}, handle)


def child(i, how):
    inherited = bridge_threads()
    for k in range(3):
        txn(f"child-{i}-{k}")
    threads = wait_for_threads()
    report(f"child-{i}", inherited=inherited, threads=threads)
    txn(f"child-{i}-last")  # created right before the child exits
    if how == "os._exit":
        trace.get_tracer_provider().force_flush()
        os._exit(0)
    # "return": multiprocessing ends the child normally (it calls os._exit itself)


if __name__ == "__main__":
    for k in range(3):
        txn(f"parent-before-{k}")
    report("parent-before", threads=wait_for_threads())
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=child, args=(i, "return")) for i in range(4)]
    children.append(ctx.Process(target=child, args=(4, "os._exit")))
    for proc in children:
        proc.start()
    for k in range(3):
        txn(f"parent-during-{k}")
    for proc in children:
        proc.join(30)
    for k in range(3):
        txn(f"parent-after-{k}")
    report("parent-after", threads=bridge_threads(),
           exitcodes=[proc.exitcode for proc in children],
           pids=[proc.pid for proc in children])
'''


def test_multiprocessing_fork_children_and_parent_all_deliver(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    script = tmp_path / "mp_app.py"
    script.write_text(MP_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    with SentryReceiver() as receiver:
        env = child_env(receiver, "mp-app")
        proc = subprocess.run(
            [str(opentelemetry_instrument()), sys.executable, str(script), str(out)],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert_clean(output)
        reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}

        parent_pid = reports["parent-before"]["pid"]
        after = reports["parent-after"]
        assert after["exitcodes"] == [0] * 5, after
        # The parent had its worker and senders running before it forked, and still has.
        for name in ("parent-before", "parent-after"):
            threads = reports[name]["threads"]
            assert "otel-sentry-bridge-worker" in threads, (name, threads)
            assert any(t.startswith("otel-sentry-bridge-sender-") for t in threads), threads
        # Each child: no thread inherited (fork keeps only the forking thread), then its own
        # worker and senders once it created spans.
        for i in range(5):
            info = reports[f"child-{i}"]
            assert info["pid"] != parent_pid
            assert info["inherited"] == [], info
            assert "otel-sentry-bridge-worker" in info["threads"], info
            assert any(t.startswith("otel-sentry-bridge-sender-") for t in info["threads"]), info

        expected = (
            [f"parent-{when}-{k}" for when in ("before", "during", "after") for k in range(3)]
            + [f"child-{i}-{k}" for i in range(5) for k in (0, 1, 2, "last")]
        )
        receiver.wait_for(lambda r: len(r.transactions()) >= len(expected), timeout=5.0)
        txns = receiver.transactions()
        receiver.assert_no_problems()
        assert_no_duplicates(txns)
        names = Counter(t["transaction"] for t in txns)
        pid_of = {t["transaction"]: trace_of(t)["data"]["app.pid"] for t in txns}
        for name in expected:
            if name in pid_of:
                owner = parent_pid if name.startswith("parent") else \
                    reports[f"child-{name.split('-')[1]}"]["pid"]
                assert pid_of[name] == owner, (name, pid_of[name], owner)
        missing = [name for name in expected if names[name] == 0]
        extra = {name: n for name, n in names.items() if name not in expected or n != 1}
        assert not extra, extra
        assert not missing, (
            f"{len(missing)} transactions never arrived: {missing}. Children that return from "
            f"their target are ended by multiprocessing with os._exit(), which skips atexit."
        )
        from_parent = sum(1 for name in expected if name.startswith("parent"))
        figures["processes.multiprocessing_fork"] = (
            f"{len(expected)} transactions (parent: {from_parent}, {len(after['pids'])} forked "
            f"children: {(len(expected) - from_parent) // len(after['pids'])} each) arrived, "
            f"each once, from the process that made it")
