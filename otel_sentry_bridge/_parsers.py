"""Parsers of setting values (pure): each takes the raw text and returns the value or raises
:class:`BadValue`, whose message names the accepted values."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from otel_sentry_bridge.conventions import (
    ENVIRONMENT_RULE,
    RELEASE_RULE,
    valid_environment,
    valid_release,
)

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})
BOOL_VALUES = "1/true/yes/on or 0/false/no/off"
DEFAULT_SPOTLIGHT_URL = "http://localhost:8969/stream"


class BadValue(ValueError):
    """A setting's raw value cannot be used; the message names the accepted values."""


def parse_bool(raw: str) -> bool:
    """Parse a boolean from an allow-list (never ``bool(str)``)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadValue(BOOL_VALUES)


def parse_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """Build an integer parser with bounds."""

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            upper = f"..{maximum}" if maximum is not None else " or more"
            raise BadValue(f"an integer {minimum}{upper}")
        return value

    return parse


def parse_float(minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    """Build a float parser with bounds (finite values only)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
            upper = f" to {maximum}" if maximum is not None else " or more"
            raise BadValue(f"a number from {minimum}{upper}")
        return value

    return parse


def parse_list(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list; blanks are ignored."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_str(raw: str) -> str | None:
    """Strip a string; empty means unset."""
    return raw.strip() or None


def _checked(valid: Callable[[str], bool], rule: str) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        value = raw.strip()
        if value and not valid(value):
            raise BadValue(rule)
        return value or None

    return parse


parse_release = _checked(valid_release, RELEASE_RULE)
parse_environment = _checked(valid_environment, ENVIRONMENT_RULE)


def parse_status_codes(raw: str) -> tuple[tuple[int, int], ...]:
    """``404,500-599`` -> ``((404, 404), (500, 599))``; codes 100..599."""
    ranges: list[tuple[int, int]] = []
    for part in parse_list(raw):
        low, _, high = part.partition("-")
        try:
            lo, hi = int(low), int(high or low)
        except ValueError:
            raise BadValue("HTTP status codes and ranges, e.g. 404,500-599") from None
        if not 100 <= lo <= hi <= 599:
            raise BadValue("HTTP status codes and ranges between 100 and 599, e.g. 404,500-599")
        ranges.append((lo, hi))
    return tuple(ranges)


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*[:.][A-Za-z_]\w*")


def parse_import_path(raw: str) -> str | None:
    """``package.module:function`` or ``package.module.function``."""
    value = raw.strip()
    if value and not _IMPORT_PATH.fullmatch(value):
        raise BadValue("an import path such as myapp.sentry:before_send")
    return value or None


def parse_regex_list(raw: str) -> tuple[str, ...]:
    """A comma list of regular expressions, each compiled once to check it."""
    patterns = parse_list(raw)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error:
            raise BadValue(f"regular expressions separated by commas ({pattern!r} is not "
                           "one)") from None
    return patterns


def parse_org_id(raw: str) -> str | None:
    """A Sentry organization id (digits)."""
    value = raw.strip()
    if value and not value.isdigit():
        raise BadValue("digits, e.g. 1 (the number of o1.ingest.sentry.io)")
    return value or None


_LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


def parse_log_level(raw: str) -> int:
    """A ``logging`` level name (``info``) or number."""
    value = raw.strip().lower()
    if value in _LOG_LEVELS:
        return _LOG_LEVELS[value]
    if value.isdigit() and 0 <= int(value) <= 50:
        return int(value)
    raise BadValue("debug, info, warning, error or critical")


_DSN_PATH = re.compile(r"^(?P<path>.*/)?(?P<project>\d+)$")


def parse_dsn(raw: str) -> str | None:
    """Validate a Sentry DSN (``scheme://key@host[:port]/[path/]project_id``)."""
    value = raw.strip()
    if not value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise BadValue("a DSN like https://<key>@o1.ingest.sentry.io/<project>") from exc
    del port
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not parts.username
        or not _DSN_PATH.match(parts.path or "")
    ):
        raise BadValue("a DSN like https://<key>@o1.ingest.sentry.io/<project>")
    return value


def parse_spotlight(raw: str) -> str | None:
    """``SENTRY_SPOTLIGHT``: a boolean (default URL) or the URL of a Spotlight sidecar."""
    value = raw.strip()
    if value.lower() in _TRUE:
        return DEFAULT_SPOTLIGHT_URL
    if value.lower() in _FALSE:
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return value
    raise BadValue(f"{BOOL_VALUES}, or an http(s) URL")


def parse_compression(raw: str) -> int:
    """Gzip level 0 (off) to 9."""
    return parse_int(0, 9)(raw)


def parse_level_or_off(raw: str) -> int | None:
    """A ``logging`` level, or ``off`` (None)."""
    return None if raw.strip().lower() == "off" else parse_log_level(raw)


def parse_profile_lifecycle(raw: str) -> str:
    """``manual`` or ``trace`` (sentry-sdk's ``profile_lifecycle``)."""
    value = raw.strip().lower()
    if value not in ("manual", "trace"):
        raise BadValue("manual or trace")
    return value


def parse_choice(*choices: str) -> Callable[[str], str]:
    """One of ``choices`` (case-insensitive)."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise BadValue(" or ".join(choices))
        return value

    return parse
