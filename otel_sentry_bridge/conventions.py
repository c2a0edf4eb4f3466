"""Names the bridge reads (OpenTelemetry semantic conventions, old and new) and writes (Sentry).

Each tuple of attribute keys lists the new (stable) name first, then the old names emitted by
default by the 0.66b instrumentations. No logic lives here.
"""

from __future__ import annotations

import re
from typing import Final


class Attr:
    """OpenTelemetry attribute keys, grouped by concept: ``(new, old, ...)``."""

    HTTP_METHOD: Final = ("http.request.method", "http.method")
    HTTP_STATUS: Final = ("http.response.status_code", "http.status_code")
    HTTP_ROUTE: Final = ("http.route",)
    HTTP_TARGET: Final = ("http.target",)
    URL_FULL: Final = ("url.full", "http.url")
    URL_PATH: Final = ("url.path",)
    URL_QUERY: Final = ("url.query",)
    URL_SCHEME: Final = ("url.scheme", "http.scheme")
    SERVER_ADDRESS: Final = ("server.address", "net.host.name", "http.server_name", "http.host")
    SERVER_PORT: Final = ("server.port", "net.host.port")
    PEER_NAME: Final = ("server.address", "net.peer.name")
    PEER_PORT: Final = ("server.port", "net.peer.port")
    CLIENT_ADDRESS: Final = ("client.address", "http.client_ip", "net.peer.ip")
    CLIENT_PORT: Final = ("client.port", "net.peer.port")
    NETWORK_PEER_ADDRESS: Final = ("network.peer.address", "net.sock.peer.addr")
    NETWORK_PEER_PORT: Final = ("network.peer.port", "net.sock.peer.port")
    USER_AGENT: Final = ("user_agent.original", "http.user_agent")
    PROTOCOL_VERSION: Final = ("network.protocol.version", "http.flavor")

    DB_SYSTEM: Final = ("db.system.name", "db.system")
    DB_NAMESPACE: Final = ("db.namespace", "db.name")
    DB_STATEMENT: Final = ("db.query.text", "db.statement")
    DB_OPERATION: Final = ("db.operation.name", "db.operation")
    DB_REDIS_INDEX: Final = ("db.redis.database_index",)

    RPC_SYSTEM: Final = ("rpc.system.name", "rpc.system")
    RPC_STATUS: Final = ("rpc.response.status_code", "rpc.grpc.status_code")
    RPC_SERVICE: Final = ("rpc.service",)
    RPC_METHOD: Final = ("rpc.method",)

    MESSAGING_SYSTEM: Final = ("messaging.system",)
    MESSAGING_OPERATION: Final = ("messaging.operation.type", "messaging.operation")
    MESSAGING_DESTINATION: Final = ("messaging.destination.name", "messaging.destination")
    MESSAGING_MESSAGE_ID: Final = ("messaging.message.id", "messaging.message_id")
    MESSAGING_BODY_SIZE: Final = ("messaging.message.body.size",)
    CELERY_ACTION: Final = ("celery.action",)
    CELERY_TASK_NAME: Final = ("celery.task_name",)
    CELERY_RETRIES: Final = ("celery.retries",)
    CELERY_STATE: Final = ("celery.state",)
    CELERY_RETRY_REASON: Final = ("celery.retry.reason",)

    FAAS_TRIGGER: Final = ("faas.trigger",)
    ERROR_TYPE: Final = ("error.type",)

    USER_ID: Final = ("enduser.id", "user.id")
    USER_EMAIL: Final = ("user.email",)
    USER_NAME: Final = ("user.name", "enduser.name")
    USER_ROLES: Final = ("user.roles", "enduser.role")

    # Explicit overrides a user (or our instrumentation) may put on a span.
    SENTRY_OP: Final = ("sentry.op",)
    SENTRY_DESCRIPTION: Final = ("sentry.description",)
    SENTRY_ORIGIN: Final = ("sentry.origin",)
    SENTRY_NAME: Final = ("sentry.name",)
    SENTRY_SOURCE: Final = ("sentry.source",)
    # Set on any span of a local root's segment (the first one found wins, the root's own
    # ``sentry.name`` wins over it): the transaction's name and source. Instrumentations that
    # learn the name below the server span (a GraphQL operation) use it.
    SENTRY_TRANSACTION_NAME: Final = ("sentry.transaction.name",)
    SENTRY_TRANSACTION_SOURCE: Final = ("sentry.transaction.source",)
    SENTRY_TAG_PREFIX: Final = "sentry.tag."
    # Transaction measurements (docs/metrics.md): ``sentry.measurement.<name>`` = a number,
    # ``sentry.measurement.<name>.unit`` = its unit; or a span event ``sentry.measurement``
    # with attributes ``name``, ``value``, ``unit``.
    SENTRY_MEASUREMENT_PREFIX: Final = "sentry.measurement."
    SENTRY_MEASUREMENT_UNIT_SUFFIX: Final = ".unit"
    SENTRY_MEASUREMENT_EVENT: Final = "sentry.measurement"

    # Cache data written by the bridge's redis hooks (Sentry's Caches module names).
    CACHE_KEY: Final = "cache.key"
    CACHE_HIT: Final = "cache.hit"
    CACHE_ITEM_SIZE: Final = "cache.item_size"
    CACHE_TTL: Final = "cache.ttl"
    CACHE_WRITE: Final = "cache.write"
    CACHE_OPERATION: Final = "cache.operation"
    REDIS_COMMAND_ARGS: Final = "sentry_bridge.redis.keys"

    HTTP_REQUEST_HEADER_PREFIX: Final = "http.request.header."

    # WebSocket connections (the bridge's websockets / Starlette instrumentations write the
    # close code; FastAPI and OpenTelemetry's ASGI middleware the protocol name or ws scheme).
    WEBSOCKET_CLOSE_CODE: Final = ("websocket.close.code",)
    NETWORK_PROTOCOL_NAME: Final = ("network.protocol.name",)


