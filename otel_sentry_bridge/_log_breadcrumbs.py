"""Python ``logging`` records as breadcrumbs of error events.

When a bridge pipeline starts, ``logging.Logger.callHandlers`` is wrapped once so that every
record a logger lets through also reaches :data:`HANDLER` (level
``SENTRY_BRIDGE_BREADCRUMB_LOG_LEVEL``, default INFO; ``off``: none) before the app's own
handlers. It is not put on the root logger: a handler there would silence Python's last-resort
handler, and an app that never configured logging would stop printing its errors. For a record made
while a span is recording it keeps ``(created, levelno, logger, message, exception)`` under the
span's trace in a bounded store: at most MAX_TRACES traces (the least recently logged one is
forgotten first) of at most MAX_RECORDS records (the oldest dropped). When the pipeline maps a
transaction it takes out the records of that transaction's spans, which frees them, and merges
them into its error events (``_mapping/error_inputs.py``).

This is not the Sentry logs feature (``logs.py``, off by default): nothing is sent unless an
error event of the trace is. Records of the bridge's own loggers and of OpenTelemetry's are
skipped; outside spans a record costs one context lookup; the handler never raises into the
application. The loggers' own levels still apply: a record they filter out reaches no handler.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, deque
from typing import Any

from opentelemetry.trace import get_current_span

from ._internal_errors import log_internal_error
from ._mapping.breadcrumbs import MAX_CRUMB_MESSAGE
from ._mapping.error_inputs import ExceptionKey, LogRecordTuple
from ._mapping.values import safe_str

MAX_TRACES = 200
MAX_RECORDS = 100
#: Loggers whose records are never kept (the bridge's own, and OpenTelemetry's).
#: Loggers whose records are no breadcrumbs: our own, OpenTelemetry's, and strawberry's
#: ``strawberry.execution`` (it logs every GraphQL error with the document's lines and bad
#: variable values; the GraphQL instrumentation reports those errors itself, PII-aware).
_SKIPPED = ("otel_sentry_bridge", "opentelemetry", "strawberry.execution")

#: ``(created, levelno, logger, message, exception, span id)``
_Stored = tuple[float, int, str, str, "ExceptionKey | None", int]


class LogCrumbStore:
    """Records by trace, bounded in traces and in records per trace."""

    def __init__(self, max_traces: int = MAX_TRACES, max_records: int = MAX_RECORDS) -> None:
        self.max_traces = max_traces
        self.max_records = max_records
        self._traces: OrderedDict[int, deque[_Stored]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._traces)

    def add(self, trace_id: int, record: _Stored) -> None:
        """Keep one record (application thread)."""
        with self._lock:
            records = self._traces.get(trace_id)
            if records is None:
                records = self._traces[trace_id] = deque(maxlen=self.max_records)
                if len(self._traces) > self.max_traces:
                    self._traces.popitem(last=False)
            else:
                self._traces.move_to_end(trace_id)
            records.append(record)

    def take(self, trace_id: int, span_ids: set[int] | frozenset[int]) -> list[LogRecordTuple]:
        """Remove and return the records made in ``span_ids`` of ``trace_id``, oldest first."""
        if not self._traces:
            return []
        with self._lock:
            records = self._traces.get(trace_id)
            if records is None:
                return []
            taken = [r for r in records if r[5] in span_ids]
            if len(taken) == len(records):
                del self._traces[trace_id]
            elif taken:
                records = deque((r for r in records if r[5] not in span_ids),
                                maxlen=self.max_records)
                self._traces[trace_id] = records
        return [r[:5] for r in taken]

    def clear(self) -> None:
        """Forget everything (and renew the lock: after a fork)."""
        self._lock = threading.Lock()
        self._traces = OrderedDict()


STORE = LogCrumbStore()


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a bad format string is the app's bug: keep it as written
        text = safe_str(record.msg)
    return text[:MAX_CRUMB_MESSAGE]


def _exception(record: logging.LogRecord) -> ExceptionKey | None:
    info = record.exc_info
    if not info or not isinstance(info, tuple) or info[1] is None:
        return None
    return type(info[1]).__name__, safe_str(info[1])[:MAX_CRUMB_MESSAGE]


class BreadcrumbLogHandler(logging.Handler):
    """Keeps the records made inside spans for the error events of their trace."""

    def __init__(self, level: int = logging.INFO, store: LogCrumbStore = STORE) -> None:
        super().__init__(level)
        self.store = store

    def handle(self, record: logging.LogRecord) -> Any:
        """Without the handler lock (the store has its own) and without formatters."""
        try:
            span = get_current_span()
            if not span.is_recording() or record.name.startswith(_SKIPPED):
                return False
            if self.filters and not self.filter(record):
                return False
            context = span.get_span_context()
            self.store.add(context.trace_id, (
                record.created, record.levelno, record.name, _message(record),
                _exception(record), context.span_id,
            ))
            return True
        except Exception as exc:
            log_internal_error("breadcrumb_log_handler", exc)
            return False

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


_LOCK = threading.Lock()
#: Made at import: creating a handler takes the ``logging`` module lock, and :func:`install`
#: may run on a thread that is inside a logging handler (a log record starting the pipeline).
HANDLER = BreadcrumbLogHandler()


#: ``Logger.callHandlers`` as it was before :func:`install` wrapped it (kept for good: the wrapper
#: calls it through a closure, so switching off never leaves a caller without it).
_ORIGINAL_CALL_HANDLERS: Any = None
_ACTIVE = False


def _wrap(original: Any) -> Any:
    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        """``Logger.callHandlers`` that first keeps the record for breadcrumbs. Not a handler
        on the root logger: one there would stop Python's last-resort handler, and an app that
        never configured logging would no longer print its warnings and errors."""
        if _ACTIVE and record.levelno >= HANDLER.level:
            HANDLER.handle(record)  # never raises
        original(self, record)

    return call_handlers


def install(level: int | None) -> BreadcrumbLogHandler | None:
    """Keep log records at ``level`` and above for breadcrumbs (once; a later call sets the
    level); ``None`` stops it."""
    global _ORIGINAL_CALL_HANDLERS, _ACTIVE
    if level is None:
        uninstall()
        return None
    with _LOCK:
        HANDLER.setLevel(level)  # no lock taken
        if _ORIGINAL_CALL_HANDLERS is None:
            _ORIGINAL_CALL_HANDLERS = logging.Logger.callHandlers
            logging.Logger.callHandlers = _wrap(  # type: ignore[method-assign]
                _ORIGINAL_CALL_HANDLERS)
        _ACTIVE = True
        return HANDLER


def installed() -> bool:
    """Whether records are being kept."""
    return _ACTIVE


def uninstall() -> None:
    """Stop keeping records and forget what was kept (tests, ``off``). The wrapper stays (a
    thread may be inside it, and another library may have wrapped it in turn); switched off
    it only calls the original."""
    global _ACTIVE
    with _LOCK:
        _ACTIVE = False
        STORE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=STORE.clear)
