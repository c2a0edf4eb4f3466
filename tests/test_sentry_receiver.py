"""Tests of the loopback Sentry ingest server and the payload conformance checks."""

from __future__ import annotations

import copy
import gzip
import http.client
import json
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sentry_receiver import (
    SPAN_STATUSES,
    EnvelopeParseError,
    Item,
    SentryReceiver,
    insights_lint,
    parse_envelope,
    validate_envelope,
    validate_event,
    validate_item,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT_ID = "00f067aa0ba902b7"
LOG_CT = "application/vnd.sentry.items.log+json"
METRIC_CT = "application/vnd.sentry.items.trace-metric+json"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def auth_header(key: str = "publickey", version: str = "7") -> dict[str, str]:
    return {
        "X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version={version}, "
        "sentry_client=sentry.python.otel-bridge/0.1.0"
    }


def post(
    receiver: SentryReceiver,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/api/123/envelope/",
    timeout: float = 2.0,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=timeout)
    try:
        all_headers = {"Content-Type": "application/x-sentry-envelope"}
        all_headers.update(auth_header() if headers is None else headers)
        conn.request("POST", path, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def envelope(
    items: list[tuple[dict[str, Any], Any]],
    header: dict[str, Any] | None = None,
    *,
    with_length: bool = True,
    trailing_newline: bool = True,
) -> bytes:
    lines = [json.dumps(header if header is not None else {}).encode()]
    for item_headers, payload in items:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdr = dict(item_headers)
        if with_length:
            hdr["length"] = len(raw)
        lines += [json.dumps(hdr).encode(), raw]
    body = b"\n".join(lines)
    return body + b"\n" if trailing_newline else body


def make_transaction(**overrides: Any) -> dict[str, Any]:
    now = time.time()
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "type": "transaction",
        "platform": "python",
        "transaction": "GET /orders/<order_id>",
        "transaction_info": {"source": "route"},
        "start_timestamp": now - 0.25,
        "timestamp": now,
        "release": "shop@1.4.2",
        "environment": "production",
        "sdk": {"name": "sentry.python.otel-bridge", "version": "0.1.0"},
        "tags": {"http.status_code": "200"},
        "request": {"method": "GET", "url": "https://shop.example.com/orders/7"},
        "contexts": {
            "trace": {
                "trace_id": TRACE_ID,
                "span_id": ROOT_ID,
                "op": "http.server",
                "status": "ok",
                "origin": "auto.otel.flask",
                "data": {"http.request.method": "GET", "http.response.status_code": 200},
            },
            "response": {"status_code": 200},
        },
        "spans": [
            span("a000000000000001", "db", "SELECT orders.id FROM orders WHERE id = %(id)s",
                 now - 0.24, now - 0.22, data={"db.system": "postgresql", "db.name": "shop"}),
            span("a000000000000002", "http.client", "GET https://api.stripe.com/v1/charges/ch_1",
                 now - 0.2, now - 0.1, status="not_found", tags={"http.status_code": "404"},
                 data={"http.request.method": "GET", "http.response.status_code": 404}),
            span("a000000000000003", "cache.get", "order:7", now - 0.09, now - 0.08,
                 data={"cache.key": ["order:7"], "cache.hit": True, "cache.item_size": 123}),
            span("a000000000000004", "db.redis", "GET 'order:7'", now - 0.09, now - 0.08,
                 parent="a000000000000003", data={"db.system": "redis"}),
            span("a000000000000005", "queue.publish", "tasks.send_receipt", now - 0.07,
                 now - 0.06, data={"messaging.system": "redis",
                                   "messaging.destination.name": "celery",
                                   "messaging.message.id": "0f1e2d3c",
                                   "messaging.message.receive.latency": 12.5}),
        ],
    }
    event.update(overrides)
    return event


def span(
    span_id: str,
    op: str,
    description: str,
    start: float,
    end: float,
    *,
    parent: str = ROOT_ID,
    status: str = "ok",
    data: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": span_id,
        "parent_span_id": parent,
        "op": op,
        "description": description,
        "start_timestamp": start,
        "timestamp": end,
        "status": status,
        "origin": "auto.otel.test",
        "data": data or {},
    }
    if tags is not None:
        result["tags"] = tags
    return result


def make_error_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "level": "error",
        "platform": "python",
        "timestamp": time.time(),
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": "bad order id",
                    "mechanism": {"type": "auto.otel.flask", "handled": False},
                    "stacktrace": {
                        "frames": [{"filename": "app.py", "function": "view", "lineno": 10}]
                    },
                }
            ]
        },
        "contexts": {"trace": {"trace_id": TRACE_ID, "span_id": ROOT_ID}},
    }
    event.update(overrides)
    return event


