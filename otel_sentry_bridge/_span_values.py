"""Values for custom spans (``custom_spans``): attributes, measurements, HTTP method and URL,
and the shortcuts' data read from a decorated function's result.

Whatever the user passes becomes a valid OpenTelemetry attribute or is left out (``None``, a
value whose ``str()`` fails); nothing here raises.
"""

from __future__ import annotations

import decimal
import enum
import numbers
import re
import weakref
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.context import Context
from opentelemetry.trace import (
    NoOpTracer,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    Tracer,
    TracerProvider,
)

from . import caching
from ._internal_errors import warn_once
from .conventions import Attr

#: ``{"name": value}`` or ``{"name": (value, "unit")}``.
MeasurementInput = Mapping[str, "float | tuple[float, str]"]
AttributeInput = Mapping[str, Any]

MAX_TEXT = 16_384
MAX_ITEMS = 1000
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def text(value: Any) -> str | None:
    """``str(value)``, bounded; ``None`` (said once per type) when ``str()`` fails."""
    try:
        result = str(value)
    except Exception:
        warn_once(f"custom_spans.str.{type(value).__name__}",
                  "custom span: a %s value cannot be made text; left out", type(value).__name__)
        return None
    return result if len(result) <= MAX_TEXT else result[:MAX_TEXT] + "..."


def _scalar(value: Any) -> str | bool | int | float | None:
    kind = type(value)
    if kind is str or kind is bool or kind is float:
        return cast("str | bool | float", value)
    if kind is int:
        return cast(int, value) if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        inner = value.value
        return text(value) if isinstance(inner, enum.Enum) else _scalar(inner)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value[:MAX_TEXT]).decode("utf-8", "replace")
    if isinstance(value, str):  # subclasses
        return text(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return _scalar(int(value))
    if isinstance(value, numbers.Real):
        return float(value)
    return text(value)


def clean_attribute(value: Any) -> Any:
    """An OpenTelemetry attribute value for ``value``, or ``None`` (left out): sequences become
    homogeneous tuples (of text when mixed), other types text."""
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [v for v in (_scalar(v) for v in list(value)[:MAX_ITEMS]) if v is not None]
        kinds = {type(v) for v in items}
        if kinds <= {str} or kinds <= {bool} or kinds <= {int}:
            return tuple(items)
        if kinds <= {int, float}:
            return tuple(float(v) for v in items)
        return tuple(str(v) for v in items)
    return _scalar(value)


def clean_attributes(attributes: AttributeInput | None) -> dict[str, Any]:
    """:func:`clean_attribute` for each value; keys made text, empty keys left out."""
    out: dict[str, Any] = {}
    if not attributes:
        return out
    try:
        items = list(attributes.items())
    except Exception as exc:  # not a mapping
        warn_once("custom_spans.attributes", "custom span: attributes of type %s ignored (%s)",
                  type(attributes).__name__, exc)
        return out
    for key, value in items:
        name = key if type(key) is str else text(key)
        cleaned = clean_attribute(value)
        if name and cleaned is not None:
            out[name] = cleaned
    return out


def clean_measurements(measurements: MeasurementInput | None) -> list[tuple[str, float, str]]:
    """``(name, value, unit)`` for each number (bools and other values said once, left out)."""
    out: list[tuple[str, float, str]] = []
    try:
        items = list((measurements or {}).items())
    except Exception as exc:
        warn_once("custom_spans.measurements",
                  "custom span: measurements of type %s ignored (%s)",
                  type(measurements).__name__, exc)
        return out
    for name, spec in items:
        value, unit = spec if isinstance(spec, tuple) and len(spec) == 2 else (spec, "")
        number: float | None = None
        if not isinstance(value, bool) and isinstance(value, (numbers.Real, decimal.Decimal)):
            try:
                number = value if type(value) in (int, float) else float(value)
            except (ValueError, TypeError, OverflowError):  # Decimal("sNaN"), a broken Real
                number = None
        if number is None:  # one warning in all (names may be made at run time)
            warn_once("custom_spans.measurement",
                      "custom span: measurement %r is not a number; left out", name)
            continue
        out.append((text(name) or "", number, (text(unit) or "") if unit else ""))
    return out


# ------------------------------------------------------------------ HTTP client spans
#: What the bridge (and Relay) take as a request method; others are ``_OTHER`` (semconv).
_METHOD = re.compile(r"[A-Z_-]{3,32}")
#: Query parameters OpenTelemetry's HTTP conventions redact (signed URLs).
_SIGNED = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})
REDACTED = "REDACTED"


