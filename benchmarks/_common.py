"""Helpers shared by the scenarios: child processes, result lines, statistics, versions."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from _sink import ENTRY

RESULT_PREFIX = "BENCH-RESULT "
KEY_PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-proto",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-sqlalchemy",
    "sentry-sdk",
    "otel-sentry-bridge",
    "orjson",
    "protobuf",
    "urllib3",
    "requests",
    "Flask",
    "SQLAlchemy",
    "psycopg2-binary",
    "gunicorn",
)


def emit_result(result: dict[str, Any]) -> None:
    """Print a child's result line and leave at once (no atexit flushes: nothing measured
    happens after this line)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)


def run_child(kind: str, name: str, params: dict[str, Any], env: dict[str, str],
              timeout: float = 600.0) -> dict[str, Any]:
    """Run ``bench_core.py --_child kind:name`` in a fresh interpreter; parse its result line.

    A failed child (e.g. the bridge caught mid-edit) is retried once after a pause; a second
    failure is returned as ``{"error": ...}`` and that repetition is left out of the summary.
    """
    cmd = [sys.executable, ENTRY, "--_child", f"{kind}:{name}", "--_params", json.dumps(params)]
    error = ""
    for attempt in (1, 2):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            error = f"timed out after {timeout:.0f} s: {str(exc.stderr or '')[-1500:]}"
            continue
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


def median(values: Iterable[float | None]) -> float | None:
    """Median of the non-None values (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def percentile(values: list[float], pct: float) -> float | None:
    """Percentile (``pct`` in 0..100) of ``values``, linear interpolation between the closest
    ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def wrap(text: str) -> list[str]:
    """``text`` as lines of at most 100 characters."""
    return textwrap.wrap(text, 100)


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


@dataclass
class Target:
    """One row of the final summary: a figure, what it is compared with, and its target."""

    scenario: str
    figure: str
    value: str
    reference: str
    ratio: str
    target: str
    met: bool | None  # None: informational (no target) or not measured
    note: str = ""

    @property
    def status(self) -> str:
        if self.met is None:
            return "info" if self.target in ("", "-") else "n/a"
        return "met" if self.met else "NOT MET"


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
