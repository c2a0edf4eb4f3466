"""Never crash the host application.

Every OpenTelemetry callback of the bridge runs inside :func:`handle_internal_errors`. An internal
error is logged once per call site (so a broken mapping rule does not flood the app's logs) and
swallowed, unless :data:`RAISE_INTERNAL_ERRORS` is set: the test suite sets it so that bugs fail
tests instead of disappearing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

logger = logging.getLogger("otel_sentry_bridge")

#: Re-raise internal errors instead of logging them. Tests switch this on (the pytest plugin and
#: the environment variable ``_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS=1`` for subprocesses).
RAISE_INTERNAL_ERRORS = os.environ.get("_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS") == "1"

_seen: set[str] = set()
_seen_lock = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")


def log_internal_error(where: str, exc: BaseException) -> None:
    """Log an internal error once per ``where``; re-raise it under the test suite."""
    if RAISE_INTERNAL_ERRORS:
        raise exc
    with _seen_lock:
        first = where not in _seen
        _seen.add(where)
    if first:
        logger.error(
            "otel-sentry-bridge: internal error in %s; your application keeps running, "
            "telemetry may be incomplete (further errors here are logged at debug level)",
            where,
            exc_info=exc,
        )
    else:
        logger.debug("otel-sentry-bridge: internal error in %s", where, exc_info=exc)


#: Keys of the user-facing warnings already logged (bounded: beyond it, nothing more is said).
_WARNED: set[str] = set()
_MAX_WARNINGS = 256


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a warning about the user's settings or input once per ``key`` (a bad setting or a
    broken hook would otherwise be reported at every span)."""
    if key in _WARNED or len(_WARNED) >= _MAX_WARNINGS:
        return
    _WARNED.add(key)
    logger.warning("otel-sentry-bridge: " + message, *args)


@contextmanager
def handle_internal_errors(where: str) -> Iterator[None]:
    """Context manager: swallow and log any exception raised inside."""
    try:
        yield
    except Exception as exc:
        log_internal_error(where, exc)


def guarded(where: str, default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator form of :func:`handle_internal_errors` returning ``default`` on error."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                log_internal_error(where, exc)
                return default

        return wrapper

    return decorate
