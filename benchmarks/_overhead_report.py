"""Summary, tables and target rows of scenarios 1 (per-span overhead) and 2 (burst delivery)."""

from __future__ import annotations

from typing import Any

from _common import Target, fmt, median

BRIDGE_TOTAL_TARGET = 0.5  # (total - noop) / floor
BRIDGE_HOOK_TARGET = 0.1  # on_start + on_end per span / floor
LABELS = {"otlp": "OTLP exporter", "sentry_legacy": "sentry-sdk", "bridge": "bridge"}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Medians per contender; ratios are computed per repetition, then their median.

    Failed runs are left out; a ratio needs the same repetition's floor (and noop) run.
    """
    def ok(name: str) -> dict[int, dict[str, Any]]:
        return {r["repetition"]: r for r in runs.get(name, []) if "error" not in r}

    floors, noops = ok("floor"), ok("noop")
    summary: dict[str, dict[str, Any]] = {}
    for name, all_runs in runs.items():
        good = ok(name)
        results = list(good.values())
        if not results:
            continue
        ratio: list[float] = []
        over_noop: list[float] = []
        hooks_ratio: list[float] = []
        hooks_median_ratio: list[float] = []
        app_over_floor: list[float] = []
        cpu_ratio: list[float] = []
        cpu_over_noop: list[float] = []
        for rep, r in good.items():
            if rep not in floors:
                continue
            floor = floors[rep]["total_us"]
            ratio.append(r["total_us"] / floor)
            app_over_floor.append((r["app_us"] - floors[rep]["app_us"]) / floor)
            floor_cpu = floors[rep]["cpu_us"]
            cpu_ratio.append(r["cpu_us"] / floor_cpu)
            if rep in noops:
                over_noop.append((r["total_us"] - noops[rep]["total_us"]) / floor)
                cpu_over_noop.append((r["cpu_us"] - noops[rep]["cpu_us"]) / floor_cpu)
            if r.get("hooks_us") is not None:
                hooks_ratio.append(r["hooks_us"] / floor)
                hooks_median_ratio.append(r["hooks_median_us"] / floor)
        totals = [r["total_us"] for r in results]
        summary[name] = {
            "app_us": median(r["app_us"] for r in results),
            "total_us": median(totals),
            "total_us_min": min(totals),
            "total_us_max": max(totals),
            "flush_s": median(r["flush_s"] for r in results),
            "total_over_floor": median(ratio),
            "over_noop_per_floor": median(over_noop),
            "app_overhead_per_floor": median(app_over_floor),
            "app_cpu_us": median(r["app_cpu_us"] for r in results),
            "cpu_us": median(r["cpu_us"] for r in results),
            "gc_us": median(r["gc_us"] for r in results),
            "cpu_over_floor": median(cpu_ratio),
            "cpu_over_noop_per_floor": median(cpu_over_noop),
            "hooks_us": median(r.get("hooks_us") for r in results),
            "hooks_per_floor": median(hooks_ratio),
            "hooks_median_us": median(r.get("hooks_median_us") for r in results),
            "hooks_median_per_floor": median(hooks_median_ratio),
            "load_1min": median(r["load_1min"] for r in results),
            "delivered_pct": median(r["delivered_pct"] for r in results),
            "delivered_pct_min": min((r["delivered_pct"] for r in results
                                      if r["delivered_pct"] is not None), default=None),
            "delivered_pct_max": max((r["delivered_pct"] for r in results
                                      if r["delivered_pct"] is not None), default=None),
            "spans": results[0]["spans"],
            "peak_rss_mb": median(r["peak_rss_mb"] for r in results),
            "rss_before_mb": median(r["rss_before_mb"] for r in results),
            "repetitions": len(results),
            "failed_repetitions": len(all_runs) - len(results),
        }
    return summary


Column = tuple[str, str, str]  # (header, summary key, format); key "" = total min..max

WALL_COLUMNS: tuple[Column, ...] = (
    ("app us/span", "app_us", ".2f"),
    ("total us/span", "total_us", ".2f"),
    ("(min..max)", "", ""),
    ("total/floor", "total_over_floor", ".2f"),
    ("(tot-noop)/floor", "over_noop_per_floor", ".2f"),
    ("hooks us/span", "hooks_us", ".3f"),
    ("hooks/floor", "hooks_per_floor", ".3f"),
    ("delivered %", "delivered_pct", ".1f"),
    ("peak RSS MB", "peak_rss_mb", ".1f"),
)
DETAIL_COLUMNS: tuple[Column, ...] = (
    ("flush s", "flush_s", ".2f"),
    ("app cpu us/span", "app_cpu_us", ".2f"),
    ("cpu us/span", "cpu_us", ".2f"),
    ("cpu/floor", "cpu_over_floor", ".2f"),
    ("(cpu-noop)/floor", "cpu_over_noop_per_floor", ".2f"),
    ("gc us/span", "gc_us", ".2f"),
    ("hook med us", "hooks_median_us", ".3f"),
    ("med/floor", "hooks_median_per_floor", ".3f"),
    ("RSS before MB", "rss_before_mb", ".1f"),
    ("load 1m", "load_1min", ".2f"),
)
_NOT_FOR_BASELINES = frozenset({"over_noop_per_floor", "cpu_over_noop_per_floor"})


def render_table(summary: dict[str, dict[str, Any]],
                 columns: tuple[Column, ...] = WALL_COLUMNS) -> str:
    """A results table (medians over repetitions)."""
    widths = [max(len(h), 11) if key else 17 for h, key, _ in columns]
    head = f"{'contender':<14}" + "".join(
        f" {h:>{w}}" for (h, _, _), w in zip(columns, widths, strict=True))
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        cells = []
        for (_, key, spec), width in zip(columns, widths, strict=True):
            if not key:
                text = f"({s['total_us_min']:.1f}..{s['total_us_max']:.1f})"
            elif key in _NOT_FOR_BASELINES and name in ("floor", "noop"):
                text = "-"
            else:
                text = fmt(s[key], spec)
            cells.append(f" {text:>{width}}")
        lines.append(f"{name:<14}" + "".join(cells))
    return "\n".join(lines)


NOTES = """\
How to read it (all values are medians over repetitions; ratios are computed per repetition
against that repetition's floor/noop, then the median is taken):
  app us/span      wall time of the span loop (start/end of every span, incl. any GIL time lost
                   to the contender's background threads) / spans produced.
  total us/span    (span loop + flush) / spans; flush = provider.force_flush(60 s), or
                   sentry_sdk.flush(timeout=60) for sentry_legacy. Includes mapping,
                   serialization and sending done by background threads until flush returns.
  total/floor      total us/span / floor's total us/span.
  (tot-noop)/floor (total - noop total) / floor total: the cost of getting spans to the
                   destination beyond a do-nothing synchronous processor. Bridge target <= {tt}.
  hooks us/span    time the app thread spends inside processor.on_start + on_end per span,
                   measured in a separate pass (N/4 transactions, after the timed run and its
                   flush) by wrapping the processor instance's methods with perf_counter_ns; the
                   cost of an empty timing pair is subtracted. Mean over all calls: background
                   threads keep running, so GIL hand-offs that land inside a hook count.
                   Bridge target: hooks/floor <= {ht}.
  hook med us      median on_start + median on_end (same pass): the hooks' intrinsic cost,
                   without the rare calls that lost the GIL to a background thread.
  app cpu us/span  CPU time of the app thread during the span loop / spans (thread_time).
  cpu us/span      CPU time of the whole contender process (all threads: app, worker,
                   senders) from loop start until flush returns / spans (process_time).
  gc us/span       wall time inside the cyclic garbage collector (gc.callbacks, any thread),
                   loop start until flush returns / spans. Contenders that keep spans alive
                   (queues, buffers) make every collection of the older generations longer.
  delivered %      spans counted at the sink / spans produced, after flush plus up to {mw:.0f} s
                   for stragglers. Sentry: len(spans)+1 per transaction item, minus the bridge's
                   synthesized cache.* parents (so 100% = every OTel span arrived); OTLP: spans
                   decoded from ExportTraceServiceRequest.
  peak RSS MB      ru_maxrss of the contender's own process (fresh interpreter per run).
"""


def report(runs: dict[str, list[dict[str, Any]]], summary: dict[str, dict[str, Any]],
           max_wait: float) -> list[str]:
    """The printed section of scenarios 1 and 2."""
    lines = [render_table(summary), "",
             "details / noise cross-check (CPU time is far less sensitive to other load on the "
             "machine than wall time):", render_table(summary, DETAIL_COLUMNS), ""]
    bridge = summary.get("bridge")
    if bridge is not None and bridge["over_noop_per_floor"] is not None:
        ok_total = bridge["over_noop_per_floor"] <= BRIDGE_TOTAL_TARGET
        ok_hooks = (bridge["hooks_per_floor"] or 0.0) <= BRIDGE_HOOK_TARGET
        lines += [
            f"bridge (total - noop) / floor = {bridge['over_noop_per_floor']:.2f} "
            f"(target <= {BRIDGE_TOTAL_TARGET}): {'OK' if ok_total else 'ABOVE TARGET'}",
            f"bridge on_start+on_end / floor = {fmt(bridge['hooks_per_floor'], '.3f')} "
            f"(mean; median call: {fmt(bridge['hooks_median_per_floor'], '.3f')}) "
            f"(target <= {BRIDGE_HOOK_TARGET}): {'OK' if ok_hooks else 'ABOVE TARGET'}",
            f"bridge app-thread overhead incl. GIL contention, (app - floor app) / floor = "
            f"{bridge['app_overhead_per_floor']:.2f}",
            f"bridge CPU cross-check, (cpu - noop cpu) / floor cpu = "
            f"{fmt(bridge['cpu_over_noop_per_floor'], '.2f')}",
        ]
        digests = {r.get("bridge_src") for r in runs["bridge"] if "error" not in r}
        if len(digests) > 1:
            lines.append(f"WARNING: otel_sentry_bridge sources changed during the run "
                         f"({len(digests)} versions: {', '.join(sorted(map(str, digests)))})")
    for name, name_runs in runs.items():
        good = [r for r in name_runs if "error" not in r]
        if not good:
            lines.append(f"{name}: every repetition failed")
            continue
        last = good[-1]
        extra = []
        if last.get("drops"):
            extra.append(f"processor drops {last['drops']}")
        if last["sink"].get("sentry_discarded"):
            extra.append(f"client reports {last['sink']['sentry_discarded']}")
        if last["sink"].get("errors"):
            extra.append(f"sink errors {last['sink']['errors']} ({last['sink']['last_error']})")
        if not last["flush_ok"]:
            extra.append("flush returned False")
        pct = [r["delivered_pct"] for r in good if r["delivered_pct"] is not None]
        if pct and min(pct) < 100.0:
            extra.append("delivered % per repetition " + " ".join(f"{p:.1f}" for p in pct))
        if extra:
            lines.append(f"{name} (last repetition): " + "; ".join(extra))
    lines += ["", burst_line(summary), "",
              NOTES.format(tt=BRIDGE_TOTAL_TARGET, ht=BRIDGE_HOOK_TARGET, mw=max_wait)]
    return lines


def burst_line(summary: dict[str, dict[str, Any]]) -> str:
    """Scenario 2 in one line: ``42,000-span burst delivered: 100.0 % (bridge) ...``."""
    bridge = summary.get("bridge")
    if bridge is None:
        return "burst delivery: bridge not run"
    others = ", ".join(
        f"{LABELS[n]} {summary[n]['delivered_pct']:.1f} %" for n in ("otlp", "sentry_legacy")
        if n in summary and summary[n]["delivered_pct"] is not None)
    return (f"{bridge['spans']:,}-span burst delivered: {bridge['delivered_pct_min']:.1f} % "
            f"(bridge, lowest of {bridge['repetitions']} repetitions; target 100 %)"
            + (f"; medians: {others}" if others else ""))


def targets(summary: dict[str, dict[str, Any]]) -> list[Target]:
    """Rows of the final summary for scenarios 1 and 2."""
    rows: list[Target] = []
    bridge = summary.get("bridge")
    if bridge is None:
        return rows
    refs = ", ".join(f"{LABELS[n]} {summary[n]['over_noop_per_floor']:.2f}"
                     for n in ("otlp", "sentry_legacy") if n in summary
                     and summary[n]["over_noop_per_floor"] is not None)
    over = bridge["over_noop_per_floor"]
    rows.append(Target("1 overhead", "(total - noop) / floor, per span", fmt(over, ".2f"), refs,
                       "-", f"<= {BRIDGE_TOTAL_TARGET}",
                       None if over is None else over <= BRIDGE_TOTAL_TARGET))
    hooks = bridge["hooks_per_floor"]
    hook_refs = ", ".join(f"{LABELS[n]} {summary[n]['hooks_per_floor']:.3f}"
                          for n in ("otlp", "sentry_legacy") if n in summary
                          and summary[n]["hooks_per_floor"] is not None)
    rows.append(Target("1 overhead", "on_start + on_end / floor (app thread)",
                       fmt(hooks, ".3f"), hook_refs, "-", f"<= {BRIDGE_HOOK_TARGET}",
                       None if hooks is None else hooks <= BRIDGE_HOOK_TARGET))
    low = bridge["delivered_pct_min"]
    burst_refs = ", ".join(f"{LABELS[n]} {summary[n]['delivered_pct']:.1f} %"
                           for n in ("otlp", "sentry_legacy") if n in summary
                           and summary[n]["delivered_pct"] is not None)
    rows.append(Target("2 burst", f"{bridge['spans']:,}-span burst delivered (lowest rep)",
                       f"{fmt(low, '.1f')} %", burst_refs, "-", "100 %",
                       None if low is None else low >= 100.0))
    return rows
