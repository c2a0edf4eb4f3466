"""Sentry trace headers as values (pure: no OpenTelemetry context, no I/O).

``sentry-trace: <trace_id>-<span_id>[-<0|1>]`` and the ``sentry-*`` members of W3C ``baggage``
(the dynamic sampling context, DSC), per ``sentry-mapping.md`` section 8: parsing that never
raises (a malformed value is ``None``), the ``sample_rand`` rules and the serialization
sentry-sdk uses (``sentry-<key>=<percent-encoded value>``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from random import Random
from urllib.parse import quote, unquote

SENTRY_TRACE = "sentry-trace"
BAGGAGE = "baggage"
SENTRY_PREFIX = "sentry-"
#: W3C baggage limits (https://www.w3.org/TR/baggage/#limits).
MAX_BAGGAGE_MEMBERS = 180
MAX_BAGGAGE_BYTES = 8192
#: DSC keys sent on (others from upstream are passed on as they came).
DSC_KEYS = ("trace_id", "public_key", "sample_rate", "sample_rand", "sampled", "release",
            "environment", "transaction", "org_id")

_SENTRY_TRACE_RE = re.compile(
    r"^[ \t]*([0-9a-f]{32})?-?([0-9a-f]{16})?-?([01])?[ \t]*$")
_W3C_LOOKING = re.compile(r"^[ \t]*00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})[ \t]*$")
_ORG_HOST = re.compile(r"^o(\d+)\.")


@dataclass(frozen=True)
class SentryTrace:
    """A parsed ``sentry-trace`` header; ``sampled`` is ``None`` for a deferred decision."""

    trace_id: int
    span_id: int
    sampled: bool | None


def parse_sentry_trace(value: str | None) -> SentryTrace | None:
    """Parse ``sentry-trace`` (the first non-empty of comma-joined duplicates); ``None`` when
    it carries no usable trace id and span id (all-zero ids included)."""
    if not value or len(value) > 512:
        return None
    for part in value.split(","):
        if not part.strip():
            continue
        w3c = _W3C_LOOKING.match(part)
        if w3c:
            trace_hex, span_hex, flags = w3c.groups()
            sampled: bool | None = bool(int(flags, 16) & 1)
        else:
            match = _SENTRY_TRACE_RE.match(part)
            if match is None:
                return None
            trace_hex, span_hex, flag = match.groups()
            sampled = None if flag is None else flag == "1"
        if not trace_hex or not span_hex:
            return None
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        if not trace_id or not span_id:
            return None
        return SentryTrace(trace_id, span_id, sampled)
    return None


def format_sentry_trace(trace_id: int, span_id: int, sampled: bool | None) -> str:
    """The ``sentry-trace`` value for a span context."""
    flag = "" if sampled is None else ("-1" if sampled else "-0")
    return f"{trace_id:032x}-{span_id:016x}{flag}"


def split_baggage(header: str | None) -> tuple[dict[str, str], list[str]]:
    """``(sentry items without prefix, other members as they came)`` of a baggage header.

    Members without ``=``, blank members and members beyond the W3C limits are left out; a
    Sentry value that cannot be percent-decoded is kept as it came.
    """
    sentry: dict[str, str] = {}
    others: list[str] = []
    if not header:
        return sentry, others
    if len(header) > MAX_BAGGAGE_BYTES:
        header = header[:MAX_BAGGAGE_BYTES].rsplit(",", 1)[0]
    for count, raw in enumerate(header.split(",")):
        if count >= MAX_BAGGAGE_MEMBERS:
            break
        item = raw.strip()
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        key = key.strip()
        if key.startswith(SENTRY_PREFIX):
            name = unquote(key[len(SENTRY_PREFIX):])
            if name:
                sentry[name] = unquote(value.split(";", 1)[0].strip())
        elif key:
            others.append(item)
    return sentry, others


def sentry_members(dsc: Mapping[str, str]) -> list[str]:
    """The ``sentry-*`` baggage members for a DSC (sentry-sdk's encoding)."""
    return [f"{SENTRY_PREFIX}{quote(k)}={quote(str(v))}" for k, v in dsc.items() if v != ""]


def join_baggage(members: Iterable[str]) -> str:
    """One baggage header from members, within the W3C limits (later members are left out:
    callers put Sentry's first, so that a DSC is never cut in half)."""
    out: list[str] = []
    size = 0
    for member in members:
        extra = len(member) + (1 if out else 0)
        if len(out) >= MAX_BAGGAGE_MEMBERS or size + extra > MAX_BAGGAGE_BYTES:
            break
        out.append(member)
        size += extra
    return ",".join(out)


def parse_rate(value: object) -> float | None:
    """A sample rate in [0, 1], or ``None``."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return rate if math.isfinite(rate) and 0.0 <= rate <= 1.0 else None


def parse_rand(value: object) -> float | None:
    """A ``sample_rand`` in [0, 1), or ``None``."""
    rate = parse_rate(value)
    return rate if rate is not None and rate < 1.0 else None


def format_rand(value: float) -> str:
    """``sample_rand`` as Sentry writes it: six decimals, cut (never rounded up to 1).

    ``value * 1e6`` can fall just below the integer for a value already on the 1e-6 grid
    (``0.520631 * 1e6 == 520630.99999999994``): such a value keeps its own six decimals."""
    micros = math.floor(value * 1_000_000)
    if (micros + 1) / 1_000_000 <= value:
        micros += 1
    return f"{min(micros, 999_999) / 1_000_000:.6f}"


def format_rate(value: float) -> str:
    """``sample_rate`` as text (``repr`` of the float, as sentry-sdk writes it)."""
    return str(float(value))


def rand_from_trace_id(trace_id: int) -> float:
    """``sample_rand`` at the head of a trace: the trace id's low 64 bits as a fraction, cut to
    six decimals, so that OpenTelemetry's ``TraceIdRatioBased`` decision (``low64 < rate *
    2**64``) and Sentry's (``sample_rand < rate``) agree for rates that are multiples of 1e-6."""
    low = trace_id & 0xFFFF_FFFF_FFFF_FFFF
    return ((low * 1_000_000) >> 64) / 1_000_000  # exact: never rounds up to 1.0


def backfill_rand(trace_id: int, parent_sampled: bool | None, rate: float | None) -> float:
    """A missing ``sample_rand`` of an incoming DSC, as sentry-sdk's ``_fill_sample_rand``
    makes it: seeded by the trace id, in [0, rate) when the parent sampled, [rate, 1) when it
    did not, [0, 1) when either is unknown."""
    lower, upper = 0.0, 1.0
    if parent_sampled is not None and rate is not None:
        lower, upper = (0.0, rate) if parent_sampled else (rate, 1.0)
    if not lower < upper:
        return lower if lower < 1.0 else 0.999999
    rng = Random(f"{trace_id:032x}")
    low, high = int(lower * 1_000_000), int(upper * 1_000_000)
    try:
        return rng.randrange(low, high) / 1_000_000
    except ValueError:
        return low / 1_000_000


def org_id_from_host(host: str | None) -> str | None:
    """The organization id of a DSN host such as ``o123.ingest.sentry.io``."""
    if not host:
        return None
    match = _ORG_HOST.match(host)
    return match.group(1) if match else None


def parse_sampled(value: str | None) -> bool | None:
    """The DSC's ``sampled`` (``"true"``/``"false"``), or ``None``."""
    if value == "true":
        return True
    if value == "false":
        return False
    return None
