"""One finished OpenTelemetry span -> one Sentry span dict (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_sentry_bridge.conventions import (
    MEMCACHED_CACHE_GET,
    MEMCACHED_CACHE_PUT,
    MEMCACHED_CACHE_REMOVE,
    REDIS_CACHE_GET,
    REDIS_CACHE_PUT,
    REDIS_CACHE_REMOVE,
    Attr,
    Op,
)

from . import ops
from .context import span_tags, span_user
from .mapping_context import MappingContext
from .measurements import Measurement, attribute_measurements
from .scrub import scrub_text, scrubbed_data
from .status import VALID_STATUS, derive_status
from .values import concept_view, first_str, hex_span, hex_trace, safe_str, seconds, set_aside

SentrySpan = dict[str, Any]


_EMPTY: dict[str, Any] = {}


def raw_attributes(span: ReadableSpan) -> dict[str, Any]:
    """A finished span's attributes as a plain dict, read-only (no copy when avoidable)."""
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(inner) is dict:
        return inner
    attrs = span.attributes
    return dict(attrs) if attrs else _EMPTY


def is_own_request(attrs: dict[Any, Any], ctx: MappingContext) -> bool:
    """True for HTTP client spans aimed at the DSN's host and port (feedback-loop guard)."""
    if ctx.own_host is None:
        return False
    url = attrs.get("url.full") or attrs.get("http.url")
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return parts.hostname == ctx.own_host and port == ctx.own_port


def _exception_type(span: ReadableSpan) -> str | None:
    events = getattr(span, "_events", None)
    if events is None:
        events = span.events
    for event in events or ():
        if event.name == "exception" and event.attributes:
            value = event.attributes.get("exception.type")
            if isinstance(value, str):
                return value
    return None


_origins: dict[str | None, str] = {}


