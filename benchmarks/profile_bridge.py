"""Profile the bridge on the bench_core workload, per thread role (app, worker, senders).

Usage::

    python benchmarks/profile_bridge.py [--transactions N] [--top K] [--dump DIR]

Starts bench_core's loopback sink in a subprocess, installs the bridge pointing at it, and runs
``cProfile`` in every thread: the app thread (span loop + flush), the pipeline worker and the
transport's sender threads (their ``_run`` methods are wrapped at runtime; no library file is
modified). Timers are per-thread CPU time (``time.thread_time``), so waiting for the GIL or the
network is not counted. Prints the top functions by own time and by cumulative time for each
role. cProfile inflates Python-heavy code more than C calls: use it for *where*, bench_core for
*how much*.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_core

_PROFILES: dict[str, list[cProfile.Profile]] = {"app": [], "worker": [], "sender": []}
_LOCK = threading.Lock()


def _profiled(role: str, run: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        profile = cProfile.Profile(time.thread_time)  # CPU time: GIL waits do not count
        with _LOCK:
            _PROFILES[role].append(profile)
        profile.enable()
        try:
            return run(self, *args, **kwargs)
        finally:
            profile.disable()

    return wrapper


def _report(role: str, top: int, dump: str | None) -> None:
    profiles = _PROFILES[role]
    if not profiles:
        print(f"== {role}: no profile")
        return
    for profile in profiles:
        profile.create_stats()
    stream = io.StringIO()
    stats = pstats.Stats(profiles[0], stream=stream)
    for profile in profiles[1:]:
        stats.add(profile)
    if dump:
        stats.dump_stats(os.path.join(dump, f"bridge-{role}.prof"))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"== {role} ({len(profiles)} thread(s))")
    print(stream.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", metavar="DIR", help="also write <DIR>/bridge-<role>.prof")
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, bench_core.__file__, "--_sink"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        for key in [k for k in os.environ if k.startswith(bench_core.ENV_PREFIXES_STRIPPED)]:
            del os.environ[key]
        os.environ["SENTRY_DSN"] = f"http://key@127.0.0.1:{port}/1"

        from otel_sentry_bridge import pipeline as pipeline_mod
        from otel_sentry_bridge import transport as transport_mod

        pipeline_mod.Pipeline._run = _profiled(  # type: ignore[method-assign]
            "worker", pipeline_mod.Pipeline._run)
        transport_mod.Transport._run = _profiled(  # type: ignore[method-assign]
            "sender", transport_mod.Transport._run)

        contender = bench_core.make_contender("bridge", port)
        workload = bench_core.make_workload(contender.provider)
        workload(20)
        contender.flush(60.0)
        app = cProfile.Profile(time.thread_time)
        _PROFILES["app"].append(app)
        t0 = time.perf_counter()
        app.enable()
        workload(args.transactions)
        t1 = time.perf_counter()
        contender.flush(60.0)
        app.disable()
        t2 = time.perf_counter()
        spans = args.transactions * bench_core.SPANS_PER_TRANSACTION
        counts, _ = bench_core.wait_for_sink(port, "sentry_otel_spans", spans + 20 * 21)
        # stop the worker and senders so their profiles are complete
        assert contender.processor is not None
        pipeline = contender.processor.pipeline
        pipeline.shutdown(5.0)
        time.sleep(0.2)
        for thread in threading.enumerate():
            if thread.name.startswith("otel-sentry-bridge-worker"):
                thread.join(1.0)
        with pipeline.transport._cond:
            pipeline.transport._cond.notify_all()
        for thread in threading.enumerate():
            if thread.name.startswith("otel-sentry-bridge-sender"):
                thread.join(12.0)
        print(f"profiled: {args.transactions} transactions, {spans} spans; loop {t1 - t0:.2f} s,"
              f" flush {t2 - t1:.2f} s (under cProfile); sink saw "
              f"{counts['sentry_transactions']} transactions")
        if dump := args.dump:
            os.makedirs(dump, exist_ok=True)
        for role in ("app", "worker", "sender"):
            _report(role, args.top, args.dump)
    finally:
        if sink.stdin is not None:
            sink.stdin.close()
        sink.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
