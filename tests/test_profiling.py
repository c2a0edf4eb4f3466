"""Profiling (``SENTRY_BRIDGE_PROFILING``): sentry-sdk's continuous profiler, its profile chunks
linked to the bridge's transactions.

The end-to-end tests run a CPU-busy job under ``opentelemetry-instrument`` in a subprocess
(sentry-sdk's client and profiler are process-global) against a loopback ``SentryReceiver``,
which checks every ``profile_chunk`` item's shape. The link is what Sentry's UI follows: the
transaction's ``contexts.profile.profiler_id`` names the chunk's session, ``thread.id`` in its
trace data names a thread sampled in that chunk, and the samples of that thread between the
transaction's start and end show the job's own function. The unit tests drive the span
processor and the link with stand-ins for sentry-sdk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import sentry_sdk
from apps import opentelemetry_instrument
from e2e_support import (
    BRIDGE_SDK_NAME,
    assert_clean_output,
    assert_no_duplicates,
    bridge_env,
    envelope_problems,
    is_bridge_envelope,
    trace_of,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from sentry_receiver import Item, SentryReceiver, validate_item

from otel_sentry_bridge import _profiling
from otel_sentry_bridge.config import BridgeConfig, load_config
from otel_sentry_bridge.pipeline import Pipeline
from otel_sentry_bridge.testing import BridgeCapture

JOB = '''\
"""A background job: CPU-bound work under one root span (test_profiling.py writes it)."""

import os
import threading
import time

from opentelemetry import trace

if os.environ.get("APP_SENTRY_INIT"):  # the app's own sentry-sdk client, with its profiler
    import sentry_sdk

    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], profile_session_sample_rate=1.0,
                    profile_lifecycle=os.environ["APP_SENTRY_INIT"])

tracer = trace.get_tracer("jobs")

if os.environ.get("JOB_FORK"):  # the job runs in a forked child (prefork servers, Celery)
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        raise SystemExit(0)


def crunch_numbers(seconds):
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total += sum(i * i for i in range(2_000))
    return total


with tracer.start_as_current_span("nightly-report"):
    with tracer.start_as_current_span("crunch"):
        crunch_numbers(float(os.environ.get("JOB_SECONDS", "0.6")))

import sentry_sdk  # noqa: E402  (after the job: reports what the bridge left behind)

print("CLIENT_ACTIVE", sentry_sdk.get_client().is_active())
print("THREADS", sorted(t.name for t in threading.enumerate()))
'''

JOB_FUNCTION = "crunch_numbers"


@dataclass
class JobRun:
    receiver: SentryReceiver
    output: str
    returncode: int


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with SentryReceiver() as server:
        yield server


def run_job(receiver: SentryReceiver, tmp_path: Path, **extra: str | None) -> JobRun:
    """The job under ``opentelemetry-instrument``; waits for what it sends at exit."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "OTEL_"))}
    env.update(bridge_env(receiver, "jobs", **extra))
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.run(
        [str(opentelemetry_instrument()), sys.executable, str(script)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    receiver.wait_for(lambda r: len(r.transactions()) >= 1, timeout=10)
    return JobRun(receiver, proc.stdout + proc.stderr, proc.returncode)


def job_transaction(run: JobRun) -> dict[str, Any]:
    txns = run.receiver.transactions()
    assert_no_duplicates(txns)
    found = [t for t in txns if t["transaction"] == "nightly-report"]
    assert len(found) == 1, [t["transaction"] for t in txns]
    return found[0]


def samples_in(chunk: dict[str, Any], thread_id: str, start: float, end: float) -> list[str]:
    """Function names of the samples of one thread between ``start`` and ``end``."""
    profile = chunk["profile"]
    frames, stacks = profile["frames"], profile["stacks"]
    return [
        frames[index].get("function", "")
        for sample in profile["samples"]
        if sample["thread_id"] == thread_id and start <= sample["timestamp"] <= end
        for index in stacks[sample["stack_id"]]
    ]


def assert_linked(run: JobRun) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's transaction links to a received chunk whose samples show the job's work."""
    assert run.returncode == 0, run.output
    assert_clean_output(run.output)
    receiver = run.receiver
    assert receiver.wait_for(lambda r: r.profile_chunks(), timeout=10), run.output
    receiver.assert_no_problems()  # every chunk has the documented shape, Relay took the rest
    assert receiver.auth_failures == [] and receiver.rejected == []
    txn = job_transaction(run)
    profiler_id = txn["contexts"]["profile"]["profiler_id"]
    chunks = [c for c in receiver.profile_chunks() if c["profiler_id"] == profiler_id]
    assert chunks, (profiler_id, [c["profiler_id"] for c in receiver.profile_chunks()])
    data = trace_of(txn)["data"]
    thread_id = data["thread.id"]
    assert isinstance(thread_id, str) and thread_id.isdigit(), data  # text, as sentry-sdk's
    assert data["thread.name"] == "MainThread"
    assert "sentry.profiler_id" not in data
    (crunch,) = txn["spans"]
    assert crunch["data"]["thread.id"] == thread_id
    assert crunch["data"]["thread.name"] == "MainThread"
    functions = [
        name
        for chunk in chunks
        for name in samples_in(chunk, thread_id, txn["start_timestamp"], txn["timestamp"])
    ]
    # 0.6 s at sentry-sdk's 101 Hz: dozens of samples of the job's own function.
    assert functions.count(JOB_FUNCTION) >= 10, sorted(set(functions))
    return txn, chunks[0]


# ------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
@pytest.mark.parametrize("lifecycle", ["manual", "trace"])
def test_job_profile_is_linked(receiver: SentryReceiver, tmp_path: Path, lifecycle: str) -> None:
    run = run_job(receiver, tmp_path, SENTRY_BRIDGE_PROFILING="true",
                  SENTRY_PROFILE_LIFECYCLE=lifecycle)
    _, chunk = assert_linked(run)
    assert chunk["platform"] == "python" and chunk["environment"] == "production"
    # The profiling-only client sends chunks and nothing else: no events, no sessions, no
    # client reports; the bridge sends the transaction.
    for envelope in receiver.envelopes:
        if not is_bridge_envelope(envelope):
            assert envelope.item_types == ["profile_chunk"], envelope.item_types
    assert envelope_problems(receiver, bridge=True) == []
    assert "CLIENT_ACTIVE True" in run.output


@pytest.mark.e2e
def test_app_with_its_own_sentry_sdk_profiler(receiver: SentryReceiver, tmp_path: Path) -> None:
    """``sentry_sdk.init(profile_session_sample_rate=...)`` in the app, after the bridge started:
    the transaction links to the app's profiler session."""
    run = run_job(receiver, tmp_path, SENTRY_BRIDGE_PROFILING="true", APP_SENTRY_INIT="trace")
    txn, _ = assert_linked(run)
    assert txn["sdk"]["name"] == BRIDGE_SDK_NAME
    assert [t["sdk"]["name"] for t in receiver.transactions()] == [BRIDGE_SDK_NAME]


@pytest.mark.e2e
def test_forked_child_profiles_in_a_session_of_its_own(receiver: SentryReceiver,
                                                      tmp_path: Path) -> None:
    run = run_job(receiver, tmp_path, SENTRY_BRIDGE_PROFILING="true", JOB_FORK="1")
    txn, chunk = assert_linked(run)
    assert receiver.wait_for(lambda r: len(r.profile_chunks()) >= 2, timeout=10)
    sessions = {c["profiler_id"] for c in receiver.profile_chunks()}
    assert len(sessions) == 2, sessions  # the parent's, and the child's (linked)
    assert txn["contexts"]["profile"]["profiler_id"] == chunk["profiler_id"]


@pytest.mark.e2e
def test_off_by_default(receiver: SentryReceiver, tmp_path: Path) -> None:
    run = run_job(receiver, tmp_path, JOB_SECONDS="0.05")
    assert run.returncode == 0, run.output
    assert_clean_output(run.output)
    txn = job_transaction(run)
    assert "profile" not in txn["contexts"]
    assert "thread.id" not in trace_of(txn).get("data", {})
    assert receiver.profile_chunks() == []
    assert "CLIENT_ACTIVE False" in run.output  # no sentry-sdk client was started
    assert "sentry.profiler" not in run.output  # nor the profiler's thread
    receiver.assert_no_problems()


@pytest.mark.e2e
def test_session_not_sampled(receiver: SentryReceiver, tmp_path: Path) -> None:
    run = run_job(receiver, tmp_path, SENTRY_BRIDGE_PROFILING="true",
                  SENTRY_PROFILE_SESSION_SAMPLE_RATE="0", JOB_SECONDS="0.05")
    assert run.returncode == 0, run.output
    txn = job_transaction(run)
    assert "profile" not in txn["contexts"]
    assert "thread.id" not in trace_of(txn).get("data", {})
    time.sleep(0.2)
    assert receiver.profile_chunks() == []
    receiver.assert_no_problems()


# ------------------------------------------------------------------------------ settings


def test_settings() -> None:
    warnings: list[str] = []
    cfg = load_config({"SENTRY_BRIDGE_PROFILING": "yes",
                       "SENTRY_PROFILE_SESSION_SAMPLE_RATE": "0.25",
                       "SENTRY_PROFILE_LIFECYCLE": "Trace"}, warn=warnings.append)
    assert (cfg.profiling, cfg.profile_session_sample_rate, cfg.profile_lifecycle) == (
        True, 0.25, "trace")
    assert warnings == []
    cfg = load_config({"SENTRY_PROFILE_LIFECYCLE": "always"}, warn=warnings.append)
    assert cfg.profile_lifecycle == "manual"
    assert len(warnings) == 1
    assert "SENTRY_PROFILE_LIFECYCLE" in warnings[0] and "manual or trace" in warnings[0]
    assert BridgeConfig().profiling is False


def test_no_destination_no_client(caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Profiling with only an envelope folder: nothing to send chunks with, said once."""
    monkeypatch.setattr(sentry_sdk, "get_client", sentry_sdk.client.NonRecordingClient)
    monkeypatch.setattr(sentry_sdk, "init", None)  # never reached
    cfg = BridgeConfig(profiling=True, envelope_dir="/nonexistent")
    pipeline = Pipeline(cfg)
    provider = TracerProvider()
    try:
        assert not _profiling.setup_profiling(provider, pipeline)
        assert not _profiling.ACTIVE
        assert "SENTRY_BRIDGE_PROFILING needs SENTRY_DSN" in caplog.text
    finally:
        pipeline.shutdown(0.1)


def test_off_does_nothing() -> None:
    pipeline = Pipeline(BridgeConfig(dsn="https://key@127.0.0.1:9/1"))
    try:
        assert not _profiling.setup_profiling(TracerProvider(), pipeline)
        assert not _profiling.ACTIVE
    finally:
        pipeline.shutdown(0.1)


# ------------------------------------------------------------------------------ the linker


class FakeProfiler:
    """Stands in for sentry-sdk's continuous profiler."""

    def __init__(self, lifecycle: str = "manual", session: str | None = "a" * 32) -> None:
        self.lifecycle = lifecycle
        self.session = session
        self.kept_running = 0
        self.opened: list[FakeProfile] = []

    def keep_running(self) -> None:
        self.kept_running += 1

    def trace_start(self) -> FakeProfile | None:
        if self.lifecycle != "trace":
            return None
        profile = FakeProfile()
        self.opened.append(profile)
        return profile

    def profiler_id(self) -> str | None:
        return self.session


class FakeProfile:
    active = True

    def stop(self) -> None:
        self.active = False


@pytest.fixture
def capture() -> Iterator[BridgeCapture]:
    bridge = BridgeCapture()
    try:
        yield bridge
    finally:
        bridge.close()


def add_linker(capture: BridgeCapture, profiler: FakeProfiler) -> _profiling.ProfileLinker:
    linker = _profiling.ProfileLinker(profiler.keep_running, profiler.trace_start,
                                      profiler.profiler_id)
    capture.tracer_provider.add_span_processor(linker)
    return linker


def linked(capture: BridgeCapture) -> list[dict[str, Any]]:
    txns = capture.transactions()
    for txn in txns:
        _profiling.link_profile(txn)  # what the worker does while profiling is on
    return txns


def test_linker_stamps_threads_and_the_session(capture: BridgeCapture) -> None:
    profiler = FakeProfiler()
    add_linker(capture, profiler)
    tracer = capture.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("job"):
        with tracer.start_as_current_span("step"):
            pass
    (txn,) = linked(capture)
    assert txn["contexts"]["profile"] == {"profiler_id": "a" * 32}
    ident = str(threading.get_ident())
    assert trace_of(txn)["data"]["thread.id"] == ident
    assert trace_of(txn)["data"]["thread.name"] == threading.current_thread().name
    assert txn["spans"][0]["data"]["thread.id"] == ident
    assert profiler.kept_running == 1  # once per local root, not per span


def test_linker_trace_lifecycle_opens_a_profile_per_root(capture: BridgeCapture) -> None:
    profiler = FakeProfiler("trace")
    linker = add_linker(capture, profiler)
    tracer = capture.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("job-1"):
        with tracer.start_as_current_span("step"):
            assert linker.open_profiles == 1
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span("job-2", context=set_span_in_context(
            NonRecordingSpan(remote))):
        assert linker.open_profiles == 1
    assert linker.open_profiles == 0
    assert len(profiler.opened) == 2 and not any(p.active for p in profiler.opened)


def test_linker_skips_unsampled_and_idle(capture: BridgeCapture) -> None:
    profiler = FakeProfiler(session=None)  # not sampled: no session runs
    add_linker(capture, profiler)
    tracer = capture.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("job"):
        pass
    (txn,) = linked(capture)
    assert "profile" not in txn["contexts"]
    assert "thread.id" not in trace_of(txn).get("data", {})
    off = TracerProvider(sampler=ALWAYS_OFF, resource=Resource.create({}))
    busy = FakeProfiler()
    off.add_span_processor(_profiling.ProfileLinker(busy.keep_running, busy.trace_start,
                                                    busy.profiler_id))
    with off.get_tracer("t").start_as_current_span("dropped"):
        pass
    assert busy.kept_running == 0


def test_linker_skips_roots_on_sentry_sdk_threads(capture: BridgeCapture) -> None:
    """sentry-sdk's transport requests (traced by urllib3 instrumentation) open no profile:
    each chunk sent would otherwise keep the trace-lifecycle profiler going."""
    profiler = FakeProfiler("trace")
    add_linker(capture, profiler)
    tracer = capture.tracer_provider.get_tracer("t")

    def post() -> None:
        with tracer.start_as_current_span("POST"):
            pass

    thread = threading.Thread(target=post, name="sentry-sdk.BackgroundWorker")
    thread.start()
    thread.join()
    assert profiler.opened == []


def test_linker_bounds_open_profiles(monkeypatch: pytest.MonkeyPatch,
                                     capture: BridgeCapture) -> None:
    monkeypatch.setattr(_profiling, "MAX_OPEN_PROFILES", 2)
    profiler = FakeProfiler("trace")
    linker = add_linker(capture, profiler)
    tracer = capture.tracer_provider.get_tracer("t")
    spans = [tracer.start_span(f"never-ends-{i}") for i in range(5)]
    assert linker.open_profiles == 2
    for span in spans:
        span.end()
    assert linker.open_profiles == 0


def test_link_profile_copies_shared_data() -> None:
    shared = {"thread.id": 7, "thread.name": "w", "sentry.profiler_id": "b" * 32}
    span_data = {"thread.id": 7}
    event: dict[str, Any] = {
        "contexts": {"trace": {"data": shared}},
        "spans": [{"data": span_data}, {"data": span_data}, {}],
    }
    _profiling.link_profile(event, fallback_id="c" * 32)
    assert event["contexts"]["profile"] == {"profiler_id": "b" * 32}
    assert event["contexts"]["trace"]["data"] == {"thread.id": "7", "thread.name": "w"}
    assert [s.get("data") for s in event["spans"]] == [{"thread.id": "7"}] * 2 + [None]
    assert shared["thread.id"] == 7 and span_data == {"thread.id": 7}  # never changed
    # A root the linker stamped with its thread only (a session ran, but the span did not look
    # like a local root as it started): the session running now.
    fallback: dict[str, Any] = {"contexts": {"trace": {"data": {"thread.id": 7}}}}
    _profiling.link_profile(fallback, fallback_id="c" * 32)
    assert fallback["contexts"]["profile"] == {"profiler_id": "c" * 32}
    for unstamped in ({"data": {}}, {}):  # no session ran as it started: no link
        nothing: dict[str, Any] = {"contexts": {"trace": unstamped}}
        _profiling.link_profile(nothing, fallback_id="c" * 32)
        assert "profile" not in nothing["contexts"]


# ------------------------------------------------------------------------------ the receiver


def test_receiver_checks_profile_chunks() -> None:
    good = {
        "version": "2", "chunk_id": "1" * 32, "profiler_id": "2" * 32, "platform": "python",
        "client_sdk": {"name": "sentry.python", "version": "2.75.0"},
        "profile": {
            "frames": [{"function": "main"}, {"function": "work"}],
            "stacks": [[1, 0]],
            "samples": [{"timestamp": 1.5, "thread_id": "7", "stack_id": 0}],
            "thread_metadata": {"7": {"name": "MainThread"}},
        },
    }

    def problems(payload: dict[str, Any], platform: str | None = "python") -> list[str]:
        headers: dict[str, Any] = {"type": "profile_chunk"}
        if platform:
            headers["platform"] = platform
        return validate_item(Item(headers, orjson.dumps(payload)))

    assert problems(good) == []
    bad = {**good, "version": 2, "profiler_id": "x",
           "profile": {**good["profile"], "stacks": [[5]],
                       "samples": [{"timestamp": "1", "thread_id": 7, "stack_id": 3}]}}
    found = "\n".join(problems(bad, platform=None))
    for expected in ("platform is missing", "version", "profiler_id", "stacks[0]",
                     "stack_id", "timestamp", "thread_id"):
        assert expected in found, found
