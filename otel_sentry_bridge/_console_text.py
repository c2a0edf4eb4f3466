"""Terminal text helpers of :mod:`otel_sentry_bridge.console`: one printable line, truncation,
colours (ANSI, only when asked for) and the colour of a span status."""

from __future__ import annotations

import re
from collections.abc import Mapping
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
