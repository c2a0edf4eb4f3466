"""The event processor the bridge adds to sentry-sdk when the app also calls
``sentry_sdk.init()`` (installed by ``_sdk_hooks.install_sentry_sdk_hooks``; no sentry-sdk
import here).

It also notes the exceptions sentry-sdk sends inside a trace (:data:`SENT_BY_SDK`; noted when
``capture_event`` says it sent the event, see ``_sdk_hooks.py``): the pipeline sends no error
event of its own for the same exception in that trace.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._internal_errors import handle_internal_errors
from .conventions import SDK_NAME

SdkEventProcessor = Callable[[dict[str, Any], dict[str, Any]], "dict[str, Any] | None"]

#: Traces whose sentry-sdk errors are remembered (the oldest forgotten first), errors per trace,
#: and characters of each message.
SENT_TRACES = 1000
SENT_PER_TRACE = 20
SENT_MESSAGE = 1000


class SentBySdk:
    """``(type, message)`` of the exceptions sentry-sdk sent, by trace id (hex), bounded."""

    def __init__(self, max_traces: int = SENT_TRACES) -> None:
        self.max_traces = max_traces
        self._traces: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, trace_id: str, kind: str, message: str) -> None:
        """Note one exception sentry-sdk is sending in ``trace_id`` (application thread)."""
        with self._lock:
            sent = self._traces.get(trace_id)
            if sent is None:
                sent = self._traces[trace_id] = []
                if len(self._traces) > self.max_traces:
                    self._traces.popitem(last=False)
            if len(sent) < SENT_PER_TRACE:
                sent.append((kind, message[:SENT_MESSAGE]))

    def get(self, trace_id: str) -> list[tuple[str, str]]:
        """What sentry-sdk sent in ``trace_id`` (kept: one trace may map to several
        transactions)."""
        if not self._traces:
            return []
        with self._lock:
            return list(self._traces.get(trace_id, ()))

    def clear(self) -> None:
        """Forget everything (and renew the lock: after a fork)."""
        self._lock = threading.Lock()
        self._traces = OrderedDict()


SENT_BY_SDK = SentBySdk()
#: Exceptions of events sentry-sdk is preparing, by event id, until ``capture_event`` tells
#: whether it sent them (its ``before_send``, sample rate or rate limits may drop them).
PENDING: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
PENDING_CAP = 1000


def _clear_pending() -> None:
    PENDING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=SENT_BY_SDK.clear)
    os.register_at_fork(after_in_child=_clear_pending)


def _note_pending(event: dict[str, Any], trace_id: str) -> None:
    values = (event.get("exception") or {}).get("values")
    event_id = event.get("event_id")
    if (not isinstance(values, list) or not values or not isinstance(values[-1], dict)
            or not isinstance(event_id, str)):
        return
    kind, value = values[-1].get("type"), values[-1].get("value")
    if isinstance(kind, str) and kind:
        PENDING[event_id] = (trace_id, kind, value if isinstance(value, str) else "")
        while len(PENDING) > PENDING_CAP:
            PENDING.popitem(last=False)


def capture_done(event_id: object, sent: bool) -> None:
    """sentry-sdk's ``capture_event`` returned: an exception it sent is the bridge's to skip;
    one it dropped is not (the bridge then sends its own event)."""
    if isinstance(event_id, str):
        pending = PENDING.pop(event_id, None)
        if pending is not None and sent:
            SENT_BY_SDK.add(*pending)


def sdk_event_processor(
    current_span_context: Callable[[], dict[str, str] | None],
) -> SdkEventProcessor:
    """Link sentry-sdk's errors to the active OTel span; drop the transactions sentry-sdk
    would build itself (the bridge already sends them)."""

    def processor(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        del hint
        with handle_internal_errors("sentry_sdk_event_processor"):
            if event.get("type") == "transaction":
                if not event.get("sdk", {}).get("name", "").startswith(SDK_NAME):
                    logging.getLogger("otel_sentry_bridge").debug(
                        "otel-sentry-bridge: dropping sentry-sdk's own transaction %r "
                        "(the bridge reports this trace)", event.get("transaction"))
                    return None
                return event
            trace = current_span_context()
            if trace is not None:
                contexts = event.setdefault("contexts", {})
                linked = {**contexts.get("trace", {}), **trace}
                dsc = linked.get("dynamic_sampling_context")
                if isinstance(dsc, dict):
                    # sentry-sdk turns this into the envelope's trace header: it must describe
                    # the OTel trace, not sentry-sdk's own propagation context.
                    linked["dynamic_sampling_context"] = {
                        **{k: v for k, v in dsc.items()
                           if k in ("public_key", "release", "environment", "org_id")},
                        "trace_id": trace["trace_id"],
                    }
                contexts["trace"] = linked
                _note_pending(event, trace["trace_id"])
        return event

    return processor
