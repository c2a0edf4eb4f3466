"""The bridge's instrumentations as ``opentelemetry-instrument`` loads them.

Generic over the ``opentelemetry_instrumentor`` entry points named ``sentry_bridge_*`` in
pyproject.toml (a new one is covered without a change here; one whose module does not exist
fails): each resolves to a :class:`BridgeInstrumentor` whose target library is the one its
``package.py`` names; with that library missing, ``opentelemetry-instrument`` starts quietly and
the other instrumentations still load; a failing instrumentation (raising at import, in
``_instrument``, or in a bridge instrumentor's ``_patch``) never stops the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points, packages_distributions
from pathlib import Path

import pytest
from apps import REPO_ROOT, opentelemetry_instrument
from e2e_support import bridge_env, prepend_pythonpath, summary
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from otel_sentry_bridge_instrumentation._base import BridgeInstrumentor
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sentry_receiver import SentryReceiver

from otel_sentry_bridge.conventions import Op
from otel_sentry_bridge.testing import BridgeCapture

GROUP = "opentelemetry_instrumentor"
PREFIX = "sentry_bridge_"
OUR_PACKAGE = "otel_sentry_bridge_instrumentation"


def declared_entry_points() -> dict[str, str]:
    """``name -> "module:Class"`` of the ``sentry_bridge_*`` instrumentors in pyproject.toml
    (read as text: tomllib is Python 3.11+)."""
    section = f"[project.entry-points.{GROUP}]"
    found: dict[str, str] = {}
    inside = False
    for raw in (REPO_ROOT / "pyproject.toml").read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            inside = line == section
            continue
        match = re.fullmatch(r'([A-Za-z0-9_.-]+)\s*=\s*"([^"]+)"', line) if inside else None
        if match and match.group(1).startswith(PREFIX):
            found[match.group(1)] = match.group(2)
    return found


DECLARED = declared_entry_points()
NAMES = sorted(DECLARED)


def test_pyproject_declares_instrumentors() -> None:
    assert NAMES, "no sentry_bridge_* opentelemetry_instrumentor entry point in pyproject.toml"
    for name, value in DECLARED.items():
        module, _, attr = value.partition(":")
        assert module == f"{OUR_PACKAGE}.{name[len(PREFIX):]}", (name, value)
        assert attr.endswith("Instrumentor"), (name, value)


def test_installed_metadata_matches_pyproject() -> None:
    installed = {ep.name: ep.value for ep in entry_points(group=GROUP)
                 if ep.name.startswith(PREFIX)}
    assert installed == DECLARED, "stale metadata: run .venv/bin/pip install --no-deps -e ."


def _requirements(name: str) -> tuple[str, ...]:
    """``_instruments`` of the instrumentation's ``package.py`` (imports no target library)."""
    module = DECLARED[name].partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{name}: module {module} does not exist")
    package = importlib.import_module(f"{module}.package")
    instruments = package._instruments
    assert isinstance(instruments, tuple) and instruments, f"{name}: empty _instruments"
    return instruments


def _import_names(requirements: tuple[str, ...]) -> list[str]:
    """Top-level modules of the requirements' distributions (``strawberry-graphql`` ->
    ``strawberry``); the distribution's own name when it is not installed."""
    wanted = {canonicalize_name(Requirement(r).name) for r in requirements}
    names = {module for module, dists in packages_distributions().items()
             if wanted & {canonicalize_name(d) for d in dists}}
    return sorted(names or {n.replace("-", "_") for n in wanted})


@pytest.mark.parametrize("name", NAMES)
def test_entry_point_resolves_to_a_bridge_instrumentor(name: str) -> None:
    requirements = _requirements(name)
    (ep,) = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if get_dependency_conflicts(list(requirements)) is not None:
        # Not installed here: loading must take OpenTelemetry's quiet path, for the library.
        with pytest.raises(ModuleNotFoundError) as missing:
            ep.load()
        assert missing.value.name and not missing.value.name.startswith(OUR_PACKAGE)
        return
    cls = ep.load()
    assert isinstance(cls, type) and issubclass(cls, BridgeInstrumentor), cls
    assert cls.__module__ == ep.value.partition(":")[0]
    assert cls._patch is not BridgeInstrumentor._patch, "no _patch"
    assert cls._unpatch is not BridgeInstrumentor._unpatch, "no _unpatch"
    instrumentor = cls()
    assert tuple(instrumentor.instrumentation_dependencies()) == requirements
    assert get_dependency_conflicts(list(instrumentor.instrumentation_dependencies())) is None
    capture = BridgeCapture()
    try:  # instrument() with no other argument is what the auto path does
        instrumentor.instrument(tracer_provider=capture.tracer_provider)
        assert instrumentor.is_instrumented_by_opentelemetry
        instrumentor.uninstrument()
        assert not instrumentor.is_instrumented_by_opentelemetry
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        capture.close()


