"""Benchmark harness: OpenTelemetry spans -> Sentry (and OTLP), every scenario in one run.

Usage::

    python benchmarks/bench_core.py [--quick] [--json out.json] [--scenarios LIST] [options]

Scenarios (all by default; ``--scenarios overhead,latency,down,flask`` picks some):

1. ``overhead``  per-span cost of five contenders on a synthetic burst (N transactions x 21
                 spans), each in a fresh interpreter, interleaved: OTel with no processor (the
                 floor), SimpleSpanProcessor + no-op exporter, BatchSpanProcessor + OTLP/HTTP
                 exporter, sentry-sdk's deprecated ``SentrySpanProcessor`` and this bridge.
2. (same runs)   delivery of that burst: 2000 x 21 = 42,000 spans by default.
3. ``latency``   delivery when the receiver answers every request after 50 ms: the bridge vs
                 sentry-sdk's ``SentrySpanProcessor`` with sentry-sdk's default transport.
4. ``down``      RSS growth and exact drop accounting with the receiver down (connection
                 refused) during a 100,000-span burst.
5. ``flask``     p50/p90/p99 latency of a real Flask + SQLAlchemy (PostgreSQL) request served
                 by gunicorn: bridge vs OTel alone vs OTLP exporter, load from this process.
6. ``unsampled`` what a trace costs that is not sampled: the workload of 1 with the bridge's
                 sampler at rate 1, at rate 0 with unsampled roots recording (their errors
                 still reach Sentry) and at rate 0 dropping them at the sampler.

A loopback sink (``_sink.py``; a separate process, so its parsing never competes for the
contender's GIL) receives Sentry envelopes and OTLP/HTTP requests and counts what arrives.
Modules: ``scenario_overhead.py`` + ``_overhead_report.py`` (1, 2), ``scenario_latency.py`` (3),
``scenario_down.py`` (4), ``scenario_flask.py`` (5), ``_workload.py`` (spans, contenders),
``_common.py`` (child processes, statistics). This file is the only entry point: the children
and the sink are this file with hidden arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any

import _overhead_report
import scenario_down
import scenario_flask
import scenario_latency
import scenario_overhead
from _common import Target, versions
from _sink import SinkProcess, sink_main, sink_request
from _workload import (
    ENV_PREFIXES_STRIPPED,
    SPANS_PER_TRANSACTION,
    child_env,
    make_contender,
    make_workload,
    source_digest,
)
from scenario_overhead import CONTENDERS, STRAGGLER_MAX_WAIT, wait_for_sink

# Re-exported for benchmarks/profile_bridge.py.
__all__ = ["ENV_PREFIXES_STRIPPED", "SPANS_PER_TRANSACTION", "make_contender", "make_workload",
           "sink_request", "wait_for_sink"]

SCENARIOS = ("overhead", "latency", "down", "flask", "unsampled")
UNSAMPLED_CONTENDERS = ["floor", "bridge", "bridge_sampler", "bridge_rate0", "bridge_rate0_drop"]
# (full, quick) defaults
SIZES: dict[str, tuple[Any, Any]] = {
    "transactions": (2000, 200), "repeats": (5, 2),
    "latency_transactions": (2000, 200), "latency_window": (45.0, 10.0),
    "latency_repeats": (3, 1),
    "down_spans": (100_000, 10_000), "down_settle": (15.0, 4.0), "down_repeats": (2, 1),
    "flask_batch": (100, 50), "flask_repeats": (15, 2), "flask_warmup": (200, 30),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    add = parser.add_argument
    add("--quick", action="store_true",
        help="smoke run (< ~1 min): every scenario, reduced sizes")
    add("--json", metavar="PATH", help="also write every figure, run and target as JSON")
    add("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    add("--transactions", type=int, help="overhead: transactions per run (2000; quick 200)")
    add("--repeats", type=int, help="overhead: interleaved repetitions (5; quick 2)")
    add("--contenders", default=",".join(CONTENDERS),
        help="overhead: comma list (floor and noop are always included)")
    add("--vary", type=int, default=0, metavar="K",
        help="overhead: K pre-built attribute variants (client port, target, URL, cache key "
             "differ per transaction) instead of identical transactions")
    add("--latency-ms", type=float, default=50.0, help="latency: receiver delay per request")
    add("--latency-transactions", type=int, help="latency: burst transactions (2000; quick 200)")
    add("--latency-window", type=float, help="latency: seconds from the burst's start during "
        "which arrivals count (45; quick 10)")
    add("--latency-repeats", type=int, help="latency: interleaved repetitions (3; quick 1)")
    add("--down-spans", type=int, help="down: spans in the burst (100000; quick 10000)")
    add("--down-settle", type=float, help="down: max seconds to wait after the burst (15)")
    add("--down-repeats", type=int, help="down: repetitions (2; quick 1)")
    add("--down-what-if-cap", type=int, default=5000, metavar="N",
        help="down: one extra bridge run with SENTRY_BRIDGE_MAX_BUFFERED_SPANS=N (0: none)")
    add("--flask-rate", type=float, default=50.0, help="flask: requests per second (fixed)")
    add("--flask-batch", type=int, help="flask: requests per batch per server (100; quick 50)")
    add("--flask-repeats", type=int, help="flask: interleaved batches per server (15; quick 2)")
    add("--flask-warmup", type=int, help="flask: warm-up requests per server (200; quick 30)")
    add("--flask-db-url", default=scenario_flask.DEFAULT_DB_URL, help="flask: SQLAlchemy URL")
    add("--_sink", action="store_true", help=argparse.SUPPRESS)
    add("--_sink-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    add("--_child", help=argparse.SUPPRESS)
    add("--_params", help=argparse.SUPPRESS)
    add("--_port", type=int, help=argparse.SUPPRESS)  # old-style --_child NAME
    args = parser.parse_args(argv)
    for key, (full, quick) in SIZES.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def child(spec: str, args: argparse.Namespace) -> None:
    """Hidden mode: one contender of one scenario, in this fresh interpreter."""
    kind, _, name = spec.partition(":")
    if not name:  # old style: --_child NAME --_port P --transactions N [--vary K]
        kind, name = "overhead", spec
        params = {"port": args._port, "transactions": args.transactions, "vary": args.vary}
    else:
        params = json.loads(args._params or "{}")
    entry = {"overhead": scenario_overhead.child_main, "latency": scenario_latency.child_main,
             "down": scenario_down.child_main, "flask": scenario_flask.server_main}.get(kind)
    if entry is None:
        raise SystemExit(f"unknown scenario {kind!r}")
    entry(name, params)


def unsampled_report(summary: dict[str, dict[str, Any]]) -> tuple[list[str], list[Target]]:
    """Per-span cost of each sampling set-up, as a ratio to OTel alone (the floor)."""
    lines = ["contender            total/floor   app us/span   total us/span"]
    for name in UNSAMPLED_CONTENDERS:
        row = summary.get(name)
        if row:
            lines.append(f"{name:<20} {row.get('total_over_floor') or 0.0:>11.2f} "
                         f"{row.get('app_us', 0.0):>13.2f} {row.get('total_us', 0.0):>15.2f}")
    rows: list[Target] = []
    sampled, rate0 = summary.get("bridge_sampler"), summary.get("bridge_rate0")
    drop = summary.get("bridge_rate0_drop")
    if sampled and rate0:
        share = rate0["total_over_floor"] - 1.0
        reference = f"sampled {sampled['total_over_floor'] - 1.0:.2f}"
        rows.append(Target("6 unsampled", "rate 0, recording: (total - floor) / floor",
                           f"{share:.2f}", reference, "", "", None,
                           "what keeping errors of unsampled traces costs"))
    if drop:
        rows.append(Target("6 unsampled", "rate 0, dropped: (total - floor) / floor",
                           f"{drop['total_over_floor'] - 1.0:.2f}", "", "", "", None,
                           "SENTRY_BRIDGE_UNSAMPLED_ERRORS=false"))
    return lines, rows


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 94 - len(title)), flush=True)


def render_targets(rows: list[Target]) -> str:
    heads = ("scenario", "figure", "bridge", "reference", "ratio", "target", "status")
    cells = [(r.scenario, r.figure, r.value, r.reference, r.ratio, r.target, r.status)
             for r in rows]
    widths = [min(52, max(len(h), *(len(c[i]) for c in cells))) if cells else len(h)
              for i, h in enumerate(heads)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(heads, widths, strict=True))
    out = [line, "-" * len(line)]
    for row, cell in zip(rows, cells, strict=True):
        out.append("  ".join(f"{c:<{w}}" for c, w in zip(cell, widths, strict=True)).rstrip())
        if row.note:
            out.append(" " * (widths[0] + 2) + f"({row.note})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._sink:
        sink_main(args._sink_delay_ms)
        return 0
    if args._child:
        child(args._child, args)
        return 0
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    picked = {c.strip() for c in args.contenders.split(",") if c.strip()} | {"floor", "noop"}
    if picked - set(CONTENDERS):
        raise SystemExit(f"unknown contender(s): {', '.join(sorted(picked - set(CONTENDERS)))}")
    contenders = [c for c in CONTENDERS if c in picked]

    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(
        [sys.executable, __file__, *argv])
    info = versions()
    print(f"command: {command}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    load_start = os.getloadavg()
    print("load average at start: " + " ".join(f"{v:.2f}" for v in load_start)
          + f" ({os.cpu_count()} CPUs; other work on the machine adds noise)", flush=True)
    env = child_env("sink", 0)
    out: dict[str, Any] = {"command": command, "versions": info, "load_start": load_start,
                           "config": {k: v for k, v in vars(args).items()
                                      if not k.startswith("_")}, "scenarios": {}}
    rows: list[Target] = []
    started = time.monotonic()
    digest_start = source_digest("otel_sentry_bridge")

    if "overhead" in wanted:
        spans = args.transactions * SPANS_PER_TRANSACTION
        title = (f"1+2. per-span overhead and {spans:,}-span burst delivery "
                 f"({args.transactions} transactions x {SPANS_PER_TRANSACTION} spans, "
                 f"{args.repeats} interleaved repetitions)")
        section(title)
        print(f"workload: 1 server + 12 db + 4 http.client + 4 redis/cache spans per "
              f"transaction, {f'{args.vary} attribute variants' if args.vary else 'identical'}"
              f"; contenders {' '.join(contenders)}; each run in a fresh interpreter")
        t0 = time.monotonic()
        with SinkProcess(env) as sink:
            print(f"sink: http://127.0.0.1:{sink.port}", flush=True)
            runs = scenario_overhead.run(sink.port, contenders, args.transactions,
                                         args.repeats, args.vary)
        summary = _overhead_report.summarize(runs)
        lines = _overhead_report.report(runs, summary, STRAGGLER_MAX_WAIT)
        print("\n" + "\n".join(lines))
        rows += _overhead_report.targets(summary)
        out["scenarios"]["overhead"] = {"summary": summary, "runs": runs,
                                        "elapsed_s": time.monotonic() - t0,
                                        "burst_line": _overhead_report.burst_line(summary)}

    if "latency" in wanted:
        title = (f"3. delivery with {args.latency_ms:.0f} ms receiver latency "
                 f"({args.latency_transactions:,} x 21 = "
                 f"{args.latency_transactions * 21:,} spans, {args.latency_repeats} reps)")
        section(title)
        t0 = time.monotonic()
        with SinkProcess(env, args.latency_ms) as sink:
            print(f"slow sink: http://127.0.0.1:{sink.port} (+{args.latency_ms:.0f} ms per "
                  f"request)", flush=True)
            runs = scenario_latency.run(sink.port, args.latency_transactions,
                                        args.latency_repeats, args.latency_window, warmup=10)
        summary = scenario_latency.summarize(runs)
        lines = scenario_latency.report(summary)
        print("\n" + "\n".join(lines))
        rows += scenario_latency.targets(summary)
        out["scenarios"]["latency"] = {"summary": summary, "runs": runs,
                                       "elapsed_s": time.monotonic() - t0}

    if "down" in wanted:
        title = (f"4. receiver down (connection refused): {args.down_spans:,}-span burst, "
                 f"{args.down_repeats} reps")
        section(title)
        t0 = time.monotonic()
        runs = scenario_down.run(args.down_spans, args.down_settle, args.down_repeats,
                                 args.down_what_if_cap)
        summary = scenario_down.summarize(runs)
        lines = scenario_down.report(summary)
        print("\n" + "\n".join(lines))
        rows += scenario_down.targets(summary)
        out["scenarios"]["down"] = {"summary": summary, "runs": runs,
                                    "elapsed_s": time.monotonic() - t0}

    if "flask" in wanted:
        title = (f"5. Flask + SQLAlchemy on PostgreSQL under gunicorn, {args.flask_rate:.0f} "
                 f"req/s fixed rate, {args.flask_repeats} x {args.flask_batch} per server")
        section(title)
        t0 = time.monotonic()
        try:
            with SinkProcess(env) as sink:
                raw = scenario_flask.run(sink.port, args.flask_db_url, args.flask_rate,
                                         args.flask_batch, args.flask_repeats, args.flask_warmup)
            summary = scenario_flask.summarize(raw)
            lines = scenario_flask.report(summary)
            rows += scenario_flask.targets(summary)
            out["scenarios"]["flask"] = {"summary": summary, "samples_ms": raw["samples"],
                                         "elapsed_s": time.monotonic() - t0}
        except Exception as exc:  # e.g. PostgreSQL unreachable: report, go on
            lines = [f"FAILED: {type(exc).__name__}: {exc}"]
            rows.append(Target("5 Flask+SQLAlchemy", "request p50", "-", "", "-", "<= 1.10x",
                               None, f"not measured: {exc}"[:100]))
            out["scenarios"]["flask"] = {"error": f"{type(exc).__name__}: {exc}"}
        print("\n" + "\n".join(lines))

    if "unsampled" in wanted:
        section(f"6. unsampled traces ({args.transactions} transactions x "
                f"{SPANS_PER_TRANSACTION} spans, {args.repeats} interleaved repetitions)")
        t0 = time.monotonic()
        with SinkProcess(env) as sink:
            runs = scenario_overhead.run(sink.port, UNSAMPLED_CONTENDERS, args.transactions,
                                         args.repeats, args.vary)
        summary = _overhead_report.summarize(runs)
        lines, found = unsampled_report(summary)
        print("\n" + "\n".join(lines))
        rows += found
        out["scenarios"]["unsampled"] = {"summary": summary, "runs": runs,
                                         "elapsed_s": time.monotonic() - t0}

    elapsed = time.monotonic() - started
    digests = sorted({digest_start, source_digest("otel_sentry_bridge"), *(
        str(run["bridge_src"]) for scenario in out["scenarios"].values()
        for runs in scenario.get("runs", {}).values() for run in runs if run.get("bridge_src"))})
    out["bridge_sources"] = digests
    section("SUMMARY: figures and targets (bridge vs references; ratios bridge / reference)")
    print(render_targets(rows))
    if args.quick:
        print("--quick: reduced sizes; the targets are defined for the full run (42,000-span "
              "bursts, a 100,000-span\nburst with the receiver down, 15 x 100 Flask requests), so "
              "their status here is only indicative.")
    met = sum(1 for r in rows if r.met is True)
    missed = [r for r in rows if r.met is False]
    print(f"\ntargets met: {met} of {met + len(missed)}"
          + (f"; not met: {', '.join(f'{r.scenario}: {r.figure}' for r in missed)}"
             if missed else ""))
    if len(digests) > 1:
        print(f"WARNING: otel_sentry_bridge's sources changed during the run ({len(digests)} "
              f"versions: {', '.join(digests)}): bridge figures mix library versions")
    else:
        print(f"otel_sentry_bridge sources: {digests[0]} (unchanged during the run; "
              f"checkout {info['checkout']})")
    load_end = os.getloadavg()
    print(f"wall time of all scenarios: {elapsed:.0f} s; load average at end: "
          + " ".join(f"{v:.2f}" for v in load_end))
    if args.json:
        out.update(elapsed_s=elapsed, load_end=load_end,
                   targets=[{**vars(r), "status": r.status} for r in rows])
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
