"""Sentry transaction ``measurements`` from span attributes and span events (pure).

Two ways to record one on any span of a transaction (docs/metrics.md, "Measurements"):

* attributes: ``sentry.measurement.<name>`` = a number, and optionally
  ``sentry.measurement.<name>.unit`` = a unit (a key ending in ``.unit`` is always a unit);
* a span event named ``sentry.measurement`` with attributes ``name``, ``value``, ``unit``.

The result has sentry-sdk's ``set_measurement`` shape: ``{name: {"value": float, "unit": str}}``.
The root span's measurements win, then those of the first other span that has the name.

Relay's rules (checked against its normalizer): names are lower-cased, start with an ASCII
letter and hold only ``a-z0-9._`` (the bridge also turns ``-`` into ``_``, as Relay's metric
extraction does); a name plus its unit may be at most 171 characters (Relay's 200-character
metric name limit minus its 29 characters of overhead). Units are Sentry's: durations
``nanosecond`` .. ``week``, information ``bit`` .. ``exbibyte``, fractions ``ratio`` and
``percent``, and ``none`` (also when no unit is given); OpenTelemetry's UCUM spellings (``ms``,
``By``, ``1``, ``%`` ...) are accepted too. Values are finite ints or floats (never bools).
Anything else is not sent as a measurement: attributes are set aside in the span data under
``sentry_bridge.invalid.`` (as other unreadable values), invalid events likewise under
``sentry_bridge.invalid.sentry.measurement.<name>``. Nothing here raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from otel_sentry_bridge.conventions import Attr

from .values import INVALID_PREFIX, safe_str

#: ``(name, value, unit)``
Measurement = tuple[str, float, str]

PREFIX = Attr.SENTRY_MEASUREMENT_PREFIX
UNIT_SUFFIX = Attr.SENTRY_MEASUREMENT_UNIT_SUFFIX
EVENT_NAME = Attr.SENTRY_MEASUREMENT_EVENT
#: Longest ``name`` + ``unit`` Relay keeps (``max_name_length`` 200 - MRI overhead 29).
MAX_NAME_AND_UNIT = 171

DURATION_UNITS = ("nanosecond", "microsecond", "millisecond", "second", "minute", "hour", "day",
                  "week")
INFORMATION_UNITS = ("bit", "byte", "kilobyte", "kibibyte", "megabyte", "mebibyte", "gigabyte",
                     "gibibyte", "terabyte", "tebibyte", "petabyte", "pebibyte", "exabyte",
                     "exbibyte")
FRACTION_UNITS = ("ratio", "percent")
UNITS = frozenset((*DURATION_UNITS, *INFORMATION_UNITS, *FRACTION_UNITS, "none"))
#: OpenTelemetry's UCUM units (case-sensitive) -> Sentry's.
_UCUM = {
    "ns": "nanosecond", "us": "microsecond", "ms": "millisecond", "s": "second",
    "min": "minute", "h": "hour", "d": "day", "wk": "week", "bit": "bit", "By": "byte",
    "kBy": "kilobyte", "KiBy": "kibibyte", "MBy": "megabyte", "MiBy": "mebibyte",
    "GBy": "gigabyte", "GiBy": "gibibyte", "TBy": "terabyte", "TiBy": "tebibyte",
    "PBy": "petabyte", "PiBy": "pebibyte", "EBy": "exabyte", "EiBy": "exbibyte",
    "1": "none", "%": "percent",
}
_NAME = re.compile(r"[a-z][a-z0-9._]*")


def measurement_name(raw: Any) -> str | None:
    """The name Relay keeps (lower case, ``-`` -> ``_``), or None when it would drop it."""
    if type(raw) is not str:
        return None
    name = raw.strip().lower().replace("-", "_")
    return name if _NAME.fullmatch(name) and len(name) < MAX_NAME_AND_UNIT else None


def measurement_unit(raw: Any) -> str | None:
    """Sentry's unit for ``raw`` (``none`` for no unit), or None when it is not one."""
    if raw is None:
        return "none"
    if type(raw) is not str:
        return None
    text = raw.strip()
    if not text:
        return "none"
    unit = _UCUM.get(text) or text.lower()
    return unit if unit in UNITS else None


