"""The doctor's output: lines, warnings, and settings displayed with their secrets masked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from otel_sentry_bridge.config import mask_dsn


@dataclass
class Report:
    """Output lines plus the problems found (printed where found and again at the end)."""

    out: TextIO
    problems: list[str] = field(default_factory=list)

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def section(self, title: str) -> None:
        self.line()
        self.line(title)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.line(f"  WARNING: {text}")


def mask_url(url: str) -> str:
    """``url`` without credentials."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[1] if "@" in parts.netloc else parts.netloc
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unreadable URL>"


def format_setting(name: str, value: Any) -> str:
    """A setting's value for display (DSN key and URL credentials masked)."""
    if name == "dsn":
        value = mask_dsn(value)
    elif name == "spotlight" and isinstance(value, str):
        value = mask_url(value)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "(empty)"
    return str(value)
