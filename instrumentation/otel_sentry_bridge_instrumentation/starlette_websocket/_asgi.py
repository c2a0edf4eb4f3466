"""OpenTelemetry's ASGI middleware makes a span for each ASGI event of a connection, without
limit. For a connection a Starlette route handles (its scope holds ``SCOPE_KEY``), those events
are left to this instrumentation, which counts them all and traces the first messages.

This wraps two private methods of ``OpenTelemetryMiddleware`` (0.66b: ``_get_otel_receive``,
``_set_send_span``); where they are missing or take other parameters, nothing is changed and
the middleware's own spans stay (a debug line says so).
"""

from __future__ import annotations

import inspect
from typing import Any

from otel_sentry_bridge._internal_errors import logger
from otel_sentry_bridge_instrumentation import _ws_patching as patching
from otel_sentry_bridge_instrumentation._base import is_instrumentation_enabled

from ._route import SCOPE_KEY

MODULE = "opentelemetry.instrumentation.asgi"
#: The private methods wrapped, with the parameters the wrappers read (by position or name).
_METHODS = {
    "_get_otel_receive": ("self", "server_span_name", "scope", "receive"),
    "_set_send_span": ("self", "server_span_name", "scope", "send", "message", "status_code",
                       "expecting_trailers"),
}


def _has_shape(middleware: Any, name: str, parameters: tuple[str, ...]) -> bool:
    method = getattr(middleware, name, None)
    try:
        return callable(method) and tuple(inspect.signature(method).parameters) == parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def patch_middleware(patches: patching.ClassPatches, module: Any) -> None:
    """Wrap the middleware's per-event span makers (``module``: OpenTelemetry's ASGI)."""
    middleware = getattr(module, "OpenTelemetryMiddleware", None)
    if middleware is None or not all(
            _has_shape(middleware, name, params) for name, params in _METHODS.items()):
        logger.debug("otel-sentry-bridge: OpenTelemetryMiddleware has no %s of 0.66b's shape: "
                     "its WebSocket event spans are left as they are", " / ".join(_METHODS))
        return
    patches.wrap(middleware, "_get_otel_receive", _otel_receive)
    patches.wrap(middleware, "_set_send_span", _set_send_span)


def _otel_receive(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    traced = wrapped(*args, **kwargs)
    scope = patching.arg(args, kwargs, 1, "scope")
    receive = patching.arg(args, kwargs, 2, "receive")
    if not isinstance(scope, dict) or scope.get("type") != "websocket" or traced is receive:
        return traced

    async def receive_event() -> Any:
        if SCOPE_KEY in scope and is_instrumentation_enabled():
            return await receive()
        return await traced()

    return receive_event


def _set_send_span(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    scope = patching.arg(args, kwargs, 1, "scope")
    if isinstance(scope, dict) and SCOPE_KEY in scope and is_instrumentation_enabled():
        return patching.arg(args, kwargs, 5, "expecting_trailers")
    return wrapped(*args, **kwargs)
