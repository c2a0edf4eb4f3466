"""Rendering of an error event for :mod:`otel_sentry_bridge.console` (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._console_text import _RED, _mapping, _one_line, _paint, _truncate


def _top_frame(value: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The innermost in-app frame of an exception value (else the innermost frame)."""
    frames = _mapping(value.get("stacktrace")).get("frames")
    if not isinstance(frames, list):
        return None
    usable: list[Mapping[str, Any]] = [f for f in frames if isinstance(f, Mapping)]
    in_app = [f for f in usable if f.get("in_app")]
    pick = in_app or usable
    return pick[-1] if pick else None


def render_error(payload: Mapping[str, Any], width: int = 100, *, color: bool = False) -> str:
    """An error event: exception, where it was raised (top in-app frame), its causes."""
    values = _mapping(payload.get("exception")).get("values")
    values = [v for v in values if isinstance(v, Mapping)] if isinstance(values, list) else []
    trace = _mapping(_mapping(payload.get("contexts")).get("trace"))
    if not values:
        text = _one_line(payload.get("message")) or "(no message)"
        return _paint(_truncate(f"error  {text}", width), _RED, color)
    main = values[-1]
    mechanism = _mapping(main.get("mechanism"))
    how = "handled" if mechanism.get("handled") else "unhandled"
    if mechanism.get("type"):
        how += f", {_one_line(mechanism.get('type'))}"
    trace_id = _one_line(trace.get("trace_id"))[:8]
    head = (f"error  {_one_line(main.get('type'))}: {_one_line(main.get('value'))}  ({how})"
            + (f"  trace {trace_id}" if trace_id else ""))
    lines = [_paint(_truncate(head, width), _RED, color)]
    for value, label in [(main, "at"), *[(v, "cause") for v in reversed(values[:-1])]]:
        frame = _top_frame(value)
        where = ""
        if frame is not None:
            where = (f" {_one_line(frame.get('filename'))}:{frame.get('lineno')} in "
                     f"{_one_line(frame.get('function'))}")
            if frame.get("context_line"):
                where += f": {_one_line(frame.get('context_line'))}"
        if label == "cause":
            where = f" {_one_line(value.get('type'))}: {_one_line(value.get('value'))}" + (
                f" ({where.strip()})" if where else "")
        if where:
            lines.append(_truncate(f"  {label}{where}", width))
    crumbs = _mapping(payload.get("breadcrumbs")).get("values")
    crumbs = [c for c in crumbs if isinstance(c, Mapping)] if isinstance(crumbs, list) else []
    if crumbs:
        shown = f"the last 5 of {len(crumbs)}" if len(crumbs) > 5 else str(len(crumbs))
        lines.append(f"  breadcrumbs ({shown}, oldest first):")
        lines.extend(
            _truncate(f"    {_one_line(c.get('category'))}  {_one_line(c.get('message'))}", width)
            for c in crumbs[-5:]
        )
    facts = [f"transaction {_one_line(payload.get('transaction'))}",
             f"span {_one_line(trace.get('op'))} {_one_line(trace.get('span_id'))[:8]}"]
    user = _mapping(payload.get("user"))
    if user.get("id"):
        facts.append(f"user {_one_line(user.get('id'))}")
    lines.append(_truncate("  " + " | ".join(facts), width))
    return "\n".join(lines)
