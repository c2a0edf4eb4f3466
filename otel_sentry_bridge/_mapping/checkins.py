"""Sentry Crons check-ins (pure): monitor config, payloads, slugs and span rules.

Shapes per ``sentry-mapping.md`` section 7.2 and Relay's ``relay-monitors`` (a schedule is
required in a ``monitor_config``; an interval is a whole number of a ``minute``...``year`` unit;
``checkin_margin`` and ``max_runtime`` in minutes; Relay cuts slugs to 50 characters).
Problems come back as text for the caller to log: nothing here raises on user input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_sentry_bridge.conventions import Attr

#: Span attributes (the slug is the switch; the others describe the monitor to upsert).
SLUG: Final = "sentry.monitor.slug"
SCHEDULE: Final = "sentry.monitor.schedule"
TIMEZONE: Final = "sentry.monitor.timezone"
CHECKIN_MARGIN: Final = "sentry.monitor.checkin_margin"
MAX_RUNTIME: Final = "sentry.monitor.max_runtime"
FAILURE_ISSUE_THRESHOLD: Final = "sentry.monitor.failure_issue_threshold"
RECOVERY_THRESHOLD: Final = "sentry.monitor.recovery_threshold"
#: Set by the bridge when it starts a check-in for the span: a span that has it at its start
#: is looked after by someone else (``monitor()``), and the transaction shows the id.
CHECK_IN_ID: Final = "sentry.monitor.check_in_id"
#: The slug as a tag of the job's transaction and error events.
SLUG_TAG: Final = "sentry.tag.monitor.slug"

MAX_SLUG = 50
UNITS: Final = ("minute", "hour", "day", "week", "month", "year")
#: Sentry's limits: margin and runtime up to 28 days (minutes), thresholds up to 720.
_LIMITS: Final = {"checkin_margin": 40_320, "max_runtime": 40_320,
                  "failure_issue_threshold": 720, "recovery_threshold": 720}
_NICKNAMES: Final = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
                     "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0", "@daily": "0 0 * * *",
                     "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
#: (lowest, highest, names) of the five crontab fields
_FIELDS: Final = ((0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, _MONTHS), (0, 7, _DAYS))
_PART = re.compile(r"(\*|\w+(?:-\w+)?)(?:/(\d+))?")
_IANA = re.compile(r"[A-Z][A-Za-z0-9._+-]*(?:/[A-Za-z0-9._+-]+)*")
_INTERVAL_TEXT = re.compile(r"(?:every\s+)?(\d+)\s*([a-z]+?)s?", re.IGNORECASE)
_NOT_SLUG = re.compile(r"[^a-z0-9_-]+")

Config = dict[str, Any]


def clean_slug(value: Any) -> tuple[str | None, str | None]:
    """``(slug, problem)``: a non-empty string, cut to what Relay keeps (50 characters)."""
    if not isinstance(value, str) or not value.strip():
        return None, f"monitor slug {value!r} must be a non-empty string: no check-ins are sent"
    slug = value.strip()
    if len(slug) > MAX_SLUG:
        return slug[:MAX_SLUG], f"monitor slug {slug!r} is cut to {MAX_SLUG} characters"
    return slug, None


def slug_from_name(name: str) -> str:
    """A slug made of a span or task name (``app.tasks.Report`` -> ``app-tasks-report``)."""
    return _NOT_SLUG.sub("-", name.lower()).strip("-")[:MAX_SLUG]


def _crontab_field(text: str, low: int, high: int, names: Any, day_of_week: bool) -> bool:
    for part in text.split(","):
        if day_of_week and re.fullmatch(r"[0-7](#[1-5]|L)", part):
            continue
        if not day_of_week and low == 1 and high == 31 and part in ("L", "LW"):
            continue
        match = _PART.fullmatch(part)
        if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
            return False
        base = match.group(1)
        if base == "*":
            continue
        for bound in base.split("-"):
            number = _crontab_number(bound, names)
            if number is None or not low <= number <= high:
                return False
    return True


def _crontab_number(bound: str, names: Any) -> int | None:
    upper = bound.upper()
    if upper in names:
        return int(names.index(upper)) + (1 if names is _MONTHS else 0)
    return int(bound) if bound.isdigit() else None


def crontab_schedule(text: str) -> Config | None:
    """``{"type": "crontab", "value": ...}`` for a 5-field crontab (or ``@daily``...)."""
    value = " ".join(text.split())
    value = _NICKNAMES.get(value.lower(), value)
    fields = value.split(" ")
    if len(fields) != 5:
        return None
    for index, (field, (low, high, names)) in enumerate(zip(fields, _FIELDS, strict=True)):
        if not _crontab_field(field, low, high, names, index == 4):
            return None
    return {"type": "crontab", "value": value}


def interval_schedule(value: int, unit: str) -> Config | None:
    """``{"type": "interval", "value": n, "unit": u}``; None for a bad count or unit."""
    unit = unit.lower().rstrip("s") if isinstance(unit, str) else ""
    if type(value) is not int or value < 1 or unit not in UNITS:
        return None
    return {"type": "interval", "value": value, "unit": unit}


def _timedelta_schedule(delta: timedelta) -> Config | None:
    seconds = delta.total_seconds()
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return interval_schedule(int(seconds // size), unit)
    return None


def schedule_config(schedule: Any) -> tuple[Config | None, str | None]:
    """``(schedule, problem)`` from a crontab string (``"0 3 * * *"``, ``"@daily"``), an
    interval text (``"10 minutes"``), a ``timedelta`` of whole minutes or a ``(n, unit)``
    tuple."""
    result: Config | None = None
    if isinstance(schedule, str):
        interval = _INTERVAL_TEXT.fullmatch(schedule.strip())
        if interval is not None:
            result = interval_schedule(int(interval.group(1)), interval.group(2))
        else:
            result = crontab_schedule(schedule)
    elif isinstance(schedule, timedelta):
        result = _timedelta_schedule(schedule)
    elif isinstance(schedule, (tuple, list)) and len(schedule) == 2:
        result = interval_schedule(schedule[0], schedule[1])
    if result is None:
        return None, (f"monitor schedule {schedule!r} is invalid: expected a 5-field crontab "
                      "('0 3 * * *', '@daily'), a timedelta of whole minutes or (count, unit) "
                      f"with unit in {', '.join(UNITS)}; the monitor config is left out")
    return result, None


def _minutes(name: str, value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, timedelta) and value.total_seconds() % 60 == 0:
        value = int(value.total_seconds() // 60)
    if type(value) is int and 1 <= value <= _LIMITS[name]:
        return value, None
    return None, (f"monitor {name} {value!r} is invalid: expected a whole number from 1 to "
                  f"{_LIMITS[name]}{' (minutes)' if 'threshold' not in name else ''}; left out")


def timezone_name(value: Any) -> tuple[str | None, str | None]:
    """An IANA zone name (``"Europe/Paris"``, ``"UTC"``; a ``ZoneInfo`` gives its key)."""
    name = getattr(value, "key", value)
    if isinstance(name, str) and _IANA.fullmatch(name.strip()):
        return name.strip(), None
    return None, f"monitor timezone {value!r} is not an IANA zone name; left out"


def monitor_config(
    schedule: Any, timezone: Any = None, checkin_margin: Any = None, max_runtime: Any = None,
    failure_issue_threshold: Any = None, recovery_threshold: Any = None,
) -> tuple[Config | None, list[str]]:
    """``(monitor_config or None, problems)``. Without a valid schedule there is no config
    (Relay rejects a config without one); a bad optional field is left out alone."""
    problems: list[str] = []
    extras = {"checkin_margin": checkin_margin, "max_runtime": max_runtime,
              "failure_issue_threshold": failure_issue_threshold,
              "recovery_threshold": recovery_threshold}
    if schedule is None:
        given = [k for k, v in (("timezone", timezone), *extras.items()) if v is not None]
        if given:
            problems.append(f"monitor {', '.join(given)} ignored: no schedule given")
        return None, problems
    parsed, problem = schedule_config(schedule)
    if parsed is None:
        return None, [problem or "invalid schedule"]
    config: Config = {"schedule": parsed}
    if timezone is not None:
        zone, problem = timezone_name(timezone)
        if zone is not None:
            config["timezone"] = zone
        if problem:
            problems.append(problem)
    for name, value in extras.items():
        if value is not None:
            number, problem = _minutes(name, value)
            if number is not None:
                config[name] = number
            if problem:
                problems.append(problem)
    return config, problems


def config_from_attributes(attrs: Mapping[str, Any]) -> tuple[Config | None, list[str]]:
    """The monitor config a span describes with ``sentry.monitor.*`` attributes."""
    return monitor_config(attrs.get(SCHEDULE), attrs.get(TIMEZONE), attrs.get(CHECKIN_MARGIN),
                          attrs.get(MAX_RUNTIME), attrs.get(FAILURE_ISSUE_THRESHOLD),
                          attrs.get(RECOVERY_THRESHOLD))


def check_in(
    check_in_id: str, slug: str, status: str, *, environment: str | None,
    release: str | None, trace_id: int = 0, span_id: int = 0, duration: float | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """One ``check_in`` item payload."""
    payload: dict[str, Any] = {"check_in_id": check_in_id, "monitor_slug": slug,
                               "status": status}
    if duration is not None:
        payload["duration"] = round(max(0.0, duration), 6)
    if environment:
        payload["environment"] = environment
    if release:
        payload["release"] = release
    if config:
        payload["monitor_config"] = config
    if trace_id:
        trace = {"trace_id": f"{trace_id:032x}"}
        if span_id:
            trace["span_id"] = f"{span_id:016x}"
        payload["contexts"] = {"trace": trace}
    return payload


def span_outcome(span: ReadableSpan) -> str:
    """``error`` for a span that ended with an error status, else ``ok``."""
    status = span.status
    return "error" if status is not None and status.status_code is StatusCode.ERROR else "ok"


def span_duration(span: ReadableSpan) -> float | None:
    """Seconds from the span's start to its end."""
    if span.start_time is None or span.end_time is None:
        return None
    return max(0, span.end_time - span.start_time) / 1e9


def compile_rules(entries: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """``SENTRY_BRIDGE_MONITOR_SPANS``: ``name`` or ``name=slug`` -> ``{name: slug}``."""
    rules: dict[str, str] = {}
    problems: list[str] = []
    for entry in entries:
        name, _, given = entry.partition("=")
        name = name.strip()
        slug = given.strip()[:MAX_SLUG] if given.strip() else slug_from_name(name)
        if not name or not slug:
            problems.append(f"SENTRY_BRIDGE_MONITOR_SPANS entry {entry!r} is not `name` or "
                            "`name=slug`; left out")
            continue
        rules[name] = slug
    return rules, problems


def match_rule(rules: Mapping[str, str], name: str, attrs: Mapping[str, Any]) -> str | None:
    """The slug of a root span a rule names: by its name, its ``celery.task_name``, or the
    part of its name after the first ``/`` (``run/app.tasks.report``)."""
    if not rules:
        return None
    slug = rules.get(name)
    if slug is None:
        for key in Attr.CELERY_TASK_NAME:
            task = attrs.get(key)
            if isinstance(task, str) and task in rules:
                return rules[task]
        if "/" in name:
            slug = rules.get(name.split("/", 1)[1])
    return slug