class Res:
    """OpenTelemetry resource attribute keys."""

    SERVICE_NAME: Final = "service.name"
    SERVICE_VERSION: Final = "service.version"
    ENVIRONMENT: Final = ("deployment.environment.name", "deployment.environment")
    HOST_NAME: Final = "host.name"
    RUNTIME_NAME: Final = "process.runtime.name"
    RUNTIME_VERSION: Final = "process.runtime.version"
    RUNTIME_DESCRIPTION: Final = "process.runtime.description"
    OS_TYPE: Final = "os.type"
    OS_DESCRIPTION: Final = "os.description"
    OS_VERSION: Final = "os.version"


class Op:
    """Sentry span operations written by the bridge (Sentry's ``OP`` names)."""

    HTTP_SERVER: Final = "http.server"
    HTTP_CLIENT: Final = "http.client"
    HTTP: Final = "http"
    WEBSOCKET_SERVER: Final = "websocket.server"
    DB: Final = "db"
    DB_CONNECT: Final = "db.connect"
    DB_REDIS: Final = "db.redis"
    DB_MEMCACHED: Final = "db.memcached"
    CACHE_GET: Final = "cache.get"
    CACHE_PUT: Final = "cache.put"
    CACHE_REMOVE: Final = "cache.remove"
    QUEUE_PUBLISH: Final = "queue.publish"
    QUEUE_CREATE: Final = "queue.create"
    QUEUE_RECEIVE: Final = "queue.receive"
    QUEUE_PROCESS: Final = "queue.process"
    QUEUE_SETTLE: Final = "queue.settle"
    QUEUE_TASK_CELERY: Final = "queue.task.celery"
    GRPC_CLIENT: Final = "grpc.client"
    GRPC_SERVER: Final = "grpc.server"
    RPC_CLIENT: Final = "rpc.client"
    RPC_SERVER: Final = "rpc.server"
    RPC: Final = "rpc"
    MIDDLEWARE_ASGI_SEND: Final = "middleware.asgi.send"
    MIDDLEWARE_ASGI_RECEIVE: Final = "middleware.asgi.receive"
    TEMPLATE_RENDER: Final = "template.render"
    FUNCTION: Final = "function"
    SERIALIZE: Final = "serialize"
    DESERIALIZE: Final = "deserialize"
    VALIDATE: Final = "validation"
    CACHE_FLUSH: Final = "cache.flush"
    WEBSOCKET_CLIENT: Final = "websocket.client"
    WEBSOCKET_RECEIVE: Final = "websocket.receive"
    WEBSOCKET_SEND: Final = "websocket.send"
    GRAPHQL_PARSE: Final = "graphql.parse"
    GRAPHQL_VALIDATE: Final = "graphql.validate"
    GRAPHQL_EXECUTE: Final = "graphql.execute"
    GRAPHQL_RESOLVE: Final = "graphql.resolve"
    GRAPHQL_QUERY: Final = "graphql.query"
    GRAPHQL_MUTATION: Final = "graphql.mutation"
    GRAPHQL_SUBSCRIPTION: Final = "graphql.subscription"
    DEFAULT: Final = "default"


