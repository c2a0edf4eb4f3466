"""Scenario 3: delivery of a burst when every request to the receiver takes 50 ms.

The sink sleeps ``delay_ms`` before answering each envelope (its own process, one thread per
connection). Two contenders, each in a fresh interpreter, interleaved: the bridge and sentry-sdk's
``SentrySpanProcessor`` with sentry-sdk's default transport (one sender thread, a 100-envelope
queue). Both produce the same burst as fast as they can (N transactions x 21 spans; the default
2000 x 21 = 42,000 spans is below the bridge's default caps), then flush (bounded by the
window). The sink stamps every answered request with CLOCK_MONOTONIC, so what arrived within
the same window from the burst's start is counted exactly, with no polling in the contender.

Figures per contender:
  delivered %          transactions answered by the sink within the window / produced
  tx/s in window       transactions delivered within the window / window length (same window
                       for both: the ratio of the two is the ratio of delivered transactions)
  send rate            transactions delivered / (last arrival - burst start): the rate while
                       the contender was actually sending. With one envelope per request and
                       a fixed 50 ms per request it is bounded by connections / 50 ms: the
                       bridge's 4 sender threads (80/s) against sentry-sdk's 1 (20/s), so the
                       ratio of send rates cannot exceed 4 here.
  time to deliver all  last arrival - burst start, when everything arrived (else "-")
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from _common import Target, emit_result, fmt, median, run_child, wrap
from _sink import sink_request
from _workload import (
    SPANS_PER_TRANSACTION,
    child_env,
    make_contender,
    make_workload,
    source_digest,
)
from scenario_overhead import wait_for_sink

CONTENDERS = ("bridge", "sentry_legacy")
LABELS = {"bridge": "bridge", "sentry_legacy": "sentry-sdk"}
RATIO_TARGET = 10.0


class Monitor:
    """Samples a contender's queues every 50 ms on a thread; keeps the maxima."""

    def __init__(self, sample: Any) -> None:
        self.sample = sample
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for key, value in self.sample().items():
                self.peaks[key] = max(self.peaks.get(key, 0), value)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(1.0)
        return self.peaks


def _sampler(name: str, contender: Any) -> Any:
    if name == "bridge":
        pipeline = contender.processor.pipeline
        transport = pipeline.transport

        def bridge_sample() -> dict[str, float]:
            return {"intake_spans": len(pipeline.queue), "buffered_spans":
                    pipeline.buffer.span_count, "send_queue_envelopes": len(transport._queue),
                    "send_queue_bytes": transport._queued_bytes}

        return bridge_sample
    import sentry_sdk

    worker = getattr(sentry_sdk.get_client().transport, "_worker", None)
    queue = getattr(worker, "_queue", None)

    def sdk_sample() -> dict[str, float]:
        return {"send_queue_envelopes": queue.qsize() if queue is not None else 0}

    return sdk_sample


def child_main(name: str, params: dict[str, Any]) -> None:
    """One contender, one repetition, against the slow sink at ``params["port"]``."""
    port, transactions, window = params["port"], params["transactions"], params["window"]
    bridge_src = source_digest("otel_sentry_bridge") if name == "bridge" else None
    contender = make_contender(name, port)
    workload = make_workload(contender.provider)
    warmup = params["warmup"]
    workload(warmup)
    contender.flush(30.0)
    wait_for_sink(port, contender.sink_key, warmup * SPANS_PER_TRANSACTION, max_wait=10.0)
    sink_request(port, "POST", "/reset")
    gc.collect()
    monitor = Monitor(_sampler(name, contender))
    spans = transactions * SPANS_PER_TRANSACTION

    t0 = time.monotonic()
    workload(transactions)
    t1 = time.monotonic()
    deadline = t0 + window
    flushed = contender.flush(max(0.0, deadline - time.monotonic()))
    t2 = time.monotonic()
    counts, _ = wait_for_sink(port, contender.sink_key, spans,
                              max_wait=max(0.0, deadline - time.monotonic()))
    peaks = monitor.stop()
    arrivals: list[list[float]] = sink_request(port, "GET", "/arrivals")
    in_window = [a for a in arrivals if a[0] <= deadline and a[1] > 0]
    delivered_tx = sum(int(a[1]) for a in in_window)
    delivered_spans = sum(int(a[2]) for a in in_window)
    last = max((a[0] for a in in_window), default=None)
    first = min((a[0] for a in in_window), default=None)
    result: dict[str, Any] = {
        "contender": name,
        "bridge_src": bridge_src,
        "transactions": transactions,
        "spans": spans,
        "window_s": window,
        "delay_ms": counts.get("delay_ms"),
        "burst_s": t1 - t0,
        "flush_s": t2 - t1,
        "flush_ok": bool(flushed),
        "delivered_transactions": delivered_tx,
        "delivered_spans": delivered_spans,
        "delivered_pct": 100.0 * delivered_tx / transactions,
        "delivered_spans_pct": 100.0 * delivered_spans / spans,
        "late_transactions": sum(int(a[1]) for a in arrivals if a[0] > deadline),
        "tx_per_s_window": delivered_tx / window,
        "first_arrival_s": None if first is None else first - t0,
        "last_arrival_s": None if last is None else last - t0,
        "send_rate_tx_per_s": delivered_tx / (last - t0) if last is not None else 0.0,
        "time_to_all_s": (last - t0) if last is not None and delivered_tx >= transactions
        else None,
        "sink": counts,
        "peaks": peaks,
        "drops": contender.drops() if contender.drops is not None else {},
    }
    if name == "bridge" and contender.processor is not None:
        pipeline = contender.processor.pipeline
        cfg = pipeline.cfg
        result["caps"] = {
            "max_buffered_spans": cfg.max_buffered_spans,
            "max_buffered_bytes": cfg.max_buffered_bytes,
            "send_queue_max_bytes": pipeline.transport.max_queue_bytes,
            "send_queue_max_items": pipeline.transport.max_queue_items,
            "sender_threads": cfg.sender_threads,
        }
    emit_result(result)