# --------------------------------------------------------------------------------------------
# Under opentelemetry-instrument
# --------------------------------------------------------------------------------------------

#: Run under opentelemetry-instrument: prints, for every instrumentor entry point, whether it
#: is applied ("instrumented"), its module failed to import ("missing:<module>") or failed
#: otherwise; with ``--http``, makes one traced request to a loopback server first.
CHILD = r'''
import http.server, json, sys, threading
from importlib.metadata import entry_points

if "--http" in sys.argv:
    import requests
    from opentelemetry import trace

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with trace.get_tracer("startup").start_as_current_span("startup-check"):
        requests.get(f"http://127.0.0.1:{server.server_port}/ping", timeout=5)
    server.shutdown()

status = {}
for ep in entry_points(group="opentelemetry_instrumentor"):
    try:
        cls = ep.load()
    except ModuleNotFoundError as exc:
        status[ep.name] = f"missing:{exc.name}"
        continue
    except Exception as exc:
        status[ep.name] = f"error:{type(exc).__name__}"
        continue
    applied = cls().is_instrumented_by_opentelemetry
    status[ep.name] = "instrumented" if applied else "not instrumented"
print(json.dumps(status))
'''

#: The module a blocked library's name resolves to: importing it fails as a missing one does.
BLOCKER = 'raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)\n'


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with SentryReceiver() as rec:
        yield rec