def txn_envelope(event: dict[str, Any], **kwargs: Any) -> bytes:
    return envelope([({"type": "transaction"}, event)], {"event_id": event["event_id"]}, **kwargs)


def client_report(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "timestamp": time.time(),
        "discarded_events": [
            {"reason": "sample_rate", "category": "transaction", "quantity": 3},
            {"reason": "event_processor", "category": "span", "quantity": 12},
        ],
    }
    report.update(overrides)
    return report


def item(type_: str, payload: Any, **headers: Any) -> Item:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Item(headers={"type": type_, **headers}, payload=raw)


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with SentryReceiver() as r:
        yield r


# ------------------------------------------------------------------------------------------------
# basics and parsing
# ------------------------------------------------------------------------------------------------


def test_dsn_url_and_lifecycle() -> None:
    r = SentryReceiver(key="k1")
    with pytest.raises(RuntimeError):
        _ = r.port
    with r:
        assert r.running
        assert r.port > 0
        assert r.url == f"http://127.0.0.1:{r.port}"
        assert r.dsn() == f"http://k1@127.0.0.1:{r.port}/123"
        assert r.dsn(project_id=7, key="other") == f"http://other@127.0.0.1:{r.port}/7"
    assert not r.running
    r.stop()  # idempotent


def test_parse_envelope_variants() -> None:
    payload = b'{"a":\n1}'  # a newline inside a length-delimited payload
    body = b'{"event_id":"x"}\n{"type":"attachment","length":8}\n' + payload + b"\n"
    headers, items = parse_envelope(body)
    assert headers == {"event_id": "x"}
    assert items[0].payload == payload and items[0].json == {"a": 1}

    # no length, no final newline; blank lines and zero-length payloads tolerated
    body = b'{}\n{"type":"client_report"}\n{"x":1}\n\n{"type":"a","length":0}\n\n{"type":"b"}\n{}'
    _, items = parse_envelope(body)
    assert [i.type for i in items] == ["client_report", "a", "b"]
    assert items[0].json == {"x": 1} and items[1].payload == b"" and items[1].json is None
    assert items[2].json == {}
    # length-delimited last item without trailing newline, and with extra trailing newlines
    assert parse_envelope(b'{}\n{"type":"a","length":2}\n{}')[1][0].json == {}
    assert len(parse_envelope(b'{}\n{"type":"a","length":2}\n{}\n\n\n')[1]) == 1
    assert parse_envelope(b"{}")[1] == []

    for bad, message in [
        (b"", "empty"),
        (b"not json\n", "envelope header"),
        (b"[]\n", "not a JSON object"),
        (b'{}\n{"length":2}\n{}\n', "no string 'type'"),
        (b'{}\n{"type":"a","length":10}\n{}\n', "truncated"),
        (b'{}\n{"type":"a","length":1}\n{}\n', "not followed by a newline"),
        (b'{}\n{"type":"a","length":-1}\n{}\n', "invalid length"),
    ]:
        with pytest.raises(EnvelopeParseError, match=message):
            parse_envelope(bad)


