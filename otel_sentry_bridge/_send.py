"""The worker's last step for one segment: map it, then submit its error events and its
transaction (or, for an unsampled trace, only its errors) with the trace's DSC."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan

from ._error_inputs import complete_error_inputs, discard_error_inputs
from ._internal_errors import logger
from ._mapping import build_transaction
from ._sampling_support import count_unsampled, has_exceptions, is_local_root

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: Set once an event's tags went over SENTRY_BRIDGE_MAX_TAGS (logged once per process).
_tags_warned: list[int] = []


def send_segment(pipeline: Pipeline, root: ReadableSpan, children: list[ReadableSpan]) -> None:
    """Map ``root`` and ``children`` and queue what Sentry gets of them."""
    sampled = root.context.trace_flags.sampled
    local = is_local_root(root)
    trace_id = root.context.trace_id
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
            transport.submit(kept, "event", wait=budget, trace=dsc)
    if not sampled:
        count_unsampled(drops, root, children)
        return
    event: dict[str, Any] | None = mapped.event
    if filters is not None:
        event, reason = filters.transaction(mapped.event)
        if event is None:
            drops.record(reason, "transaction", 1)
            drops.record(reason, "span", len(mapped.event.get("spans", ())) + 1)
    if event is not None:
        transport.submit(event, "transaction", wait=budget, trace=dsc)
    pipeline.submit_budget = max(0.0, budget - (time.monotonic() - started))
