"""Render Sentry envelopes for a terminal (pure; no sentry_sdk, no network).

Used by ``python -m otel_sentry_bridge show`` and ``examples/demo.py`` to read what the bridge
wrote to ``SENTRY_BRIDGE_ENVELOPE_DIR``::

    for envelope_headers, item_headers, payload in parse_envelope(data):
        if item_headers.get("type") == "transaction":
            print(render_transaction(json.loads(payload)))

Decorations (bars, separators) are plain ASCII; control characters in span data are replaced,
so nothing in a payload reaches the terminal as an escape sequence. Colours are added only when
asked for (``color=True``); callers decide with :func:`use_color` (a TTY and no ``NO_COLOR``).
:func:`render_error` lives in ``_console_errors.py``; the text helpers and
:func:`render_metric_items` (trace metrics) in ``_console_text.py``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ._console_checkins import render_check_in, render_check_ins
from ._console_errors import render_error
from ._console_text import (
    _BOLD,
    _CYAN,
    _OK_STATUSES,
    _RED,
    _mapping,
    _one_line,
    _paint,
    _status_code,
    _truncate,
    render_metric_items,
)

__all__ = [
    "EnvelopeItem",
    "bar",
    "envelope_files",
    "format_ms",
    "parse_envelope",
    "read_items",
    "render_check_in",
    "render_check_ins",
    "render_envelope_file",
    "render_error",
    "render_event",
    "render_metric_items",
    "render_transaction",
    "timestamp",
    "use_color",
]

#: ``(envelope headers, item headers, payload bytes)``
EnvelopeItem = tuple[dict[str, Any], dict[str, Any], bytes]

_MIN_BAR = 10
_MAX_BAR = 40


# ----------------------------------------------------------------------------- parsing
def _json_object(line: bytes, what: str) -> dict[str, Any]:
    text = line.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"malformed envelope: {what} is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"malformed envelope: {what} is not a JSON object")
    return value


def parse_envelope(data: bytes) -> list[EnvelopeItem]:
    """Split an envelope into ``(envelope headers, item headers, payload)`` triples.

    The format is newline-delimited: one envelope header line, then per item a header line and
    its payload. An item's payload is exactly ``length`` bytes when its header has ``length``
    (the payload may then contain newlines), else everything up to the next newline. A gzip
    body (as sent over HTTP) is decompressed first. Raises ``ValueError`` when malformed.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"malformed envelope: bad gzip body ({exc})") from exc
    newline = data.find(b"\n")
    first = data if newline < 0 else data[:newline]
    headers = _json_object(first, "the envelope header")
    pos = len(data) if newline < 0 else newline + 1
    items: list[EnvelopeItem] = []
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        pos = size if end < 0 else end + 1
        if not line.strip():
            continue  # blank line between items / trailing newline
        item_headers = _json_object(line, f"item header {len(items) + 1}")
        length = item_headers.get("length")
        if length is not None:
            if type(length) is not int or length < 0:
                raise ValueError(f"malformed envelope: item {len(items) + 1} has length "
                                 f"{length!r}")
            if pos + length > size:
                raise ValueError(f"malformed envelope: item {len(items) + 1} is truncated "
                                 f"({size - pos} of {length} bytes)")
            payload = data[pos:pos + length]
            pos += length
            if data[pos:pos + 1] == b"\n":
                pos += 1
        else:
            end = data.find(b"\n", pos)
            payload = data[pos:] if end < 0 else data[pos:end]
            pos = size if end < 0 else end + 1
        items.append((headers, item_headers, payload))
    return items


def envelope_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """``*.envelope`` files named directly, or found (recursively) in named folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.envelope") if p.is_file()))
        else:
            found.append(path)
    return found


def read_items(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(item type, decoded JSON payload)`` of every JSON item of an envelope file."""
    data = Path(path).read_bytes()
    for _, item_headers, payload in parse_envelope(data):
        item_type = str(item_headers.get("type", ""))
        try:
            value = json.loads(payload)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield item_type, value


