"""Scenarios 1 and 2: per-span overhead of five contenders, and delivery of the whole burst.

Each contender, in a fresh interpreter per repetition (isolated globals, threads and peak RSS),
interleaved (rep 1: A B C D E, rep 2: A B C D E, ...), runs N transactions x 21 spans as fast
as it can, then flushes; the loopback sink counts what arrived. With the default N = 2000 the
burst is 42,000 spans, below the bridge's default caps (SENTRY_BRIDGE_MAX_BUFFERED_SPANS 50,000),
and the bridge must deliver all of it (scenario 2).
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from typing import Any

from _common import emit_result, fmt, run_child
from _sink import sink_counts, sink_request
from _workload import (
    SPANS_PER_TRANSACTION,
    Workload,
    child_env,
    current_rss_mb,
    make_contender,
    make_workload,
    source_digest,
)

CONTENDERS: tuple[str, ...] = ("floor", "noop", "otlp", "sentry_legacy", "bridge")
STRAGGLER_MAX_WAIT = 4.0  # seconds to wait after flush for the sink to see everything
STRAGGLER_SETTLE = 0.6  # ... or until its count has not moved for this long


def wait_for_sink(port: int, key: str | None, expected: int,
                  max_wait: float = STRAGGLER_MAX_WAIT) -> tuple[dict[str, Any], float]:
    """Poll the sink until ``key`` reaches ``expected`` or stops moving; (counts, waited s)."""
    start = time.monotonic()
    counts = sink_counts(port)
    if key is None:
        return counts, 0.0
    last = counts[key]
    last_change = start
    while counts[key] < expected:
        now = time.monotonic()
        if now - start >= max_wait or now - last_change >= STRAGGLER_SETTLE:
            break
        time.sleep(0.05)
        counts = sink_counts(port)
        if counts[key] != last:
            last = counts[key]
            last_change = time.monotonic()
    return counts, time.monotonic() - start


class GcTimer:
    """Wall time spent in the cyclic garbage collector (any thread), via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total_ns = 0
        self.collections = [0, 0, 0]
        self._started = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.total_ns += time.perf_counter_ns() - self._started
            self.collections[int(info.get("generation", 0))] += 1

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def timer_overhead_ns(calls: int) -> tuple[float, float]:
    """(mean, median) ns of an empty ``t = perf_counter_ns(); add(perf_counter_ns() - t)``."""
    pc = time.perf_counter_ns
    values: list[int] = []
    add = values.append
    for _ in range(calls):
        t = pc()
        add(pc() - t)
    return statistics.fmean(values), float(statistics.median(values))


def probe_hooks(processor: Any, workload: Workload, transactions: int) -> dict[str, float]:
    """Time the app thread spends inside ``processor.on_start`` + ``on_end``, per span.

    The processor's bound methods are replaced on the instance by wrappers that time every call
    with ``perf_counter_ns``; the measured cost of an empty timing pair is subtracted. Two
    figures: the mean (everything, including GIL hand-offs to the contender's background threads
    that happen to land inside a hook) and the median call (the intrinsic cost of the hook).
    """
    pc = time.perf_counter_ns
    starts: list[int] = []
    ends: list[int] = []
    add_start = starts.append
    add_end = ends.append
    orig_start = processor.on_start
    orig_end = processor.on_end

    def on_start(span: Any, parent_context: Any = None) -> None:
        t = pc()
        orig_start(span, parent_context)
        add_start(pc() - t)

    def on_end(span: Any) -> None:
        t = pc()
        orig_end(span)
        add_end(pc() - t)

    processor.on_start = on_start
    processor.on_end = on_end
    try:
        workload(transactions)
    finally:
        processor.on_start = orig_start
        processor.on_end = orig_end
    spans = transactions * SPANS_PER_TRANSACTION
    overhead, overhead_median = timer_overhead_ns(2 * spans)

    def net(values: list[int]) -> float:
        return max(0.0, statistics.fmean(values) - overhead) / 1000 if values else 0.0

    def net_median(values: list[int]) -> float:
        return max(0.0, statistics.median(values) - overhead_median) / 1000 if values else 0.0

    slow = sum(1 for v in starts + ends if v > 100_000)
    return {
        "probe_transactions": transactions,
        "timer_overhead_ns": overhead,
        "on_start_us": net(starts),
        "on_end_us": net(ends),
        "hooks_us": net(starts) + net(ends),
        "hooks_median_us": net_median(starts) + net_median(ends),
        "hook_calls_over_100us": slow,
    }


