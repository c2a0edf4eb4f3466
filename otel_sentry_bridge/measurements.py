"""``set_measurement``: a Sentry transaction measurement on the current span (OTel API only).

::

    from otel_sentry_bridge import set_measurement

    set_measurement("order.items", 3)
    set_measurement("payment.wait", 182.5, "millisecond")

Like sentry-sdk's ``set_measurement``, the value lands in the ``measurements`` of the
transaction the span belongs to (the span may be any span of it; the root's value wins per
name). It only sets span attributes (``sentry.measurement.<name>`` and, with a unit,
``sentry.measurement.<name>.unit``), so it works with any OpenTelemetry setup and costs nothing
without a recording span. Names, values and units are checked when the transaction is mapped
(docs/metrics.md, "Measurements"): invalid ones are never sent as measurements.
"""

from __future__ import annotations

from opentelemetry import trace

from ._internal_errors import log_internal_error
from .conventions import Attr

__all__ = ["set_measurement"]


def set_measurement(name: str, value: float, unit: str = "") -> None:
    """Record measurement ``name`` = ``value`` (``unit``: e.g. ``millisecond``, ``byte``, or
    none) on the current span, for its Sentry transaction. A no-op without a recording span;
    never raises (a bad name or value is left for the mapping to set aside)."""
    try:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        name = str(name)
        unit = str(unit) if unit else ""
        if name.endswith(Attr.SENTRY_MEASUREMENT_UNIT_SUFFIX):
            # ``<name>.unit`` attributes are units: such a name is recorded as a span event.
            attributes: dict[str, str | float] = {"name": name, "value": value}
            if unit:
                attributes["unit"] = unit
            span.add_event(Attr.SENTRY_MEASUREMENT_EVENT, attributes)
            return
        key = Attr.SENTRY_MEASUREMENT_PREFIX + name
        span.set_attribute(key, value)
        # always written: a later call without a unit must not keep an earlier call's unit
        span.set_attribute(key + Attr.SENTRY_MEASUREMENT_UNIT_SUFFIX, unit or "none")
    except Exception as exc:
        log_internal_error("set_measurement", exc)
