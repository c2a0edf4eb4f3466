"""Envelope bytes and the queued-envelope record (pure serialization; no sentry-sdk import).

The format is the one sentry-sdk's ``Envelope.serialize`` writes; a contract test parses what
these functions produce with sentry-sdk's own ``Envelope.deserialize``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from .conventions import SDK_NAME
from .version import __version__


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits that slipped through: send it as text
        return orjson.dumps(_json_safe(value), default=str, option=orjson.OPT_NON_STR_KEYS)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if type(value) is int and not -(1 << 63) <= value < 1 << 64:
        return str(value)
    return value


@dataclass(eq=False)
class Outgoing:
    """One serialized envelope waiting to be sent."""

    body: bytes
    category: str
    quantity: int
    spans: int
    attempts: int = 0
    #: counted as lost at shutdown while its request was still pending: never count it again
    abandoned: bool = False
    #: ``body`` is already gzipped (only Sentry is a destination).
    compressed: bool = False
    #: envelopes queued only once this one is done (a run's closing check-in after its
    #: ``in_progress``): the sender threads keep their order, the caller never waits
    followers: list[Outgoing] | None = None


_SDK_INFO = {"name": SDK_NAME, "version": __version__}


def build_envelope(
    event: dict[str, Any], item_type: str, dsn: str | None, trace: dict[str, str],
) -> bytes:
    """Serialize one event/transaction into envelope bytes.

    Written directly with orjson (this is the hot path: once per transaction); the format is
    the one sentry-sdk's ``Envelope.serialize`` writes, which a contract test checks by parsing
    the result with sentry-sdk's own ``Envelope.deserialize``. ``trace``: the trace's DSC, the
    envelope's ``trace`` header (``_dsc.py``: the same for every envelope of a trace).
    """
    headers: dict[str, Any] = {
        "event_id": event.get("event_id"),
        "sent_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "sdk": _SDK_INFO,
        "trace": trace,
    }
    if dsn:
        headers["dsn"] = dsn
    payload = _dumps(event)
    item = {"type": item_type, "content_type": "application/json", "length": len(payload)}
    return b"".join((_dumps(headers), b"\n", _dumps(item), b"\n", payload, b"\n"))


def build_check_in_envelope(
    payload: dict[str, Any], dsn: str | None, trace: dict[str, str] | None = None,
) -> bytes:
    """One ``check_in`` item (Sentry Crons); ``trace``: the DSC of the job's trace."""
    headers: dict[str, Any] = {
        "sent_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "sdk": _SDK_INFO,
    }
    if trace:
        headers["trace"] = trace
    if dsn:
        headers["dsn"] = dsn
    body = _dumps(payload)
    item = {"type": "check_in", "content_type": "application/json", "length": len(body)}
    return b"".join((_dumps(headers), b"\n", _dumps(item), b"\n", body, b"\n"))


#: Content types of the ``{"version": 2, "items": [...]}`` container items.
BATCH_CONTENT_TYPES = {"log": "application/vnd.sentry.items.log+json",
                       "trace_metric": "application/vnd.sentry.items.trace-metric+json"}


def build_batch_envelope(item_type: str, entries: list[dict[str, Any]], dsn: str | None) -> bytes:
    """One container item (``log``, ``trace_metric``) holding ``entries``."""
    headers: dict[str, Any] = {
        "sent_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "sdk": _SDK_INFO,
    }
    if dsn:
        headers["dsn"] = dsn
    payload = _dumps({"version": 2, "items": entries})
    item = {"type": item_type, "item_count": len(entries),
            "content_type": BATCH_CONTENT_TYPES[item_type], "length": len(payload)}
    return b"".join((_dumps(headers), b"\n", _dumps(item), b"\n", payload, b"\n"))


def build_client_report(entries: list[dict[str, object]], dsn: str | None) -> bytes:
    """A client-report envelope."""
    payload = _dumps({"timestamp": round(time.time(), 3), "discarded_events": entries})
    headers: dict[str, Any] = {"sent_at": datetime.now(timezone.utc).isoformat()}
    if dsn:
        headers["dsn"] = dsn
    item = {"type": "client_report", "length": len(payload)}
    return b"".join((_dumps(headers), b"\n", _dumps(item), b"\n", payload, b"\n"))