def test_post_plain_json_envelope(receiver: SentryReceiver) -> None:
    event = make_transaction()
    report = client_report()
    body = envelope(
        [({"type": "transaction"}, event), ({"type": "client_report"}, report)],
        {"event_id": event["event_id"], "sent_at": "2026-01-01T00:00:01.000000Z"},
    )
    resp = post(receiver, body)
    assert resp.status == 200
    assert resp.json == {"id": event["event_id"]}
    assert receiver.request_count == 1

    [env] = receiver.envelopes
    assert env.headers["event_id"] == event["event_id"]
    assert env.event_id == event["event_id"]
    assert env.project_id == 123
    assert env.item_types == ["transaction", "client_report"]
    assert env.items[0].headers == {"type": "transaction", "length": len(env.items[0].payload)}
    assert env.items[0].json == event
    assert json.loads(env.items[0].payload) == event
    assert env.request_headers["x-sentry-auth"].startswith("Sentry sentry_key=publickey")
    assert env.status == 200
    assert receiver.transactions() == [event]
    assert receiver.client_reports() == [report]
    assert receiver.events() == []
    assert [i.type for i in receiver.items()] == ["transaction", "client_report"]
    assert receiver.items("client_report")[0].json == report
    receiver.assert_no_problems()


def test_post_gzip_with_urllib(receiver: SentryReceiver) -> None:
    event = make_transaction()
    body = gzip.compress(txn_envelope(event, with_length=False, trailing_newline=False))
    request = urllib.request.Request(
        receiver.envelope_url(42),
        data=body,
        headers={**auth_header(), "Content-Encoding": "gzip"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=2) as resp:
        assert resp.status == 200
        assert json.loads(resp.read()) == {"id": event["event_id"]}
    [env] = receiver.envelopes
    assert env.project_id == 42
    assert env.request_headers["content-encoding"] == "gzip"
    assert receiver.wait_for_transactions(1, timeout=1) == [event]
    receiver.assert_no_problems()


def test_post_deflate_and_chunked(receiver: SentryReceiver) -> None:
    event = make_transaction()
    resp = post(receiver, zlib.compress(txn_envelope(event)),
                headers={**auth_header(), "Content-Encoding": "deflate"})
    assert resp.status == 200

    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=2)
    try:
        body = txn_envelope(make_transaction())
        conn.request("POST", "/api/1/envelope/", body=iter([body[:10], body[10:]]),
                     headers=auth_header(), encode_chunked=True)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert len(receiver.transactions()) == 2
    receiver.assert_no_problems()


def test_auth(receiver: SentryReceiver) -> None:
    body = txn_envelope(make_transaction())
    assert post(receiver, body, headers=auth_header(key="wrong")).status == 401
    assert post(receiver, body, headers=auth_header(version="6")).status == 401
    assert post(receiver, body, headers={}).status == 401
    assert post(receiver, body, headers={}, path="/api/123/envelope/?sentry_key=nope").status == 401
    assert receiver.envelopes == [] and receiver.rejected == []
    failures = receiver.auth_failures
    assert len(failures) == 4
    assert "'wrong'" in failures[0].reason and "sentry_version" in failures[1].reason

    # real Sentry also accepts the key as a query parameter
    ok = post(receiver, body, headers={},
              path="/api/123/envelope/?sentry_key=publickey&sentry_version=7")
    assert ok.status == 200
    assert post(receiver, body, path="/api/123/store/").status == 404
    assert post(receiver, body, path="/api/abc/envelope/").status == 404
    assert receiver.request_count == 7
    assert len(receiver.envelopes) == 1
    receiver.assert_no_problems()


def test_malformed_envelope_is_400_and_a_problem(receiver: SentryReceiver) -> None:
    assert post(receiver, b'{}\n{"type":"transaction","length":500}\n{}\n').status == 400
    resp = post(receiver, b"garbage", headers={**auth_header(), "Content-Encoding": "gzip"})
    assert resp.status == 400
    resp = post(receiver, b"{}", headers={**auth_header(), "Content-Encoding": "zstd"})
    assert resp.status == 415
    problems = receiver.problems
    assert len(problems) == 3
    assert "truncated" in problems[0] and "decompress" in problems[1] and "zstd" in problems[2]
    assert receiver.envelopes == []


