"""A local root and its finished descendants -> one Sentry transaction event (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_sentry_bridge.conventions import SDK_NAME, Attr, Op, Source

from . import ops, queues
from .context import merge_tags, merge_user, request_interface, resource_fields
from .db_duplicates import orm_duplicates
from .errors import error_events
from .mapping_context import MappingContext
from .measurements import transaction_measurements
from .rules import ENV_CONTEXT, apply_rules
from .scrub import scrubbed_data
from .spans import (
    SentrySpan,
    SpanMapper,
    SpanTemplate,
    cache_parent,
    derived_span_id,
    instantiate,
)
from .values import first_str, hex_span, hex_trace

_VALID_SOURCES = frozenset({"custom", "url", "route", "view", "component", "task"})


@dataclass
class MappedTransaction:
    """A transaction payload plus what the mapping dropped."""

    event: dict[str, Any]
    dropped_spans: int = 0
    filtered_spans: int = 0
    #: error events from the ``exception`` span events of this transaction's spans
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: tags left out over ``SENTRY_BRIDGE_MAX_TAGS`` (logged by the worker, not a drop)
    dropped_tags: int = 0

#: What Relay itself calls a transaction without a name.
UNLABELED = "<unlabeled transaction>"


def transaction_name(
    span: ReadableSpan, attrs: dict[Any, Any], op: str, description: str
) -> tuple[str, str]:
    """``(name, source)`` per sentry-mapping.md section 3.3 (never blank)."""
    name, source = _name_and_source(span, attrs, op, description)
    return (name.strip() or UNLABELED), source


def _name_and_source(
    span: ReadableSpan, attrs: dict[Any, Any], op: str, description: str
) -> tuple[str, str]:
    name = span.name or ""
    override = first_str(attrs, Attr.SENTRY_NAME)
    if override:
        source = first_str(attrs, Attr.SENTRY_SOURCE) or Source.CUSTOM
        return override, source if source in _VALID_SOURCES else Source.CUSTOM
    if op == Op.HTTP_SERVER:
        method = ops.http_method(attrs) or ""
        route = first_str(attrs, Attr.HTTP_ROUTE)
        if route:
            return f"{method} {route}".strip(), Source.ROUTE
        path = ops.http_server_path(attrs)
        if path:
            return f"{method} {path}".strip(), Source.URL
        return (name or method or UNLABELED), Source.URL
    if op == Op.WEBSOCKET_SERVER:  # a connection (OpenTelemetry's ASGI middleware alone)
        route = first_str(attrs, Attr.HTTP_ROUTE)
        if route:
            return f"WS {route}", Source.ROUTE
        path = ops.http_server_path(attrs)
        if path:
            return f"WS {path}", Source.URL
        return (name or "WS"), Source.URL
    if op in (Op.QUEUE_TASK_CELERY, Op.QUEUE_PROCESS) and span.kind is SpanKind.CONSUMER:
        return description or name, Source.TASK
    if op == Op.GRPC_SERVER or op == Op.RPC_SERVER:
        return name or description, Source.ROUTE
    return (name or description or UNLABELED), Source.CUSTOM


def _segment_name(
    root_attrs: dict[Any, Any], templates: list[SpanTemplate]
) -> tuple[str, str] | None:
    """The name a span of the segment gives the transaction (``sentry.transaction.name``: a
    GraphQL operation, a WebSocket route), unless the root names itself (``sentry.name``)."""
    if first_str(root_attrs, Attr.SENTRY_NAME):
        return None
    for template in templates:  # the root's template first
        name = first_str(template.view, Attr.SENTRY_TRANSACTION_NAME)
        if name and name.strip():
            source = first_str(template.view, Attr.SENTRY_TRANSACTION_SOURCE) or Source.CUSTOM
            return name.strip(), source if source in _VALID_SOURCES else Source.CUSTOM
    return None


def _links(span: ReadableSpan, send_pii: bool) -> list[dict[str, Any]] | None:
    links = span.links
    if not links:
        return None
    out = []
    for link in links:
        ctx = link.context
        if (
            ctx is None or type(ctx.trace_id) is not int or type(ctx.span_id) is not int
            or not 0 < ctx.trace_id < 1 << 128 or not 0 < ctx.span_id < 1 << 64
        ):
            continue
        item: dict[str, Any] = {
            "trace_id": hex_trace(ctx.trace_id),
            "span_id": hex_span(ctx.span_id),
            "sampled": bool(ctx.trace_flags.sampled),
        }
        if link.attributes:
            item["attributes"] = scrubbed_data(link.attributes, send_pii)
        out.append(item)
    return out or None


_VALID_SPAN_HEX = re.compile(r"^[0-9a-f]{16}$").match


def _valid_ids(span: ReadableSpan) -> bool:
    """Sentry needs a non-zero 128-bit trace id and 64-bit span id."""
    ctx = span.context
    if ctx is None:
        return False
    trace_id, span_id = ctx.trace_id, ctx.span_id
    return (
        type(trace_id) is int and type(span_id) is int
        and 0 < trace_id < 1 << 128 and 0 < span_id < 1 << 64
    )


def _break_cycles(spans: list[SentrySpan], root_id: str) -> None:
    """Parent links that loop (possible only with corrupt input) are cut at the root."""
    parent_of = {s["span_id"]: s["parent_span_id"] for s in spans}
    by_id = {s["span_id"]: s for s in spans}
    state: dict[str, int] = {}  # 1: on the current path, 2: reaches the root
    for start in parent_of:
        path: list[str] = []
        node: str | None = start
        while node is not None and node != root_id and state.get(node) != 2:
            if state.get(node) == 1:  # a loop: cut it here
                by_id[node]["parent_span_id"] = root_id
                parent_of[node] = root_id
                break
            state[node] = 1
            path.append(node)
            node = parent_of.get(node)
        for visited in path:
            state[visited] = 2


def build_transaction(
    root: ReadableSpan,
    children: Sequence[ReadableSpan],
    ctx: MappingContext,
    mapper: SpanMapper | None = None,
) -> MappedTransaction | None:
    """Map a local root and its descendants. ``None`` when the root itself must not be sent.

    ``mapper`` (optional) remembers templates of repeated spans across calls; the result is
    the same with or without it.
    """
    if mapper is None or mapper.ctx is not ctx:
        mapper = SpanMapper(ctx)
    if not _valid_ids(root):
        return None
    root_template = mapper.template(root)
    if root_template.own_request:
        return None
    root_attrs = root_template.view
    root_mapped = instantiate(root, root_template)
    root_id = root_mapped["span_id"]
    trace_id = root_mapped["trace_id"]

    original_parent: dict[str, str | None] = {}
    mapped: list[SentrySpan] = []
    recorded: list[tuple[ReadableSpan, SentrySpan]] = []
    if _has_events(root):
        recorded.append((root, root_mapped))
    templates: list[SpanTemplate] = [root_template]
    filtered = 0
    ids_seen: set[str] = {root_id}
    for child in children:
        if not _valid_ids(child):
            filtered += 1
            continue
        template = mapper.template(child)
        out = instantiate(child, template)
        if out["span_id"] in ids_seen:  # a duplicate id (or the root's): keep the first only
            filtered += 1
            continue
        ids_seen.add(out["span_id"])
        parent_id = out["parent_span_id"]
        if parent_id is not None and (not _VALID_SPAN_HEX(parent_id) or parent_id == "0" * 16):
            out["parent_span_id"] = parent_id = None
        original_parent[out["span_id"]] = parent_id
        if template.own_request or (ctx.drop_connect_spans and out["op"] == Op.DB_CONNECT):
            filtered += 1
            continue
        if out["trace_id"] != trace_id:
            filtered += 1
            continue
        templates.append(template)
        if _has_events(child):
            recorded.append((child, out))
        cache = cache_parent(out, template, ctx)
        if cache is not None:
            original_parent[cache["span_id"]] = cache["parent_span_id"]
            mapped.append(cache)
        mapped.append(out)

    duplicates = orm_duplicates(mapped, {out["span_id"] for _, out in recorded})
    if duplicates:  # SQLAlchemy's span beside the driver's span of the same query
        mapped = [s for s in mapped if s["span_id"] not in duplicates]
        filtered += len(duplicates)

    dropped = 0
    task = root_mapped["op"] == Op.QUEUE_TASK_CELERY  # gets a queue.process child (4.6)
    limit = max(ctx.max_spans - 1, 0) if task else ctx.max_spans
    if len(mapped) > limit:
        mapped.sort(key=lambda s: s["start_timestamp"])
        dropped = len(mapped) - limit
        del mapped[limit:]

    kept = {s["span_id"] for s in mapped}
    for item in mapped:
        parent = item["parent_span_id"]
        seen = 0
        while parent is not None and parent != root_id and parent not in kept and seen < 10_000:
            parent = original_parent.get(parent)
            seen += 1
        item["parent_span_id"] = parent if parent in kept else root_id
    _break_cycles(mapped, root_id)
    if task and ctx.max_spans > 0:
        queues.add_process_span(root_mapped, mapped, derived_span_id(int(root_id, 16)))

    measurements = transaction_measurements(root, templates, recorded)
    event, dropped_tags = _assemble(root, root_attrs, root_mapped, mapped, templates, ctx)
    if measurements:
        event["measurements"] = measurements
    errors = error_events(recorded, event, ctx, mapped) if recorded else []
    if task and errors:
        queues.annotate_errors(errors, root_mapped, ctx.send_pii)
    return MappedTransaction(event, dropped, filtered, errors, dropped_tags)


def _has_events(span: ReadableSpan) -> bool:
    try:
        return bool(span._events)  # the SDK's own field: no tuple copy (hot path)
    except AttributeError:
        return bool(span.events)


def _assemble(
    root: ReadableSpan,
    root_attrs: dict[Any, Any],
    root_mapped: SentrySpan,
    spans: list[SentrySpan],
    templates: list[SpanTemplate],
    ctx: MappingContext,
) -> tuple[dict[str, Any], int]:
    op = root_mapped["op"]
    named = _segment_name(root_attrs, templates)
    name, source = named or transaction_name(root, root_attrs, op, root_mapped["description"])
    trace_context: dict[str, Any] = {
        "trace_id": root_mapped["trace_id"],
        "span_id": root_mapped["span_id"],
        "op": op,
        "status": root_mapped["status"],
        "origin": root_mapped["origin"],
        "data": root_mapped["data"],
        "type": "trace",
    }
    root_parent = root_mapped["parent_span_id"]
    if root_parent is not None and _VALID_SPAN_HEX(root_parent) and root_parent != "0" * 16:
        trace_context["parent_span_id"] = root_parent
    links = _links(root, ctx.send_pii)
    if links:
        trace_context["links"] = links
    resource = dict(root.resource.attributes) if root.resource is not None else {}
    fields = resource_fields(resource, ctx)
    contexts: dict[str, Any] = fields.pop("contexts")
    contexts["trace"] = trace_context
    event: dict[str, Any] = {
        "event_id": root_mapped["span_id"] + root_mapped["trace_id"][16:],
        "type": "transaction",
        "platform": "python",
        "transaction": name,
        "transaction_info": {"source": source},
        "start_timestamp": root_mapped["start_timestamp"],
        "timestamp": root_mapped["timestamp"],
        "contexts": contexts,
        "spans": spans,
        "sdk": {
            "name": SDK_NAME,
            "version": ctx.sdk_version,
            "packages": [{"name": "pypi:otel-sentry-bridge", "version": ctx.sdk_version}],
        },
        **fields,
    }
    rule_user: dict[str, Any] = {}
    rule_tags: tuple[tuple[str, str], ...] = ()
    if ctx.rules:  # declarative rules (SENTRY_BRIDGE_*_ATTRIBUTES) win over the conventions
        rule_user, rule_tags, business = apply_rules(
            ctx.rules, [t.data for t in templates], contexts.get("otel", {}).get("resource", {})
        )
        if business:
            contexts[ctx.rules.context_name] = business
    if ctx.context_env:
        contexts[ENV_CONTEXT] = dict(ctx.context_env)
    tags, dropped_tags = merge_tags(chain((rule_tags,), (t.tag_items for t in templates)),
                                    ctx.max_tags)
    status_code = root_mapped["data"].get("http.response.status_code")
    if not (type(status_code) is int and 100 <= status_code <= 999):
        status_code = None
    if op == Op.HTTP_SERVER:
        request = request_interface(root_attrs, ctx)
        if request:
            event["request"] = request
        if status_code is not None:
            contexts["response"] = {"type": "response", "status_code": status_code}
    if status_code is not None:
        tags.setdefault("http.status_code", str(status_code))
    if tags:
        event["tags"] = tags
    user = merge_user(chain((rule_user,), (t.user for t in templates)))
    if user:
        event["user"] = user
    return event, dropped_tags