# ----------------------------------------------------------------------------- helpers
def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colours only for a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def timestamp(value: Any) -> float | None:
    """Epoch seconds from a Sentry timestamp (number or RFC 3339 string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    return None


def format_ms(seconds: float) -> str:
    """A duration in milliseconds, e.g. ``0.42 ms``, ``12.3 ms``, ``1520 ms``."""
    ms = max(0.0, seconds * 1000.0)
    if ms < 1.0:
        return f"{ms:.2f} ms"
    if ms < 1000.0:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms"


def bar(start: float, end: float, t0: float, t1: float, width: int) -> str:
    """``[   ====      ]``: where ``start..end`` sits in ``t0..t1`` (``width`` inner chars)."""
    width = max(1, width)
    total = t1 - t0
    if total <= 0:
        return "[" + "=" * width + "]"
    left = (min(max(start, t0), t1) - t0) / total * width
    right = (min(max(end, t0), t1) - t0) / total * width
    first = min(width - 1, math.floor(left))
    last = max(first + 1, min(width, math.ceil(right)))
    return "[" + " " * first + "=" * (last - first) + " " * (width - last) + "]"


def _service(event: Mapping[str, Any]) -> str | None:
    contexts = event.get("contexts")
    if not isinstance(contexts, Mapping):
        return None
    otel = contexts.get("otel")
    resource = otel.get("resource") if isinstance(otel, Mapping) else None
    if isinstance(resource, Mapping):
        name = resource.get("service.name")
        if isinstance(name, str) and name:
            return name
    return None


def _span_tree(
    spans: list[Mapping[str, Any]], root_id: str | None
) -> list[tuple[int, Mapping[str, Any]]]:
    """Spans in tree order as ``(depth, span)``: children under their parent, siblings by
    start time. Spans whose parent is unknown are shown at the top level."""
    ids = {str(s.get("span_id")) for s in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        key = str(parent) if parent is not None and str(parent) in ids else None
        if parent is not None and str(parent) == root_id:
            key = None
        children.setdefault(key, []).append(span)

    def order(span: Mapping[str, Any]) -> tuple[float, float, str]:
        start = timestamp(span.get("start_timestamp"))
        end = timestamp(span.get("timestamp"))
        return (start if start is not None else math.inf,
                end if end is not None else math.inf, str(span.get("span_id")))

    for group in children.values():
        group.sort(key=order)
    out: list[tuple[int, Mapping[str, Any]]] = []
    seen: set[int] = set()
    stack: list[tuple[int, Mapping[str, Any]]] = [(0, s) for s in reversed(children.get(None, []))]
    while stack:
        depth, span = stack.pop()
        if id(span) in seen:
            continue
        seen.add(id(span))
        out.append((depth, span))
        kids = children.get(str(span.get("span_id")), [])
        stack.extend((depth + 1, kid) for kid in reversed(kids))
    # Parent cycles (malformed input): show what is left at the top level.
    out.extend((0, s) for s in sorted(spans, key=order) if id(s) not in seen)
    return out


def _measurements(value: Any) -> str:
    """``name=value unit, ...`` of a transaction's measurements (unit ``none`` left out)."""
    parts = []
    for name, measurement in _mapping(value).items():
        number = _mapping(measurement).get("value")
        unit = _one_line(_mapping(measurement).get("unit"))
        text = f"{number:g}" if isinstance(number, (int, float)) else _one_line(number)
        parts.append(f"{_one_line(name)}={text}" + (f" {unit}" if unit and unit != "none" else ""))
    return ", ".join(parts)