def http_method(method: Any) -> tuple[str, str | None]:
    """``(http.request.method, http.request.method_original or None)``."""
    original = (text(method) or "").strip()
    upper = original.upper()
    if _METHOD.fullmatch(upper):
        return upper, None
    return "_OTHER", original or None


def http_url(url: Any) -> dict[str, Any]:
    """``url.full`` without credentials or signatures, ``server.address``, ``server.port`` and
    ``url.scheme``, as OpenTelemetry's HTTP client conventions write them."""
    full = text(url) or ""
    out: dict[str, Any] = {Attr.URL_FULL[0]: full}
    try:
        parts = urlsplit(full)
    except ValueError:  # not a URL (an invalid IPv6 host): kept only without "@"
        if "@" in full:
            out[Attr.URL_FULL[0]] = REDACTED
        return out
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}:{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query and any(p.split("=", 1)[0] in _SIGNED for p in query.split("&")):
        query = "&".join(
            f"{p.split('=', 1)[0]}={REDACTED}" if p.split("=", 1)[0] in _SIGNED else p
            for p in query.split("&"))
    out[Attr.URL_FULL[0]] = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if parts.scheme:
        out[Attr.URL_SCHEME[0]] = parts.scheme
    host = parts.hostname
    if host:
        out[Attr.SERVER_ADDRESS[0]] = host
        try:
            port = parts.port
        except ValueError:  # not a number
            port = None
        port = port or {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
        if port:
            out[Attr.SERVER_PORT[0]] = port
    return out


def response_status(span: Span, result: Any) -> None:
    """``http.response.status_code`` from a response's ``status_code`` or ``status``."""
    for field in ("status_code", "status"):
        code = getattr(result, field, None)
        if type(code) is int and 100 <= code <= 599:
            span.set_attribute(Attr.HTTP_STATUS[0], code)
            return


# ------------------------------------------------------------------ cache spans
def cache_result(span: Span, result: Any) -> None:
    """A read's ``cache.hit`` (the result is not ``None``) and ``cache.item_size``."""
    span.set_attribute(Attr.CACHE_HIT, result is not None)
    size = caching.item_size(result)
    if size is not None:
        span.set_attribute(Attr.CACHE_ITEM_SIZE, size)


def cache_context(span: Span, ctx: Context) -> Context:
    """As ``caching.CacheOperation``: a cache client instrumentation called inside reports to
    this span (``caching.active_cache_span``) instead of counting the same lookup twice."""
    return caching.mark_cache_span(span, ctx)


#: Tracers of the providers given explicitly (``span(..., tracer_provider=p)`` made anew at
#: each call must not pay ``get_tracer`` each time).
_BY_PROVIDER: weakref.WeakKeyDictionary[object, Tracer | None] = weakref.WeakKeyDictionary()


def tracer_of(provider: TracerProvider, name: str, version: str) -> Tracer | None:
    """``provider``'s tracer for custom spans, remembered per provider; ``None`` when nothing
    would be recorded (no SDK provider yet, ``OTEL_SDK_DISABLED``)."""
    if isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider)):
        return None
    try:
        return _BY_PROVIDER[provider]
    except (KeyError, TypeError):
        pass
    tracer: Tracer | None = provider.get_tracer(name, version)
    if isinstance(tracer, NoOpTracer):
        tracer = None
    try:
        _BY_PROVIDER[provider] = tracer
    except TypeError:  # a provider that cannot be weakly referenced: not remembered
        pass
    return tracer