def child_main(name: str, params: dict[str, Any]) -> None:
    """One contender, one repetition: prints one ``BENCH-RESULT {json}`` line."""
    port, transactions, vary = params["port"], params["transactions"], params["vary"]
    t_boot = time.perf_counter()
    bridge_src = source_digest("otel_sentry_bridge") if name == "bridge" else None
    contender = make_contender(name, port)
    workload = make_workload(contender.provider, vary)
    spans = transactions * SPANS_PER_TRANSACTION
    warmup = max(10, min(50, transactions // 20))
    workload(warmup)
    contender.flush(60.0)
    if contender.sink_key is not None:
        wait_for_sink(port, contender.sink_key, warmup * SPANS_PER_TRANSACTION)
    sink_request(port, "POST", "/reset")
    gc.collect()
    rss_before = current_rss_mb()
    setup_s = time.perf_counter() - t_boot

    load_1min = os.getloadavg()[0]
    gc_timer = GcTimer()
    c0, a0 = time.process_time_ns(), time.thread_time_ns()
    t0 = time.perf_counter_ns()
    workload(transactions)
    t1 = time.perf_counter_ns()
    a1 = time.thread_time_ns()
    flushed = contender.flush(60.0)
    t2 = time.perf_counter_ns()
    c2 = time.process_time_ns()
    gc_timer.stop()

    counts, waited = wait_for_sink(port, contender.sink_key, spans)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    delivered = counts[contender.sink_key] if contender.sink_key else None
    result: dict[str, Any] = {
        "contender": name,
        "pid": os.getpid(),
        "bridge_src": bridge_src,
        "transactions": transactions,
        "spans": spans,
        "warmup_transactions": warmup,
        "setup_s": setup_s,
        "app_s": (t1 - t0) / 1e9,
        "flush_s": (t2 - t1) / 1e9,
        "total_s": (t2 - t0) / 1e9,
        "app_us": (t1 - t0) / 1e3 / spans,
        "total_us": (t2 - t0) / 1e3 / spans,
        # CPU time (noise cross-check): app thread during the loop; whole process loop..flush
        "app_cpu_us": (a1 - a0) / 1e3 / spans,
        "cpu_us": (c2 - c0) / 1e3 / spans,
        "gc_us": gc_timer.total_ns / 1e3 / spans,  # cyclic GC, loop..flush, all threads
        "gc_collections": gc_timer.collections,
        "flush_ok": bool(flushed),
        "straggler_wait_s": waited,
        "delivered_spans": delivered,
        "delivered_pct": None if delivered is None else 100.0 * delivered / spans,
        "delivered_transactions": counts["sentry_transactions"] if name != "otlp" else None,
        "rss_before_mb": rss_before,
        "load_1min": load_1min,
        "peak_rss_mb": peak_rss,
        "sink": counts,
        "drops": contender.drops() if contender.drops is not None else {},
    }
    if contender.processor is not None:
        probe = max(20, transactions // 4)
        result.update(probe_hooks(contender.processor, workload, probe))
    emit_result(result)


def run(port: int, contenders: list[str], transactions: int, repeats: int,
        vary: int) -> dict[str, list[dict[str, Any]]]:
    """Interleaved repetitions of every contender against the sink at ``port``."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    params = {"port": port, "transactions": transactions, "vary": vary}
    for rep in range(1, repeats + 1):
        for name in contenders:
            result = run_child("overhead", name, params, child_env(name, port))
            result["repetition"] = rep
            runs[name].append(result)
            if "error" in result:
                print(f"  rep {rep} {name:<14} FAILED twice, left out: "
                      f"{result['error'][-300:]}", flush=True)
                continue
            print(f"  rep {rep} {name:<14} app {result['app_us']:7.2f} us/span  total "
                  f"{result['total_us']:7.2f} us/span  flush {result['flush_s']:6.2f} s  "
                  f"hooks {fmt(result.get('hooks_us'), '.3f'):>6} us  delivered "
                  f"{fmt(result['delivered_pct'], '.1f'):>5}%  peak RSS "
                  f"{result['peak_rss_mb']:.0f} MB  load {result['load_1min']:.2f}", flush=True)
    return runs
