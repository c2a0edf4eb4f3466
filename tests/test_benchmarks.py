"""Smoke test of the benchmark harness: every scenario runs end to end at a tiny size.

Only the structure of the results is checked (the figures are for benchmarks/bench_core.py's
full run and docs/performance.md), so a loaded machine cannot make this test flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_service

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_core.py"

pytestmark = pytest.mark.e2e


def test_bench_core_quick_smoke(tmp_path: Path) -> None:
    require_service("127.0.0.1", 5432, "PostgreSQL")
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(BENCH), "--quick", "--json", str(out),
            "--transactions", "30", "--repeats", "1", "--contenders", "otlp,bridge",
            "--latency-transactions", "30", "--latency-window", "4",
            "--down-spans", "2000", "--down-settle", "2", "--down-what-if-cap", "0",
            "--flask-batch", "10", "--flask-repeats", "1", "--flask-warmup", "5"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "630-span burst delivered:" in proc.stdout, proc.stdout[-3000:]
    assert "SUMMARY" in proc.stdout
    data = json.loads(out.read_text())
    scenarios = data["scenarios"]
    assert set(scenarios) == {"overhead", "latency", "down", "flask", "unsampled"}
    assert "error" not in scenarios["flask"], scenarios["flask"]
    for name in ("overhead", "latency", "down", "unsampled"):
        for runs in scenarios[name]["runs"].values():
            assert all("error" not in run for run in runs), (name, runs)
    figures = {(row["scenario"], row["figure"]) for row in data["targets"]}
    assert len(figures) >= 9, figures
    accounting = scenarios["down"]["summary"]["bridge"]["accounting"][0]
    assert accounting["produced_spans"] == 2000
    assert scenarios["flask"]["summary"]["bridge"]["n"] == 10
    unsampled = scenarios["unsampled"]["summary"]
    assert set(unsampled) == {"floor", "bridge", "bridge_sampler", "bridge_rate0",
                              "bridge_rate0_drop"}
    assert unsampled["bridge_sampler"]["delivered_pct_min"] == 100.0  # rate 1: everything
    assert ("6 unsampled", "rate 0, recording: (total - floor) / floor") in figures


INSTR_BENCH = BENCH.parent / "bench_instrumentation.py"


def test_bench_instrumentation_quick_smoke(tmp_path: Path) -> None:
    """Every family of benchmarks/bench_instrumentation.py runs at a tiny size (no service
    needed); only the structure is checked, never a timing."""
    out = tmp_path / "instr.json"
    proc = subprocess.run([sys.executable, str(INSTR_BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["errors"] == {}, data["errors"]
    families = data["families"]
    assert set(families) == {"cache", "pydantic_model_validate", "pydantic_init", "span",
                             "wsgi", "strawberry"}
    for name, family in families.items():
        rows = family["contenders"]
        assert len(rows) >= 4, name
        assert rows[0]["label"] == family["baseline"], name
        assert rows[0]["ratio"] == 1.0, name
        for row in rows:
            assert row["min_ns"] > 0 and len(row["samples_ns"]) == data["meta"]["rounds"], row
        # recording contenders are checked by the harness: >= 1 span per operation sent
        assert any((row["spans_per_op"] or 0) >= 1 for row in rows), name
        assert f"[{name}]" in proc.stdout
