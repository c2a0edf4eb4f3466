"""Span category -> Sentry op, description and normalised data (pure).

One small function per family (HTTP server/client, database, redis/memcached, messaging, RPC,
generic). Each reads old and new semantic-convention keys and writes Sentry's preferred keys
next to the raw attributes, which are copied through unchanged (after scrubbing).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from otel_sentry_bridge.conventions import Attr, Op

from . import queues
from .scrub import scrub_url, split_url
from .values import Attrs, first, first_int, first_str, set_aside

_SQL_VERB = re.compile(r"\s*(?:/\*.*?\*/\s*)*([A-Za-z]+)", re.DOTALL)
_LEADING_COMMENT = re.compile(r"^\s*/\*.*?\*/\s*", re.DOTALL)
#: What Relay takes as a request method.
_HTTP_METHOD = re.compile(r"[A-Z_-]{3,32}")
#: Relay takes origins made of ASCII letters, digits, ``_`` and ``.``.
_ORIGIN_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
_NON_QUERY_DB = frozenset({"redis", "memcached"})

KIND_NAMES = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


def derive_origin(scope_name: str | None) -> str:
    """``auto.otel.<lib>`` for OTel contrib instrumentations, else ``manual``."""
    if not scope_name:
        return "manual"
    for prefix, origin in (
        ("opentelemetry.instrumentation.", "auto.otel."),
        ("otel_sentry_bridge_instrumentation.", "auto.otel.sentry_bridge."),
    ):
        if scope_name.startswith(prefix):
            lib = scope_name[len(prefix):].split(".", 1)[0]
            lib = _ORIGIN_UNSAFE.sub("_", lib).strip("._")
            return origin + lib if lib else origin.rstrip(".")
    return "manual"


def clean_origin(text: str) -> str | None:
    """A user-given origin (``sentry.origin``) in the characters Relay accepts, or None."""
    cleaned = _ORIGIN_UNSAFE.sub("_", text[:200]).strip("._")
    return cleaned or None


def sql_verb(statement: str) -> str | None:
    """First SQL keyword (after leading comments), upper case."""
    match = _SQL_VERB.match(statement)
    return match.group(1).upper() if match else None


def http_method(attrs: Attrs) -> str | None:
    """The HTTP method (upper case) from new or old keys; ``_OTHER`` when not a method."""
    method = first_str(attrs, Attr.HTTP_METHOD)
    if not method:
        return None
    method = method.upper()
    return method if _HTTP_METHOD.fullmatch(method) else "_OTHER"


def set_http_common(data: dict[str, Any], attrs: Attrs, method: str) -> int | None:
    data["http.request.method"] = method
    data["http.method"] = method
    code = first_int(attrs, Attr.HTTP_STATUS)
    if code is not None and 100 <= code <= 999:
        data["http.response.status_code"] = code
        return code
    set_aside(data, *Attr.HTTP_STATUS)  # not a status code
    return None


def http_client(
    name: str, attrs: Attrs, data: dict[str, Any], method: str, send_pii: bool
) -> str | None:
    """``http.client`` description ``"METHOD scheme://host[:port]/path"`` and data."""
    set_http_common(data, attrs, method)
    raw_url = first_str(attrs, Attr.URL_FULL)
    if raw_url:
        base, query, fragment = split_url(raw_url)
        data["url"] = base
        data["url.full"] = scrub_url(raw_url, send_pii)
        if send_pii:
            if query:
                data["http.query"] = query
            if fragment:
                data["http.fragment"] = fragment
        try:
            parts = urlsplit(base)
            if parts.hostname and "server.address" not in data:
                data["server.address"] = parts.hostname
            if "server.port" not in data:
                port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
                if port:
                    data["server.port"] = port
        except ValueError:
            pass
        return f"{method} {base}"
    host = first_str(attrs, Attr.PEER_NAME)
    if host:
        data.setdefault("server.address", host)
        port = first_int(attrs, Attr.PEER_PORT)
        if port:
            data.setdefault("server.port", port)
        target = first_str(attrs, Attr.HTTP_TARGET) or first_str(attrs, Attr.URL_PATH) or ""
        scheme = first_str(attrs, Attr.URL_SCHEME) or "http"
        netloc = host if not port or port in (80, 443) else f"{host}:{port}"
        return f"{method} {scheme}://{netloc}{target.split('?', 1)[0]}"
    if name.strip() and " " not in name.strip() and name.strip().upper() != method:
        return f"{method} {name.strip()}"
    return None  # no URL: not a span the Requests page can place


def http_server_path(attrs: Attrs) -> str | None:
    """The request path (no query) of a server span."""
    path = first_str(attrs, Attr.URL_PATH)
    if path:
        return path
    target = first_str(attrs, Attr.HTTP_TARGET)
    if target:
        return target.split("?", 1)[0]
    url = first_str(attrs, Attr.URL_FULL)
    if url:
        try:
            return urlsplit(url).path or "/"
        except ValueError:
            return None
    return None


def http_server(name: str, attrs: Attrs, data: dict[str, Any], method: str) -> str:
    """``http.server`` description ``"METHOD route"`` (or path) and data."""
    set_http_common(data, attrs, method)
    route = first_str(attrs, Attr.HTTP_ROUTE)
    if route:
        return f"{method} {route}"
    path = http_server_path(attrs)
    if path:
        return f"{method} {path}"
    return name or method


def database(name: str, attrs: Attrs, data: dict[str, Any], system: str) -> tuple[str, str]:
    """SQL and other query databases: ``db`` (or ``db.connect``)."""
    data["db.system"] = system
    data["db.system.name"] = system
    namespace = first_str(attrs, Attr.DB_NAMESPACE)
    if namespace:
        data["db.name"] = namespace
        data["db.namespace"] = namespace
    statement = first_str(attrs, Attr.DB_STATEMENT)
    _copy_peer(attrs, data)
    if statement is None and name.strip().lower() == "connect":
        return Op.DB_CONNECT, "connect"
    if statement:
        data["db.query.text"] = statement
        verb = sql_verb(statement)
        if verb:
            data["db.operation"] = verb
            data["db.operation.name"] = verb
        description = _LEADING_COMMENT.sub("", statement).strip() or statement
        return Op.DB, description
    operation = first_str(attrs, Attr.DB_OPERATION)
    if operation:
        verb = operation.split(" ", 1)[0].upper()
        data["db.operation"] = verb
        data["db.operation.name"] = verb
    return Op.DB, name.strip() or system


def _copy_peer(attrs: Attrs, data: dict[str, Any]) -> None:
    host = first_str(attrs, Attr.PEER_NAME)
    if host:
        data["server.address"] = host
    port = first_int(attrs, Attr.PEER_PORT)
    if port is not None:
        data["server.port"] = port


def key_value_store(
    name: str, attrs: Attrs, data: dict[str, Any], system: str, keys: list[str] | None
) -> tuple[str, str]:
    """redis / memcached command spans: ``db.redis`` / ``db.memcached``."""
    data["db.system"] = system
    data["db.system.name"] = system
    command = (name or "").split(" ", 1)[0].upper()
    statement = first_str(attrs, Attr.DB_STATEMENT)
    if command:
        data["db.operation"] = command
        data["db.operation.name"] = command
    index = first(attrs, Attr.DB_REDIS_INDEX)
    if index is not None:
        data["db.namespace"] = str(index)
    _copy_peer(attrs, data)
    if "server.address" in data:
        data["network.peer.address"] = data["server.address"]
    if "server.port" in data:
        data["network.peer.port"] = data["server.port"]
    op = Op.DB_REDIS if system == "redis" else Op.DB_MEMCACHED
    if keys and command:
        return op, f"{command} {' '.join(keys)}"
    return op, statement or command or name


_MESSAGING_OPS = {
    "publish": Op.QUEUE_PUBLISH,
    "send": Op.QUEUE_PUBLISH,
    "create": Op.QUEUE_CREATE,
    "receive": Op.QUEUE_RECEIVE,
    "process": Op.QUEUE_PROCESS,
    "deliver": Op.QUEUE_PROCESS,
    "settle": Op.QUEUE_SETTLE,
}


def messaging(
    name: str, kind: SpanKind, attrs: Attrs, data: dict[str, Any], send_pii: bool = False
) -> tuple[str, str] | None:
    """Celery and generic messaging spans: ``queue.*`` ops with the Queues module's data."""
    action = first_str(attrs, Attr.CELERY_ACTION)
    task = first_str(attrs, Attr.CELERY_TASK_NAME)
    operation = first_str(attrs, Attr.MESSAGING_OPERATION)
    system = first_str(attrs, Attr.MESSAGING_SYSTEM)
    if action is None and operation is None and system is None:
        return None
    op: str | None = None
    if action == "apply_async":
        op = Op.QUEUE_PUBLISH
    elif action == "run":
        op = Op.QUEUE_TASK_CELERY if kind is SpanKind.CONSUMER else Op.QUEUE_PROCESS
    elif operation is not None:
        op = _MESSAGING_OPS.get(operation.lower())
    if op is None and kind is SpanKind.PRODUCER:
        op = Op.QUEUE_PUBLISH
    elif op is None and kind is SpanKind.CONSUMER:
        op = Op.QUEUE_PROCESS
    destination = queues.destination(attrs)
    if op is None or (destination is None and op != Op.QUEUE_TASK_CELERY):
        # The Queues page groups by destination: without one (or without a known operation)
        # the span is not a Queues span, and the RPC and generic rules apply.
        return None
    if destination is not None:
        data[queues.DESTINATION] = destination
    queues.message_data(attrs, data, action is not None, system, send_pii)
    if task is None and action and "/" in name:
        task = name.split("/", 1)[1]
    return op, task or destination or name


