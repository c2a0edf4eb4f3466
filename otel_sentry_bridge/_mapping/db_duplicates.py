"""One query, one span: SQLAlchemy's span beside the driver's span of the same query (pure).

OpenTelemetry's SQLAlchemy instrumentation starts its query span without making it current.
When the driver is instrumented too (psycopg, psycopg2, asyncpg...: ``opentelemetry-bootstrap``
installs both instrumentations, ``opentelemetry-instrument`` loads both), the driver's span of
the same statement is therefore a *sibling* of SQLAlchemy's, not its child, and Sentry's Queries
page would count every query twice. This module finds those pairs; the transaction keeps the
driver's span (it carries the recorded exception, so the error event points at it) and drops
SQLAlchemy's.

A pair: an ``auto.otel.sqlalchemy`` ``db`` span and another origin's ``db`` span with the same
parent, ``db.system`` and statement, the driver's span inside the SQLAlchemy span's time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from otel_sentry_bridge.conventions import Op

#: The origin the bridge derives for OpenTelemetry's SQLAlchemy instrumentation.
SQLALCHEMY_ORIGIN = "auto.otel.sqlalchemy"

_Key = tuple[Any, Any, Any]


def _key(span: dict[str, Any]) -> _Key | None:
    data = span["data"]
    statement = data.get("db.query.text")
    if span["op"] != Op.DB or not isinstance(statement, str):
        return None
    return span["parent_span_id"], data.get("db.system"), statement


def orm_duplicates(spans: Sequence[dict[str, Any]], keep: Collection[str] = ()) -> set[str]:
    """Span ids of the SQLAlchemy query spans a driver span of the same query duplicates.

    ``keep``: ids never to drop (spans whose events become error events).
    """
    if not any(span["origin"] == SQLALCHEMY_ORIGIN for span in spans):
        return set()  # the common case: one cheap pass
    orm: dict[_Key, list[dict[str, Any]]] = {}
    drivers: dict[_Key, list[dict[str, Any]]] = {}
    for span in spans:
        key = _key(span)
        if key is None:
            continue
        if span["origin"] != SQLALCHEMY_ORIGIN:
            drivers.setdefault(key, []).append(span)
        elif span["span_id"] not in keep:
            orm.setdefault(key, []).append(span)
    out: set[str] = set()
    for key, orm_spans in orm.items():
        candidates = drivers.get(key)
        if not candidates:
            continue
        # both in start order: one pass (a loop of 1000 equal queries stays linear)
        candidates.sort(key=_start)
        index = 0
        for span in sorted(orm_spans, key=_start):
            start = span["start_timestamp"]
            while index < len(candidates) and candidates[index]["start_timestamp"] < start:
                index += 1  # began before this (and every later) SQLAlchemy span
            if index < len(candidates) and candidates[index]["timestamp"] <= span["timestamp"]:
                out.add(span["span_id"])
                index += 1
    return out


def _start(span: dict[str, Any]) -> Any:
    return span["start_timestamp"]
