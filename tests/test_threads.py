"""Threads and asyncio: work handed off inside a span stays in that span's trace.

OpenTelemetry's context lives in ``contextvars``: asyncio tasks (``gather``, ``create_task``) and
``asyncio.to_thread`` copy it, so their spans are children of the span that started them.
``threading.Thread``, ``threading.Timer``, ``ThreadPoolExecutor.submit``/``map`` and
``loop.run_in_executor`` start with an empty context unless
``opentelemetry-instrumentation-threading`` is installed (``opentelemetry-bootstrap -a install``
installs it; ``opentelemetry-instrument`` then activates it). With it, one job that fans out to
all of these is ONE transaction whose spans are parented as they were started; without it,
each thread's span is a transaction of a trace of its own. Both are shown here, under
``opentelemetry-instrument`` in a subprocess and in-process with ``ThreadingInstrumentor``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from apps import opentelemetry_instrument
from e2e_support import assert_clean_output, assert_no_duplicates, bridge_env, summary, trace_of
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.trace import Tracer
from sentry_receiver import SentryReceiver

from otel_sentry_bridge.testing import BridgeCapture

#: span name -> the name of its parent span ("fan-out" is the root)
EXPECTED_PARENTS = {
    "thread": "fan-out", "thread.inner": "thread",
    "timer": "fan-out", "timer.inner": "timer",
    "pool-submit": "fan-out", "pool-submit.inner": "pool-submit",
    "pool-map-1": "fan-out", "pool-map-1.inner": "pool-map-1",
    "pool-map-2": "fan-out", "pool-map-2.inner": "pool-map-2",
    "task-1": "fan-out", "task-1.to_thread": "task-1", "task-1.to_thread.inner": "task-1.to_thread",
    "task-2": "fan-out", "task-2.to_thread": "task-2", "task-2.to_thread.inner": "task-2.to_thread",
    "created-task": "fan-out", "created-task.inner": "created-task",
    "run-in-executor": "fan-out", "run-in-executor.inner": "run-in-executor",
}
#: the spans started on threads the threading instrumentation covers (not asyncio's)
THREAD_ROOTS = {"thread", "timer", "pool-submit", "pool-map-1", "pool-map-2", "run-in-executor"}

FAN_OUT = '''\
"""One job fanning out to a Thread, a Timer, a pool and asyncio tasks (test_threads.py)."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace


def fan_out(tracer):
    def work(name):
        with tracer.start_as_current_span(name):
            with tracer.start_as_current_span(name + ".inner"):
                pass

    async def task(name):
        with tracer.start_as_current_span(name):
            await asyncio.sleep(0.01)
            await asyncio.to_thread(work, name + ".to_thread")

    async def tasks():
        await asyncio.gather(task("task-1"), task("task-2"))
        loop = asyncio.get_running_loop()
        await loop.create_task(asyncio.to_thread(work, "created-task"))
        await loop.run_in_executor(None, work, "run-in-executor")

    with tracer.start_as_current_span("fan-out"):
        thread = threading.Thread(target=work, args=("thread",))
        thread.start()
        thread.join()
        timer = threading.Timer(0.0, work, args=("timer",))
        timer.start()
        timer.join()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(work, "pool-submit").result()
            list(pool.map(work, ["pool-map-1", "pool-map-2"]))
        asyncio.run(tasks())


if __name__ == "__main__":
    fan_out(trace.get_tracer("jobs"))
