"""The worker's last step for one segment: map it, then submit its error events and its
transaction (or, for an unsampled trace, only its errors) with the trace's DSC.

A partial segment (the finished spans of a root still running, ``_open_roots.py``) is mapped by
``_mapping/partial.py``; its DSC is the trace's, completed (if not yet) with the name the root's
own transaction gets, and the trace's entry stays for the root's last transaction."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan

from . import _profiling
from ._error_inputs import complete_error_inputs, discard_error_inputs
from ._internal_errors import logger
from ._mapping import MappedTransaction, build_transaction
from ._mapping.partial import build_partial_segment, segment_head
from ._sampling_support import count_unsampled, has_exceptions, is_local_root, orphan_call
from ._segments import OpenRoot

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: Set once an event's tags went over SENTRY_BRIDGE_MAX_TAGS (logged once per process).
_tags_warned: list[int] = []


def send_segment(
    pipeline: Pipeline, root: ReadableSpan | OpenRoot, children: list[ReadableSpan],
) -> None:
    """Map ``root`` and ``children`` and queue what Sentry gets of them."""
    if isinstance(root, OpenRoot):
        _send_partial(pipeline, root, children)
        return
    sampled = root.context.trace_flags.sampled
    local = is_local_root(root)
    trace_id = root.context.trace_id
    orphan = root.parent is None and not pipeline.cfg.orphan_client_spans and orphan_call(root)
    if orphan and pipeline.mapper.template(root).own_request:
        return  # a request to Sentry itself (e.g. sentry-sdk's own uploads): never counted
    if orphan and not has_exceptions(root, children):
        # A query or request outside any traced request or job (a worker's broker polling):
        # not a transaction, as with Sentry's SDKs; counted. (With an error: below.)
        _count_orphan(pipeline, children)
        discard_error_inputs(root, children)
        pipeline.traces.root_sent(trace_id)
        return
    if not sampled and not has_exceptions(root, children):
        # Recorded only in case it raised: nothing to send, only to count and forget.
        count_unsampled(pipeline.drops, root, children)
        discard_error_inputs(root, children)
        if local:
            pipeline.traces.root_sent(trace_id)
        return
    mapped = build_transaction(root, children, pipeline.mapping, pipeline.mapper)
    if mapped is None:
        return
    complete_error_inputs(root, children, mapped, pipeline.mapping)
    dsc = pipeline.traces.for_event(trace_id, mapped.event, local, sampled)
    # An orphan's errors are sent (Sentry's SDKs report errors without a transaction too);
    # its transaction is not.
    _submit(pipeline, mapped, dsc, sampled, root, children, orphan=orphan)


def _count_orphan(pipeline: Pipeline, children: list[ReadableSpan]) -> None:
    pipeline.drops.record("event_processor", "transaction", 1)
    pipeline.drops.record("event_processor", "span", len(children) + 1)


def _send_partial(pipeline: Pipeline, part: OpenRoot, children: list[ReadableSpan]) -> None:
    root = part.span
    sampled = root.context.trace_flags.sampled
    if root.parent is None and not pipeline.cfg.orphan_client_spans and orphan_call(root):
        # the root's own transaction will not be sent (above): nor are its segments; counted
        _count_orphan(pipeline, children)
        head = segment_head(root, children, part.number)
        if head is not None:
            discard_error_inputs(head, children)
        return
    if not sampled and not has_exceptions(root, children):
        count_unsampled(pipeline.drops, root, children)
        head = segment_head(root, children, part.number)
        if head is not None:  # (its id: the root's own inputs stay for the root)
            discard_error_inputs(head, children)
        return
    mapped = build_partial_segment(root, children, part.number, pipeline.mapping,
                                   pipeline.mapper)
    if mapped is None or mapped.head is None:
        return
    complete_error_inputs(mapped.head, children, mapped, pipeline.mapping)
    # The DSC (frozen by the first transaction of the trace) names the root, not a segment.
    named = {**mapped.event, "transaction": mapped.root_name,
             "transaction_info": {"source": mapped.root_source}}
    dsc = pipeline.traces.for_event(root.context.trace_id, named, False, sampled)
    _submit(pipeline, mapped, dsc, sampled, root, children)


def _submit(
    pipeline: Pipeline, mapped: MappedTransaction, dsc: dict[str, str], sampled: bool,
    root: ReadableSpan, children: list[ReadableSpan], orphan: bool = False,
) -> None:
    drops = pipeline.drops
    if mapped.dropped_spans:
        drops.record("buffer_overflow", "span", mapped.dropped_spans)
    if mapped.dropped_tags and not _tags_warned:  # tags are no item category: only logged
        _tags_warned.append(mapped.dropped_tags)
        logger.warning("an event had %d tags more than SENTRY_BRIDGE_MAX_TAGS=%d: they were "
                       "left out (logged once)", mapped.dropped_tags, pipeline.mapping.max_tags)
    started = time.monotonic()
    budget = pipeline.submit_budget
    filters = pipeline.filters
    transport = pipeline.transport
    for error in mapped.errors:
        kept: dict[str, Any] | None = error
        if filters is not None:
            kept, reason = filters.error(error)
        if kept is None:
            drops.record(reason, "error", 1)
        else:
            transport.submit(kept, "event", dsc, wait=budget)
    if not sampled:
        count_unsampled(drops, root, children)
        return
    if orphan:
        _count_orphan(pipeline, children)
        return
    if _profiling.ACTIVE:  # SENTRY_BRIDGE_PROFILING: link the profile chunks (_profiling.py)
        _profiling.link_profile(mapped.event, _profiling.current_profiler_id())
    event: dict[str, Any] | None = mapped.event
    if filters is not None:
        event, reason = filters.transaction(mapped.event)
        if event is None:
            drops.record(reason, "transaction", 1)
            drops.record(reason, "span", len(mapped.event.get("spans", ())) + 1)
    if event is not None:
        transport.submit(event, "transaction", dsc, wait=budget)
    pipeline.submit_budget = max(0.0, budget - (time.monotonic() - started))
