"""Hooks for OpenTelemetry's redis instrumentation that record cache keys, hits and sizes.

The 0.66b redis instrumentation records ``GET ?`` only. These hooks add the key(s) of
get/set/delete-family commands (never the values), whether a read hit, and the item size, so
the bridge can light up Sentry's Caches page. ``opentelemetry-instrument`` gets them
automatically (the bridge's post-instrument hook re-instruments redis with them); by hand::

    RedisInstrumentor().instrument(request_hook=redis_request_hook,
                                   response_hook=redis_response_hook)
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span

from ._internal_errors import handle_internal_errors, logger
from .caching import active_cache_span, item_size, report_cache_server
from .conventions import REDIS_CACHE_GET, REDIS_CACHE_PUT, REDIS_CACHE_REMOVE, Attr

_CACHE_COMMANDS = REDIS_CACHE_GET | REDIS_CACHE_PUT | REDIS_CACHE_REMOVE
_COMMAND_ATTR = "sentry_bridge.redis.command"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _size(value: Any) -> int | None:
    """Bytes of a value as redis stores it: numbers as their text, the rest as ``item_size``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return len(str(value))
    return item_size(value)


def cache_keys(command: str, args: tuple[Any, ...]) -> tuple[list[str], int | None]:
    """Keys of a cache-family command and, for writes, the value size in bytes."""
    rest = args[1:]
    if not rest:
        return [], None
    if command in ("MSET", "MSETNX"):
        keys = [_text(k) for k in rest[0::2]]
        sizes = [_size(v) for v in rest[1::2]]
        return keys, sum(s for s in sizes if s is not None)
    if command in ("MGET", "DEL", "UNLINK"):
        return [_text(k) for k in rest], None
    if command in ("SET", "SETNX", "GETEX", "GET", "GETDEL", "HGET", "HMGET", "HGETALL"):
        size = _size(rest[1]) if command in ("SET", "SETNX") and len(rest) > 1 else None
        return [_text(rest[0])], size
    if command in ("SETEX", "PSETEX"):
        size = _size(rest[2]) if len(rest) > 2 else None
        return [_text(rest[0])], size
    if command == "HSET":
        return [_text(rest[0])], None
    return [_text(rest[0])], None


def redis_request_hook(span: Span, instance: Any, args: Any, kwargs: Any) -> None:
    """Record the key(s) of cache-family commands on the redis span."""
    del instance, kwargs
    with handle_internal_errors("redis_request_hook"):
        if not span.is_recording() or not args:
            return
        command = _text(args[0]).upper()
        if command not in _CACHE_COMMANDS:
            return
        outer = active_cache_span(span)
        if outer is not None:  # a cache API's backend call (Flask-Caching on redis): count once
            found = getattr(span, "attributes", None) or {}
            host = next((found[k] for k in Attr.PEER_NAME if k in found), None)
            port = next((found[k] for k in Attr.PEER_PORT if k in found), None)
            report_cache_server(outer, host, port)
            return
        keys, size = cache_keys(command, tuple(args))
        if not keys:
            return
        span.set_attribute(Attr.REDIS_COMMAND_ARGS, keys)
        span.set_attribute(_COMMAND_ATTR, command)
        if size is not None:
            span.set_attribute(Attr.CACHE_ITEM_SIZE, size)


def redis_response_hook(span: Span, instance: Any, response: Any) -> None:
    """Record hit/miss and item size of cache reads."""
    del instance
    with handle_internal_errors("redis_response_hook"):
        if not span.is_recording():
            return
        attributes = getattr(span, "attributes", None) or {}
        command = attributes.get(_COMMAND_ATTR)
        if command not in REDIS_CACHE_GET:
            return
        if isinstance(response, (list, tuple)):
            present = [item for item in response if item is not None]
            span.set_attribute(Attr.CACHE_HIT, bool(present))
            sizes = [_size(item) for item in present]
            span.set_attribute(Attr.CACHE_ITEM_SIZE, sum(s for s in sizes if s is not None))
        elif isinstance(response, dict):
            span.set_attribute(Attr.CACHE_HIT, bool(response))
        else:
            span.set_attribute(Attr.CACHE_HIT, response is not None)
            size = _size(response)
            if size is not None:
                span.set_attribute(Attr.CACHE_ITEM_SIZE, size)


def reinstrument_redis() -> bool:
    """If OTel's redis instrumentation is active without hooks, re-instrument it with ours."""
    try:
        from opentelemetry.instrumentation.redis import (  # noqa: PLC0415 (optional)
            RedisInstrumentor,
        )
    except ImportError:
        return False
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        return False
    instrumentor.uninstrument()
    instrumentor.instrument(
        request_hook=redis_request_hook, response_hook=redis_response_hook
    )
    logger.debug("otel-sentry-bridge: redis instrumented with cache hooks")
    return True
