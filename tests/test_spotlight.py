"""The bridge against a real Spotlight sidecar (npm ``@spotlightjs/spotlight``) on loopback.

tests/spotlight/server.mjs starts Spotlight's server as a library on 127.0.0.1 (its CLI would
send Spotlight's own telemetry off the machine). The bridge posts raw envelopes to
``POST /stream``; Spotlight parses them and relays them to every ``GET /stream`` reader as
server-sent events (``event: application/x-sentry-envelope``, ``data: [headers, [[item headers,
payload], ...]]``, ``id: <uuidv7>``), replaying what it buffered to a new reader first.

Needs ``node`` and ``npm``; ``npm ci`` runs in tests/spotlight when its node_modules is missing
or stale. Without them the test is skipped, except under CI=true where that is a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_sentry_bridge.config import BridgeConfig
from otel_sentry_bridge.conventions import SDK_NAME
from otel_sentry_bridge.pipeline import create_pipeline, reset_pipeline
from otel_sentry_bridge.processor import SentrySpanProcessor

SPOTLIGHT_DIR = Path(__file__).resolve().parent / "spotlight"
IN_CI = os.environ.get("CI", "").lower() == "true"
ENVELOPE_TYPE = "application/x-sentry-envelope"
NPM_CI_TIMEOUT = 600.0
READY_TIMEOUT = 20.0

SseEvent = dict[str, str]


def _unavailable(reason: str) -> NoReturn:
    """Skip, except under CI=true where a missing Spotlight is a failure."""
    if IN_CI:
        pytest.fail(f"Spotlight is required under CI=true: {reason}")
    pytest.skip(reason)


def _tail(text: str | bytes | None, lines: int = 20) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _installed_matches_pins() -> bool:
    """node_modules holds exactly the versions package.json pins (else ``npm ci`` again)."""
    modules = SPOTLIGHT_DIR / "node_modules"
    try:
        pins = json.loads((SPOTLIGHT_DIR / "package.json").read_text())
        wanted = {**pins["dependencies"], **pins.get("overrides", {})}
        for name, version in wanted.items():
            installed = json.loads((modules / name / "package.json").read_text())
            if installed.get("version") != version:
                return False
    except (OSError, ValueError, KeyError):
        return False
    return True


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with tests/spotlight's packages installed."""
    node_exe, npm_exe = shutil.which("node"), shutil.which("npm")
    if not node_exe or not npm_exe:
        _unavailable("node and npm are needed for the Spotlight test")
    if not _installed_matches_pins():
        try:
            done = subprocess.run(
                [npm_exe, "ci", "--no-audit", "--no-fund"], cwd=SPOTLIGHT_DIR,
                stdin=subprocess.DEVNULL, capture_output=True, timeout=NPM_CI_TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"npm ci in {SPOTLIGHT_DIR} did not finish: {exc}")
        if done.returncode != 0 or not _installed_matches_pins():
            _unavailable(f"npm ci in {SPOTLIGHT_DIR} failed (exit {done.returncode}):\n"
                         f"{_tail(done.stderr) or _tail(done.stdout)}")
    return node_exe


def _wait_ready(proc: subprocess.Popen[bytes], stderr: IO[bytes], timeout: float) -> int:
    """The port from server.mjs's ``READY <port>`` line."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout).decode("utf-8", "replace").strip()
    except queue.Empty:
        line = ""
    if not line.startswith("READY "):
        proc.kill()
        proc.wait(5)
        stderr.seek(0)
        pytest.fail(f"Spotlight did not start within {timeout:.0f}s (got {line!r}, exit "
                    f"{proc.returncode}):\n{_tail(stderr.read())}")
    return int(line.split()[1])


@pytest.fixture
def spotlight(node: str) -> Iterator[str]:
    """A fresh Spotlight sidecar on 127.0.0.1; yields its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "SPOTLIGHT_"))}
    with tempfile.TemporaryFile() as stderr:
        # Port 0: the OS picks a free port and READY reports it (no race for a port).
        # stdin stays open as a pipe: if this process dies, node sees EOF and exits.
        proc = subprocess.Popen(
            [node, "server.mjs", "0", "--exit-on-stdin-eof"], cwd=SPOTLIGHT_DIR, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )
        try:
            port = _wait_ready(proc, stderr, READY_TIMEOUT)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        stderr.seek(0)
        assert proc.returncode in (0, -15), _tail(stderr.read())


