"""Check-ins (Sentry Crons) for :mod:`otel_sentry_bridge.console`: one line per ``check_in``
item: slug, status, duration, schedule, and the trace of the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._console_text import _BOLD, _CYAN, _mapping, _one_line, _paint, _status_code, _truncate

#: Check-in statuses and the span status whose colour they borrow.
_COLORS = {"ok": "ok", "in_progress": "unknown", "error": "internal_error"}


def _duration(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    seconds = float(value)
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _schedule(config: Mapping[str, Any]) -> str:
    schedule = _mapping(config.get("schedule"))
    kind = schedule.get("type")
    if kind == "crontab":
        text = f"cron {_one_line(schedule.get('value'))}"
    elif kind == "interval":
        text = f"every {_one_line(schedule.get('value'))} {_one_line(schedule.get('unit'))}"
    else:
        return ""
    if config.get("max_runtime") is not None:
        text += f", max {_one_line(config.get('max_runtime'))} min"
    return text


def render_check_in(
    payload: Mapping[str, Any], width: int = 100, *, color: bool = False,
    trace_notes: Mapping[str, str] | None = None,
) -> str:
    """One check-in: ``check-in <slug>  <status>  <duration>  <schedule>  trace <id>``.

    ``trace_notes`` maps trace ids to a note shown after them (as in the metric listing)."""
    slug = _one_line(payload.get("monitor_slug")) or "?"
    status = _one_line(payload.get("status")) or "?"
    trace_id = _one_line(_mapping(_mapping(payload.get("contexts")).get("trace")).get("trace_id"))
    note = (trace_notes or {}).get(trace_id)
    cells = [
        "check-in " + _paint(slug, _BOLD, color),
        _paint(f"{status:<11}", _status_code(_COLORS.get(status, status)), color),
        f"{_duration(payload.get('duration')):>9}",
        _paint(_schedule(_mapping(payload.get("monitor_config"))), _CYAN, color),
        (f"trace {trace_id[:8]}" + (f" ({_one_line(note)})" if note else "")) if trace_id else "",
    ]
    line = "  ".join(cell for cell in cells if cell)
    return line if color else _truncate(line, width)


def render_check_ins(
    payloads: Sequence[Any], width: int = 100, *, color: bool = False,
    trace_notes: Mapping[str, str] | None = None,
) -> str:
    """Check-ins one per line, in the given order (``(no check-ins)`` when none)."""
    lines = ["  " + render_check_in(p, width - 2, color=color, trace_notes=trace_notes)
             for p in payloads if isinstance(p, Mapping)]
    return "\n".join(lines) or "(no check-ins)"
