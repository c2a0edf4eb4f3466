"""Scenario 4: memory and drop accounting with the receiver down (connection refused).

The DSN points at a loopback port nobody listens on (checked: connecting is refused). After a
20-transaction warm-up, one burst of exactly S spans (default 100,000: 4761 full transactions of
21 spans and one of 19) is produced as fast as possible, then the process waits until the
bridge's worker has drained its intake and its state stops changing (bounded by ``settle``).

Memory (MiB, this process only): VmRSS before the burst (after the warm-up and gc.collect()),
VmHWM (the kernel's peak RSS, also sampled every 50 ms with the queues), VmRSS after settling.
Growth = peak - before. The ``floor`` contender (same burst, no processor) is the reference.

Accounting (in-process, no client report can reach a receiver that is down): every span the
application ended is, at the end, in exactly one of
  intake        the pipeline's intake deque (accepted, not yet grouped)
  buffer        the trace buffer: buffer.span_count (children, incl. those waiting for a parent)
                + roots of segments that have one (roots are not in span_count)
  send queue    a serialized envelope in the transport's queue or in flight (each envelope is
                parsed: its OTel spans, i.e. the transaction's root + children without the
                cache.* parents the bridge synthesizes for redis spans)
  delivered     answered by the receiver (0 here: nobody listens)
  dropped       counted by the pipeline's DropCounter (what client reports send) with a reason:
                queue_overflow (intake full), buffer_overflow, event_processor (buffer timeout),
                network_error / queue_overflow at the transport (envelopes given up or refused
                by a full send queue).
The DropCounter counts spans of envelopes dropped at the transport as *Sentry* spans
(len(spans) + 1, synthesized cache.* parents included); the benchmark wraps the transport's
``_record_loss`` on the instance (no library file changes) to parse every such envelope and
convert it back to OTel spans. Warm-up envelopes still queued are excluded by identity.
accepted = intake + buffer + send queue + delivered; the check is produced = accepted + dropped.
Transactions are also counted (client reports count them too), as information only: one
produced transaction can become more than one envelope or none.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from typing import Any

from _common import Target, emit_result, median, run_child, wrap
from _sink import envelope_counts
from _workload import child_env, make_contender, make_workload, proc_status_mb, source_digest

MEMORY_TARGET_MB = 50.0


def refused_port() -> int:
    """A loopback port that was free a moment ago (nobody listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _is_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _otel_spans(item: Any) -> tuple[int, int]:
    """(transactions, OTel spans) in one queued envelope (``Outgoing``)."""
    body = zlib.decompress(item.body, 31) if item.compressed else item.body
    counts = envelope_counts(body)
    return counts["sentry_transactions"], counts["sentry_otel_spans"]


def _span_cost() -> float:
    """Bytes one finished workload span holds (tracemalloc, spans kept in a list, no bridge)."""
    from opentelemetry.sdk.trace import SpanProcessor

    held: list[Any] = []

    class Keep(SpanProcessor):
        def on_end(self, span: Any) -> None:
            held.append(span)

    probe = make_contender("floor", 0)
    probe.provider.add_span_processor(Keep())
    workload = make_workload(probe.provider)
    workload(2)
    held.clear()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    workload(50)
    gc.collect()
    cost = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    tracemalloc.stop()
    return cost


def child_main(name: str, params: dict[str, Any]) -> None:
    port, total, settle = params["port"], params["spans"], params["settle"]
    refused = _is_refused(port)
    bridge_src = source_digest("otel_sentry_bridge") if name == "bridge" else None
    contender = make_contender(name, port)
    workload = make_workload(contender.provider)
    workload(20)
    pipeline = contender.processor.pipeline if contender.processor is not None else None
    baseline_items: list[Any] = []
    base_drops: Counter[tuple[str, str]] = Counter()
    transport_loss: Counter[tuple[str, str]] = Counter()
    if pipeline is not None:
        time.sleep(0.5)  # the worker maps the warm-up; its envelopes wait in the send queue
        transport = pipeline.transport
        with pipeline._lock, transport._cond:
            baseline_items = list(transport._queue) + list(transport._pending)
            base_drops = Counter(pipeline.drops.totals)
        original = transport._record_loss

        def record_loss(reason: str, item: Any) -> None:
            if not (item.category == "internal" or item.abandoned
                    or any(item is b for b in baseline_items)):
                txns, spans = _otel_spans(item)
                transport_loss[(reason, "transaction")] += txns
                transport_loss[(reason, "otel_span")] += spans
                transport_loss[(reason, "sentry_span")] += item.spans
            original(reason, item)

        transport._record_loss = record_loss
    gc.collect()
    before = proc_status_mb()
    peaks: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            values = {"rss_mb": proc_status_mb()["VmRSS"]}
            if pipeline is not None:
                values.update(intake_spans=len(pipeline.queue), starts=len(pipeline.starts),
                              buffered_spans=pipeline.buffer.span_count,
                              send_queue_envelopes=len(pipeline.transport._queue),
                              send_queue_mb=pipeline.transport._queued_bytes / 2**20)
            for key, value in values.items():
                peaks[key] = max(peaks.get(key, 0.0), value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    transactions, last_size = workload.spans(total)
    t1 = time.monotonic()
    state: tuple[Any, ...] = ()
    stable_since = time.monotonic()
    while time.monotonic() - t1 < settle and pipeline is not None:
        time.sleep(0.1)
        transport = pipeline.transport
        now_state = (len(pipeline.queue), len(pipeline.starts), pipeline.buffer.span_count,
                     len(transport._queue), sum(pipeline.drops.totals.values()))
        if now_state != state:
            state, stable_since = now_state, time.monotonic()
        elif not now_state[0] and not now_state[1] and time.monotonic() - stable_since >= 1.0:
            break
    t2 = time.monotonic()
    stop.set()
    sampler.join(1.0)
    gc.collect()
    after = proc_status_mb()
    result: dict[str, Any] = {
        "contender": name, "bridge_src": bridge_src, "receiver_refused": refused,
        "spans": total, "transactions": transactions, "last_transaction_spans": last_size,
        "burst_s": t1 - t0, "settle_s": t2 - t1,
        "rss_before_mb": before["VmRSS"], "rss_after_mb": after["VmRSS"],
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_peak_mb": max(after["VmHWM"], peaks.get("rss_mb", 0.0)),
        "peaks": peaks,
        "env_cap": os.environ.get("SENTRY_BRIDGE_MAX_BUFFERED_SPANS"),
    }
    result["growth_peak_mb"] = result["rss_peak_mb"] - before["VmRSS"]
    result["growth_after_mb"] = after["VmRSS"] - before["VmRSS"]
    if pipeline is not None:
        result["accounting"] = _accounting(pipeline, baseline_items, base_drops,
                                           transport_loss, total, transactions)
        result["span_cost_bytes"] = _span_cost()
    emit_result(result)


def _accounting(pipeline: Any, baseline_items: list[Any], base_drops: Counter[tuple[str, str]],
                transport_loss: Counter[tuple[str, str]], produced: int,
                produced_tx: int) -> dict[str, Any]:
    transport, buffer = pipeline.transport, pipeline.buffer
    with pipeline._lock, transport._cond:
        seen: dict[int, Any] = {}
        for item in list(transport._queue) + list(transport._pending):
            if not any(item is b for b in baseline_items):
                seen[id(item)] = item
        queued = [_otel_spans(item) for item in seen.values()]
        intake = len(pipeline.queue) + len(pipeline.exported)
        roots = sum(1 for s in buffer.segments.values() if s.root is not None)
        rootless = len(buffer.segments) - roots
        buffered = buffer.span_count + roots
        drops = Counter(pipeline.drops.totals)
        drops.subtract(base_drops)
        sent = transport.sent_envelopes
        owner = len(buffer.owner)
    by_reason = {f"{r}/{c}": q for (r, c), q in sorted(drops.items()) if q}
    span_drops = sum(q for (_r, c), q in drops.items() if c == "span")
    tx_drops = sum(q for (_r, c), q in drops.items() if c == "transaction")
    sentry_lost = sum(q for (_r, c), q in transport_loss.items() if c == "sentry_span")
    otel_lost = sum(q for (_r, c), q in transport_loss.items() if c == "otel_span")
    dropped = span_drops - sentry_lost + otel_lost
    in_queue = sum(spans for _tx, spans in queued)
    accepted = intake + buffered + in_queue
    return {
        "produced_spans": produced, "intake_spans": intake, "buffered_spans": buffered,
        "queued_envelopes": len(queued), "queued_spans": in_queue, "delivered_envelopes": sent,
        "accepted_spans": accepted, "dropped_spans": dropped,
        "unaccounted_spans": produced - accepted - dropped,
        "drop_counter": by_reason,
        "transport_losses": {f"{r}/{c}": q for (r, c), q in sorted(transport_loss.items())},
        "produced_transactions": produced_tx, "queued_transactions":
        sum(tx for tx, _spans in queued), "buffered_roots": roots,
        "counted_dropped_transactions": tx_drops, "rootless_segments": rootless,
        "owner_entries": owner,
    }


def run(spans: int, settle: float, repeats: int, what_if_cap: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], "bridge": [], "bridge_cap": []}
    params = {"spans": spans, "settle": settle}
    for rep in range(1, repeats + 1):
        for label, label_runs in runs.items():
            if label == "bridge_cap" and (not what_if_cap or rep > 1):
                continue
            port = refused_port()
            name = "floor" if label == "floor" else "bridge"
            extra = {"SENTRY_BRIDGE_MAX_BUFFERED_SPANS": str(what_if_cap)} \
                if label == "bridge_cap" else None
            result = run_child("down", name, {**params, "port": port},
                               child_env(name, port, extra), timeout=settle + 300)
            result["repetition"] = rep
            label_runs.append(result)
            if "error" in result:
                print(f"  rep {rep} {label:<11} FAILED twice, left out: "
                      f"{result['error'][-300:]}", flush=True)
                continue
            acc = result.get("accounting")
            print(f"  rep {rep} {label:<11} burst {result['burst_s']:5.2f} s  RSS before "
                  f"{result['rss_before_mb']:.0f} MB  peak {result['rss_peak_mb']:.0f} MB  after "
                  f"{result['rss_after_mb']:.0f} MB  growth {result['growth_peak_mb']:.1f} MB"
                  + (f"  accepted {acc['accepted_spans']:,} + dropped "
                     f"{acc['dropped_spans']:,} = {acc['accepted_spans'] + acc['dropped_spans']:,}"
                     if acc else ""), flush=True)
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            continue
        out[label] = {key: median(r[key] for r in good) for key in (
            "burst_s", "rss_before_mb", "rss_peak_mb", "rss_after_mb", "growth_peak_mb",
            "growth_after_mb")}
        out[label]["growth_peak_mb_max"] = max(r["growth_peak_mb"] for r in good)
        out[label]["repetitions"] = len(good)
        out[label]["refused"] = all(r["receiver_refused"] for r in good)
        if "accounting" in good[0]:
            out[label]["accounting"] = [r["accounting"] for r in good]
            out[label]["exact"] = all(r["accounting"]["unaccounted_spans"] == 0 for r in good)
            out[label]["span_cost_bytes"] = median(r["span_cost_bytes"] for r in good)
            out[label]["peaks"] = good[-1]["peaks"]
            out[label]["env_cap"] = good[-1]["env_cap"]
        out["spans"] = good[0]["spans"]
    return out


def report(summary: dict[str, Any]) -> list[str]:
    lines = [f"{summary.get('spans', 0):,}-span burst, receiver refusing connections "
             f"(medians; growth = peak - before)",
             f"{'contender':<34} {'burst s':>8} {'RSS before':>11} {'peak':>8} {'after':>8} "
             f"{'growth MB':>10}"]
    for label, title in (("floor", "floor (OTel alone)"), ("bridge", "bridge (defaults)"),
                         ("bridge_cap", "bridge (what-if cap)")):
        s = summary.get(label)
        if s is None:
            continue
        if label == "bridge_cap":
            title = f"bridge, MAX_BUFFERED_SPANS={s['env_cap']}"
        lines.append(f"{title:<34} {s['burst_s']:8.2f} {s['rss_before_mb']:11.1f} "
                     f"{s['rss_peak_mb']:8.1f} {s['rss_after_mb']:8.1f} "
                     f"{s['growth_peak_mb']:10.1f}")
    for label in ("bridge", "bridge_cap"):
        s = summary.get(label)
        if s is None:
            continue
        acc = s["accounting"][-1]
        peaks = s["peaks"]
        lines += [
            f"{label} accounting (last rep): produced {acc['produced_spans']:,} spans = "
            f"accepted {acc['accepted_spans']:,} (intake {acc['intake_spans']:,} + buffer "
            f"{acc['buffered_spans']:,} + send queue {acc['queued_spans']:,} in "
            f"{acc['queued_envelopes']:,} envelopes + delivered {acc['delivered_envelopes']}) "
            f"+ counted as dropped {acc['dropped_spans']:,}; unaccounted "
            f"{acc['unaccounted_spans']} ({'exact' if s['exact'] else 'NOT EXACT'} in every rep)",
            f"  drop counter (client-report reasons): {acc['drop_counter']}; converted at the "
            f"transport: {acc['transport_losses'] or '-'}",
            f"  transactions: produced {acc['produced_transactions']:,}, queued "
            f"{acc['queued_transactions']:,}, buffered roots {acc['buffered_roots']}, counted as "
            f"dropped {acc['counted_dropped_transactions']:,}; rootless segments left in the "
            f"buffer {acc['rootless_segments']:,}, span ids in buffer.owner "
            f"{acc['owner_entries']:,}",
            f"  peaks: intake {peaks.get('intake_spans', 0):,.0f} spans, trace buffer "
            f"{peaks.get('buffered_spans', 0):,.0f} spans, send queue "
            f"{peaks.get('send_queue_envelopes', 0):,.0f} envelopes / "
            f"{peaks.get('send_queue_mb', 0):.1f} MB; one finished span holds "
            f"{s['span_cost_bytes']:,.0f} B (tracemalloc)",
        ]
    lines += ["", *wrap(
        "How to read it: RSS from /proc/self/status (VmRSS before the burst, VmHWM = peak,"
        " VmRSS after settling; ru_maxrss agrees with VmHWM, see --json). Every "
        "produced span is either accepted (intake deque + trace buffer + OTel spans in "
        "queued/in-flight envelopes + delivered) or counted by the DropCounter that feeds "
        "client reports; spans of envelopes dropped at the transport are counted there as "
        "Sentry spans (with the synthesized cache.* parents) and converted back to OTel "
        "spans here. Transactions: client reports count a dropped root as a dropped "
        "transaction; the worker then drops its accepted children at once (counted as "
        "event_processor spans), so no rootless segment is left behind.")]
    return lines


def targets(summary: dict[str, Any]) -> list[Target]:
    bridge = summary.get("bridge")
    if bridge is None:
        return []
    floor = summary.get("floor")
    rows = [Target("4 receiver down", f"RSS growth, {summary['spans']:,}-span burst (max rep)",
                   f"{bridge['growth_peak_mb_max']:.1f} MB",
                   f"floor {floor['growth_peak_mb']:.1f} MB" if floor else "", "-",
                   f"<= {MEMORY_TARGET_MB:.0f} MB",
                   bridge["growth_peak_mb_max"] <= MEMORY_TARGET_MB)]
    acc = bridge["accounting"][-1]
    rows.append(Target("4 receiver down", "accepted + counted dropped = produced",
                       f"{acc['accepted_spans']:,} + {acc['dropped_spans']:,}",
                       f"{acc['produced_spans']:,}", "-", "exact", bridge["exact"]))
    what_if = summary.get("bridge_cap")
    if what_if is not None:
        rows.append(Target("4 receiver down", f"RSS growth with MAX_BUFFERED_SPANS="
                           f"{what_if['env_cap']}", f"{what_if['growth_peak_mb_max']:.1f} MB",
                           "", "-", "-", None, "what-if, not the default"))
    return rows

