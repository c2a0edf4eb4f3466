"""The pipeline's hand-off to what error events use besides spans.

:func:`start_error_inputs` runs when a pipeline's worker starts: it wraps
``Span.record_exception`` (``_live_exceptions.py``) and adds the log breadcrumb handler
(``_log_breadcrumbs.py``), each at most once per process. :func:`complete_error_inputs` runs on
the worker after each transaction is mapped: it takes that transaction's log records and live
exceptions out of their tables (freeing them) and applies them, with the exceptions sentry-sdk
sent in the trace (noted by the sentry-sdk hook of ``_sdk_events.py``, which
``opentelemetry-instrument`` installs), to the error events (``_mapping/error_inputs.py``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from . import _live_exceptions, _log_breadcrumbs
from ._internal_errors import handle_internal_errors, logger
from ._mapping import MappedTransaction, MappingContext
from ._mapping.error_inputs import ErrorInputs, LogRecordTuple, complete_errors
from ._mapping.errors import replaced_messages
from ._mapping.values import hex_trace
from ._sdk_events import SENT_BY_SDK
from .config import BridgeConfig


def start_error_inputs(cfg: BridgeConfig) -> None:
    """Install what feeds error events (idempotent; a failure is logged, never raised)."""
    with handle_internal_errors("error_inputs.record_exception"):
        _live_exceptions.install()
    with handle_internal_errors("error_inputs.log_breadcrumbs"):
        _log_breadcrumbs.install(cfg.breadcrumb_log_level)


def discard_error_inputs(root: ReadableSpan, children: list[ReadableSpan]) -> None:
    """Free what was kept for a segment that gets no error events (an unsampled trace)."""
    root_ctx = root.context
    if root_ctx is None or not (len(_log_breadcrumbs.STORE) or len(_live_exceptions.STASH)):
        return
    span_ids = {root_ctx.span_id}
    span_ids.update(c.context.span_id for c in children if c.context is not None)
    _log_breadcrumbs.STORE.take(root_ctx.trace_id, span_ids)
    _live_exceptions.STASH.take(root_ctx.trace_id, span_ids)


def complete_error_inputs(
    root: ReadableSpan, children: list[ReadableSpan], mapped: MappedTransaction,
    ctx: MappingContext,
) -> None:
    """Apply live frames, log breadcrumbs and sentry-sdk's events to ``mapped.errors``."""
    root_ctx = root.context
    if root_ctx is None:
        return
    trace_id = root_ctx.trace_id
    logs: list[LogRecordTuple] = []
    live: list[list[dict[str, Any]]] = []
    if len(_log_breadcrumbs.STORE) or len(_live_exceptions.STASH):
        span_ids = {root_ctx.span_id}
        span_ids.update(c.context.span_id for c in children if c.context is not None)
        logs = _log_breadcrumbs.STORE.take(trace_id, span_ids)
        live = _live_exceptions.STASH.take(trace_id, span_ids)
    if not mapped.errors:
        return
    sent = SENT_BY_SDK.get(hex_trace(trace_id))
    if not (logs or live or sent):
        return
    # messages records gave instead of str(exception): replaced in the live chains too
    messages = replaced_messages(s for s in (root, *children) if s.events) if live else {}
    inputs = ErrorInputs(live=live, logs=logs, sent_by_sdk=sent, messages=messages)
    mapped.errors, skipped = complete_errors(mapped.errors, inputs, ctx.send_pii)
    if skipped:
        logger.debug("otel-sentry-bridge: %d error event(s) of trace %s not sent: sentry-sdk "
                     "sent the same exception", skipped, hex_trace(trace_id))
