"""Capture points for service and domain code: record an exception with its business context.

``capture_errors`` is a decorator and a context manager (sync and async). When an exception
leaves it, the exception is recorded on the current OpenTelemetry span, with the context given
(order id, amount, step...) and an optional fingerprint, and then raised again, untouched. The
bridge turns the record into a Sentry error event, also when a caller catches the exception
later (``handled: true``); plain OpenTelemetry exporters see an ordinary ``exception`` event.

Only the OpenTelemetry API is used here: it works whatever the span processor.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from opentelemetry import trace

from .conventions import CAPTURE_NAME, CAPTURE_PREFIX, FINGERPRINT

logger = logging.getLogger("otel_sentry_bridge")

F = TypeVar("F", bound=Callable[..., Any])

_warned = False


def _attribute(value: Any) -> Any:
    """A value OpenTelemetry accepts as an attribute (others become their text)."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    try:
        return str(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


class capture_errors:
    """Record an exception that leaves this block (or function) on the current span.

    ``name``: the capture point (for example ``"checkout.charge"``); ``fingerprint``: Sentry's
    grouping for the event (strings, ``"{{ default }}"`` allowed); ``context``: business data
    shown on the event (``order_id="o-1", amount=12.5``). Only ``Exception`` subclasses are
    recorded (never ``KeyboardInterrupt`` or ``SystemExit``); the exception is always raised
    again, and a failure of the recording itself is logged once and never raised.
    """

    def __init__(
        self, name: str | None = None, *, fingerprint: Sequence[str] | None = None,
        **context: Any,
    ) -> None:
        self.name = name
        self.fingerprint = tuple(str(part) for part in fingerprint) if fingerprint else None
        self.context = context

    def attributes(self) -> dict[str, Any]:
        """The attributes of the ``exception`` span event."""
        out: dict[str, Any] = {f"{CAPTURE_PREFIX}{k}": _attribute(v)
                               for k, v in self.context.items()}
        if self.name:
            out[CAPTURE_NAME] = self.name
        if self.fingerprint:
            out[FINGERPRINT] = self.fingerprint
        return out

    def __enter__(self) -> capture_errors:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if isinstance(exc, Exception):
            self.record(exc)
        return False

    def record(self, exc: BaseException) -> None:
        """Record ``exc`` on the current span now (what leaving the block does)."""
        global _warned
        try:
            span = trace.get_current_span()
            if span.is_recording():
                span.record_exception(exc, attributes=self.attributes())
        except Exception as error:  # never the caller's problem
            if not _warned:
                _warned = True
                logger.warning("otel-sentry-bridge: capture_errors could not record: %r",
                               error)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, run)
