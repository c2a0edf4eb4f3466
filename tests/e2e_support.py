"""Helpers for tests/test_e2e.py: bridge environments, app groups, payload queries, checks."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from apps import REPO_ROOT, AppProcess
from sentry_receiver import Envelope, SentryReceiver, validate_envelope

BRIDGE_SDK_NAME = "sentry.python.otel-bridge"
BRIDGE_USER_AGENT_PREFIX = BRIDGE_SDK_NAME + "/"
INTERNAL_ERROR_MARKER = "otel-sentry-bridge: internal error"
TRACEBACK_MARKER = "Traceback (most recent call last)"
OTEL_STARTUP_FAILURE = "Failed to auto initialize OpenTelemetry"
DISTRO_REQUIREMENT = "opentelemetry-distro==0.66b1"
DISTRO_DIST_INFO = "opentelemetry_distro-0.66b1.dist-info"

AppSpec = tuple[Path, Mapping[str, str], int]


# --------------------------------------------------------------------------------------------
# Environments and processes
# --------------------------------------------------------------------------------------------


def bridge_env(receiver: SentryReceiver, service: str, **extra: str | None) -> dict[str, str]:
    """The child environment of an app reporting to ``receiver``; ``None`` values are removed."""
    env: dict[str, str | None] = {
        "SENTRY_DSN": receiver.dsn(),
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "SENTRY_BRIDGE_LATE_SPAN_GRACE": "0.1",
        "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1",
    }
    env.update(extra)
    return {key: value for key, value in env.items() if value is not None}


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def prepend_pythonpath(path: Path) -> str:
    """``PYTHONPATH`` for a child with ``path`` first (the test process's value kept after)."""
    current = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(path), current] if current else [str(path)])


@contextmanager
def running(*specs: AppSpec) -> Iterator[list[AppProcess]]:
    """Start the apps concurrently (each ready on ``GET /health``); stop them all at the end."""
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [pool.submit(AppProcess, script, env, port) for script, env, port in specs]
    apps: list[AppProcess] = []
    errors: list[BaseException] = []
    for future in futures:
        try:
            apps.append(future.result())
        except BaseException as exc:
            errors.append(exc)
    try:
        if errors:
            raise errors[0]
        yield apps
    finally:
        stop_all(*apps)


def stop_all(*apps: AppProcess) -> list[str]:
    """SIGTERM the apps concurrently (each flushes at exit); return their outputs in order."""
    if not apps:
        return []
    with ThreadPoolExecutor(len(apps)) as pool:
        return list(pool.map(lambda app: app.stop(), apps))


# --------------------------------------------------------------------------------------------
# opentelemetry-distro, installed beside (not into) the venv
# --------------------------------------------------------------------------------------------


def _distro_complete(target: Path) -> bool:
    return (target / "opentelemetry" / "distro" / "__init__.py").is_file() and (
        target / DISTRO_DIST_INFO / "entry_points.txt"
    ).is_file()


