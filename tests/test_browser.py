"""Headless Chromium: the browser's pageload joins the trace of the Flask page it loaded.

tests/browser/app.py runs under ``opentelemetry-instrument`` with the bridge reporting to a
loopback ``SentryReceiver``; its pages carry Sentry's meta tags (from
``SentryMetaTagsMiddleware`` or from ``{{ sentry_meta_tags() }}`` in a Jinja template) and load
Sentry's browser SDK (``@sentry/browser`` pinned in tests/browser/package.json, installed with
``npm ci`` and bundled with esbuild by this module) that sends to the same receiver. Debian's
Chromium (``/usr/bin/chromium``) opens each page headless; nothing drives it: the SDK ends its
``pageload`` after its idle timeout and sends it, then its replay, and the test stops Chromium.

Two pages, each in its own Chromium, at once:

* ``/page?lifecycle=static``: meta tags by the middleware; the SDK sends a ``pageload``
  *transaction* (``traceLifecycle: "static"``);
* ``/jinja-page``: meta tags by the Jinja helper; the SDK streams the ``pageload`` segment as a
  v2 ``span`` item (``traceLifecycle: "stream"``, the default of @sentry/browser 11).

Both pages record a Session Replay and call ``/api/ping`` once loaded (``fetch``, so the SDK
adds ``sentry-trace`` and ``baggage`` with the replay id).

Chromium and npm are needed: outside CI a missing one skips; under ``CI=true`` it fails
(``.ci/run`` installs Chromium with apt-get; this module tries too when it runs as root).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from apps import REPO_ROOT, AppProcess, free_port
from conftest import IN_CI
from e2e_support import assert_clean_output, bridge_env, envelope_problems, summary
from sentry_receiver import Envelope, SentryReceiver

pytestmark = pytest.mark.e2e

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
APP = BROWSER_DIR / "app.py"
LOCK = BROWSER_DIR / "package-lock.json"
BUNDLE = BROWSER_DIR / "build" / "sentry.bundle.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--enable-logging=stderr", "--v=0",
)
#: page key -> (path Chromium opens, the backend's transaction name)
PAGES = {
    "middleware": ("/page?lifecycle=static", "GET /page"),
    "jinja": ("/jinja-page", "GET /jinja-page"),
}
#: the API call each page makes once loaded
PING = "GET /api/ping"
TIMEOUT = 60.0
BROWSER_SDK = "sentry.javascript.browser"
META = re.compile(rb'<meta name="sentry-trace" content="([0-9a-f]{32})-([0-9a-f]{16})-1">')


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def _run(argv: list[str], cwd: Path, what: str, timeout: float = 300) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        _unavailable(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; under CI=true installed with apt-get when missing (as root)."""
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None and IN_CI and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(argv, env=env, capture_output=True, timeout=900, check=False)
        found = shutil.which("chromium")
    if found is None:
        _unavailable("Debian's chromium is not installed: apt-get install -y chromium")
    assert found is not None
    return found


def _npm_installed() -> bool:
    """Every package of package-lock.json is in node_modules at its locked version."""
    packages: dict[str, dict[str, Any]] = json.loads(LOCK.read_text())["packages"]
    for path, meta in packages.items():
        if not path:
            continue
        manifest = BROWSER_DIR / path / "package.json"
        if not manifest.is_file():
            if meta.get("optional"):  # another platform's binary (esbuild)
                continue
            return False
        if json.loads(manifest.read_text()).get("version") != meta.get("version"):
            return False
    return True


@pytest.fixture(scope="session")
def sentry_bundle() -> Path:
    """``npm ci`` (unless node_modules matches the lock) and esbuild the SDK bundle."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        _unavailable("node and npm are needed to install Sentry's browser SDK")
    assert npm is not None and node is not None
    key = hashlib.sha256(str(BROWSER_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"otel-sentry-bridge-npm-{key}.lock"
    with open(lock_path, "w") as lock:  # one installer at a time (parallel sessions)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _npm_installed():
            _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], BROWSER_DIR,
                 "npm ci in tests/browser")
        BUNDLE.parent.mkdir(exist_ok=True)
        staging = BUNDLE.with_name(f".{BUNDLE.name}.{os.getpid()}")
        _run([node, "build.mjs", str(staging)], BROWSER_DIR, "node build.mjs (esbuild)", 120)
        staging.replace(BUNDLE)
    return BUNDLE


class Chromium:
    """Headless Chromium showing one page until ``stop()``; its console goes to a log file."""

    def __init__(self, binary: str, url: str, home: Path) -> None:
        home.mkdir(parents=True)
        self.log_path = home / "chromium.log"
        argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={home / 'profile'}", url]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "HOME": str(home)}, start_new_session=True,
            )

    def stop(self) -> str:
        """Stop Chromium and its helpers (its own process group); the console and errors."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers that outlived the browser
        except ProcessLookupError:
            pass
        text = self.log_path.read_text(errors="replace")
        return "\n".join(line for line in text.splitlines()
                         if "CONSOLE" in line or ("ERROR" in line and "dbus" not in line))


