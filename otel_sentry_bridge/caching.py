"""Cache spans for Sentry's Caches page: the ``cached`` decorator and the shared span helpers.

:func:`cached` memoizes a function (sync or async) in a mapping and reports each lookup as a
``cache.get`` span (``cache.hit``, ``cache.key``, ``cache.item_size``) and each store after a
miss as a ``cache.put`` span. The bridge's cache instrumentations (cachetools, Flask-Caching,
pymemcache) start their spans with :func:`start_cache_span` too, so every cache span carries
the same data. OpenTelemetry API only: spans are made only inside a recording span (a traced
request or job), so a memoized call outside any trace costs two context lookups.

Keys are sent as text (Sentry does not scrub them; values never are): an argument tuple shows
as ``function(arg, kw=value)`` where only plain values (strings, numbers, UUIDs, dates, enums)
are written out and any other object as ``<TypeName>``, so no ``repr`` of an application
object ever runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable, MutableMapping, Sequence
from typing import Any, Final, TypeVar, cast

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind, StatusCode

from ._cache_support import (
    BoundedCache,
    SpanBudget,
    item_size,
    key_text,
    mapping_ttl,
    total_size,
    ttl_seconds,
)
from ._internal_errors import log_internal_error
from .conventions import Attr, Op
from .version import __version__

__all__ = [
    "BoundedCache",
    "CacheOperation",
    "active_cache_span",
    "cached",
    "failed",
    "in_process",
    "item_size",
    "key_text",
    "mapping_ttl",
    "mark_cache_span",
    "report_cache_server",
    "start_cache_span",
    "total_size",
]

F = TypeVar("F", bound=Callable[..., Any])

_OP: Final = Attr.SENTRY_OP[0]
_DESCRIPTION: Final = Attr.SENTRY_DESCRIPTION[0]
_ORIGIN: Final = Attr.SENTRY_ORIGIN[0]
#: Context key of the cache span whose backend call is running (see :func:`active_cache_span`).
_ACTIVE_KEY: Final = context.create_key("otel_sentry_bridge.cache_operation")
_MAX_KEYS: Final = 100


# ------------------------------------------------------------------------------------ spans
def in_process(mapping: Any) -> bool:
    """Whether a mapping is known to live in this process (a dict, :class:`BoundedCache`, a
    cachetools cache): its spans need not be current, nothing runs below them."""
    mapping = getattr(mapping, "__wrapped__", mapping)  # a proxy's own mapping
    if isinstance(mapping, (dict, BoundedCache)):
        return True
    return type(mapping).__module__.partition(".")[0] == "cachetools"


_BUDGET: Final = SpanBudget()


def mark_cache_span(span: Span, ctx: Context | None = None) -> Context:
    """``ctx`` (default: the current context) with ``span`` current and marked as a cache
    operation whose backend call runs inside it (see :func:`active_cache_span`)."""
    return context.set_value(_ACTIVE_KEY, span, trace.set_span_in_context(span, ctx))


def active_cache_span(command: Span | None = None) -> Span | None:
    """The cache span (see :func:`mark_cache_span`) whose backend call is running: the current
    span, or the parent of ``command``, the client's span of the call when it has one.

    A cache client called by a higher-level cache (a memcached client under a cache API)
    reports to that span instead of adding a cache span of its own, so one lookup counts
    once on the Caches page. A call made by code in another span below the cache span (a
    render step under a ``cache_span``) is a lookup of its own: ``None``.
    """
    marked = context.get_value(_ACTIVE_KEY)
    if not isinstance(marked, Span):
        return None
    if command is None:
        return marked if trace.get_current_span() is marked else None
    parent = getattr(command, "parent", None)  # an SDK span's parent SpanContext
    if command is marked or getattr(parent, "span_id", None) == marked.get_span_context().span_id:
        return marked
    return None


def report_cache_server(outer: Span, host: Any, port: Any) -> None:
    """The server of a cache operation's backend call (``host``, ``port``) on that operation,
    unless it has one already."""
    if not outer.is_recording() or Attr.NETWORK_PEER_ADDRESS[0] in (
            getattr(outer, "attributes", None) or {}):
        return
    if isinstance(host, str) and host:
        outer.set_attribute(Attr.NETWORK_PEER_ADDRESS[0], host)
        outer.set_attribute(Attr.PEER_NAME[0], host)
    if isinstance(port, int) and not isinstance(port, bool):
        outer.set_attribute(Attr.NETWORK_PEER_PORT[0], port)
        outer.set_attribute(Attr.PEER_PORT[0], port)


class CacheOperation:
    """One started cache span: ``with operation: ...`` runs the cache call inside it (current
    unless ``current=False``, so a remote backend's own spans become its children), records an
    exception that escapes (an ``Exception``: not a cancellation or ``KeyboardInterrupt``), and
    ends the span. Record the outcome with :meth:`hit` or :meth:`written`."""

    __slots__ = ("_current", "_settled", "_token", "span")

    def __init__(self, span: Span, current: bool = True) -> None:
        self.span = span
        self._current = current
        self._settled = False
        self._token: object | None = None

    def __enter__(self) -> CacheOperation:
        if self._current and self._token is None:
            try:
                self._token = context.attach(mark_cache_span(self.span))
            except Exception as exc:
                log_internal_error("cache_span.enter", exc)
        return self

    def hit(self, found: bool, size: int | None = None) -> None:
        """A read's outcome: found or not, and the found item's size in bytes."""
        self._settled = True
        try:
            self.span.set_attribute(Attr.CACHE_HIT, found)
            if size is not None and found:
                self.span.set_attribute(Attr.CACHE_ITEM_SIZE, size)
        except Exception as exc:
            log_internal_error("cache_span.hit", exc)

    def written(self, size: int | None = None, stored: bool = True) -> None:
        """A write's outcome: the item's size in bytes; ``stored=False`` when refused."""
        self._settled = True
        try:
            self.span.set_attribute(Attr.CACHE_WRITE, stored)
            if size is not None:
                self.span.set_attribute(Attr.CACHE_ITEM_SIZE, size)
        except Exception as exc:
            log_internal_error("cache_span.written", exc)

    def done(self) -> None:
        """An operation without outcome data (a removal, a flush) succeeded."""
        self._settled = True

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not self._settled:
            failed(self.span, exc)
        try:
            if self._token is not None:
                token, self._token = self._token, None
                context.detach(cast(Any, token))
        finally:
            try:
                self.span.end()
            except Exception as internal:
                log_internal_error("cache_span.end", internal)


def failed(span: Span, exc: BaseException) -> None:
    """Record an exception that escaped a cache call on its span (status error); a
    cancellation, ``KeyboardInterrupt`` or ``SystemExit`` is no error of the cache."""
    if not isinstance(exc, Exception):
        return
    try:
        message = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails: the SDK could not record it either
        message = None
    try:
        if message is not None:
            span.record_exception(exc)
        span.set_status(StatusCode.ERROR, (message or type(exc).__name__)[:200])
    except Exception as internal:
        log_internal_error("cache_span.failed", internal)


def start_cache_span(
    tracer: trace.Tracer,
    op: str,
    keys: Sequence[Any],
    *,
    label: str | None = None,
    origin: str | None = None,
    description: str | None = None,
    ttl: Any = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
    current: bool = True,
    parent: Span | None = None,
) -> CacheOperation | None:
    """A started ``cache.*`` span, or ``None`` when there is nothing to record (no recording
    span around it, instrumentation suppressed, the trace's cache span budget spent, or an
    internal error): the caller then simply calls through. ``keys`` are formatted by
    :func:`key_text` only when the span records; ``parent``: the current span, when the caller
    has it already."""
    try:
        # Cheapest first: off traces the recording check is the answer; the budget last, so
        # that only spans really made spend it.
        if parent is None:
            parent = trace.get_current_span()
        if not parent.is_recording() or not is_instrumentation_enabled():
            return None
        if not _BUDGET.take(parent.get_span_context().trace_id):
            return None
        texts = [key_text(k, label) for k in keys[:_MAX_KEYS]]
        attrs: dict[str, Any] = {
            _OP: op,
            _DESCRIPTION: description or ", ".join(texts) or op,
        }
        if texts:
            attrs[Attr.CACHE_KEY] = texts
        if origin:
            attrs[_ORIGIN] = origin
        seconds = ttl_seconds(ttl)
        if seconds is not None:
            attrs[Attr.CACHE_TTL] = seconds
        if attributes:
            attrs.update(attributes)
        span = tracer.start_span(op, kind=kind, attributes=attrs)
        if not span.is_recording():
            span.end()
            return None
        return CacheOperation(span, current)
    except Exception as exc:
        log_internal_error("start_cache_span", exc)
        return None


# ------------------------------------------------------------------------------------- cached
class _KwMark:
    """Separates positional from keyword arguments in a default key."""


_KWMARK: Final = (_KwMark,)
_MISSING: Final = object()


def _default_key(*args: Any, **kwargs: Any) -> Hashable:
    if kwargs:
        return args + _KWMARK + tuple(sorted(kwargs.items()))
    return args


def _store(cache: MutableMapping[Any, Any], key: Any, value: Any) -> bool:
    try:
        cache[key] = value
    except ValueError:  # refused (too large for a size-bounded mapping), as cachetools does
        return False
    return True


class _Memo:
    """What one decorated function shares between its calls."""

    __slots__ = ("cache", "current", "key", "label", "tracer", "ttl")

    def __init__(self, cache: MutableMapping[Any, Any], key: Callable[..., Hashable],
                 label: str, tracer: trace.Tracer, ttl: int | None) -> None:
        self.cache, self.key, self.label, self.tracer, self.ttl = cache, key, label, tracer, ttl
        #: A remote mapping's client calls run inside the cache span (see active_cache_span).
        self.current = not in_process(cache)

    def lookup(self, key: Any) -> Any:
        """The cached value, or ``_MISSING`` (inside a ``cache.get`` span when traced)."""
        operation = None
        parent = trace.get_current_span()
        if parent.is_recording():  # the untraced path: one context lookup
            operation = start_cache_span(self.tracer, Op.CACHE_GET, (key,), label=self.label,
                                         ttl=self.ttl, current=self.current, parent=parent)
        if operation is None:
            try:
                return self.cache[key]
            except KeyError:
                return _MISSING
        with operation:
            try:
                value = self.cache[key]
            except KeyError:
                operation.hit(False)
                return _MISSING
            operation.hit(True, item_size(value))
            return value

    def store(self, key: Any, value: Any) -> None:
        operation = start_cache_span(self.tracer, Op.CACHE_PUT, (key,), label=self.label,
                                     ttl=self.ttl, current=self.current)
        if operation is None:
            _store(self.cache, key, value)
            return
        with operation:
            stored = _store(self.cache, key, value)
            operation.written(item_size(value), stored)

    def clear(self) -> None:
        operation = start_cache_span(self.tracer, Op.CACHE_FLUSH, (), current=self.current,
                                     description=f"{self.label} (all keys)")
        if operation is None:
            self.cache.clear()
            return
        with operation:
            self.cache.clear()
            operation.done()


def cached(
    cache: MutableMapping[Any, Any] | None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    name: str | None = None,
    ttl: float | None = None,
    maxsize: int = 1024,
    tracer_provider: trace.TracerProvider | None = None,
) -> Callable[[F], F]:
    """Memoize a function (sync or ``async``) and report its cache traffic to Sentry.

    ``cache``: any mutable mapping (a ``cachetools.TTLCache``, a dict you bound yourself...);
    by default a :class:`BoundedCache` of ``maxsize`` items expiring after ``ttl`` seconds.
    ``key(*args, **kwargs)`` makes the cache key (default: the arguments, which must be
    hashable). ``name`` labels argument-tuple keys in Sentry (default: the function's
    qualified name). Inside a traced request or job, each call makes a ``cache.get`` span
    (``cache.hit``) and each miss a ``cache.put`` span after the function returned. The
    decorated function has ``.cache`` (the mapping) and ``.cache_clear()`` (a ``cache.flush``).
    Exceptions of the function propagate and are not cached; concurrent misses of one key
    each call the function (no lock is held while it runs).
    """
    if cache is not None and ttl is not None:
        raise ValueError("ttl applies to the built-in cache: pass a TTL mapping instead "
                         "(cachetools.TTLCache) or leave cache unset")
    if cache is None:
        BoundedCache(maxsize, ttl)  # validate maxsize and ttl now, where the mistake is

    def decorate(func: F) -> F:
        store = cache if cache is not None else BoundedCache(maxsize, ttl)
        label = name or getattr(func, "__qualname__", None) or type(func).__name__
        tracer = trace.get_tracer(__name__, __version__, tracer_provider)
        memo = _Memo(store, key or _default_key, label, tracer, mapping_ttl(store))

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = memo.key(*args, **kwargs)
                value = memo.lookup(cache_key)
                if value is not _MISSING:
                    return value
                value = await func(*args, **kwargs)
                memo.store(cache_key, value)
                return value

            wrapper: Any = async_wrapper
        else:
            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = memo.key(*args, **kwargs)
                value = memo.lookup(cache_key)
                if value is not _MISSING:
                    return value
                value = func(*args, **kwargs)
                memo.store(cache_key, value)
                return value

            wrapper = sync_wrapper
        wrapper.cache = store
        wrapper.cache_clear = memo.clear
        return cast(F, wrapper)

    return decorate
