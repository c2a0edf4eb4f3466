"""Flask-Caching: ``cache.*`` spans for the ``Cache`` API, for Sentry's Caches page.

``get``, ``get_many`` and ``get_dict`` are ``cache.get`` spans (``cache.hit``: the value is not
``None``, Flask-Caching's own test; for several keys, at least one found), ``set``, ``add`` and
``set_many`` ``cache.put`` spans, ``delete`` and ``delete_many`` ``cache.remove``, ``clear``
``cache.flush``. The ``@cache.cached`` and ``@cache.memoize`` decorators go through ``get`` and
``set`` (``memoize`` also reads its version keys with ``get_many``). The span is current while
the backend runs, so a traced backend client (redis, memcached) shows as its child.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask_caching
from opentelemetry import trace
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from otel_sentry_bridge.caching import item_size, start_cache_span, total_size
from otel_sentry_bridge.conventions import Op
from otel_sentry_bridge_instrumentation._base import (
    BridgeInstrumentor,
    is_instrumentation_enabled,
)

from .package import _instruments

__all__ = ["FlaskCachingInstrumentor"]

ORIGIN = "auto.cache.flask_caching"
_NO_VALUE = object()

#: What a call is about: ``(keys, value or values to measure, explicit timeout)``.
Call = tuple[tuple[Any, ...], Any, Any]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str,
         default: Any = _NO_VALUE) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _one_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    key = _arg(args, kwargs, 0, "key")
    return None if key is _NO_VALUE else ((key,), _NO_VALUE, None)


def _many_keys(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    return (tuple(args), _NO_VALUE, None) if args and not kwargs else None


def _one_item(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    key = _arg(args, kwargs, 0, "key")
    value = _arg(args, kwargs, 1, "value")
    if key is _NO_VALUE or value is _NO_VALUE:
        return None
    return (key,), (value,), _arg(args, kwargs, 2, "timeout", None)


def _many_items(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    mapping = _arg(args, kwargs, 0, "mapping")
    if not isinstance(mapping, dict):
        return None
    return tuple(mapping), tuple(mapping.values()), _arg(args, kwargs, 1, "timeout", None)


def _no_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    return (), _NO_VALUE, None


#: ``Cache`` method -> (op, what the call is about).
METHODS: dict[str, tuple[str, Callable[[tuple[Any, ...], dict[str, Any]], Call | None]]] = {
    "get": (Op.CACHE_GET, _one_key),
    "get_many": (Op.CACHE_GET, _many_keys),
    "get_dict": (Op.CACHE_GET, _many_keys),
    "set": (Op.CACHE_PUT, _one_item),
    "add": (Op.CACHE_PUT, _one_item),
    "set_many": (Op.CACHE_PUT, _many_items),
    "delete": (Op.CACHE_REMOVE, _one_key),
    "delete_many": (Op.CACHE_REMOVE, _many_keys),
    "clear": (Op.CACHE_FLUSH, _no_key),
}


def _ttl(instance: Any, timeout: Any) -> Any:
    """The explicit timeout, else the backend's default (0 and ``None``: no expiry)."""
    if timeout is not None:
        return timeout
    try:
        return getattr(instance.cache, "default_timeout", None)
    except Exception:  # no application context: the call itself will say so
        return None


def _found(result: Any) -> tuple[bool, int | None]:
    if isinstance(result, dict):
        values = [v for v in result.values() if v is not None]
        return bool(values), total_size(values)
    if isinstance(result, list):
        values = [v for v in result if v is not None]
        return bool(values), total_size(values)
    return result is not None, item_size(result)


def _wrapper(tracer: trace.Tracer, method: str) -> Callable[..., Any]:
    op, about = METHODS[method]
    many = method in ("get_many", "get_dict")

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        parent = trace.get_current_span()
        if not is_instrumentation_enabled() or not parent.is_recording():
            return wrapped(*args, **kwargs)
        call = about(args, kwargs)
        if call is None:  # an unusual call: let Flask-Caching answer it untraced
            return wrapped(*args, **kwargs)
        keys, values, timeout = call
        operation = start_cache_span(
            tracer, op, keys, origin=ORIGIN,
            ttl=_ttl(instance, timeout) if op == Op.CACHE_PUT else None,
            description="(all keys)" if op == Op.CACHE_FLUSH else None, parent=parent,
        )
        if operation is None:
            return wrapped(*args, **kwargs)
        with operation:
            result = wrapped(*args, **kwargs)
            if op == Op.CACHE_GET:
                found, size = _found(result) if many else (result is not None,
                                                          item_size(result))
                operation.hit(found, size)
            elif op == Op.CACHE_PUT:
                # False (``add`` of a present key), [] (``set_many`` stored nothing): refused
                stored = result is not False and not (isinstance(result, list) and not result)
                operation.written(total_size(values), stored=stored)
            else:
                operation.done()
            return result

    return wrapper


class FlaskCachingInstrumentor(BridgeInstrumentor):
    """Cache spans for ``flask_caching.Cache`` (see the module docstring)."""

    _instruments = _instruments

    def _patch(self, **kwargs: Any) -> None:
        tracer = self.tracer(**kwargs)
        for method in METHODS:
            wrap_function_wrapper(flask_caching.Cache, method, _wrapper(tracer, method))

    def _unpatch(self, **kwargs: Any) -> None:
        for method in METHODS:
            unwrap(flask_caching.Cache, method)
