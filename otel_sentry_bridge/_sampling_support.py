"""What the worker needs to treat unsampled traces and DSCs (small helpers of the pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from ._dsc import DscDefaults
from ._trace_headers import org_id_from_host
from .config import BridgeConfig
from .conventions import valid_environment, valid_release
from .reports import DropCounter


def dsc_defaults(cfg: BridgeConfig, public_key: str | None) -> DscDefaults:
    """The settings' part of every head DSC (the org id from the DSN host when not set)."""
    org_id = cfg.org_id
    if org_id is None and cfg.dsn:
        try:
            org_id = org_id_from_host(urlsplit(cfg.dsn).hostname)
        except ValueError:
            org_id = None
    release = cfg.release if cfg.release and valid_release(cfg.release) else None
    environment = (cfg.environment if cfg.environment and valid_environment(cfg.environment)
                   else None)
    return DscDefaults(public_key, release, environment, org_id)


def is_local_root(span: ReadableSpan) -> bool:
    """A span without a parent in this process."""
    parent = span.parent
    return parent is None or parent.is_remote


def has_exceptions(root: ReadableSpan, children: Sequence[ReadableSpan]) -> bool:
    """Whether any span of a segment recorded an exception event."""
    for span in (root, *children):
        for event in span.events:
            if event.name == "exception":
                return True
    return False


def count_unsampled(drops: DropCounter, root: ReadableSpan,
                    children: Sequence[ReadableSpan]) -> None:
    """Count a transaction that was recorded but not sampled (client report ``sample_rate``)."""
    drops.record("sample_rate", "transaction", 1)
    drops.record("sample_rate", "span", len(children) + 1)


_CALL_KEYS = ("db.system", "db.system.name", "http.request.method", "http.method")


def orphan_call(root: ReadableSpan) -> bool:
    """A database, cache or HTTP client span without a parent."""
    if root.kind is not SpanKind.CLIENT:
        return False
    attributes = root.attributes or {}
    return any(key in attributes for key in _CALL_KEYS)
