"""Custom spans: ``span``, a decorator and a context manager (docs/instrumentation/custom-spans.md).

::

    from otel_sentry_bridge import span
    from otel_sentry_bridge.conventions import Op

    @span                                   # op "function", name "<module>.<qualname>"
    def price(order): ...

    @span(op=Op.SERIALIZE, attributes={"format": "json"})
    async def encode(order): ...            # also generators and async generators

    with span("encode order", op=Op.SERIALIZE, measurements={"items": 3}) as s:
        s.set_attribute("bytes", 512)       # ``s`` is the OpenTelemetry span

Shortcuts for Sentry's ops: ``serialize_span``, ``deserialize_span``, ``http_client_span``
(a network call for the Requests page) and ``cache_span`` (the Caches page).

Each span carries ``sentry.op``, ``sentry.description`` and ``sentry.origin`` (``manual``).
Attribute values of other types than OpenTelemetry's are converted (``None`` left out, the rest
made text); measurements become the transaction's (``set_measurement``'s convention). An
exception leaving the span is recorded (an error event) and re-raised unchanged.

Cheap when nothing would be sent: without an SDK tracer provider (or with ``OTEL_SDK_DISABLED``),
with instrumentation suppressed, or under an unsampled parent, no span is started and no
attribute is built; this is decided at each call. OpenTelemetry API only.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Literal, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import (
    INVALID_SPAN,
    Span,
    SpanKind,
    Tracer,
    TracerProvider,
)

from . import caching
from ._internal_errors import log_internal_error
from ._span_values import (
    AttributeInput,
    MeasurementInput,
    cache_context,
    cache_result,
    clean_attributes,
    clean_measurements,
    http_method,
    http_url,
    response_status,
    text,
    tracer_of,
)
from ._span_wrappers import Run, decorate, finish
from .conventions import Attr, Op
from .measurements import set_measurement
from .version import __version__

__all__ = [
    "AttributeInput", "CustomSpan", "MeasurementInput", "cache_span", "deserialize_span",
    "http_client_span", "serialize_span", "span",
]

F = TypeVar("F", bound=Callable[..., Any])
Base = Callable[[], dict[str, Any]]

TRACER_NAME = "otel_sentry_bridge.custom_spans"
#: Attributes of a decorated function's span (OpenTelemetry's code conventions).
CODE_FUNCTION = "code.function.name"
CODE_FILE = "code.file.path"
CODE_LINE = "code.line.number"
HTTP_METHOD_ORIGINAL = "http.request.method_original"

# The global provider is read from OpenTelemetry's module global: ``get_tracer_provider()``
# costs ~1.5 us while none is set (its environment lookup raises and catches a ``KeyError``),
# more than a whole call of a decorated function. ``_UNKNOWN``: not there (another API version).
_UNKNOWN = object()
#: ``OTEL_PYTHON_TRACER_PROVIDER`` names a provider the API loads at its first use.
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
# The global provider's tracer (``None``: it records nothing), for the provider it came from.
_global: tuple[object, Tracer | None] = (None, None)
# Runs of ``with`` blocks in this context (thread, task): ``(CustomSpan, run)``, innermost last.
_ACTIVE: ContextVar[tuple[tuple[object, Run | None], ...]] = ContextVar(
    "otel_sentry_bridge.custom_spans", default=())


def _tracer_of(provider: TracerProvider) -> Tracer | None:
    return tracer_of(provider, TRACER_NAME, __version__)


class CustomSpan:
    """What :func:`span` returns: a decorator (``@``) and a context manager (``with``,
    ``async with``, giving the OpenTelemetry span). Reusable, also concurrently."""

    __slots__ = ("_attributes", "_base", "_built", "_measurements", "_tracer", "in_context",
                 "kind", "name", "on_result", "only_if_parent", "op", "tracer_provider")

    def __init__(
        self, name: str | None = None, op: str = Op.FUNCTION,
        attributes: AttributeInput | None = None, measurements: MeasurementInput | None = None,
        kind: SpanKind = SpanKind.INTERNAL, only_if_parent: bool = False,
        tracer_provider: TracerProvider | None = None, base: Base | None = None,
    ) -> None:
        self.name = name
        self.op = op
        self.kind = kind
        self.only_if_parent = only_if_parent
        self.tracer_provider = tracer_provider
        #: called with a decorated function's span and result (the shortcuts' data)
        self.on_result: Callable[[Span, Any], None] | None = None
        #: adds to the context that has the span current (the cache shortcut marks itself)
        self.in_context: Callable[[Span, Context], Context] | None = None
        self._attributes = attributes
        self._measurements = measurements
        self._base = base  # the shortcuts' attributes, built only for a recording span
        self._built: dict[str, Any] | None = None
        self._tracer: tuple[object, Tracer | None] = (None, None)

    def __repr__(self) -> str:
        return f"span({self.name!r}, op={self.op!r})"

    def for_function(self, func: Callable[..., Any]) -> CustomSpan:
        """This span for each call of ``func``: named after it, with its code attributes."""
        module = getattr(func, "__module__", None)
        qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) \
            or type(func).__name__
        full = f"{module}.{qualname}" if module else str(qualname)
        code: dict[str, Any] = {CODE_FUNCTION: full}
        try:
            target = getattr(inspect.unwrap(func), "__code__", None)
            if target is not None:
                code[CODE_FILE] = target.co_filename
                code[CODE_LINE] = target.co_firstlineno
        except Exception as exc:
            log_internal_error("custom_spans.code", exc)
        base = self._base
        other = CustomSpan(
            self.name or full, op=self.op, attributes=self._attributes,
            measurements=self._measurements, kind=self.kind,
            only_if_parent=self.only_if_parent, tracer_provider=self.tracer_provider,
            base=(lambda: {**code, **base()}) if base is not None else code.copy)
        other.on_result, other.in_context = self.on_result, self.in_context
        return other

    # -------------------------------------------------------------- start and end
    def _new_tracer(self, provider: TracerProvider) -> Tracer | None:
        global _global
        tracer = _tracer_of(provider)
        if self.tracer_provider is None:
            _global = (provider, tracer)
        else:
            self._tracer = (provider, tracer)
        return tracer

    def _build(self) -> dict[str, Any]:
        name = self.name or self.op
        built: dict[str, Any] = {Attr.SENTRY_OP[0]: self.op, Attr.SENTRY_ORIGIN[0]: "manual"}
        if self.op != Op.HTTP_CLIENT:  # Requests: "METHOD URL", derived from the URL
            built[Attr.SENTRY_DESCRIPTION[0]] = name
        if self._base is not None:
            built.update(self._base())
        built.update(clean_attributes(self._attributes))
        self._built = built
        return built

    def open(self, keep: bool = True) -> Run | None:
        """Start the span, record the measurements, make it current (``keep``, else only give
        the context that has it current); ``None`` when nothing would record it. The hot path
        of every call: without a provider, one module global read decides."""
        try:
            provider = self.tracer_provider
            if provider is None:
                cached = _global
                provider = cast(Any, getattr(trace, "_TRACER_PROVIDER", _UNKNOWN))
                if provider is None and not _PROVIDER_FROM_ENV:
                    return None  # no provider set: OpenTelemetry's would be the proxy one
                if provider is None or provider is _UNKNOWN:
                    provider = trace.get_tracer_provider()
            else:
                cached = self._tracer
            tracer = cached[1] if cached[0] is provider else self._new_tracer(
                cast(TracerProvider, provider))
            if tracer is None:
                return None
            parent = trace.get_current_span()
            parent_context = parent.get_span_context()
            if parent_context.is_valid:
                if not parent_context.trace_flags.sampled:
                    return Run(None, parent) if parent.is_recording() else None
            elif self.only_if_parent:
                return None
            if not is_instrumentation_enabled():
                return None
            attributes = self._built if self._built is not None else self._build()
            run = Run(tracer.start_span(self.name or self.op, kind=self.kind,
                                        attributes=attributes))
        except Exception as exc:
            log_internal_error("custom_spans.start", exc)
            return None
        self._current(run, keep)
        return run

    def _current(self, run: Run, keep: bool) -> None:
        span = cast(Span, run.span)
        try:
            run.context = trace.set_span_in_context(span)
            if self.in_context is not None:
                run.context = self.in_context(span, run.context)
            token = otel_context.attach(run.context)
            try:
                if self._measurements:
                    for name, value, unit in clean_measurements(self._measurements):
                        set_measurement(name, value, unit)
            finally:
                if keep:
                    run.token = token
                else:
                    otel_context.detach(token)
        except Exception as exc:
            log_internal_error("custom_spans.open", exc)

    # -------------------------------------------------------------- context manager
    def __enter__(self) -> Span:
        run = self.open()
        active = _ACTIVE.get()
        # Nothing to end later: pushed only to pair with this exit when an outer ``with`` of
        # this same object is open (its exit must not take this one's place).
        if run is not None or (active and any(entry[0] is self for entry in active)):
            _ACTIVE.set((*active, (self, run)))
        return run.span if run is not None and run.span is not None else INVALID_SPAN

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        active = _ACTIVE.get()
        for index in range(len(active) - 1, -1, -1):  # the innermost of this object's runs
            if active[index][0] is self:
                run = active[index][1]
                _ACTIVE.set(active[:index] + active[index + 1:])
                if run is not None:
                    finish(run, exc)
                break
        return False

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Literal[False]:
        return self.__exit__(kind, exc, tb)

    # -------------------------------------------------------------- decorator
    def __call__(self, func: F) -> F:
        return decorate(self, func)


@overload
def span(func: F, /) -> F: ...


@overload
def span(
    name: str | None = None, /, *, op: str = Op.FUNCTION,
    attributes: AttributeInput | None = None, measurements: MeasurementInput | None = None,
    kind: SpanKind = SpanKind.INTERNAL, only_if_parent: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> CustomSpan: ...


def span(
    func_or_name: Any = None, /, *, op: str = Op.FUNCTION,
    attributes: AttributeInput | None = None, measurements: MeasurementInput | None = None,
    kind: SpanKind = SpanKind.INTERNAL, only_if_parent: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> Any:
    """A span named ``name`` (decorating: ``<module>.<qualname>`` of the function) with the
    Sentry op ``op`` (default ``function``): ``@span``, ``@span(...)``, ``with span(...) as s``.

    ``attributes``: span data (values converted, ``None`` left out). ``measurements``:
    ``{"name": value}`` or ``{"name": (value, "unit")}``, for the transaction. ``kind``: the
    OpenTelemetry span kind. ``only_if_parent``: no span outside any span (as sentry-sdk's
    ``@trace``) rather than a new trace (a transaction of its own). ``tracer_provider``: by
    default the global one, looked up at each call.
    """
    if func_or_name is None or type(func_or_name) is str:  # the usual case, kept fast
        return CustomSpan(func_or_name, op, attributes, measurements, kind, only_if_parent,
                          tracer_provider)
    if callable(func_or_name) or isinstance(func_or_name, (staticmethod, classmethod)):
        return CustomSpan(None, op=op, attributes=attributes, measurements=measurements,
                          kind=kind, only_if_parent=only_if_parent,
                          tracer_provider=tracer_provider)(func_or_name)
    name = func_or_name if isinstance(func_or_name, str) else text(func_or_name)
    return CustomSpan(name, op=op, attributes=attributes, measurements=measurements, kind=kind,
                      only_if_parent=only_if_parent, tracer_provider=tracer_provider)


class _OpSpan:
    """``span`` with a fixed op (``serialize_span``, ``deserialize_span``)."""

    def __init__(self, op: str, doc: str) -> None:
        self.op = op
        self.__doc__ = doc

    @overload
    def __call__(self, func: F, /) -> F: ...

    @overload
    def __call__(
        self, name: str | None = None, /, *, attributes: AttributeInput | None = None,
        measurements: MeasurementInput | None = None, only_if_parent: bool = False,
        tracer_provider: TracerProvider | None = None,
    ) -> CustomSpan: ...

    def __call__(
        self, func_or_name: Any = None, /, *, attributes: AttributeInput | None = None,
        measurements: MeasurementInput | None = None, only_if_parent: bool = False,
        tracer_provider: TracerProvider | None = None,
    ) -> Any:
        return span(func_or_name, op=self.op, attributes=attributes, measurements=measurements,
                    only_if_parent=only_if_parent, tracer_provider=tracer_provider)


serialize_span = _OpSpan(Op.SERIALIZE, "A span with the Sentry op ``serialize`` (encoding).")
deserialize_span = _OpSpan(Op.DESERIALIZE,
                           "A span with the Sentry op ``deserialize`` (decoding, parsing).")


def http_client_span(
    method: str, url: str, *, name: str | None = None, attributes: AttributeInput | None = None,
    measurements: MeasurementInput | None = None, only_if_parent: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> CustomSpan:
    """A network call made by hand (``http.client``, a CLIENT span with OpenTelemetry's HTTP
    client attributes), for Sentry's Requests page: ``url`` without credentials and signatures.
    Set ``http.response.status_code`` on the span; decorating, it is read from the result's
    ``status_code`` or ``status``."""

    def base() -> dict[str, Any]:
        verb, original = http_method(method)
        out = {Attr.HTTP_METHOD[0]: verb, **http_url(url)}
        if original:
            out[HTTP_METHOD_ORIGINAL] = original
        return out

    verb = http_method(method)[0]
    custom = CustomSpan(name or (verb if verb != "_OTHER" else "HTTP"), op=Op.HTTP_CLIENT,
                        attributes=attributes, measurements=measurements, kind=SpanKind.CLIENT,
                        only_if_parent=only_if_parent, tracer_provider=tracer_provider, base=base)
    custom.on_result = response_status
    return custom


def cache_span(
    key: str | bytes | Sequence[str | bytes], *, op: str = Op.CACHE_GET,
    hit: bool | None = None, item_size: int | None = None, name: str | None = None,
    attributes: AttributeInput | None = None, measurements: MeasurementInput | None = None,
    only_if_parent: bool = False, tracer_provider: TracerProvider | None = None,
) -> CustomSpan:
    """A cache step (``op``: ``cache.get``, ``cache.put``, ``cache.remove``, ``cache.flush``)
    for Sentry's Caches page, described by its key(s). Set ``cache.hit`` (a bool, reads) and
    ``cache.item_size`` (bytes) on the span once known; decorating a ``cache.get``, they come
    from the result (a hit when not ``None``; the size of ``bytes`` or ``str``)."""
    def base() -> dict[str, Any]:
        many = isinstance(key, Iterable) and not isinstance(key, (str, bytes, bytearray))
        keys = [caching.key_text(k) for k in (list(key)[:100] if many else [key])
                if k is not None]
        out: dict[str, Any] = {Attr.SENTRY_DESCRIPTION[0]: ", ".join(keys) or op}
        if keys:
            out[Attr.CACHE_KEY] = tuple(keys)
        if hit is not None:
            out[Attr.CACHE_HIT] = bool(hit)
        if type(item_size) is int and item_size >= 0:
            out[Attr.CACHE_ITEM_SIZE] = item_size
        return out

    custom = CustomSpan(name or op, op=op, attributes=attributes,
                        measurements=measurements, only_if_parent=only_if_parent,
                        tracer_provider=tracer_provider, base=base)
    custom.in_context = cache_context
    if op == Op.CACHE_GET and hit is None:
        custom.on_result = cache_result
    return custom