# ----------------------------------------------------------------------------- rendering
def render_transaction(event: Mapping[str, Any], width: int = 100, *, color: bool = False) -> str:
    """A transaction as a readable waterfall.

    The header line has the transaction name, op, status, duration, short trace id, service
    and span count; then one line per span in tree order (children indented under their
    parent, siblings by start time): op, description, duration, status and a bar showing where
    the span sits in the transaction's timeline. ``width`` is the total line width (min. 60).
    """
    width = max(60, width)
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    name = _one_line(event.get("transaction")) or "<unlabeled transaction>"
    op = _one_line(trace.get("op")) or "default"
    status = _one_line(trace.get("status")) or "unknown"
    trace_id = _one_line(trace.get("trace_id"))
    start = timestamp(event.get("start_timestamp"))
    end = timestamp(event.get("timestamp"))
    duration = (end - start) if start is not None and end is not None else 0.0
    service = _service(event)
    raw_spans = event.get("spans")
    spans = [s for s in raw_spans if isinstance(s, Mapping)] if isinstance(raw_spans, list) else []

    meta = [format_ms(duration)]
    if trace_id:
        meta.append(f"trace {trace_id[:8]}")
    if service:
        meta.append(_one_line(service))
    meta.append(f"{len(spans)} span{'' if len(spans) == 1 else 's'}")
    tail = " | ".join(meta)
    # Shorten only long names: a header a few characters too wide beats a cut-off route.
    name_w = max(40, width - len(op) - len(status) - len(tail) - 9)
    header = " | ".join((
        _paint(_truncate(name, name_w), _BOLD, color),
        _paint(op, _CYAN, color),
        _paint(status, _status_code(status), color),
        tail,
    ))
    lines = [header]
    problem = _mapping(trace.get("data")).get("otel.status_description")
    if problem:
        text = "status description: " + _one_line(problem)
        lines.append("  " + _paint(_truncate(text, width - 2), _RED, color))
    measured = _measurements(event.get("measurements"))
    if measured:
        lines.append("  " + _truncate("measurements: " + measured, width - 2))
    if not spans:
        return "\n".join(lines)

    root_id = _one_line(trace.get("span_id")) or None
    rows = _span_tree(spans, root_id)
    starts = [t for s in spans if (t := timestamp(s.get("start_timestamp"))) is not None]
    ends = [t for s in spans if (t := timestamp(s.get("timestamp"))) is not None]
    t0 = min(starts + ([start] if start is not None else []), default=0.0)
    t1 = max(starts + ends + ([end] if end is not None else []), default=t0)

    statuses = [_one_line(s.get("status")) or "-" for _, s in rows]
    ops = ["  " * depth + (_one_line(s.get("op")) or "default") for depth, s in rows]
    status_w = max(len(s) for s in statuses)
    dur_w = 10
    bar_w = max(_MIN_BAR, min(_MAX_BAR, width // 5))
    # "  " label " " duration "  " status " " [bar]
    label_w = max(24, width - 2 - 1 - dur_w - 2 - status_w - 1 - (bar_w + 2))
    op_w = min(max(len(o) for o in ops), max(12, label_w // 3))

    for (_, span), span_op, span_status in zip(rows, ops, statuses, strict=True):
        s_start = timestamp(span.get("start_timestamp"))
        s_end = timestamp(span.get("timestamp"))
        s_start = t0 if s_start is None else s_start
        s_end = s_start if s_end is None or s_end < s_start else s_end
        op_text = _truncate(span_op, op_w)
        desc = _truncate(_one_line(span.get("description")), label_w - op_w - 2)
        label = f"{op_text:<{op_w}}  {desc}"
        ok = span_status in _OK_STATUSES
        row = "  ".join((
            "",
            f"{label:<{label_w}} {format_ms(s_end - s_start):>{dur_w}}",
            _paint(f"{span_status:<{status_w}}", _status_code(span_status), color)
            + " " + _paint(bar(s_start, s_end, t0, t1, bar_w), _CYAN if ok else _RED, color),
        ))
        lines.append(row.rstrip())
    return "\n".join(lines)


def render_event(item_type: str, payload: Mapping[str, Any], width: int = 100,
                 *, color: bool = False) -> str:
    """One item: a waterfall for a transaction, one summary line for anything else."""
    if item_type == "transaction":
        return render_transaction(payload, width, color=color)
    if item_type == "event":
        return render_error(payload, width, color=color)
    if item_type == "trace_metric":
        entries = payload.get("items")
        return render_metric_items(entries if isinstance(entries, list) else [], width,
                                   color=color)
    if item_type == "check_in":
        return render_check_in(payload, width, color=color)
    if item_type == "client_report":
        discarded = payload.get("discarded_events")
        parts = [
            f"{d.get('quantity')} {d.get('category')} ({d.get('reason')})"
            for d in (discarded if isinstance(discarded, list) else [])
            if isinstance(d, Mapping)
        ]
        return _truncate(_one_line("client report: dropped " + (", ".join(parts) or "nothing")),
                         width)
    return _truncate(_one_line(f"{item_type or 'unknown'} item"), width)


def render_envelope_file(
    path: str | os.PathLike[str], width: int = 100, *, color: bool = False
) -> str:
    """Every item of one envelope file, rendered; transactions as waterfalls."""
    blocks = [render_event(kind, payload, width, color=color) for kind, payload in read_items(path)]
    return "\n\n".join(blocks)