def measurement_value(raw: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN, infinities, huge ints)."""
    kind = type(raw)
    if kind is not int and kind is not float:
        return None
    try:
        value = float(raw)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _measurement(name: Any, value: Any, unit: Any) -> Measurement | None:
    clean_name = measurement_name(name)
    clean_value = measurement_value(value)
    clean_unit = measurement_unit(unit)
    if clean_name is None or clean_value is None or clean_unit is None:
        return None
    if len(clean_name) + len(clean_unit) > MAX_NAME_AND_UNIT:
        return None
    return clean_name, clean_value, clean_unit


def attribute_measurements(
    raw: Mapping[Any, Any],
) -> tuple[tuple[Measurement, ...], tuple[str, ...]]:
    """``(measurements, keys to set aside)`` from one span's ``sentry.measurement.*`` attributes.

    A key ending in ``.unit`` is the unit of the measurement named by the rest of the key; a
    unit without a value, or that is not one of Sentry's, is set aside with its value.
    """
    values: dict[str, str] = {}  # measurement key (without prefix) -> attribute key
    units: dict[str, str] = {}
    for key in raw:
        if type(key) is not str or not key.startswith(PREFIX):
            continue
        rest = key[len(PREFIX):]
        if rest.endswith(UNIT_SUFFIX):
            units[rest[:-len(UNIT_SUFFIX)]] = key
        else:
            values[rest] = key
    if not values and not units:
        return (), ()
    found: list[Measurement] = []
    invalid: list[str] = []
    for rest, key in values.items():
        unit_key = units.pop(rest, None)
        item = _measurement(rest, raw[key], raw[unit_key] if unit_key is not None else None)
        if item is None:
            invalid.append(key)
            if unit_key is not None:
                invalid.append(unit_key)
        else:
            found.append(item)
    invalid.extend(units.values())  # units of no measurement
    return tuple(found), tuple(invalid)


def event_measurements(events: Iterable[Any]) -> tuple[list[Measurement], dict[str, str]]:
    """``(measurements, data to add)`` from a span's ``sentry.measurement`` events."""
    found: list[Measurement] = []
    invalid: dict[str, str] = {}
    for event in events:
        if getattr(event, "name", None) != EVENT_NAME:
            continue
        attrs = getattr(event, "attributes", None) or {}
        name, value, unit = attrs.get("name"), attrs.get("value"), attrs.get("unit")
        item = _measurement(name, value, unit)
        if item is not None:
            found.append(item)
            continue
        label = name.strip() if type(name) is str else ""
        key = INVALID_PREFIX + EVENT_NAME + ("." + label if label else "")
        text = safe_str(value) if value is not None else ""
        if unit is not None and safe_str(unit).strip():
            text = f"{text} {safe_str(unit).strip()}"
        invalid[key] = text.strip() or "<no value>"
    return found, invalid


class _Measured(Protocol):
    @property
    def measurements(self) -> tuple[Measurement, ...]: ...


def _events(span: Any) -> Sequence[Any]:
    events = getattr(span, "_events", None)  # the SDK's own field: no tuple copy
    if events is None:
        events = getattr(span, "events", None)
    return events or ()


def transaction_measurements(
    root: Any,
    templates: Sequence[_Measured],
    recorded: Sequence[tuple[Any, dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """The ``measurements`` of a transaction.

    ``templates``: the root's span template first, then its descendants'; ``recorded``: the
    ``(span, mapped span)`` pairs of the spans that have events. Invalid measurement events are
    set aside in their mapped span's ``data`` (a new dict: template data is shared).
    """
    root_events: list[Measurement] = []
    other_events: list[Measurement] = []
    for span, mapped in recorded:
        found, invalid = event_measurements(_events(span))
        if invalid:
            mapped["data"] = {**mapped["data"], **invalid}
        (root_events if span is root else other_events).extend(found)
    if not root_events and not other_events and not any(t.measurements for t in templates):
        return {}
    parts: list[Iterable[Measurement]] = []
    if templates:
        parts.append(templates[0].measurements)
    parts.append(root_events)
    parts.extend(t.measurements for t in templates[1:])
    parts.append(other_events)
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for name, value, unit in part:
            if name not in out:
                out[name] = {"value": value, "unit": unit}
    return out