'''


def _fan_out() -> Callable[[Tracer], None]:
    namespace: dict[str, Any] = {}
    exec(compile(FAN_OUT, "fan_out.py", "exec"), namespace)  # the script's own function
    fan_out: Callable[[Tracer], None] = namespace["fan_out"]
    return fan_out


def span_names(txn: dict[str, Any]) -> dict[str, str]:
    """span id -> name (the root's ``transaction``, the children's ``description``)."""
    names = {trace_of(txn)["span_id"]: txn["transaction"]}
    names.update({s["span_id"]: s["description"] for s in txn["spans"]})
    return names


def assert_one_transaction(txns: list[dict[str, Any]], listing: str) -> None:
    assert_no_duplicates(txns)
    assert [t["transaction"] for t in txns] == ["fan-out"], listing
    (txn,) = txns
    names = span_names(txn)
    trace_id = trace_of(txn)["trace_id"]
    parents = {}
    for span in txn["spans"]:
        assert span["trace_id"] == trace_id, span
        parents[span["description"]] = names[span["parent_span_id"]]
    assert parents == EXPECTED_PARENTS, listing


def assert_threads_split_off(txns: list[dict[str, Any]]) -> None:
    """Without the threading instrumentation: asyncio stays, every thread root is its own."""
    by_name = {t["transaction"]: t for t in txns}
    assert set(by_name) == {"fan-out"} | THREAD_ROOTS, sorted(by_name)
    root = by_name["fan-out"]
    assert {s["description"] for s in root["spans"]} == {
        name for name, parent in EXPECTED_PARENTS.items()
        if parent not in THREAD_ROOTS and name not in THREAD_ROOTS
    }
    traces = {trace_of(t)["trace_id"] for t in txns}
    assert len(traces) == len(txns)  # each in a trace of its own
    for name in THREAD_ROOTS:
        assert "parent_span_id" not in trace_of(by_name[name])
        assert [s["description"] for s in by_name[name]["spans"]] == [name + ".inner"]


# ------------------------------------------------------------------ opentelemetry-instrument


def run_fan_out(receiver: SentryReceiver, tmp_path: Path, **extra: str | None) -> str:
    script = tmp_path / "fan_out.py"
    script.write_text(FAN_OUT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "OTEL_"))}
    env.update(bridge_env(receiver, "jobs", **extra))
    proc = subprocess.run(
        [str(opentelemetry_instrument()), sys.executable, str(script)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert_clean_output(output)
    return output


@pytest.mark.e2e
def test_fan_out_is_one_transaction_under_opentelemetry_instrument(tmp_path: Path) -> None:
    with SentryReceiver() as receiver:
        run_fan_out(receiver, tmp_path)
        txns = receiver.wait_for_transactions(1, timeout=10)
        assert_one_transaction(txns, summary(receiver))
        receiver.assert_no_problems()


@pytest.mark.e2e
def test_without_threading_instrumentation_threads_start_new_traces(tmp_path: Path) -> None:
    with SentryReceiver() as receiver:
        run_fan_out(receiver, tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="threading")
        receiver.wait_for(lambda r: len(r.transactions()) >= 1 + len(THREAD_ROOTS), timeout=10)
        assert_threads_split_off(receiver.transactions())
        receiver.assert_no_problems()


# ------------------------------------------------------------------ in-process


@pytest.fixture
def capture() -> Iterator[BridgeCapture]:
    bridge = BridgeCapture()
    try:
        yield bridge
    finally:
        bridge.close()


@pytest.fixture
def threading_instrumented() -> Iterator[None]:
    instrumentor = ThreadingInstrumentor()
    already = instrumentor.is_instrumented_by_opentelemetry
    if not already:
        instrumentor.instrument()
    try:
        yield
    finally:
        if not already:
            instrumentor.uninstrument()


@pytest.mark.usefixtures("threading_instrumented")
def test_fan_out_is_one_transaction_in_process(capture: BridgeCapture) -> None:
    _fan_out()(capture.tracer_provider.get_tracer("jobs"))
    txns = capture.transactions()
    assert_one_transaction(txns, str([t["transaction"] for t in txns]))


def test_fan_out_without_instrumentation_in_process(capture: BridgeCapture) -> None:
    if ThreadingInstrumentor().is_instrumented_by_opentelemetry:
        pytest.skip("threading is instrumented for the whole test process")
    _fan_out()(capture.tracer_provider.get_tracer("jobs"))
    assert_threads_split_off(capture.transactions())


@pytest.mark.usefixtures("threading_instrumented")
def test_child_ending_after_its_root_joins_the_transaction() -> None:
    """A pool thread still working when the job's root ends: its span ends within the
    late-span grace and joins the root's transaction (never a stray transaction)."""
    capture = BridgeCapture(late_span_grace=5.0)
    tracer = capture.tracer_provider.get_tracer("jobs")
    started = threading.Event()
    release = threading.Event()

    def late() -> None:
        with tracer.start_as_current_span("late"):
            started.set()
            release.wait(5)

    pool = ThreadPoolExecutor(1)
    try:
        with tracer.start_as_current_span("job"):
            future = pool.submit(late)
            assert started.wait(5)
        release.set()  # the root has ended; "late" ends now
        future.result(5)
        txns = capture.transactions()
    finally:
        pool.shutdown()
        capture.close()
    assert [t["transaction"] for t in txns] == ["job"]
    assert [s["description"] for s in txns[0]["spans"]] == ["late"]
    assert txns[0]["spans"][0]["timestamp"] > txns[0]["timestamp"]