def run(port: int, transactions: int, repeats: int, window: float,
        warmup: int) -> dict[str, list[dict[str, Any]]]:
    """Interleaved repetitions of the two contenders against the slow sink at ``port``."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    params = {"port": port, "transactions": transactions, "window": window, "warmup": warmup}
    for rep in range(1, repeats + 1):
        for name in CONTENDERS:
            result = run_child("latency", name, params, child_env(name, port),
                               timeout=window + 120)
            result["repetition"] = rep
            runs[name].append(result)
            if "error" in result:
                print(f"  rep {rep} {name:<14} FAILED twice, left out: "
                      f"{result['error'][-300:]}", flush=True)
                continue
            print(f"  rep {rep} {name:<14} burst {result['burst_s']:5.2f} s  delivered "
                  f"{result['delivered_pct']:5.1f}% of transactions within {window:.0f} s  "
                  f"{result['tx_per_s_window']:6.1f} tx/s  send rate "
                  f"{result['send_rate_tx_per_s']:5.1f} tx/s  last arrival "
                  f"{fmt(result['last_arrival_s'], '.1f')} s  drops {result['drops'] or '-'}",
                  flush=True)
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per contender, ratios bridge / sentry-sdk per repetition (then the median)."""
    good = {n: {r["repetition"]: r for r in rs if "error" not in r} for n, rs in runs.items()}
    out: dict[str, Any] = {}
    for name, by_rep in good.items():
        results = list(by_rep.values())
        if not results:
            continue
        out[name] = {key: median(r[key] for r in results) for key in (
            "burst_s", "delivered_pct", "delivered_spans_pct", "tx_per_s_window",
            "send_rate_tx_per_s", "last_arrival_s", "time_to_all_s", "delivered_transactions")}
        out[name]["delivered_pct_min"] = min(r["delivered_pct"] for r in results)
        out[name]["repetitions"] = len(results)
        out[name]["client_reports"] = results[-1]["sink"].get("sentry_discarded", {})
        out[name]["peaks"] = results[-1]["peaks"]
        out[name]["drops"] = [r["drops"] for r in results]
    bridge, sdk = good.get("bridge", {}), good.get("sentry_legacy", {})
    reps = sorted(set(bridge) & set(sdk))

    def ratio(key: str) -> float | None:
        values = [bridge[r][key] / sdk[r][key] for r in reps if sdk[r][key]]
        return median(values)

    out["ratio_tx_per_s_window"] = ratio("tx_per_s_window")
    out["ratio_send_rate"] = ratio("send_rate_tx_per_s")
    first = next(iter(bridge.values()), None)
    out["transactions"] = first["transactions"] if first else None
    out["spans"] = first["spans"] if first else None
    out["window_s"] = first["window_s"] if first else None
    out["delay_ms"] = first["delay_ms"] if first else None
    out["caps"] = first.get("caps") if first else None
    # Zero loss below the cap: every repetition delivered 100 % of spans and counted 0 drops.
    out["zero_loss"] = bool(bridge) and all(
        r["delivered_spans_pct"] >= 100.0 and not r["drops"] for r in bridge.values())
    out["below_cap"] = bool(first and first.get("caps")
                            and first["spans"] < first["caps"]["max_buffered_spans"])
    return out


