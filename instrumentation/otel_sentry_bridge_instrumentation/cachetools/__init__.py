"""cachetools: ``cache.get`` / ``cache.put`` spans for functions and methods memoized with
``cachetools.cached``, ``cachetools.cachedmethod`` and ``cachetools.func`` (``lru_cache``,
``ttl_cache``...), for Sentry's Caches page.

The decorators are wrapped so that the mapping a decorated function uses is seen through a
thin proxy: a lookup by the decorator (``cache[key]``) is a ``cache.get`` span whose
``cache.hit`` says whether the key was there, a store after a miss (``cache[key] = value``,
``cache.setdefault``) a ``cache.put`` span, ``cache_clear()`` a ``cache.flush`` span. Spans are
made only inside a recording span. Functions decorated before ``instrument()`` ran keep their
plain mapping (under ``opentelemetry-instrument`` instrumentation comes first). Direct use of a
``Cache`` object (``cache[key]`` in application code) is not traced: it is a dict lookup, hot
and with no notion of a miss the application did not already handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cachetools
import cachetools.func
import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from otel_sentry_bridge._internal_errors import log_internal_error
from otel_sentry_bridge.caching import (
    CacheOperation,
    in_process,
    item_size,
    mapping_ttl,
    start_cache_span,
)
from otel_sentry_bridge.conventions import Op
from otel_sentry_bridge_instrumentation._base import (
    BridgeInstrumentor,
    is_instrumentation_enabled,
)

from .package import _instruments

__all__ = ["CachetoolsInstrumentor"]

ORIGIN = "auto.cache.cachetools"


class _Switch:
    #: False after ``uninstrument()``: proxies made earlier stop tracing.
    on = False


class _TracedCache(wrapt.ObjectProxy[Any]):
    """The mapping of one decorated function, traced where the decorator touches it; every
    other attribute (``maxsize``, ``currsize``, ``ttl``...) is the mapping's own."""

    def __init__(self, wrapped: Any, label: str, tracer: trace.Tracer) -> None:
        super().__init__(wrapped)
        self._self_label = label
        self._self_tracer = tracer
        self._self_ttl = mapping_ttl(wrapped)
        self._self_current = not in_process(wrapped)

    def _self_start(self, op: str, keys: tuple[Any, ...]) -> CacheOperation | None:
        # Off a recording span (the hot, untraced case) this is one context lookup.
        parent = trace.get_current_span()
        if not _Switch.on or not parent.is_recording():
            return None
        return start_cache_span(self._self_tracer, op, keys, label=self._self_label,
                                origin=ORIGIN, ttl=self._self_ttl, current=self._self_current,
                                parent=parent)

    def __getitem__(self, key: Any) -> Any:
        operation = self._self_start(Op.CACHE_GET, (key,))
        if operation is None:
            return self.__wrapped__[key]
        with operation:
            try:
                value = self.__wrapped__[key]
            except KeyError:
                operation.hit(False)
                raise
            operation.hit(True, item_size(value))
            return value

    def __setitem__(self, key: Any, value: Any) -> None:
        operation = self._self_start(Op.CACHE_PUT, (key,))
        if operation is None:
            self.__wrapped__[key] = value
            return
        with operation:
            try:
                self.__wrapped__[key] = value
            except ValueError:  # too large for the cache: cachetools' decorators ignore it
                operation.written(item_size(value), stored=False)
                raise
            operation.written(item_size(value))

    def setdefault(self, key: Any, default: Any = None) -> Any:
        operation = self._self_start(Op.CACHE_PUT, (key,))
        if operation is None:
            return self.__wrapped__.setdefault(key, default)
        with operation:
            try:
                value = self.__wrapped__.setdefault(key, default)
            except ValueError:
                operation.written(item_size(default), stored=False)
                raise
            # Another thread may have stored the key first: then nothing was written.
            operation.written(item_size(default), stored=value is default)
            return value

    def clear(self) -> None:
        operation = None
        if _Switch.on:
            operation = start_cache_span(self._self_tracer, Op.CACHE_FLUSH, (), origin=ORIGIN,
                                         description=f"{self._self_label} (all keys)",
                                         current=self._self_current)
        if operation is None:
            self.__wrapped__.clear()
            return
        with operation:
            self.__wrapped__.clear()
            operation.done()


def _label(func: Any) -> str:
    return str(getattr(func, "__qualname__", None) or type(func).__name__)


def _with_cache(args: tuple[Any, ...], kwargs: dict[str, Any],
                cache: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (cache, *args[1:]), kwargs
    return args, {**kwargs, "cache": cache}


def _traced_getter(getter: Callable[[Any], Any], label: str,
                   tracer: trace.Tracer) -> Callable[[Any], Any]:
    """``cachedmethod``'s ``cache(self)``, returning the mapping through a proxy while a
    recording span is current (the proxy is only made then)."""

    def cache(obj: Any) -> Any:
        mapping = getter(obj)
        if (mapping is None or not _Switch.on or isinstance(mapping, _TracedCache)
                or not trace.get_current_span().is_recording()
                or not is_instrumentation_enabled()):
            return mapping
        try:
            return _TracedCache(mapping, label, tracer)
        except Exception as exc:
            log_internal_error("cachetools.cachedmethod", exc)
            return mapping

    return cache


def _wrap_decorator(tracer: trace.Tracer, method: bool) -> Callable[..., Any]:
    """A wrapper of ``cached`` (``method=False``) or ``cachedmethod``: the decorator it returns
    hands cachetools a traced mapping (or mapping getter) for each decorated function."""

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        decorator = wrapped(*args, **kwargs)  # cachetools validates its arguments here
        if not is_instrumentation_enabled():
            return decorator
        cache = args[0] if args else kwargs.get("cache")
        if cache is None or isinstance(cache, _TracedCache):
            return decorator

        def decorate(func: Any) -> Any:
            try:
                label = _label(func)
                traced = (_traced_getter(cache, label, tracer) if method
                          else _TracedCache(cache, label, tracer))
                new_args, new_kwargs = _with_cache(args, kwargs, traced)
            except Exception as exc:
                log_internal_error("cachetools.decorate", exc)
                return decorator(func)
            return wrapped(*new_args, **new_kwargs)(func)

        return decorate

    return wrapper


class CachetoolsInstrumentor(BridgeInstrumentor):
    """Cache spans for cachetools' memoizing decorators (see the module docstring)."""

    _instruments = _instruments

    def _patch(self, **kwargs: Any) -> None:
        tracer = self.tracer(**kwargs)
        _Switch.on = True
        # cachetools.func (5.3 and later; before, it has decorators of its own, not traced)
        # holds its own reference to ``cached`` (imported above: still the original here).
        if hasattr(cachetools.func, "cached"):
            wrap_function_wrapper(cachetools.func, "cached", _wrap_decorator(tracer, False))
        wrap_function_wrapper(cachetools, "cached", _wrap_decorator(tracer, False))
        wrap_function_wrapper(cachetools, "cachedmethod", _wrap_decorator(tracer, True))

    def _unpatch(self, **kwargs: Any) -> None:
        _Switch.on = False
        unwrap(cachetools, "cached")
        unwrap(cachetools, "cachedmethod")
        unwrap(cachetools.func, "cached")