def _clear(base_url: str) -> None:
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("DELETE", "/clear")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"Cleared")
    finally:
        conn.close()


def read_sse(
    base_url: str, done: Callable[[list[SseEvent]], bool], timeout: float = 10.0
) -> list[SseEvent]:
    """Read ``GET /stream`` (server-sent events) until ``done(events)`` or ``timeout``.

    Spotlight first writes an empty line, then one event per envelope: ``event: <content
    type>``, ``data: <JSON>``, ``id: <uuidv7>`` and a blank line. The stream never ends by
    itself, so every read gets a socket timeout of what is left until the deadline.
    """
    parts = urlsplit(base_url)
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    events: list[SseEvent] = []
    try:
        conn.request("GET", "/stream?client=otel-sentry-bridge-tests",
                     headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        fields: dict[str, list[str]] = {}
        while (remaining := deadline - time.monotonic()) > 0:
            assert conn.sock is not None
            conn.sock.settimeout(remaining)  # no read outlives the deadline
            try:
                raw = response.readline()
            except TimeoutError:
                break
            if not raw:
                break  # the server closed the stream
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith(":"):
                continue  # comment / keep-alive
            if line:
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
                continue
            if fields:  # a blank line dispatches the event
                events.append({name: "\n".join(values) for name, values in fields.items()})
                fields = {}
                if done(events):
                    break
    finally:
        conn.close()
    return events


def transactions(events: list[SseEvent]) -> list[tuple[SseEvent, dict[str, Any], dict[str, Any]]]:
    """(SSE event, envelope headers, transaction payload) for each relayed transaction."""
    found = []
    for event in events:
        if "data" not in event:
            continue
        headers, items = json.loads(event["data"])
        for item_headers, payload in items:
            if item_headers.get("type") == "transaction":
                found.append((event, headers, payload))
    return found


@pytest.mark.e2e
def test_transaction_reaches_spotlight(spotlight: str) -> None:
    _clear(spotlight)
    pipeline = create_pipeline(BridgeConfig(spotlight=f"{spotlight}/stream", late_span_grace=0.0))
    reset_pipeline(pipeline)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SentrySpanProcessor())
    tracer = provider.get_tracer("opentelemetry.instrumentation.flask")

    route = f"/spotlight/{uuid.uuid4().hex[:12]}"
    name = f"GET {route}"
    with tracer.start_as_current_span(name, kind=SpanKind.SERVER, attributes={
            "http.method": "GET", "http.route": route, "http.status_code": 200}) as root:
        with tracer.start_as_current_span("load", kind=SpanKind.INTERNAL):
            pass
        with tracer.start_as_current_span("render", kind=SpanKind.INTERNAL):
            pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert pipeline.flush(10)
    assert pipeline.drops.total() == 0

    def arrived(events: list[SseEvent]) -> bool:
        return any(txn.get("transaction") == name for _, _, txn in transactions(events))

    events = read_sse(spotlight, arrived, timeout=10)
    relayed = [(event, headers, txn) for event, headers, txn in transactions(events)
               if txn.get("transaction") == name]
    assert len(relayed) == 1, f"transaction {name!r} not relayed by Spotlight; got {events!r}"
    event, headers, txn = relayed[0]
    assert event["event"] == ENVELOPE_TYPE
    assert event["id"] == headers["__spotlight_envelope_id"]
    assert headers["sdk"]["name"] == SDK_NAME
    assert "dsn" not in headers
    assert headers["trace"]["trace_id"] == trace_id
    assert headers["trace"]["transaction"] == name
    assert txn["contexts"]["trace"]["trace_id"] == trace_id
    assert sorted(span["description"] for span in txn["spans"]) == ["load", "render"]
