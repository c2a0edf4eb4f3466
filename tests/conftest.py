"""Shared fixtures: environment isolation, strict internal errors, real providers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, settings

from otel_sentry_bridge import _internal_errors
from otel_sentry_bridge.pipeline import reset_pipeline

_internal_errors.RAISE_INTERNAL_ERRORS = True

# ``pytest --hypothesis-profile=no-shrink``: report the first failing example at once.
settings.register_profile("no-shrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SENTRY_*/OTEL_* settings leak in from the developer's shell; a fresh pipeline."""
    for key in list(os.environ):
        if key.startswith(("SENTRY_", "OTEL_")):
            monkeypatch.delenv(key, raising=False)
    previous = reset_pipeline(None)
    yield
    leftover = reset_pipeline(previous)
    if leftover is not None and leftover is not previous:
        leftover.shutdown(1.0)


def require_service(host: str, port: int, name: str) -> None:
    """Skip when a loopback service is down, except under CI=true where that is a failure."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"{name} at {host}:{port} is required under CI=true: {exc}")
        pytest.skip(f"{name} at {host}:{port} is not reachable: {exc}")


# ------------------------------------------------------------------------------------ figures
#: Figures the reliability tests measured (shown at the end of the run; written as JSON to
#: ``$BRIDGE_FIGURES`` when set). docs/reliability.md quotes them.
FIGURES: dict[str, Any] = {}


@pytest.fixture
def figures() -> dict[str, Any]:
    """Record a measured figure: ``figures["name"] = value``."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("measured figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
    target = os.environ.get("BRIDGE_FIGURES")
    if target:
        with open(target, "w", encoding="utf-8") as handle:
            json.dump(FIGURES, handle, indent=2, sort_keys=True)