# --------------------------------------------------------------------------------------------
# What the receiver got
# --------------------------------------------------------------------------------------------


def _backends(receiver: SentryReceiver, name: str) -> list[tuple[dict[str, Any], Envelope]]:
    """The bridge's transactions called ``name`` with their envelopes, in arrival order."""
    return [(item.json, envelope) for envelope in receiver.envelopes
            for item in envelope.items_of("transaction")
            if isinstance(item.json, dict) and item.json.get("transaction") == name
            and item.json.get("sdk", {}).get("name") != BROWSER_SDK]


def _backend(receiver: SentryReceiver, name: str) -> tuple[dict[str, Any], Envelope] | None:
    found = _backends(receiver, name)
    return found[0] if found else None


def _pageload_transaction(receiver: SentryReceiver) -> tuple[dict[str, Any], Envelope] | None:
    for envelope in receiver.envelopes:
        for item in envelope.items_of("transaction"):
            txn = item.json
            if isinstance(txn, dict) and txn["contexts"]["trace"].get("op") == "pageload":
                return txn, envelope
    return None


def _attribute(span: dict[str, Any], key: str) -> Any:
    value = span.get("attributes", {}).get(key)
    return value.get("value") if isinstance(value, dict) else None


def _pageload_segment(receiver: SentryReceiver) -> tuple[dict[str, Any], Envelope] | None:
    for envelope in receiver.envelopes:
        for item in envelope.items_of("span"):
            for span in (item.json or {}).get("items", ()):
                if span.get("is_segment") and _attribute(span, "sentry.op") == "pageload":
                    return span, envelope
    return None


def _replays(receiver: SentryReceiver) -> list[dict[str, Any]]:
    return [item.json for item in receiver.items("replay_event") if isinstance(item.json, dict)]


def _complete(receiver: SentryReceiver) -> bool:
    return (all(_backend(receiver, name) for _, name in PAGES.values())
            and len(_backends(receiver, PING)) >= len(PAGES)
            and _pageload_transaction(receiver) is not None
            and _pageload_segment(receiver) is not None and len(_replays(receiver)) >= 2)


@dataclass
class BrowserRun:
    receiver: SentryReceiver
    complete: bool = False
    app_output: str = ""
    consoles: dict[str, str] = field(default_factory=dict)
    pages: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)

    def diagnostics(self) -> str:
        consoles = "\n".join(f"--- chromium {key}:\n{text}" for key, text in self.consoles.items())
        items = [f"{e.request_headers.get('user-agent', '')[:30]} {e.item_types}"
                 for e in self.receiver.envelopes]
        return (f"all arrived within {TIMEOUT:g} s: {self.complete}\n"
                f"received:\n{summary(self.receiver)}\nenvelopes: {items}\n{consoles}\n"
                f"--- app output:\n{self.app_output[-4000:]}")

    def backend(self, key: str) -> tuple[dict[str, Any], Envelope]:
        found = _backend(self.receiver, PAGES[key][1])
        assert found is not None, self.diagnostics()
        return found


