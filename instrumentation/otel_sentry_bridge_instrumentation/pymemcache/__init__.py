"""pymemcache: keys, hits and item sizes of memcached reads and writes, for Sentry's Caches page.

OpenTelemetry's own pymemcache instrumentation makes one span per command (``db.system =
memcached``, ``db.statement = "get key"``) but records neither hit nor size. This one wraps
pymemcache's internal ``Client._fetch_cmd`` / ``_store_cmd`` / ``_misc_cmd`` (and
``_extract_value`` for exact sizes), which always run inside the public method, so the order in
which the two instrumentations were applied does not matter:

* OpenTelemetry's span is current: it gets ``cache.key``, ``cache.operation`` (the wire
  command), ``cache.hit``, ``cache.item_size`` and ``cache.ttl``;
* no such span (OpenTelemetry's instrumentation absent): a span of the same shape is made here
  for the cache commands (``get``, ``gets``, the stores, ``delete``), inside a recording span.

The bridge then adds a ``cache.get`` / ``cache.put`` / ``cache.remove`` parent to the
``db.memcached`` span, as for redis (keys filtered by ``SENTRY_BRIDGE_CACHE_PREFIXES``). Run
right under a higher-level cache's span (Flask-Caching, ``otel_sentry_bridge.cached`` over a
memcached mapping: ``caching.active_cache_span``), the command adds its server address to that
span and no cache data of its own, so one lookup is counted once.

A ``HashClient(ignore_exc=True)`` answers a failed command with a default (a miss, "not
stored") and the application never sees the exception: inside its ``_safely_run_func`` /
``_safely_run_set_many`` the cache commands' spans are made here (OpenTelemetry's, which would
record the exception and so raise a Sentry issue, are suppressed), with an error status and
``error.type`` but no recorded exception; the read is a miss, the write ``cache.write`` false.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextvars import ContextVar
from typing import Any

import pymemcache.client.base  # type: ignore[import-untyped]
import pymemcache.client.hash  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation, unwrap
from opentelemetry.trace import Span, SpanKind, StatusCode
from wrapt import wrap_function_wrapper

from otel_sentry_bridge._internal_errors import log_internal_error
from otel_sentry_bridge.caching import (
    active_cache_span,
    failed,
    key_text,
    report_cache_server,
    total_size,
)
from otel_sentry_bridge.conventions import (
    MEMCACHED_CACHE_GET,
    MEMCACHED_CACHE_PUT,
    MEMCACHED_CACHE_REMOVE,
    Attr,
)
from otel_sentry_bridge_instrumentation._base import (
    BridgeInstrumentor,
    is_instrumentation_enabled,
)

from .package import _instruments

__all__ = ["PymemcacheInstrumentor"]

ORIGIN = "auto.cache.pymemcache"
#: OpenTelemetry's pymemcache instrumentation scope (its spans are annotated, not doubled).
OTEL_SCOPE = "opentelemetry.instrumentation.pymemcache"
_MAX_KEYS = 100
_Client = pymemcache.client.base.Client
_WRAPPED = ("_fetch_cmd", "_store_cmd", "_misc_cmd", "_extract_value")
_HashClient = pymemcache.client.hash.HashClient
_SWALLOWING_METHODS = ("_safely_run_func", "_safely_run_set_many")
#: ``PooledClient`` reads that answer a default on any error with ``ignore_exc``.
_POOLED_SWALLOWING = ("get", "get_many", "gets", "gets_many")
_PooledClient = pymemcache.client.base.PooledClient
#: Public ``Client`` methods that run a cache command (see the wire commands in conventions).
_CACHE_METHODS = frozenset({
    "get", "get_many", "get_multi", "gets", "gets_many", "set", "set_many", "set_multi", "add",
    "replace", "append", "prepend", "cas", "delete", "delete_many", "delete_multi"})


class _Call:
    """One traced command: its span (ours or OpenTelemetry's) and the bytes read so far."""

    __slots__ = ("own", "size", "sized", "span")

    def __init__(self, span: Span, own: bool) -> None:
        self.span, self.own, self.size, self.sized = span, own, 0, False


_CURRENT: ContextVar[_Call | None] = ContextVar("otel_sentry_bridge_pymemcache", default=None)
#: True inside a ``HashClient(ignore_exc=True)`` call that answers a failure with a default
#: (instrumentation suppressed there by this module only, for OpenTelemetry's span).
_SWALLOWED: ContextVar[bool] = ContextVar("otel_sentry_bridge_pymemcache_swallowed",
                                          default=False)


def _enabled() -> bool:
    return is_instrumentation_enabled() or _SWALLOWED.get()


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _server(instance: Any) -> tuple[str | None, int | None]:
    server = getattr(instance, "server", None)
    if isinstance(server, tuple) and len(server) == 2:
        host, port = server
        return str(host), port if isinstance(port, int) else None
    if isinstance(server, str):  # a unix socket path
        return server, None
    return None, None


def _is_otel_command(span: Span) -> bool:
    scope = getattr(span, "instrumentation_scope", None)
    return getattr(scope, "name", None) == OTEL_SCOPE


def _begin(tracer: trace.Tracer, instance: Any, command: str, keys: Collection[Any],
           ttl: Any) -> _Call | None:
    """Annotate OpenTelemetry's span of this command, or start one; ``None``: not traced."""
    current = trace.get_current_span()
    otel = _is_otel_command(current)
    outer = active_cache_span(current if otel else None)
    if outer is not None:
        report_cache_server(outer, *_server(instance))
        return None
    if not current.is_recording():
        return None
    texts = [key_text(key) for key in list(keys)[:_MAX_KEYS]]
    if not texts:
        return None
    attrs: dict[str, Any] = {Attr.CACHE_OPERATION: command, Attr.CACHE_KEY: texts}
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
        attrs[Attr.CACHE_TTL] = ttl
    if otel:
        if Attr.CACHE_OPERATION in (getattr(current, "attributes", None) or {}):
            return None  # annotated already (a nested command)
        current.set_attributes(attrs)
        return _Call(current, own=False)
    attrs[Attr.DB_SYSTEM[0]] = "memcached"
    attrs[Attr.DB_STATEMENT[0]] = f"{command} {' '.join(texts)}"
    attrs[Attr.SENTRY_ORIGIN[0]] = ORIGIN
    host, port = _server(instance)
    if host is not None:
        attrs[Attr.PEER_NAME[0]] = host
    if port is not None:
        attrs[Attr.PEER_PORT[0]] = port
    return _Call(tracer.start_span(command, kind=SpanKind.CLIENT, attributes=attrs), own=True)


def _finish(call: _Call, error: BaseException | None, attrs: dict[str, Any]) -> None:
    try:
        if attrs:
            call.span.set_attributes(attrs)
        if call.own:
            if error is not None and _SWALLOWED.get() and isinstance(error, Exception):
                # pymemcache answers a default: a failure to see, not an issue to raise
                call.span.set_attribute(Attr.ERROR_TYPE[0], type(error).__name__)
                call.span.set_status(StatusCode.ERROR, type(error).__name__)
            elif error is not None:
                failed(call.span, error)
            call.span.end()
    except Exception as exc:
        log_internal_error("pymemcache.finish", exc)


def _traced(tracer: trace.Tracer, instance: Any, command: str, keys: Collection[Any],
            ttl: Any, run: Callable[[], Any],
            outcome: Callable[[_Call, Any], dict[str, Any]],
            failure: dict[str, Any] | None = None,
            swallowed: dict[str, Any] | None = None) -> Any:
    """Run one command (``run``) inside its annotated span; ``outcome`` reads the result;
    ``failure``: the span's data when the command raises, plus ``swallowed`` when pymemcache
    answers a default instead."""
    try:
        call = _begin(tracer, instance, command, keys, ttl)
    except Exception as exc:
        log_internal_error("pymemcache.begin", exc)
        call = None
    if call is None:
        return run()
    token = _CURRENT.set(call)
    try:
        result = run()
    except BaseException as exc:
        attrs = dict(failure or {})
        if swallowed and isinstance(exc, Exception) and _SWALLOWED.get():
            attrs.update(swallowed)
        _finish(call, exc, attrs)
        raise
    finally:
        _CURRENT.reset(token)
    try:
        attrs = outcome(call, result)
    except Exception as exc:
        log_internal_error("pymemcache.outcome", exc)
        attrs = {}
    _finish(call, None, attrs)
    return result


def _read_outcome(expect_cas: bool) -> Callable[[_Call, Any], dict[str, Any]]:
    def outcome(call: _Call, result: Any) -> dict[str, Any]:
        found = list(result.values()) if isinstance(result, dict) else []
        attrs: dict[str, Any] = {Attr.CACHE_HIT: bool(found)}
        if expect_cas:
            found = [item[0] if isinstance(item, tuple) else item for item in found]
        size = call.size if call.sized else total_size(found)
        if found and size is not None:
            attrs[Attr.CACHE_ITEM_SIZE] = size
        return attrs

    return outcome


def _fetch_wrapper(tracer: trace.Tracer) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        if not _enabled():
            return wrapped(*args, **kwargs)
        command = _text(_arg(args, kwargs, 0, "name"))
        keys = _arg(args, kwargs, 1, "keys")
        # Only re-iterable key collections: pymemcache itself iterates them twice.
        if (command not in MEMCACHED_CACHE_GET or not isinstance(keys, Collection)
                or isinstance(keys, (str, bytes))):
            return wrapped(*args, **kwargs)
        outcome = _read_outcome(bool(_arg(args, kwargs, 2, "expect_cas")))
        return _traced(tracer, instance, command, keys, None,
                       lambda: wrapped(*args, **kwargs), outcome,
                       swallowed={Attr.CACHE_HIT: False})  # answered as a miss

    return wrapper


def _store_wrapper(tracer: trace.Tracer) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        if not _enabled():
            return wrapped(*args, **kwargs)
        command = _text(_arg(args, kwargs, 0, "name"))
        values = _arg(args, kwargs, 1, "values")
        if command not in MEMCACHED_CACHE_PUT or not isinstance(values, dict):
            return wrapped(*args, **kwargs)
        noreply = bool(_arg(args, kwargs, 3, "noreply"))

        def outcome(call: _Call, result: Any) -> dict[str, Any]:
            attrs: dict[str, Any] = {}
            size = total_size(values.values())
            if size is not None:
                attrs[Attr.CACHE_ITEM_SIZE] = size
            if isinstance(result, dict) and result and not noreply:
                # False: not stored (``add`` of a present key, ``cas`` of a changed one);
                # with ``noreply`` (pymemcache's default) the server's answer is unknown.
                attrs[Attr.CACHE_WRITE] = all(v is not False for v in result.values())
            return attrs

        return _traced(tracer, instance, command, list(values),
                       _arg(args, kwargs, 2, "expire"), lambda: wrapped(*args, **kwargs),
                       outcome, {Attr.CACHE_WRITE: False})

    return wrapper


def _deleted_keys(instance: Any, cmds: Any) -> list[str]:
    """Keys of ``delete <key> [noreply]\\r\\n`` lines, without the client's key prefix."""
    prefix = getattr(instance, "key_prefix", b"") or b""
    keys = []
    for cmd in cmds:
        parts = cmd.split(b" ", 2) if isinstance(cmd, bytes) else []
        if len(parts) < 2:
            return []
        key = parts[1].rstrip(b"\r\n")
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        keys.append(key.decode("utf-8", "replace"))
    return keys


def _misc_wrapper(tracer: trace.Tracer) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        if not _enabled():
            return wrapped(*args, **kwargs)
        command = _text(_arg(args, kwargs, 1, "cmd_name"))
        cmds = _arg(args, kwargs, 0, "cmds")
        if command not in MEMCACHED_CACHE_REMOVE or not isinstance(cmds, (list, tuple)):
            return wrapped(*args, **kwargs)
        return _traced(tracer, instance, command, _deleted_keys(instance, cmds), None,
                       lambda: wrapped(*args, **kwargs), lambda call, result: {})

    return wrapper


def _extract_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    """Add the size of each value read (``VALUE <key> <flags> <bytes>``) to the command."""
    call = _CURRENT.get() if _enabled() else None
    result = wrapped(*args, **kwargs)
    if call is not None:
        line = _arg(args, kwargs, 1, "line")
        try:
            call.size += int(line.split()[3])
            call.sized = True
        except (AttributeError, IndexError, ValueError, TypeError):
            pass  # a subclass's own protocol: sizes come from the values instead
    return result


def _swallowing_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
    """``HashClient._safely_run_func(client, func, ...)`` / ``_safely_run_set_many``: with
    ``ignore_exc`` a failure of the cache command inside never reaches the application, so
    OpenTelemetry's span (which would record it: a Sentry issue) is suppressed and this
    module's own span reports the failure without an exception."""
    if (not is_instrumentation_enabled() or getattr(instance, "ignore_exc", False) is not True
            or _SWALLOWED.get()):
        return wrapped(*args, **kwargs)
    if getattr(wrapped, "__name__", None) == "_safely_run_func":
        func = _arg(args, kwargs, 1, "func")
        if getattr(func, "__name__", None) not in _CACHE_METHODS:
            return wrapped(*args, **kwargs)  # incr, touch, close...: OpenTelemetry's span
    token = _SWALLOWED.set(True)
    try:
        with suppress_instrumentation():
            return wrapped(*args, **kwargs)
    finally:
        _SWALLOWED.reset(token)


class PymemcacheInstrumentor(BridgeInstrumentor):
    """Cache data on memcached commands (see the module docstring)."""

    _instruments = _instruments

    def _patch(self, **kwargs: Any) -> None:
        tracer = self.tracer(**kwargs)
        module = "pymemcache.client.base"
        wrap_function_wrapper(module, "Client._fetch_cmd", _fetch_wrapper(tracer))
        wrap_function_wrapper(module, "Client._store_cmd", _store_wrapper(tracer))
        wrap_function_wrapper(module, "Client._misc_cmd", _misc_wrapper(tracer))
        wrap_function_wrapper(module, "Client._extract_value", _extract_wrapper)
        for name in _SWALLOWING_METHODS:
            wrap_function_wrapper("pymemcache.client.hash", f"HashClient.{name}",
                                  _swallowing_wrapper)
        for name in _POOLED_SWALLOWING:
            wrap_function_wrapper(module, f"PooledClient.{name}", _swallowing_wrapper)

    def _unpatch(self, **kwargs: Any) -> None:
        for name in _WRAPPED:
            unwrap(_Client, name)
        for name in _SWALLOWING_METHODS:
            unwrap(_HashClient, name)
        for name in _POOLED_SWALLOWING:
            unwrap(_PooledClient, name)