# ------------------------------------------------------------------------------------------------
# transaction / error event validation
# ------------------------------------------------------------------------------------------------


def test_valid_transaction_has_no_problems(receiver: SentryReceiver) -> None:
    event = make_transaction()
    assert validate_event(event) == []
    assert insights_lint(event) == []
    post(receiver, txn_envelope(event))
    assert receiver.wait_for_transactions(1, timeout=1) == [event]
    receiver.assert_no_problems()


def test_valid_error_event_has_no_problems(receiver: SentryReceiver) -> None:
    event = make_error_event()
    assert validate_event(event) == []
    post(receiver, envelope([({"type": "event"}, event)], {"event_id": event["event_id"]}))
    assert receiver.events() == [event]
    receiver.assert_no_problems()


def _set_trace_status_error(e: dict[str, Any]) -> None:
    e["contexts"]["trace"]["status"] = "error"


def _orphan_span(e: dict[str, Any]) -> None:
    e["spans"][0]["parent_span_id"] = "ffffffffffffffff"


def _cache_hit_string(e: dict[str, Any]) -> None:
    e["spans"][2]["data"]["cache.hit"] = "true"


def _no_start_timestamp(e: dict[str, Any]) -> None:
    del e["start_timestamp"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set_trace_status_error, "expected a trace status"),
        (_orphan_span, "neither the root nor a span of this event"),
        (_cache_hit_string, "data['cache.hit'] 'true' must be a JSON boolean"),
        (_no_start_timestamp, "start_timestamp hard-required"),
    ],
    ids=["status-error", "orphan-parent", "cache-hit-string", "no-start-timestamp"],
)
def test_invalid_transactions_are_flagged(
    receiver: SentryReceiver, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    event = make_transaction()
    mutate(event)
    resp = post(receiver, txn_envelope(event))
    assert resp.status == 200  # problems never change the answer
    problems = receiver.problems
    assert any(expected in p for p in problems), problems
    assert all(event["event_id"] in p for p in problems), problems
    with pytest.raises(AssertionError, match=event["event_id"]):
        receiver.assert_no_problems()
    assert len(receiver.transactions()) == 1


def test_relay_exception_message_is_short() -> None:
    event = make_transaction()
    del event["contexts"]["trace"]
    [relay_problem, *_] = validate_event(event)
    assert "missing valid trace context" in relay_problem
    assert "\n" not in relay_problem  # Relay's Rust backtrace is stripped


def _tx_span(index: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        e["spans"][index].update(changes)

    return mutate


def _start_after_end(e: dict[str, Any]) -> None:
    e["spans"][0]["start_timestamp"] = e["spans"][0]["timestamp"] + 1


def _tx_span_data(index: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        e["spans"][index]["data"].update({k.replace("__", "."): v for k, v in changes.items()})

    return mutate


def _tx_del_span_data(index: int, key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        del e["spans"][index]["data"][key]

    return mutate


def _tx(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        e.update(changes)

    return mutate


def _tx_trace(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        e["contexts"]["trace"].update(changes)

    return mutate


def _text_response_status(e: dict[str, Any]) -> None:
    e["contexts"]["response"]["status_code"] = "200"


def _duplicate_span(e: dict[str, Any]) -> None:
    e["spans"].append(copy.deepcopy(e["spans"][0]))


def _span_cycle(e: dict[str, Any]) -> None:
    e["spans"][2]["parent_span_id"] = "a000000000000004"


def _del_span_end(e: dict[str, Any]) -> None:
    del e["spans"][0]["timestamp"]


LINT_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("platform", _tx(platform="otel"), "platform is 'otel'"),
    ("empty-name", _tx(transaction=""), "transaction name is missing"),
    ("source", _tx(transaction_info={"source": "sanitized"}), "transaction_info.source"),
    ("trace-status-missing", _tx_trace(status=None), "contexts.trace.status is missing"),
    ("trace-status-int", _tx_trace(status=0), "not a Sentry span status"),
    ("trace-op", _tx_trace(op=""), "contexts.trace.op is missing"),
    ("zero-trace-id", _tx_trace(trace_id="0" * 32), "not all zero"),
    ("origin", _tx_trace(origin="OTel Flask"), "must match"),
    ("response-status", _text_response_status, "contexts.response.status_code"),
    ("request-method", _tx(request={"url": "https://x"}), "request.method is missing"),
    ("long-tag", _tx(tags={"k": "v" * 201}), "201 chars"),
    ("tag-int", _tx(tags={"http.status_code": 200}), "must be a string"),
    ("span-trace-id", _tx_span(0, trace_id="1" * 32), "differs from the transaction"),
    ("span-id-root", _tx_span(0, span_id=ROOT_ID), "equals the root span id"),
    ("span-id-format", _tx_span(0, span_id="A000000000000001"), "16 lowercase hex"),
    ("duplicate-span", _duplicate_span, "duplicate span_id"),
    ("no-parent", _tx_span(0, parent_span_id=None), "parent_span_id is missing"),
    ("cycle", _span_cycle, "cycle"),
    ("no-end", _del_span_end, "timestamp missing"),
    ("start-after-end", _start_after_end, "> timestamp"),
    ("span-status", _tx_span(0, status="error"), "'error' is not a Sentry span status"),
    ("span-op", _tx_span(0, op=None), "op is missing"),
    ("http-description", _tx_span(1, description="stripe call"), "'METHOD URL'"),
    ("http-method", _tx_del_span_data(1, "http.request.method"), "http.request.method"),
    ("http-code-str", _tx_span_data(1, http__response__status_code="404"), "integer"),
    ("http-code-mismatch", _tx_span_data(1, http__response__status_code=500), "!="),
    ("http-tag-int", _tx_span(1, tags={"http.status_code": 404}), "must be a string"),
    ("db-system", _tx_del_span_data(0, "db.system"), "db.system"),
    ("db-description", _tx_span(0, description=""), "query as description"),
    ("cache-key", _tx_span_data(2, cache__key="order:7"), "cache.key"),
    ("cache-size", _tx_span_data(2, cache__item_size="123"), "cache.item_size"),
    ("queue-id", _tx_span_data(4, messaging__message__id=" "), "messaging.message.id"),
    ("queue-destination", _tx_del_span_data(4, "messaging.destination.name"),
     "messaging.destination.name"),
    ("queue-latency", _tx_span_data(4, messaging__message__receive__latency="12"), "number"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in LINT_CASES],
                         ids=[c[0] for c in LINT_CASES])
def test_insights_lint_flags(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    event = make_transaction()
    mutate(event)
    problems = insights_lint(event)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(f"transaction {event['event_id']}: ") for p in problems)


def test_insights_lint_allowed_variants() -> None:
    event = make_transaction()
    event["spans"][2]["data"].pop("cache.hit")  # unknowable for pymemcache (§4.5)
    event["spans"][3]["description"] = ""  # db.redis is not a Queries span
    event["spans"].append(span("a000000000000006", "queue.submit.celery", "tasks.x",
                               event["timestamp"] - 0.05, event["timestamp"] - 0.04))
    event["spans"].append(span("a000000000000007", "db.connect", "connect",
                               event["timestamp"] - 0.05, event["timestamp"] - 0.04))
    event["tags"] = [["http.status_code", "200"]]  # pair-list form
    assert insights_lint(event) == []
    assert {"ok", "internal_error", "unknown"} <= SPAN_STATUSES and "error" not in SPAN_STATUSES


def _no_frames(e: dict[str, Any]) -> None:
    e["exception"]["values"][0]["stacktrace"]["frames"] = []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_no_frames, "expected a non-empty value"),
        (lambda e: e.pop("level"), "level is missing"),
        (lambda e: e.update(exception={"values": []}), "exception.values is missing or empty"),
        (lambda e: e["exception"]["values"][0].pop("type"), ".type is missing"),
        (lambda e: e.update(contexts={}), "contexts.trace.trace_id"),
        (lambda e: e["contexts"]["trace"].update(span_id="xyz"), "contexts.trace.span_id"),
    ],
)
def test_invalid_error_events(mutate: Callable[[dict[str, Any]], Any], expected: str) -> None:
    event = make_error_event()
    mutate(event)
    problems = validate_event(event)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(f"event {event['event_id']}: ") for p in problems)


# ------------------------------------------------------------------------------------------------
# other item types and envelope headers
# ------------------------------------------------------------------------------------------------


def test_client_report_shape(receiver: SentryReceiver) -> None:
    assert validate_item(item("client_report", client_report())) == []
    bad = client_report(
        timestamp="2026-01-01T00:00:00Z",
        discarded_events=[
            {"reason": "sample_rate", "category": "transaction", "quantity": 0},
            {"reason": "sample_rate", "quantity": 1},
            {"reason": "", "category": "span", "quantity": True},
            "x",
        ],
    )
    problems = validate_item(item("client_report", bad))
    text = "\n".join(problems)
    assert "timestamp '2026-01-01T00:00:00Z' must be a number" in text
    assert "discarded_events[0].quantity 0" in text
    assert "discarded_events[1].category None" in text
    assert "discarded_events[2].reason ''" in text and "discarded_events[2].quantity True" in text
    assert "discarded_events[3] is not an object" in text
    assert validate_item(item("client_report", {"timestamp": 1.0}))  # no discarded_events

    post(receiver, envelope([({"type": "client_report"}, bad)], with_length=False))
    assert receiver.client_reports() == [bad]
    assert len(receiver.problems) == len(problems)


def test_check_in_shape() -> None:
    check_in = {
        "check_in_id": uuid.uuid4().hex,
        "monitor_slug": "nightly-report",
        "status": "in_progress",
        "monitor_config": {"schedule": {"type": "crontab", "value": "0 3 * * *"}},
        "contexts": {"trace": {"trace_id": TRACE_ID, "span_id": ROOT_ID}},
    }
    assert validate_item(item("check_in", check_in)) == []
    done = {**check_in, "status": "ok", "duration": 1.5,
            "monitor_config": {"schedule": {"type": "interval", "value": 5, "unit": "minute"}}}
    assert validate_item(item("check_in", done)) == []
    bad = {**check_in, "check_in_id": "123", "status": "done", "duration": "1s",
           "monitor_config": {"schedule": {"type": "interval", "value": 5, "unit": "second"}}}
    text = "\n".join(validate_item(item("check_in", bad)))
    for expected in ("check_in_id '123'", "status 'done'", "duration '1s'", "unit 'second'"):
        assert expected in text


def _log_item(**changes: Any) -> Item:
    record = {
        "timestamp": time.time(),
        "trace_id": TRACE_ID,
        "span_id": "a000000000000001",
        "level": "warn",
        "body": "payment declined for order 7",
        "attributes": {
            "sentry.severity_number": {"value": 13, "type": "integer"},
            "sentry.environment": {"value": "production", "type": "string"},
            "ratio": {"value": 0.5, "type": "double"},
            "flag": {"value": True, "type": "boolean"},
            "ids": {"value": [1, 2], "type": "array"},
        },
    }
    record.update(changes)
    return item("log", {"version": 2, "items": [record]}, item_count=1, content_type=LOG_CT)


def test_log_and_trace_metric_shapes() -> None:
    assert validate_item(_log_item()) == []
    text = "\n".join(validate_item(_log_item(
        level="warning", trace_id=None, body=1,
        attributes={"a": {"value": "1", "type": "integer"}, "b": 3, "c": {"value": 1, "type": "x"}},
    )))
    for expected in ("level 'warning'", "trace_id None", "body must be a string",
                     "does not match type 'integer'", "['b'] must be {value, type}",
                     "type 'x' not in"):
        assert expected in text, text

    log = _log_item()
    log.headers.update(item_count=2, content_type="application/json")
    text = "\n".join(validate_item(log))
    assert "item_count 2 != len(items) 1" in text and "content_type 'application/json'" in text
    assert "payload version" in "\n".join(validate_item(item(
        "log", {"items": [{}]}, item_count=1, content_type=LOG_CT)))

    metric = {"timestamp": time.time(), "trace_id": TRACE_ID, "name": "orders.created",
              "type": "counter", "value": 1.0, "unit": "none",
              "attributes": {"region": {"value": "eu", "type": "string"}}}
    good = item("trace_metric", {"version": 2, "items": [metric]}, item_count=1,
                content_type=METRIC_CT)
    assert validate_item(good) == []
    bad = item("trace_metric", {"version": 2, "items": [{**metric, "type": "set", "value": "1"}]},
               item_count=1, content_type=METRIC_CT)
    text = "\n".join(validate_item(bad))
    assert "type 'set'" in text and "value '1'" in text


def test_unknown_item_type_is_a_problem(receiver: SentryReceiver) -> None:
    assert "unknown/unexpected item type 'statsd'" in validate_item(item("statsd", b"a:1|c"))[0]
    post(receiver, envelope([({"type": "statsd"}, b"a:1|c")]))
    assert len(receiver.envelopes) == 1
    assert "statsd" in receiver.problems[0]


def test_envelope_header_checks() -> None:
    event = make_transaction()
    items = [item("transaction", event)]
    dsc = {"trace_id": TRACE_ID, "public_key": "publickey", "sample_rate": "1.0",
           "sampled": "true", "transaction": event["transaction"]}
    assert validate_envelope({"event_id": event["event_id"], "trace": dsc}, items,
                             public_key="publickey") == []
    bad_dsc = {**dsc, "public_key": "other", "trace_id": "1" * 32, "sample_rate": 1.0}
    text = "\n".join(validate_envelope({"event_id": "f" * 32, "trace": bad_dsc,
                                        "sent_at": 12}, items, public_key="publickey"))
    for expected in ("!= DSN key", "DSC trace_id", "sample_rate=1.0 must be a string",
                     "differs from the envelope header", "sent_at 12"):
        assert expected in text, text


# ------------------------------------------------------------------------------------------------
# fault modes
# ------------------------------------------------------------------------------------------------


def test_rate_limit_429_returns_headers_and_is_not_stored(receiver: SentryReceiver) -> None:
    limits = "60:transaction;span:key, 2700:default;error;security:organization"
    receiver.set_mode("status", status=429, times=1,
                      headers={"Retry-After": "60", "X-Sentry-Rate-Limits": limits})
    event = make_transaction()
    resp = post(receiver, txn_envelope(event))
    assert resp.status == 429
    assert resp.headers["retry-after"] == "60"
    assert resp.headers["x-sentry-rate-limits"] == limits
    assert receiver.envelopes == [] and receiver.transactions() == []
    [rejected] = receiver.rejected
    assert rejected.status == 429 and rejected.items[0].json == event

    # times=1: the next request is accepted again
    assert receiver.mode == "ok"
    assert post(receiver, txn_envelope(event)).status == 200
    assert receiver.transactions() == [event]
    assert receiver.request_count == 2
    receiver.assert_no_problems()


@pytest.mark.parametrize("status", [500, 503, 413])
def test_error_statuses(receiver: SentryReceiver, status: int) -> None:
    receiver.set_mode("status", status=status)
    for _ in range(2):
        assert post(receiver, txn_envelope(make_transaction())).status == status
    assert receiver.mode == "status"
    assert [e.status for e in receiver.rejected] == [status, status]
    assert receiver.envelopes == []
    receiver.set_mode("ok")
    assert post(receiver, txn_envelope(make_transaction())).status == 200


def test_delay(receiver: SentryReceiver) -> None:
    receiver.set_mode("delay", seconds=0.3)
    started = time.monotonic()
    assert post(receiver, txn_envelope(make_transaction())).status == 200
    assert time.monotonic() - started >= 0.3
    assert len(receiver.envelopes) == 1

    receiver.set_mode("delay", seconds=0.2, status=503)
    assert post(receiver, txn_envelope(make_transaction())).status == 503
    assert len(receiver.rejected) == 1


def test_blackhole_client_times_out_and_stop_is_prompt() -> None:
    receiver = SentryReceiver().start()
    try:
        receiver.set_mode("blackhole")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            post(receiver, txn_envelope(make_transaction()), timeout=0.3)
        assert time.monotonic() - started < 1.5
        # a second connection that is still hanging when the receiver stops
        hanging = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
        hanging.request("POST", "/api/1/envelope/", body=txn_envelope(make_transaction()),
                        headers=auth_header())
        assert receiver.wait_for(lambda r: len(r.rejected) == 2, timeout=2)
        assert [e.status for e in receiver.rejected] == [None, None]
        assert receiver.envelopes == []
        port = receiver.port
        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < 2
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            hanging.getresponse()
        hanging.close()

        # restart binds the same port (the DSN stays valid) and serves again
        receiver.set_mode("ok")
        receiver.start()
        assert receiver.port == port
        assert post(receiver, txn_envelope(make_transaction())).status == 200
    finally:
        receiver.stop()


def test_latency(receiver: SentryReceiver) -> None:
    receiver.set_latency(0.05)
    started = time.monotonic()
    assert post(receiver, txn_envelope(make_transaction())).status == 200
    assert time.monotonic() - started >= 0.05

    receiver.set_mode("status", status=500, latency=0.1)
    started = time.monotonic()
    assert post(receiver, txn_envelope(make_transaction())).status == 500
    assert time.monotonic() - started >= 0.1


def test_set_mode_validation(receiver: SentryReceiver) -> None:
    with pytest.raises(ValueError, match="status="):
        receiver.set_mode("status")
    with pytest.raises(ValueError, match="seconds"):
        receiver.set_mode("delay")
    with pytest.raises(ValueError, match="unknown mode"):
        receiver.set_mode("teapot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid HTTP status"):
        receiver.set_mode("status", status=42)


# ------------------------------------------------------------------------------------------------
# accessors and concurrency
# ------------------------------------------------------------------------------------------------


def test_wait_for_and_clear(receiver: SentryReceiver) -> None:
    started = time.monotonic()
    assert receiver.wait_for(lambda r: r.request_count > 0, timeout=0.1) is False
    assert time.monotonic() - started < 0.5
    assert receiver.wait_for_transactions(1, timeout=0.05) == []

    def send_later() -> None:
        time.sleep(0.1)
        post(receiver, txn_envelope(make_transaction()))

    thread = threading.Thread(target=send_later)
    thread.start()
    assert len(receiver.wait_for_transactions(1, timeout=2)) == 1
    thread.join()

    post(receiver, txn_envelope(make_transaction(platform="java")))
    assert receiver.problems
    receiver.clear()
    assert receiver.envelopes == [] and receiver.problems == [] and receiver.request_count == 0
    receiver.assert_no_problems()


def test_concurrent_posts_are_all_recorded(receiver: SentryReceiver) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                assert post(receiver, txn_envelope(make_transaction())).status == 200
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(receiver.wait_for_transactions(40, timeout=2)) == 40
    assert len({t["event_id"] for t in receiver.transactions()}) == 40
    receiver.assert_no_problems()
