"""OTel status + HTTP / gRPC codes -> Sentry span status (pure)."""

from __future__ import annotations

from opentelemetry.trace import StatusCode

from otel_sentry_bridge.conventions import Attr

from .ops import is_websocket
from .values import Attrs, first, first_int

GRPC_STATUS = (
    "ok", "cancelled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
    "already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
    "aborted", "out_of_range", "unimplemented", "internal_error", "unavailable", "data_loss",
    "unauthenticated",
)
VALID_STATUS = frozenset(GRPC_STATUS)

_HTTP_SPECIFIC = {
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    413: "failed_precondition",
    429: "resource_exhausted",
    499: "cancelled",
    501: "unimplemented",
    503: "unavailable",
    504: "deadline_exceeded",
}


def status_from_http(code: int) -> str:
    """Sentry's ``get_span_status_from_http_code``, with ``unknown`` for codes >= 600."""
    if code < 400:
        return "ok"
    specific = _HTTP_SPECIFIC.get(code)
    if specific is not None:
        return specific
    if code < 500:
        return "invalid_argument"
    if code < 600:
        return "internal_error"
    return "unknown"


def status_from_grpc(code: object) -> str | None:
    """gRPC status number (or name) -> Sentry status."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return GRPC_STATUS[code] if 0 <= code < len(GRPC_STATUS) else "unknown"
    if isinstance(code, str):
        name = code.strip().lower()
        if name.isdigit():
            return status_from_grpc(int(name))
        name = {"canceled": "cancelled", "internal": "internal_error"}.get(name, name)
        return name if name in VALID_STATUS else None
    return None


def _refine_error(attrs: Attrs, exception_type: str | None) -> str:
    hint = first(attrs, Attr.ERROR_TYPE) or exception_type or ""
    hint = hint if isinstance(hint, str) else str(hint)
    lowered = hint.lower()
    if "timeout" in lowered:
        return "deadline_exceeded"
    if "cancelled" in lowered or "canceled" in lowered:
        return "cancelled"
    if "connection" in lowered:
        return "unavailable"
    if "validationerror" in lowered:  # pydantic's, marshmallow's, Django's: bad input
        return "invalid_argument"
    return "internal_error"


#: WebSocket close codes (RFC 6455 section 7.4.1, IANA registry 3000-3999) -> Sentry status.
_CLOSE_CODES = {
    1000: "ok", 1001: "ok", 1005: "ok", 1002: "invalid_argument", 1003: "invalid_argument",
    1006: "aborted", 1007: "invalid_argument", 1008: "permission_denied",
    1009: "failed_precondition", 1010: "unimplemented", 1011: "internal_error",
    1012: "unavailable", 1013: "unavailable", 1014: "internal_error", 1015: "unavailable",
    3000: "unauthenticated", 3003: "permission_denied", 3008: "deadline_exceeded",
}


def status_from_close_code(code: int) -> str:
    """A WebSocket close code -> Sentry status. Application codes 4400-4599 follow the
    graphql-ws convention (4000 + an HTTP status); other codes are ``unknown``."""
    known = _CLOSE_CODES.get(code)
    if known is not None:
        return known
    if 4400 <= code <= 4599:
        return status_from_http(code - 4000)
    return "unknown"


def _websocket_status(attrs: Attrs, http_code: int | None, status_code: StatusCode) -> str | None:
    """A refused handshake's HTTP status, else an error status's (whatever the close code: a
    server closes a failed handler's connection with 1011, a cancelled one's too), else the
    close code's. HTTP codes below 400 say nothing about a WebSocket connection."""
    if http_code is not None and http_code >= 400:
        return status_from_http(http_code)
    close = first_int(attrs, Attr.WEBSOCKET_CLOSE_CODE)
    if close is None or status_code is StatusCode.ERROR:
        return None
    return status_from_close_code(close)


def derive_status(
    attrs: Attrs, status_code: StatusCode, exception_type: str | None = None
) -> str:
    """First match wins: HTTP code (a WebSocket's close code), gRPC code, celery retry, OTel
    ERROR, else ``ok``."""
    http_code = first_int(attrs, Attr.HTTP_STATUS)
    if is_websocket(attrs):
        found = _websocket_status(attrs, http_code, status_code)
        if found is not None:
            return found
        http_code = None
    if http_code is not None and http_code > 0:
        return status_from_http(http_code)
    grpc = first(attrs, Attr.RPC_STATUS)
    if grpc is not None:
        mapped = status_from_grpc(grpc)
        if mapped is not None:
            return mapped
    if attrs.get("celery.retry.reason") is not None or attrs.get("celery.state") == "RETRY":
        return "aborted"
    if status_code is StatusCode.ERROR:
        return _refine_error(attrs, exception_type)
    return "ok"
