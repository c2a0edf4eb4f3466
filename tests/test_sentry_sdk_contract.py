"""The sentry-sdk pieces the transport relies on. A change in sentry-sdk fails here first."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sentry_sdk.envelope import Envelope, Item, PayloadRef
from sentry_sdk.transport import _parse_rate_limits
from sentry_sdk.utils import Dsn


def test_private_parse_rate_limits_shape() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    parsed = list(_parse_rate_limits("60:transaction;error:org, 5::key, bogus", now=now))
    assert parsed == [
        ("transaction", now + timedelta(seconds=60)),
        ("error", now + timedelta(seconds=60)),
        (None, now + timedelta(seconds=5)),
    ]


def test_dsn_and_auth() -> None:
    dsn = Dsn("https://pub@o7.ingest.example.com:8443/prefix/42")
    assert (dsn.public_key, dsn.project_id, dsn.host, dsn.port) == (
        "pub", "42", "o7.ingest.example.com", 8443)
    auth = dsn.to_auth("sentry.python.otel-bridge/0.1.0")
    assert auth.get_api_url() == "https://o7.ingest.example.com:8443/prefix/api/42/envelope/"
    header = auth.to_header()
    assert "sentry_key=pub" in header and "sentry_version=7" in header
    assert "sentry_client=sentry.python.otel-bridge/0.1.0" in header


def test_envelope_with_bytes_payload() -> None:
    envelope = Envelope(headers={"event_id": "a" * 32})
    envelope.add_item(Item(payload=PayloadRef(bytes=b'{"x":1}'), type="transaction"))
    data = envelope.serialize()
    lines = data.split(b"\n")
    assert lines[0] == b'{"event_id":"' + b"a" * 32 + b'"}'
    assert b'"type":"transaction"' in lines[1] and b'"length":7' in lines[1]
    assert lines[2] == b'{"x":1}'


def test_our_envelopes_parse_with_sentry_sdk() -> None:
    from otel_sentry_bridge.envelopes import build_client_report, build_envelope

    report = Envelope.deserialize(build_client_report([{"reason": "x", "category": "span",
                                                        "quantity": 2}], None))
    assert report.items[0].type == "client_report"
    assert json.loads(report.items[0].payload.get_bytes())["discarded_events"][0]["quantity"] == 2

    event = {"event_id": "b" * 32, "type": "transaction", "transaction": "GET /x",
             "transaction_info": {"source": "route"}, "release": "r1",
             "contexts": {"trace": {"trace_id": "c" * 32, "span_id": "d" * 16}},
             "spans": [{"description": "line\nbreak é"}]}
    dsc = {"trace_id": "c" * 32, "public_key": "pub", "release": "r1",
           "transaction": "GET /x", "sampled": "true"}
    data = build_envelope(event, "transaction", "https://pub@example.com/1", dsc)
    envelope = Envelope.deserialize(data)
    assert envelope.headers["event_id"] == "b" * 32
    assert envelope.headers["trace"] == dsc
    (item,) = envelope.items
    assert item.type == "transaction"
    assert item.payload.json == event


def test_what_the_coexistence_hooks_and_the_profiler_use() -> None:
    """Names _sdk_hooks.py and _profiling.py take from sentry-sdk (some private)."""
    import inspect

    import sentry_sdk
    from sentry_sdk.client import _Client
    from sentry_sdk.profiler import continuous_profiler
    from sentry_sdk.scope import register_external_propagation_context

    assert callable(register_external_propagation_context)
    assert inspect.isgeneratorfunction(sentry_sdk.Scope.iter_trace_propagation_headers)
    assert "event" in inspect.signature(_Client.capture_event).parameters
    for name in ("start_profiler", "stop_profiler", "get_profiler_id",
                 "try_profile_lifecycle_trace_start"):
        assert callable(getattr(continuous_profiler, name)), name
    assert hasattr(continuous_profiler, "_scheduler")  # its teardown() ends the trace lifecycle