class Source:
    """Sentry ``transaction_info.source`` values."""

    ROUTE: Final = "route"
    URL: Final = "url"
    TASK: Final = "task"
    CUSTOM: Final = "custom"
    COMPONENT: Final = "component"
    VIEW: Final = "view"


#: Sentry SDK name used in payloads (never ``sentry.python``: we are not sentry-sdk).
SDK_NAME: Final = "sentry.python.otel-bridge"

#: Redis commands that are cache reads / writes / removals (upper case).
REDIS_CACHE_GET: Final = frozenset({"GET", "MGET", "GETEX", "HGET", "HMGET", "HGETALL", "GETDEL"})
REDIS_CACHE_PUT: Final = frozenset({"SET", "SETEX", "PSETEX", "SETNX", "MSET", "MSETNX", "HSET"})
REDIS_CACHE_REMOVE: Final = frozenset({"DEL", "UNLINK"})
#: memcached wire commands (``cache.operation`` of a ``db.memcached`` span) that are cache
#: reads / writes / removals.
MEMCACHED_CACHE_GET: Final = frozenset({"get", "gets"})
MEMCACHED_CACHE_PUT: Final = frozenset({"set", "add", "replace", "append", "prepend", "cas"})
MEMCACHED_CACHE_REMOVE: Final = frozenset({"delete"})


_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
#: What Relay accepts as a release and an environment (anything else it rejects).
RELEASE_RULE: Final = "at most 200 characters, no '/', '\\' or control characters, not '.' or '..'"
ENVIRONMENT_RULE: Final = "at most 64 characters, no '/', '\\' or control characters, not 'None'"


def valid_release(text: str) -> bool:
    """Whether Relay accepts ``text`` (already stripped, non-empty) as a release."""
    return (0 < len(text) <= 200 and text not in (".", "..")
            and _BAD_NAME_CHARS.search(text) is None)


def valid_environment(text: str) -> bool:
    """Whether Relay accepts ``text`` (already stripped, non-empty) as an environment."""
    return 0 < len(text) <= 64 and text != "None" and _BAD_NAME_CHARS.search(text) is None


#: Attributes of an ``exception`` span event written by ``capture_errors`` (docs/errors.md):
#: business context under ``capture.<key>``, the capture point's name, Sentry's fingerprint.
CAPTURE_PREFIX: Final = "capture."
CAPTURE_NAME: Final = "capture.name"
FINGERPRINT: Final = "sentry.fingerprint"
#: ``capture.<key>.json``: a JSON object or array, decoded into ``<key>`` of the capture
#: context (structure an OpenTelemetry attribute value cannot hold: pydantic's field errors).
CAPTURE_JSON_SUFFIX: Final = ".json"
#: ``True`` / ``False`` on an ``exception`` span event: the event's ``mechanism.handled``,
#: whatever the span's status (an instrumentation reporting an error its caller may catch).
EXCEPTION_HANDLED: Final = "sentry.exception.handled"
#: On an ``exception`` span event whose ``exception.message`` leaves private data out: the
#: digest (``_mapping.errors.message_digest``) of ``str(exception)``. Another record of that
#: exception with OpenTelemetry's own message (a web framework's) takes the replacement. Any
#: other span event with this digest, ``exception.type`` and ``exception.message`` does too.
EXCEPTION_MESSAGE_DIGEST: Final = "sentry.exception.message_digest"

#: Attributes that are always tags (``set_business_context`` writes the first of each), and
#: their tag names; the others are spellings apps commonly use for the same thing.
BUSINESS_TAGS: Final = {"tenant.id": "tenant", "project.id": "project",
                        "tenant_id": "tenant", "tenant": "tenant",
                        "project_id": "project"}