def report(summary: dict[str, Any]) -> list[str]:
    lines = [f"burst {summary['transactions']:,} transactions x 21 = {summary['spans']:,} spans;"
             f" every request answered after {fmt(summary['delay_ms'], '.0f')} ms; window "
             f"{fmt(summary['window_s'], '.0f')} s from the burst's start (medians)",
             f"{'contender':<12} {'burst s':>8} {'delivered %':>12} {'tx/s in window':>15} "
             f"{'send rate tx/s':>15} {'last arrival s':>15} {'time to all s':>14} "
             f"{'peak send queue':>16}"]
    for name in CONTENDERS:
        s = summary.get(name)
        if s is None:
            continue
        lines.append(f"{LABELS[name]:<12} {s['burst_s']:8.2f} {s['delivered_pct']:12.1f} "
                     f"{s['tx_per_s_window']:15.1f} {s['send_rate_tx_per_s']:15.1f} "
                     f"{fmt(s['last_arrival_s'], '.1f'):>15} {fmt(s['time_to_all_s'], '.1f'):>14} "
                     f"{s['peaks'].get('send_queue_envelopes', 0):16.0f}")
    lines.append(f"ratio bridge / sentry-sdk: tx/s in window "
                 f"{fmt(summary['ratio_tx_per_s_window'], '.1f')}x (target >= "
                 f"{RATIO_TARGET:.0f}x), send rate {fmt(summary['ratio_send_rate'], '.1f')}x "
                 f"(connection bound: 4 x 20/s vs 1 x 20/s with one envelope per 50 ms "
                 f"request; sentry-sdk's sender also waits for the GIL while its processor "
                 f"works on the app thread)")
    sdk = summary.get("sentry_legacy")
    if sdk is not None and sdk["client_reports"]:
        lines.append(f"sentry-sdk's own client reports (last rep): {sdk['client_reports']}")
    caps = summary.get("caps") or {}
    bridge = summary.get("bridge")
    if bridge is not None:
        lines.append(
            f"bridge zero loss below the buffer cap: "
            f"{'yes' if summary['zero_loss'] else 'NO'} ({summary['spans']:,} spans < "
            f"SENTRY_BRIDGE_MAX_BUFFERED_SPANS {caps.get('max_buffered_spans', 0):,}; drops "
            f"counted: {'; '.join(map(str, filter(None, bridge['drops']))) or 'none'}; "
            f"peak send queue "
            f"{bridge['peaks'].get('send_queue_envelopes', 0):.0f} envelopes / "
            f"{bridge['peaks'].get('send_queue_bytes', 0) / 2**20:.1f} MB of "
            f"{caps.get('send_queue_max_bytes', 0) / 2**20:.0f} MB)")
    lines += ["", *wrap(
        "How to read it: delivered % = transactions the sink answered within the window"
        " / produced; tx/s in window = those / window (the same window for both, so the "
        "ratio is the ratio of delivered transactions); send rate = delivered / (last "
        "arrival - burst start); time to all = last arrival - burst start when "
        "everything arrived. Peak send queue: envelopes waiting in the contender's "
        "transport (sentry-sdk's holds 100; more are dropped).")]
    return lines


def targets(summary: dict[str, Any]) -> list[Target]:
    bridge, sdk = summary.get("bridge"), summary.get("sentry_legacy")
    if bridge is None:
        return []
    sdk_ref = (f"sentry-sdk {sdk['delivered_pct']:.1f} %" if sdk else "")
    rows = [Target("3 50 ms receiver", f"delivered within {summary['window_s']:.0f} s",
                   f"{bridge['delivered_pct']:.1f} %", sdk_ref, "-", "-", None)]
    ratio = summary["ratio_tx_per_s_window"]
    rows.append(Target(
        "3 50 ms receiver", "delivered tx/s (same window)", f"{bridge['tx_per_s_window']:.1f}",
        f"sentry-sdk {sdk['tx_per_s_window']:.1f}" if sdk else "", fmt(ratio, ".1f") + "x",
        f">= {RATIO_TARGET:.0f}x", None if ratio is None else ratio >= RATIO_TARGET))
    rows.append(Target(
        "3 50 ms receiver", "send rate while sending, tx/s",
        f"{bridge['send_rate_tx_per_s']:.1f}",
        f"sentry-sdk {sdk['send_rate_tx_per_s']:.1f}" if sdk else "",
        fmt(summary["ratio_send_rate"], ".1f") + "x", "-", None,
        "connection bound 4 x 20/s vs 1 x 20/s; sentry-sdk's sender also loses the GIL"))
    rows.append(Target(
        "3 50 ms receiver", "zero loss below the buffer cap",
        "0 lost" if summary["zero_loss"] else "LOSS",
        f"{summary['spans']:,} < cap {(summary['caps'] or {}).get('max_buffered_spans', 0):,}"
        " spans", "-", "0 lost", summary["zero_loss"] and summary["below_cap"]))
    return rows