@pytest.fixture(scope="module")
def browser_run(chromium: str, sentry_bundle: Path, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[BrowserRun]:
    home = tmp_path_factory.mktemp("chromium")
    with SentryReceiver(validate=False) as receiver:  # the bridge's envelopes: checked below
        run = BrowserRun(receiver)
        env = bridge_env(receiver, "browser-page", BROWSER_SENTRY_DSN=receiver.dsn(),
                         BROWSER_SENTRY_BUNDLE=str(sentry_bundle))
        with AppProcess(APP, env, free_port()) as app:
            browsers = {key: Chromium(chromium, app.url(path), home / key)
                        for key, (path, _) in PAGES.items()}
            try:
                run.complete = receiver.wait_for(_complete, TIMEOUT, interval=0.1)
            finally:
                run.consoles = {key: browser.stop() for key, browser in browsers.items()}
            # The pages as served (their transactions arrive after the browser's ones).
            for key, (path, _) in PAGES.items():
                status, body, headers = app.get(path)
                assert status == 200, app.output()
                run.pages[key] = (body, headers)
            run.app_output = app.stop()
        yield run


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def assert_same_dsc(browser: dict[str, Any], bridge: dict[str, Any]) -> None:
    """The browser's DSC is the bridge's (the SDK re-prints ``sample_rand`` as a JS number:
    ``0.920330`` comes back as ``0.92033``)."""
    assert float(browser.pop("sample_rand")) == float(bridge["sample_rand"]), (browser, bridge)
    assert browser == {k: v for k, v in bridge.items() if k != "sample_rand"}


def test_pages_carry_one_set_of_meta_tags(browser_run: BrowserRun) -> None:
    for key, (body, headers) in browser_run.pages.items():
        assert len(META.findall(body)) == 1, (key, body[:600])
        assert body.count(b'<meta name="baggage" content="sentry-trace_id=') == 1, body[:600]
        assert headers["content-length"] == str(len(body)), key


def test_pageload_transaction_continues_the_server_span(browser_run: BrowserRun) -> None:
    """Middleware page, ``traceLifecycle: "static"``: a pageload transaction."""
    backend, backend_envelope = browser_run.backend("middleware")
    found = _pageload_transaction(browser_run.receiver)
    assert found is not None, browser_run.diagnostics()
    pageload, envelope = found
    server, browser = backend["contexts"]["trace"], pageload["contexts"]["trace"]
    assert pageload["sdk"]["name"] == BROWSER_SDK
    assert pageload["transaction"] == "/page"
    assert browser["trace_id"] == server["trace_id"], browser_run.diagnostics()
    assert browser["parent_span_id"] == server["span_id"], browser_run.diagnostics()
    # The browser's envelopes carry the trace's DSC as the bridge froze it (+ the replay id).
    dsc = dict(envelope.headers["trace"])
    assert dsc.pop("replay_id") == pageload["tags"]["replayId"]
    assert_same_dsc(dsc, backend_envelope.headers["trace"])


def test_streamed_pageload_span_continues_the_server_span(browser_run: BrowserRun) -> None:
    """Jinja page, ``traceLifecycle: "stream"`` (the SDK's default): a v2 segment span."""
    backend, backend_envelope = browser_run.backend("jinja")
    found = _pageload_segment(browser_run.receiver)
    assert found is not None, browser_run.diagnostics()
    segment, envelope = found
    server = backend["contexts"]["trace"]
    assert _attribute(segment, "sentry.sdk.name") == BROWSER_SDK
    assert segment["trace_id"] == server["trace_id"], browser_run.diagnostics()
    assert segment["parent_span_id"] == server["span_id"], browser_run.diagnostics()
    dsc = dict(envelope.headers["trace"])
    assert dsc.pop("replay_id") == _attribute(segment, "sentry.replay_id")
    assert_same_dsc(dsc, backend_envelope.headers["trace"])


def test_replays_link_to_the_backend_traces(browser_run: BrowserRun) -> None:
    """Each replay names the page's trace; the page's API call reaches the backend with the
    replay id in its DSC, which the bridge passes on in that transaction's envelope."""
    receiver = browser_run.receiver
    by_trace = {tuple(r.get("trace_ids", ())): r for r in _replays(receiver)}
    pings = {ping["contexts"]["trace"]["trace_id"]: (ping, envelope)
             for ping, envelope in _backends(receiver, PING)}
    for key in PAGES:
        backend, _ = browser_run.backend(key)
        trace_id = backend["contexts"]["trace"]["trace_id"]
        replay = by_trace.get((trace_id,))
        assert replay is not None, (key, list(by_trace), browser_run.diagnostics())
        assert replay["replay_type"] == "session"
        assert trace_id in pings, (key, browser_run.diagnostics())
        ping, envelope = pings[trace_id]
        assert envelope.headers["trace"]["replay_id"] == replay["replay_id"]
        assert ping["contexts"]["trace"]["parent_span_id"] != backend["contexts"]["trace"][
            "span_id"]  # a child of the browser's fetch span, not of the page's server span
    pageload, _ = _pageload_transaction(receiver) or ({}, None)
    fetches = [s["span_id"] for s in pageload.get("spans", ()) if s.get("op") == "http.client"]
    backend, _ = browser_run.backend("middleware")
    ping, _ = pings[backend["contexts"]["trace"]["trace_id"]]
    assert ping["contexts"]["trace"]["parent_span_id"] in fetches, browser_run.diagnostics()


def test_app_and_bridge_stay_clean(browser_run: BrowserRun) -> None:
    assert_clean_output(browser_run.app_output)
    receiver = browser_run.receiver
    assert envelope_problems(receiver, bridge=True) == []
    assert receiver.auth_failures == [] and receiver.rejected == []
    for text in browser_run.consoles.values():
        assert "Access-Control" not in text and "Failed to fetch" not in text, text


def test_receiver_answers_browsers_cors() -> None:
    """A page on another origin may read the receiver's answers (the SDK reads rate limits)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with SentryReceiver() as receiver:
        preflight = urllib.request.Request(
            receiver.envelope_url(), method="OPTIONS",
            headers={"Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"})
        with opener.open(preflight, timeout=5) as resp:
            assert resp.status == 200
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert resp.headers["Access-Control-Allow-Headers"] == "content-type"
        envelope = b'{}\n{"type":"client_report"}\n{"timestamp":1,"discarded_events":[]}\n'
        post = urllib.request.Request(
            receiver.envelope_url() + "?sentry_key=publickey&sentry_version=7", data=envelope,
            method="POST", headers={"Origin": "http://127.0.0.1:1", "Content-Type": "text/plain"})
        with opener.open(post, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "X-Sentry-Rate-Limits" in resp.headers["Access-Control-Expose-Headers"]
        assert len(receiver.envelopes) == 1
