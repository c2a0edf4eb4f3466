"""pydantic v2 validation as spans; a failed validation as an error event or a breadcrumb.

Patched entry points: ``BaseModel.__init__`` (and ``RootModel.__init__``),
``BaseModel.model_validate`` / ``model_validate_json`` / ``model_validate_strings`` and
``TypeAdapter.validate_python`` / ``validate_json`` / ``validate_strings``. Each call is one span
(op ``validation``, description ``User (json)``) when:

* instrumentation is not suppressed and a span is recording (validation alone never starts a
  transaction);
* it is not inside another validation (nested models, a validator building a model, a custom
  ``__init__`` calling ``super().__init__``: one span for the outermost);
* for a ``TypeAdapter``, the type is not a single plain value (``int``, ``str``, a date, an
  enum, ``Optional`` of one...): FastAPI validates every query, path and header parameter that
  way, and a span each would only clutter the request.

A failure (``ValidationError``, re-raised unchanged) marks the span failed with the error count;
``SENTRY_BRIDGE_VALIDATION_ERRORS`` (read at each failure) then adds an error event (``event``),
a breadcrumb (``breadcrumb``, the default) or nothing (``off``): see ``_report.py``.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, get_args, get_origin

from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, RootModel, TypeAdapter
from pydantic_core import ValidationError

from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge_instrumentation._base import (
    BridgeInstrumentor,
    bridge_config,
    call_guarded,
    is_instrumentation_enabled,
)

from ._report import report_failure
from .package import _instruments

__all__ = ["PydanticInstrumentor"]

ORIGIN = "auto.validation.pydantic"
#: Span data.
SCHEMA_NAME = "pydantic.schema_name"
VALIDATION_MODE = "pydantic.validation_mode"
VALIDATION_METHOD = "pydantic.validation_method"
INPUT_LENGTH = "pydantic.input_length"

#: ``(class, method, mode)`` patched; methods a pydantic version lacks are skipped.
TARGETS: tuple[tuple[type, str, str], ...] = (
    (BaseModel, "__init__", "python"),
    (RootModel, "__init__", "python"),
    (BaseModel, "model_validate", "python"),
    (BaseModel, "model_validate_json", "json"),
    (BaseModel, "model_validate_strings", "strings"),
    (TypeAdapter, "validate_python", "python"),
    (TypeAdapter, "validate_json", "json"),
    (TypeAdapter, "validate_strings", "strings"),
)

#: Core schema types of a single plain value (a ``TypeAdapter`` of one gets no span), and the
#: wrappers looked through.
_PLAIN_VALUES = frozenset({
    "any", "none", "bool", "int", "float", "decimal", "complex", "str", "bytes", "date",
    "time", "datetime", "timedelta", "literal", "enum", "uuid", "url", "multi-host-url",
})
_LOOKED_THROUGH = frozenset({"default", "nullable"})
_MODULE_PREFIX = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")
_MAX_NAME = 200

#: True while a validation span is open in this context (nested validations make none).
_INSIDE: ContextVar[bool] = ContextVar("otel_sentry_bridge_pydantic_inside", default=False)
#: ``(class, method, original class attribute, our wrapper)`` of each patch in place.
_PATCHED: list[tuple[type, str, Any, Any]] = []
#: Name of each TypeAdapter's type, or None for a plain value.
_ADAPTER_NAMES: weakref.WeakKeyDictionary[TypeAdapter[Any], str | None] = (
    weakref.WeakKeyDictionary()
)


def type_name(tp: Any) -> str:
    """``list[User]`` for ``Annotated[list[app.models.User], Field(...)]``."""
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if isinstance(tp, type) and not get_args(tp):
        text = tp.__name__
    else:
        text = _MODULE_PREFIX.sub("", repr(tp))
    return text[:_MAX_NAME]


def _plain_value(schema: Any) -> bool:
    for _ in range(8):
        if type(schema) is not dict:  # a schema still being built: not known to be plain
            return False
        kind = schema.get("type")
        if kind in _PLAIN_VALUES:
            return True
        if kind not in _LOOKED_THROUGH:
            return False
        schema = schema.get("schema")
    return False


def _adapter_name(adapter: TypeAdapter[Any]) -> str | None:
    try:
        return _ADAPTER_NAMES[adapter]
    except KeyError:
        pass
    schema = adapter.core_schema
    name = None if _plain_value(schema) else type_name(adapter._type)
    if type(schema) is dict:  # settled: remember it
        _ADAPTER_NAMES[adapter] = name
    return name


def _schema_name(instance: Any) -> str | None:
    if isinstance(instance, TypeAdapter):
        return _adapter_name(instance)
    model = instance if isinstance(instance, type) else type(instance)
    return model.__name__[:_MAX_NAME]


def _span_attributes(schema: str, mode: str, method: str, args: tuple[Any, ...]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        Attr.SENTRY_OP[0]: Op.VALIDATE,
        Attr.SENTRY_ORIGIN[0]: ORIGIN,
        SCHEMA_NAME: schema,
        VALIDATION_MODE: mode,
        VALIDATION_METHOD: method,
    }
    if mode == "json" and args and isinstance(args[0], (str, bytes, bytearray)):
        attributes[INPUT_LENGTH] = len(args[0])
    return attributes


def _on_failure(span: trace.Span, exc: ValidationError, schema: str, mode: str) -> None:
    cfg = bridge_config()
    report_failure(span, exc, schema, mode, cfg.validation_errors, cfg.send_default_pii)


def _on_exception(span: trace.Span, exc: Exception) -> None:
    """Not a validation error (a validator's bug, a schema that cannot build): as OTel's own
    instrumentations record an exception leaving a span."""
    span.record_exception(exc, escaped=True)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _traced(
    tracer: trace.Tracer, func: Callable[..., Any], method: str, mode: str, first: Any,
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> Any:
    """``func(first, *args, **kwargs)`` in a validation span (a recording span is current)."""
    if not is_instrumentation_enabled():
        return func(first, *args, **kwargs)
    schema = call_guarded("pydantic.schema_name", _schema_name, first)
    if schema is None:
        return func(first, *args, **kwargs)
    span = tracer.start_span(
        f"{schema} ({mode})", attributes=_span_attributes(schema, mode, method, args)
    )
    token = context.attach(trace.set_span_in_context(span))
    inside = _INSIDE.set(True)
    try:
        return func(first, *args, **kwargs)
    except ValidationError as exc:
        call_guarded("pydantic.failure", _on_failure, span, exc, schema, mode)
        raise
    except Exception as exc:
        call_guarded("pydantic.exception", _on_exception, span, exc)
        raise
    finally:
        _INSIDE.reset(inside)
        context.detach(token)
        span.end()


def _wrapped(original: Any, tracer: trace.Tracer, method: str, mode: str) -> Any:
    """What replaces ``original`` (a function or a classmethod) on its class.

    A plain function, not a ``wrapt`` proxy: ``BaseModel.__init__`` runs for every model
    made, and the proxy's binding costs about 0.4 microseconds a call more (measured). The
    fast path, taken outside a recording span and inside another validation, is two lookups.
    """
    is_classmethod = isinstance(original, classmethod)
    func: Callable[..., Any] = original.__func__ if is_classmethod else original

    @functools.wraps(func)  # name, docstring, signature, pydantic's __pydantic_base_init__
    def wrapper(first: Any, /, *args: Any, **kwargs: Any) -> Any:
        if _INSIDE.get() or not trace.get_current_span().is_recording():
            return func(first, *args, **kwargs)
        return _traced(tracer, func, method, mode, first, args, kwargs)

    return classmethod(wrapper) if is_classmethod else wrapper


class PydanticInstrumentor(BridgeInstrumentor):
    """Spans for pydantic v2 validation (see the module docstring); ``instrument()`` takes
    ``tracer_provider=``."""

    _instruments = _instruments

    def _patch(self, **kwargs: Any) -> None:
        tracer = self.tracer(**kwargs)
        for owner, name, mode in TARGETS:
            original = owner.__dict__.get(name)
            if original is None:
                continue  # an older pydantic
            method = f"TypeAdapter.{name}" if owner is TypeAdapter else name
            wrapper = _wrapped(original, tracer, method, mode)
            setattr(owner, name, wrapper)
            _PATCHED.append((owner, name, original, wrapper))

    def _unpatch(self, **kwargs: Any) -> None:
        # The class attributes themselves are put back (OpenTelemetry's ``unwrap`` would leave
        # ``model_validate`` a method bound to BaseModel); a patch made over ours stays.
        while _PATCHED:
            owner, name, original, wrapper = _PATCHED.pop()
            if owner.__dict__.get(name) is wrapper:
                setattr(owner, name, original)