def derived_span_id(span_id: int) -> int:
    """A deterministic, well-mixed span id derived from another (splitmix64), never zero."""
    z = (span_id + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return z or 1


@dataclass(frozen=True)
class SpanTemplate:
    """Everything about a mapped span except its ids and timestamps (shared by equal spans)."""

    op: str
    description: str
    status: str
    origin: str
    data: dict[str, Any]
    tags: dict[str, str] | None
    kv_command: str | None
    view: dict[Any, Any]
    own_request: bool
    user: dict[str, Any]
    tag_items: tuple[tuple[str, str], ...]
    #: valid ``sentry.measurement.*`` attributes (invalid ones are set aside in ``data``)
    measurements: tuple[Measurement, ...] = ()


def make_template(
    span: ReadableSpan, raw: dict[str, Any], attrs: dict[Any, Any], ctx: MappingContext
) -> SpanTemplate:
    """Map a span's category, description, status, origin and data (no ids, no times)."""
    kind = span.kind
    name = span.name or ""
    scope = span.instrumentation_scope
    scope_name = scope.name if scope is not None else None
    data = scrubbed_data(raw, ctx.send_pii)
    data["sentry.kind"] = ops.KIND_NAMES.get(kind, "internal")
    tags: dict[str, str] | None = None

    op_override = first_str(attrs, Attr.SENTRY_OP)
    method = ops.http_method(attrs)
    system = first_str(attrs, Attr.DB_SYSTEM)
    description: str
    op: str
    kv_command: str | None = None
    if method is not None and kind is SpanKind.SERVER:
        op, description = Op.HTTP_SERVER, ops.http_server(name, attrs, data, method)
    elif method is not None and kind is SpanKind.CLIENT:
        client = ops.http_client(name, attrs, data, method, ctx.send_pii)
        op, description = (Op.HTTP_CLIENT, client) if client else (Op.HTTP, name or method)
    elif system is not None and system.lower() in ("redis", "memcached"):
        keys = attrs.get(Attr.REDIS_COMMAND_ARGS)
        key_list = [safe_str(k) for k in keys] if isinstance(keys, (list, tuple)) else None
        op, description = ops.key_value_store(name, attrs, data, system.lower(), key_list)
        command = data.get("db.operation")
        kv_command = command if isinstance(command, str) else None
    elif system is not None:
        op, description = ops.database(name, attrs, data, system)
    elif found := (ops.messaging(name, kind, attrs, data, ctx.send_pii)
                   or ops.rpc(name, kind, attrs, data)):
        op, description = found
    elif method is not None:
        op = Op.HTTP
        ops.set_http_common(data, attrs, method)
        description = name
    else:
        op, description = ops.generic(name, kind, attrs, scope_name), name

    if op_override:
        op = op_override
    description = first_str(attrs, Attr.SENTRY_DESCRIPTION) or description.strip() or op
    given_origin = first_str(attrs, Attr.SENTRY_ORIGIN)
    origin = (ops.clean_origin(given_origin) if given_origin else None) or _origins.get(scope_name)
    if origin is None:
        origin = _origins[scope_name] = ops.derive_origin(scope_name)

    status_code = span.status.status_code if span.status is not None else StatusCode.UNSET
    status = derive_status(attrs, status_code, _exception_type(span))
    if status_code is not StatusCode.UNSET:
        data["otel.status_code"] = status_code.name
        if span.status.description:
            data["otel.status_description"] = scrub_text(span.status.description, ctx.send_pii)
    code = data.get("http.response.status_code")
    if type(code) is int and 100 <= code <= 999:
        tags = {"http.status_code": str(code)}
    if status not in VALID_STATUS:
        status = "unknown"
    own = is_own_request(attrs, ctx)
    measurements, invalid = attribute_measurements(raw)
    if invalid:
        set_aside(data, *invalid)
    return SpanTemplate(
        op, description, status, origin, data, tags, kv_command, attrs, own,
        span_user(attrs, ctx), span_tags(data, ctx), measurements,
    )


class SpanMapper:
    """Maps spans, remembering templates of equal spans (same scope, kind, name, status and
    attributes): most spans of a service repeat (the same query, the same cache call), so only
    their ids and timestamps differ. Deterministic: the output equals :func:`make_template`'s.
    """

    def __init__(self, ctx: MappingContext, max_entries: int = 2048) -> None:
        self.ctx = ctx
        self.max_entries = max_entries
        self._cache: dict[Any, SpanTemplate] = {}
        self.hits = 0
        self.misses = 0

    def template(self, span: ReadableSpan) -> SpanTemplate:
        """The (possibly shared) template of a span."""
        raw = raw_attributes(span)
        status = span.status
        key: Any = None
        try:
            scope = span.instrumentation_scope
            code = status.status_code if status is not None else StatusCode.UNSET
            # Enum members hash slowly: their identity is just as good a key.
            key = (
                scope.name if scope is not None else None, id(span.kind), span.name, id(code),
                status.description if status is not None else None,
                _exception_type(span) if code is StatusCode.ERROR else None,
                tuple(raw.items()),
            )
            cached = self._cache.get(key)
        except TypeError:  # unhashable attribute values: map without the cache
            key = cached = None
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        template = make_template(span, raw, concept_view(raw), self.ctx)
        if key is not None and _small(raw):  # big attribute values are not worth keeping
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[key] = template
        return template


def _small(raw: dict[str, Any], limit: int = 2048) -> bool:
    total = 0
    for value in raw.values():
        if type(value) is str:
            total += len(value)
            if total > limit:
                return False
    return True


def instantiate(span: ReadableSpan, template: SpanTemplate) -> SentrySpan:
    """A span dict from a template plus the span's own ids and timestamps."""
    try:  # the SDK's own fields: several times cheaper than its properties (hot path)
        context, parent = span._context, span._parent
        start_ns, end_ns = span._start_time, span._end_time
    except AttributeError:
        context, parent = span.context, span.parent
        start_ns, end_ns = span.start_time, span.end_time
    start = seconds(start_ns) or 0.0
    end = seconds(end_ns)
    if end is None or end < start:
        end = start
    out: SentrySpan = {
        "trace_id": hex_trace(context.trace_id) if context is not None else "0" * 32,
        "span_id": hex_span(context.span_id) if context is not None else "0" * 16,
        "parent_span_id": hex_span(parent.span_id) if parent is not None else None,
        "op": template.op,
        "description": template.description,
        "status": template.status,
        "origin": template.origin,
        "start_timestamp": start,
        "timestamp": end,
        # Shared with every span of the same template: payload data is never mutated after
        # mapping (it is serialized as is).
        "data": template.data,
    }
    if template.tags:
        out["tags"] = template.tags
    return out


_REDIS_CACHE_OPS = ((REDIS_CACHE_GET, Op.CACHE_GET), (REDIS_CACHE_PUT, Op.CACHE_PUT),
                    (REDIS_CACHE_REMOVE, Op.CACHE_REMOVE))
_MEMCACHED_CACHE_OPS = ((MEMCACHED_CACHE_GET, Op.CACHE_GET), (MEMCACHED_CACHE_PUT, Op.CACHE_PUT),
                        (MEMCACHED_CACHE_REMOVE, Op.CACHE_REMOVE))


def cache_parent(
    span: SentrySpan, template: SpanTemplate, ctx: MappingContext
) -> SentrySpan | None:
    """A synthesized ``cache.*`` parent for a redis or memcached get/set/delete command whose
    keys the bridge's hooks recorded (Caches module)."""
    attrs = template.view
    if span["op"] == Op.DB_REDIS and ctx.redis_cache_spans:
        command: Any = template.kv_command
        keys = attrs.get(Attr.REDIS_COMMAND_ARGS)
        table = _REDIS_CACHE_OPS
    elif span["op"] == Op.DB_MEMCACHED:  # keys from otel_sentry_bridge_instrumentation.pymemcache
        command = attrs.get(Attr.CACHE_OPERATION)
        keys = attrs.get(Attr.CACHE_KEY)
        table = _MEMCACHED_CACHE_OPS
    else:
        return None
    if not isinstance(command, str) or not isinstance(keys, (list, tuple)) or not keys:
        return None
    op = next((found for commands, found in table if command in commands), None)
    if op is None:
        return None
    key_list = [safe_str(k) for k in keys]
    if ctx.cache_prefixes and not all(k.startswith(ctx.cache_prefixes) for k in key_list):
        return None
    digest = hex_span(derived_span_id(int(span["span_id"], 16)))
    data: dict[str, Any] = {"cache.key": key_list, "cache.operation": command}
    hit = attrs.get(Attr.CACHE_HIT)
    if op == Op.CACHE_GET and isinstance(hit, bool):
        data["cache.hit"] = hit
    if op == Op.CACHE_PUT:
        written = attrs.get(Attr.CACHE_WRITE)  # False: refused (memcached ``add`` of a key)
        data["cache.write"] = written if isinstance(written, bool) else True
    size = attrs.get(Attr.CACHE_ITEM_SIZE)
    if type(size) is int and size >= 0:
        data["cache.item_size"] = size
    ttl = attrs.get(Attr.CACHE_TTL)
    if type(ttl) is int and ttl > 0:
        data[Attr.CACHE_TTL] = ttl
    sdata = span["data"]
    for src, dst in (
        ("server.address", "network.peer.address"),
        ("server.port", "network.peer.port"),
        ("server.address", "server.address"),
        ("server.port", "server.port"),
    ):
        if src in sdata:
            data[dst] = sdata[src]
    parent: SentrySpan = {
        "trace_id": span["trace_id"],
        "span_id": digest,
        "parent_span_id": span["parent_span_id"],
        "op": op,
        "description": ", ".join(key_list),
        "status": span["status"],
        "origin": span["origin"],
        "start_timestamp": span["start_timestamp"],
        "timestamp": span["timestamp"],
        "data": data,
    }
    span["parent_span_id"] = digest
    return parent
