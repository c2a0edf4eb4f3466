"""Benchmark of the extra instrumentations, every family in one process run.

Usage::

    python benchmarks/bench_instrumentation.py [--quick] [--json PATH] [--rounds N]

Families (``_instr_families.py``), each against its own uninstrumented baseline:

- ``cache``:      a cachetools-cached hit, plain / instrumented (no trace, unsampled trace,
                  sampled past the per-trace span budget, recording) / ``otel_sentry_bridge.cached``
- ``pydantic_*``: ``model_validate`` and ``__init__`` of a two-field model, not instrumented /
                  instrumented with no span, unsampled, inside another validation, suppressed,
                  recording
- ``span``:       ``@otel_sentry_bridge.span``, ``with span()`` and OTel's
                  ``start_as_current_span`` with tracing off, an unsampled parent, recording
- ``wsgi``:       one request through ``SentryBridgeWSGIMiddleware`` (tracing off, sampled out,
                  recording) and OTel's ``OpenTelemetryMiddleware`` (recording)
- ``strawberry``: one query with and without the instrumentation (and without the bridge)

Method: the contenders of a family are interleaved, round after round (A, B, C, ... then again,
the order rotated each round), so a change of machine load hits all of them alike. Each sample
times ``n`` operations; the figure of a contender is the MINIMUM over its rounds of the time per
operation (the median is in the JSON too), and its ratio is that figure over the minimum of the
family's baseline. Recording contenders go through a real bridge pipeline
(``otel_sentry_bridge.testing.BridgeCapture``) and their timing includes flushing it (mapping,
serialization, compression of every transaction). No service is needed. Timing is never
asserted anywhere: ``tests/test_benchmarks.py`` only checks that ``--quick --json`` runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _instr_families import (
    PER_ROOT,
    Contender,
    Env,
    Family,
    cache_family,
    pydantic_family,
    span_family,
    strawberry_family,
    wsgi_family,
)

FAMILIES = ("cache", "pydantic_model_validate", "pydantic_init", "span", "wsgi", "strawberry")


def build(name: str, env: Env, scale: float, items: int) -> Family:
    if name == "cache":
        return cache_family(env, scale)
    if name == "pydantic_model_validate":
        return pydantic_family(env, scale, "model_validate")
    if name == "pydantic_init":
        return pydantic_family(env, scale, "__init__")
    if name == "span":
        return span_family(env, scale)
    if name == "wsgi":
        return wsgi_family(env, scale)
    return strawberry_family(env, scale, items)


def measure(family: Family, env: Env, rounds: int) -> dict[str, Any]:
    """Interleaved rounds; one warm-up sample per contender first (not kept)."""
    samples: dict[str, list[float]] = {c.label: [] for c in family.contenders}
    count = len(family.contenders)
    for r in range(-1, rounds):
        start = max(r, 0) % count
        for contender in family.contenders[start:] + family.contenders[:start]:
            n = contender.n if r >= 0 else max(1, contender.n // 10)
            if contender.setup is not None:
                contender.setup()
            try:
                seconds = contender.run(n)
            finally:
                if contender.teardown is not None:
                    contender.teardown()
            env.drop_captured()
            if r >= 0:
                samples[contender.label].append(seconds / n * 1e9)
    base = min(samples[family.contenders[0].label])
    rows = []
    for contender in family.contenders:
        values = samples[contender.label]
        rows.append({
            "label": contender.label, "n": contender.n, "min_ns": min(values),
            "median_ns": statistics.median(values), "samples_ns": values,
            "ratio": min(values) / base, "spans_per_op": check_spans(contender, env),
        })
    return {"title": family.title, "unit": family.unit, "baseline": family.contenders[0].label,
            "contenders": rows}


def check_spans(contender: Contender, env: Env) -> float | None:
    """Spans that reached the bridge's output per operation, for recording contenders
    (untimed, after the measurement); below 1 means the contender did not record."""
    if not contender.recording:
        return None
    ops = min(contender.n, PER_ROOT)
    if contender.setup is not None:
        contender.setup()
    try:
        env.drop_captured()
        contender.run(ops)
        per_op = env.spans_sent() / ops
    finally:
        env.drop_captured()
        if contender.teardown is not None:
            contender.teardown()
    if per_op < 1:
        raise RuntimeError(f"{contender.label!r} recorded {per_op:.2f} spans per operation")
    return per_op


def human(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns < 10_000 else f"{ns / 1000:,.1f} µs"


def table(name: str, result: dict[str, Any]) -> str:
    rows = result["contenders"]
    width = max(len(row["label"]) for row in rows)
    lines = [f"[{name}] {result['title']}  (min per {result['unit']}, ratio to the first row)",
             f"  {'contender':<{width}}  {'per ' + result['unit']:>12}  {'median':>12}  ratio"]
    for row in rows:
        lines.append(f"  {row['label']:<{width}}  {human(row['min_ns']):>12}  "
                     f"{human(row['median_ns']):>12}  x{row['ratio']:.2f}")
    return "\n".join(lines)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, < 20 s)")
    parser.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9; quick 2)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated subset of {','.join(FAMILIES)}")
    args = parser.parse_args(argv)
    scale = 0.02 if args.quick else 1.0
    rounds = args.rounds or (2 if args.quick else 9)
    items = 3 if args.quick else 10
    names = [name for name in args.families.split(",") if name]
    unknown = set(names) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families: {sorted(unknown)}")

    started = time.monotonic()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average_start": load_average(), "quick": args.quick,
        "rounds": rounds, "statistic": "min over interleaved rounds (median also given)",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    print(f"{meta['date']}  python {meta['python']}  cpus {meta['cpus']}  "
          f"load {meta['load_average_start']}  rounds {rounds}  quick={args.quick}", flush=True)
    env = Env()
    families: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        for name in names:
            family = None
            try:
                family = build(name, env, scale, items)
                families[name] = measure(family, env, rounds)
                print("\n" + table(name, families[name]), flush=True)
            except Exception:
                errors[name] = traceback.format_exc()
                print(f"\n[{name}] FAILED\n{errors[name]}", file=sys.stderr, flush=True)
            finally:
                if family is not None and family.close is not None:
                    family.close()
    finally:
        env.close()
    meta["load_average_end"] = load_average()
    meta["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n{meta['seconds']} s, load average at the end {meta['load_average_end']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"meta": meta, "families": families, "errors": errors}, out, indent=1)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
