"""A partial segment of a local root that has not ended yet -> one Sentry transaction (pure).

A root that runs longer than the buffered-span timeout sends its finished descendants in
partial segments: each is a transaction with a span id of its own (derived from the root's span
id and the segment's number), whose ``parent_span_id`` is the running root's span id, named
``<the root's transaction name> (segment N)`` (source ``custom``), with the op, data, tags and
user of the root as it is now, status ``ok``, and the time from its earliest span's start to its
latest span's end. Its spans are mapped as in any transaction: a span whose parent is the root
(or is not in this segment: it went out in an earlier one, or is still open) hangs under the
segment; deeper spans keep their parent. When the root ends, its own transaction carries the
rest of its spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from otel_sentry_bridge.conventions import Attr, Source

from .mapping_context import MappingContext
from .spans import SpanMapper, derived_span_id, raw_attributes
from .transactions import UNLABELED, MappedTransaction, build_transaction, transaction_name

__all__ = ["MappedSegment", "build_partial_segment", "segment_head", "segment_name",
           "segment_span_id"]

_MASK = (1 << 64) - 1
#: Mixed into the root's span id, so that segment ids differ from other derived ids.
_SALT = 0x5345474D454E5453  # "SEGMENTS"


@dataclass
class MappedSegment(MappedTransaction):
    """A mapped partial segment: the transaction, and what the worker needs besides."""

    #: the segment's own head span (synthetic: the segment's ids and times)
    head: ReadableSpan | None = None
    #: the name and source the root's own transaction gets (for the trace's DSC)
    root_name: str = UNLABELED
    root_source: str = Source.CUSTOM


def segment_span_id(root_span_id: int, number: int) -> int:
    """The span id of segment ``number`` of a root: deterministic, never zero."""
    return derived_span_id(((root_span_id ^ _SALT) + number) & _MASK)


#: Relay trims longer transaction names (with ``...``): the suffix must survive.
MAX_NAME = 200


def segment_name(root_name: str, number: int) -> str:
    """``<root name> (segment N)``, the root name shortened so that the whole fits Relay's
    limit."""
    suffix = f" (segment {number})"
    if len(root_name) + len(suffix) > MAX_NAME:
        root_name = root_name[:MAX_NAME - len(suffix) - 3] + "..."
    return root_name + suffix


def _valid(context: SpanContext | None) -> bool:
    return (
        context is not None and type(context.trace_id) is int and type(context.span_id) is int
        and 0 < context.trace_id < 1 << 128 and 0 < context.span_id < 1 << 64
    )


def segment_head(
    root: ReadableSpan, children: Sequence[ReadableSpan], number: int,
) -> ReadableSpan | None:
    """The synthetic head span of a segment (``None`` for a root with invalid ids).

    ``root`` is a snapshot of the running root (no end, no events). The head has the root's
    name, kind, scope, resource and attributes (less ``sentry.measurement.*``: those belong to
    the root's own transaction), the segment's span id, the root as its parent, and the time
    from the earliest child start to the latest child end.
    """
    context = root.context
    if not _valid(context):
        return None
    assert context is not None
    starts = [s.start_time for s in children if type(s.start_time) is int]
    ends = [s.end_time for s in children if type(s.end_time) is int]
    start = min(starts) if starts else root.start_time
    end = max(ends) if ends else start
    if start is not None and (end is None or end < start):
        end = start
    prefix = Attr.SENTRY_MEASUREMENT_PREFIX
    attrs = {k: v for k, v in raw_attributes(root).items()
             if not (type(k) is str and k.startswith(prefix))}
    flags, state = context.trace_flags, context.trace_state
    trace_id = context.trace_id
    return ReadableSpan(
        name=root.name,
        context=SpanContext(trace_id, segment_span_id(context.span_id, number), False,
                            flags, state),
        parent=SpanContext(trace_id, context.span_id, False, flags, state),
        resource=root.resource,
        attributes=attrs,
        kind=root.kind,
        instrumentation_scope=root.instrumentation_scope,
        start_time=start,
        end_time=end,
    )


def build_partial_segment(
    root: ReadableSpan,
    children: Sequence[ReadableSpan],
    number: int,
    ctx: MappingContext,
    mapper: SpanMapper | None = None,
) -> MappedSegment | None:
    """Map segment ``number`` of the running ``root`` (a snapshot) with its finished
    ``children``. ``None`` when there is nothing to send (no children, invalid root ids, or
    the bridge's own request)."""
    if mapper is None or mapper.ctx is not ctx:
        mapper = SpanMapper(ctx)
    if not children:
        return None
    head = segment_head(root, children, number)
    if head is None:
        return None
    template = mapper.template(head)  # the root's op, name and data (cached for the mapping)
    if template.own_request:
        return None
    name, source = transaction_name(head, template.view, template.op, template.description)
    mapped = build_transaction(head, children, ctx, mapper)
    if mapped is None:
        return None
    event = mapped.event
    event["transaction"] = segment_name(name, number)
    event["transaction_info"] = {"source": Source.CUSTOM}
    event["contexts"]["trace"]["status"] = "ok"
    return MappedSegment(event, mapped.dropped_spans, mapped.filtered_spans, mapped.errors,
                         mapped.dropped_tags, head, name, source)