def run_instrumented(
    receiver: SentryReceiver, tmp_path: Path, pythonpath: Path, *args: str, **env: str | None
) -> tuple[dict[str, str], str]:
    """Run :data:`CHILD` under opentelemetry-instrument; its statuses and its stderr."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child_env = {**os.environ, **bridge_env(receiver, "entry-points", **env),
                 "PYTHONPATH": prepend_pythonpath(pythonpath)}
    proc = subprocess.run(
        [str(opentelemetry_instrument()), sys.executable, str(script), *args],
        env=child_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def ours(status: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in status.items() if name.startswith(PREFIX)}


@pytest.mark.e2e
@pytest.mark.parametrize("name", NAMES)
def test_missing_target_library_is_skipped_quietly(
    name: str, receiver: SentryReceiver, tmp_path: Path
) -> None:
    blocked = _import_names(_requirements(name))
    stubs = tmp_path / "missing-libraries"
    stubs.mkdir()
    for module in blocked:
        (stubs / f"{module}.py").write_text(BLOCKER)

    status, stderr = run_instrumented(receiver, tmp_path, stubs)

    assert stderr == "", stderr  # quiet: no warning, no traceback
    assert status[name] in {f"missing:{m}" for m in blocked}, status
    for other, value in ours(status).items():
        if other != name and value != "instrumented":
            # only an instrumentation whose own library needs the blocked one may be missing
            assert value in {f"missing:{m}" for m in blocked}, (other, value)
    assert set(ours(status)) == set(DECLARED)
    assert status["requests"] == "instrumented"  # OpenTelemetry's own still load too


# --------------------------------------------------------------------------------------------
# A failing instrumentation never stops the others
# --------------------------------------------------------------------------------------------

BROKEN_MODULES = {
    "broken_at_import.py": 'raise RuntimeError("broken at import")\n',
    "broken_instrument.py": '''
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor


class BrokenInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ()

    def _instrument(self, **kwargs):
        raise RuntimeError("broken in _instrument")

    def _uninstrument(self, **kwargs):
        pass
''',
    "broken_patch.py": '''
from otel_sentry_bridge_instrumentation._base import BridgeInstrumentor


class BrokenPatchInstrumentor(BridgeInstrumentor):
    def _patch(self, **kwargs):
        raise RuntimeError("broken in _patch")

    def _unpatch(self, **kwargs):
        pass
''',
}
BROKEN_ENTRY_POINTS = {
    "broken_at_import": "broken_at_import:Anything",
    "broken_instrument": "broken_instrument:BrokenInstrumentor",
    "broken_patch": "broken_patch:BrokenPatchInstrumentor",
}


def broken_distribution(parent: Path, names: list[str]) -> Path:
    """A throw-away distribution (a ``*.dist-info`` and its modules) registering the named
    broken instrumentors; put the returned folder on ``PYTHONPATH``: its entry points then
    come first, before every installed one."""
    root = parent / "broken-dist"
    info = root / "broken_instrumentations-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-instrumentations\nVersion: 1.0\n")
    lines = [f"{name} = {BROKEN_ENTRY_POINTS[name]}" for name in names]
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n" + "\n".join(lines) + "\n")
    for name in names:
        module = BROKEN_ENTRY_POINTS[name].partition(":")[0]
        (root / f"{module}.py").write_text(BROKEN_MODULES[f"{module}.py"])
    return root


def _count(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


def _assert_traced_http_call(receiver: SentryReceiver) -> None:
    transactions = receiver.wait_for_transactions(1, timeout=10)
    checks = [t for t in transactions if t["transaction"] == "startup-check"]
    assert len(checks) == 1, summary(receiver)
    ops = [s["op"] for s in checks[0]["spans"]]
    assert Op.HTTP_CLIENT in ops, ops  # OpenTelemetry's requests instrumentation applied
    receiver.assert_no_problems()


@pytest.mark.e2e
def test_broken_instrumentors_do_not_stop_the_others(
    receiver: SentryReceiver, tmp_path: Path
) -> None:
    """The bridge's distro: each failing instrumentor is logged once and skipped."""
    dist = broken_distribution(tmp_path, ["broken_at_import", "broken_instrument",
                                          "broken_patch"])
    # internal errors logged, not raised, as in production
    status, stderr = run_instrumented(receiver, tmp_path, dist, "--http",
                                      _SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS=None)

    assert _count(stderr, "instrumentation 'broken_at_import' failed and is skipped") == 1
    assert _count(stderr, "instrumentation 'broken_instrument' failed and is skipped") == 1
    assert _count(stderr, "internal error in BrokenPatchInstrumentor.instrument") == 1
    assert _count(stderr, "Failed to auto initialize") == 0
    assert _count(stderr, "Traceback") == 3, stderr  # one per failure, nothing else
    assert status["broken_instrument"] == "not instrumented"
    assert set(ours(status).values()) == {"instrumented"}, status
    assert status["requests"] == "instrumented"
    _assert_traced_http_call(receiver)


@pytest.mark.e2e
def test_bridge_instrumentor_guard_holds_under_opentelemetry_default_distro(
    receiver: SentryReceiver, tmp_path: Path
) -> None:
    """Without the bridge's distro (OpenTelemetry's default one, which stops at the first
    instrumentor that raises), a bridge instrumentor's failing patch is still contained."""
    dist = broken_distribution(tmp_path, ["broken_patch"])
    status, stderr = run_instrumented(receiver, tmp_path, dist, "--http",
                                      OTEL_PYTHON_DISTRO="no-such-distro",
                                      _SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS=None)

    assert _count(stderr, "internal error in BrokenPatchInstrumentor.instrument") == 1, stderr
    assert _count(stderr, "Failed to auto initialize") == 0, stderr
    assert set(ours(status).values()) == {"instrumented"}, status
    assert status["requests"] == "instrumented"
    _assert_traced_http_call(receiver)


@pytest.mark.e2e
def test_opentelemetry_default_distro_stops_at_a_broken_instrumentor(
    receiver: SentryReceiver, tmp_path: Path
) -> None:
    """Why the bridge's distro loads each instrumentor on its own: OpenTelemetry's default one
    gives up on all of them at the first that raises (0.66b1)."""
    dist = broken_distribution(tmp_path, ["broken_instrument"])
    status, stderr = run_instrumented(receiver, tmp_path, dist,
                                      OTEL_PYTHON_DISTRO="no-such-distro")

    assert _count(stderr, "Failed to auto initialize OpenTelemetry") == 1, stderr
    applied = [name for name, value in status.items() if value == "instrumented"]
    assert applied == [], status