def install_otel_distro(parent: Path) -> Path:
    """``pip install --no-deps --target <parent>/e2e-distro-target opentelemetry-distro``,
    reusing a complete earlier install. Safe against a concurrent session doing the same."""
    target = parent / "e2e-distro-target"
    if _distro_complete(target):
        return target
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="e2e-distro-target.", dir=parent))
    try:
        proc = subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
                "--disable-pip-version-check", "--target", str(staging), DISTRO_REQUIREMENT,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0 or not _distro_complete(staging):
            pytest.fail(
                f"pip could not install {DISTRO_REQUIREMENT} into {staging} "
                f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        if _distro_complete(target):  # a concurrent session won the race
            return target
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # an interrupted earlier install
        try:
            staging.rename(target)
        except OSError:
            if not _distro_complete(target):
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Payload queries
# --------------------------------------------------------------------------------------------


def named(transactions: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Transactions called ``name``, in start order."""
    found = [t for t in transactions if t.get("transaction") == name]
    return sorted(found, key=lambda t: t["start_timestamp"])


def request_path(txn: Mapping[str, Any]) -> str | None:
    url = txn.get("request", {}).get("url")
    return urlsplit(url).path if isinstance(url, str) else None


def one(items: list[dict[str, Any]], what: str) -> dict[str, Any]:
    assert len(items) == 1, f"expected exactly one {what}, got {len(items)}: {items}"
    return items[0]


def trace_of(txn: Mapping[str, Any]) -> dict[str, Any]:
    trace: dict[str, Any] = txn["contexts"]["trace"]
    return trace


def spans_in_start_order(txn: Mapping[str, Any]) -> list[dict[str, Any]]:
    # Synthesized cache.* parents start with their redis child: parents first on ties.
    return sorted(
        txn["spans"],
        key=lambda s: (s["start_timestamp"], 0 if s["op"].startswith("cache.") else 1),
    )


def children_of(txn: Mapping[str, Any], span_id: str) -> list[dict[str, Any]]:
    return [s for s in spans_in_start_order(txn) if s["parent_span_id"] == span_id]


def summary(receiver: SentryReceiver) -> str:
    """A compact listing of what arrived, for assertion messages."""
    lines = []
    for txn in receiver.transactions():
        trace = trace_of(txn)
        ops = [f"{s['op']}:{s['description'][:40]!r}" for s in spans_in_start_order(txn)]
        lines.append(
            f"{txn.get('transaction')!r} {trace.get('status')} trace={trace.get('trace_id')} "
            f"span={trace.get('span_id')} parent={trace.get('parent_span_id')} spans={ops}"
        )
    return "\n".join(lines) or "<no transactions>"


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def assert_clean_output(output: str, *, tracebacks: int = 0) -> None:
    """No internal error of the bridge, OpenTelemetry started, only the expected tracebacks."""
    assert INTERNAL_ERROR_MARKER not in output, output
    assert OTEL_STARTUP_FAILURE not in output, output
    assert output.count(TRACEBACK_MARKER) == tracebacks, output


def assert_no_duplicates(transactions: list[dict[str, Any]]) -> None:
    """Each transaction once per (trace_id, span_id); no span id sent twice anywhere."""
    roots = Counter((trace_of(t)["trace_id"], trace_of(t)["span_id"]) for t in transactions)
    repeated = {key: n for key, n in roots.items() if n > 1}
    assert not repeated, f"transactions sent more than once: {repeated}"
    span_ids = Counter(
        [trace_of(t)["span_id"] for t in transactions]
        + [s["span_id"] for t in transactions for s in t.get("spans", ())]
    )
    repeated_spans = {key: n for key, n in span_ids.items() if n > 1}
    assert not repeated_spans, f"span ids sent more than once: {repeated_spans}"


def assert_receiver_clean(receiver: SentryReceiver) -> None:
    receiver.assert_no_problems()
    assert receiver.auth_failures == [], receiver.auth_failures
    assert receiver.rejected == [], receiver.rejected
    assert_no_duplicates(receiver.transactions())


def is_bridge_envelope(envelope: Envelope) -> bool:
    agent = envelope.request_headers.get("user-agent", "")
    return agent.startswith(BRIDGE_USER_AGENT_PREFIX)


def envelope_problems(receiver: SentryReceiver, *, bridge: bool) -> list[str]:
    """Validation problems of the envelopes the bridge sent (``bridge=True``) or of all the
    others (sentry-sdk's own, told apart by their User-Agent)."""
    problems: list[str] = []
    for envelope in receiver.envelopes:
        if is_bridge_envelope(envelope) == bridge:
            problems.extend(
                validate_envelope(envelope.headers, envelope.items, public_key=receiver.key)
            )
    return problems


def dsn_complaints(output: str) -> list[str]:
    """Output lines saying SENTRY_DSN is invalid or malformed."""
    pattern = re.compile(r"invalid|malformed", re.IGNORECASE)
    return [line for line in output.splitlines() if "SENTRY_DSN" in line and pattern.search(line)]


def distro_parent_dir(fallback: Path) -> Path:
    """Where the opentelemetry-distro target folder is cached: the repo's ``.venv/``."""
    venv = REPO_ROOT / ".venv"
    return venv if venv.is_dir() else fallback
