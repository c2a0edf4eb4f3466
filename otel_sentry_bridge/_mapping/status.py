"""OTel status + HTTP / gRPC codes -> Sentry span status (pure)."""

from __future__ import annotations

from opentelemetry.trace import StatusCode

from otel_sentry_bridge.conventions import Attr

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
    return "internal_error"


def derive_status(
    attrs: Attrs, status_code: StatusCode, exception_type: str | None = None
) -> str:
    """First match wins: HTTP code, gRPC code, celery retry, OTel ERROR, else ``ok``."""
    http_code = first_int(attrs, Attr.HTTP_STATUS)
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