def rpc(name: str, kind: SpanKind, attrs: Attrs, data: dict[str, Any]) -> tuple[str, str] | None:
    """gRPC and other RPC spans."""
    system = first_str(attrs, Attr.RPC_SYSTEM)
    if system is None and first(attrs, Attr.RPC_SERVICE) is None:
        return None
    if system is not None:
        data["rpc.system"] = system
    server = kind is SpanKind.SERVER
    if system == "grpc":
        return (Op.GRPC_SERVER if server else Op.GRPC_CLIENT), name
    if kind in (SpanKind.SERVER, SpanKind.CLIENT):
        return (Op.RPC_SERVER if server else Op.RPC_CLIENT), name
    return Op.RPC, name


_WEBSOCKET_SCHEMES = frozenset({"ws", "wss"})
#: ASGI events that carry a WebSocket message (the others: connect, accept, close, disconnect).
_WEBSOCKET_MESSAGES = {"websocket.receive": Op.WEBSOCKET_RECEIVE,
                       "websocket.send": Op.WEBSOCKET_SEND}


def is_websocket(attrs: Attrs) -> bool:
    """A WebSocket connection's span: a close code, a ``ws``/``wss`` scheme (OpenTelemetry's
    ASGI middleware) or the ``websocket`` protocol name (FastAPI's own telemetry)."""
    if first(attrs, Attr.WEBSOCKET_CLOSE_CODE) is not None:
        return True
    scheme = first_str(attrs, Attr.URL_SCHEME)
    return (scheme is not None and scheme.lower() in _WEBSOCKET_SCHEMES) or (
        first_str(attrs, Attr.NETWORK_PROTOCOL_NAME) == "websocket")


def generic(name: str, kind: SpanKind, attrs: Attrs, scope_name: str | None) -> str:
    """Op for spans without a recognised family."""
    if kind in (SpanKind.SERVER, SpanKind.CLIENT) and is_websocket(attrs):
        return Op.WEBSOCKET_SERVER if kind is SpanKind.SERVER else Op.WEBSOCKET_CLIENT
    event_type = attrs.get("asgi.event.type")
    if isinstance(event_type, str):
        message_op = _WEBSOCKET_MESSAGES.get(event_type)
        if message_op is not None:
            return message_op
        if event_type.endswith(".send") or "send" in name:
            return Op.MIDDLEWARE_ASGI_SEND
        return Op.MIDDLEWARE_ASGI_RECEIVE
    if scope_name and scope_name.endswith("jinja2"):
        return "template." + (name.rsplit(".", 1)[-1] if name.startswith("jinja2.") else "render")
    trigger = first_str(attrs, Attr.FAAS_TRIGGER)
    if trigger:
        return trigger
    return Op.FUNCTION if kind is SpanKind.INTERNAL else Op.DEFAULT
