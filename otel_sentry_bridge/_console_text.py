"""Terminal text helpers of :mod:`otel_sentry_bridge.console`: one printable line, truncation,
colours (ANSI, only when asked for), the colour of a span status, and the listing of trace
metric items (:func:`render_metric_items`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_WHITESPACE = re.compile(r"\s+")
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_CYAN = "\x1b[36m"
#: Statuses that are not failures of the operation itself (Sentry's ``failure_rate`` rule).
_OK_STATUSES = frozenset({"ok", "cancelled", "unknown"})


def _one_line(value: Any) -> str:
    """One printable line: whitespace collapsed, control characters (escapes!) replaced."""
    text = "" if value is None else str(value)
    text = _WHITESPACE.sub(" ", text).strip()
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    return text[: width - 3] + "..."


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and text else text


def _status_code(status: str) -> str:
    if status == "ok":
        return _GREEN
    if status in _OK_STATUSES:
        return _YELLOW
    return _RED


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# ----------------------------------------------------------------------------- trace metrics
def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _one_line(value) or "?"
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def metric_attributes(item: Mapping[str, Any]) -> str:
    """``key=value`` pairs of a trace metric item's own attributes (not ``sentry.*``)."""
    parts = []
    for key, attr in _mapping(item.get("attributes")).items():
        if str(key).startswith("sentry."):
            continue
        value = attr.get("value") if isinstance(attr, Mapping) else attr
        parts.append(f"{_one_line(key)}={_one_line(value)}")
    return " ".join(parts)


def render_metric_items(
    items: Sequence[Any],
    width: int = 100,
    *,
    color: bool = False,
    labels: Sequence[str] | None = None,
    trace_notes: Mapping[str, str] | None = None,
) -> str:
    """Trace metric items (the ``items`` of ``trace_metric`` envelope items), one per line:
    name, type, value and unit, own attributes, and the trace the value was recorded in.

    The trace is shown only when the item has a ``span_id`` (OpenTelemetry kept an exemplar:
    the value was recorded inside a sampled span); otherwise ``-``. ``labels`` (one per item,
    e.g. the service) make a first column; ``trace_notes`` maps trace ids to a note shown after
    them. Equal lines are shown once, with ``xN``.
    """
    counts: dict[tuple[str, str, str, str, str, str], int] = {}
    notes = trace_notes or {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        value = _number(item.get("value"))
        unit = _one_line(item.get("unit"))
        if unit and unit != "none":
            value = f"{value} {unit}"
        trace = "-"
        trace_id = _one_line(item.get("trace_id"))
        if item.get("span_id") and trace_id:
            note = notes.get(trace_id)
            trace = f"trace {trace_id[:8]}" + (f" ({_one_line(note)})" if note else "")
        label = _one_line(labels[index]) if labels is not None and index < len(labels) else ""
        key = (label, _one_line(item.get("name")) or "?", _one_line(item.get("type")) or "?",
               value, metric_attributes(item), trace)
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "(no metric items)"
    rows = [(*key[:3], key[3] + (f" x{n}" if n > 1 else ""), *key[4:])
            for key, n in counts.items()]
    caps = (16, 40, 12, 24, 60, 32)
    widths = [min(cap, max(len(row[i]) for row in rows)) for i, cap in enumerate(caps)]
    if labels is None:
        widths[0] = -2  # no column (and no separator)
    # The attributes give way first: "  " + columns joined by "  ".
    used = 2 + sum(w + 2 for i, w in enumerate(widths) if i != 4)
    widths[4] = max(8, min(widths[4], width - used))
    lines = []
    for label, name, kind, value, attrs, trace in rows:
        cells = [f"{_truncate(label, widths[0]):<{widths[0]}}"] if labels is not None else []
        cells += [
            _paint(f"{_truncate(name, widths[1]):<{widths[1]}}", _BOLD, color),
            _paint(f"{_truncate(kind, widths[2]):<{widths[2]}}", _CYAN, color),
            f"{_truncate(value, widths[3]):>{widths[3]}}",
            f"{_truncate(attrs, widths[4]):<{widths[4]}}",
            _truncate(trace, widths[5]),
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)
