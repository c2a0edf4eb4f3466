"""Pure mapping: real spans from a real TracerProvider -> Sentry payloads (through Relay)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from sentry_receiver import validate_event
from spans import SpanFactory, remote_parent

from otel_sentry_bridge._mapping import MappingContext, build_transaction
from otel_sentry_bridge._mapping.status import derive_status, status_from_grpc, status_from_http
from otel_sentry_bridge._mapping.values import concept_view

CTX = MappingContext(sdk_version="0.1.0")

SERVER = {
    "old": {
        "http.method": "GET", "http.route": "/orders/<order_id>", "http.target": "/orders/7?x=1",
        "http.scheme": "http", "http.host": "shop.local:8000", "net.host.port": 8000,
        "http.status_code": 200, "http.user_agent": "curl/8", "net.peer.ip": "10.1.2.3",
        "http.flavor": "1.1",
    },
    "new": {
        "http.request.method": "GET", "http.route": "/orders/<order_id>", "url.path": "/orders/7",
        "url.query": "x=1", "url.scheme": "http", "server.address": "shop.local",
        "server.port": 8000, "http.response.status_code": 200,
        "user_agent.original": "curl/8", "client.address": "10.1.2.3",
        "network.protocol.version": "1.1",
    },
}
CLIENT = {
    "old": {"http.method": "GET", "http.url": "https://u:pw@api.example.com:8443/v1/x?token=s",
            "http.status_code": 404},
    "new": {"http.request.method": "GET",
            "url.full": "https://u:pw@api.example.com:8443/v1/x?token=s",
            "http.response.status_code": 404, "server.address": "api.example.com",
            "server.port": 8443},
}
DB = {
    "old": {"db.system": "postgresql", "db.name": "shop", "net.peer.name": "db.local",
            "net.peer.port": 5432, "db.operation": "SELECT shop",
            "db.statement": "SELECT orders.id FROM orders WHERE orders.id = %(id)s"},
    "new": {"db.system.name": "postgresql", "db.namespace": "shop", "server.address": "db.local",
            "server.port": 5432,
            "db.query.text": "SELECT orders.id FROM orders WHERE orders.id = %(id)s"},
}
for family in (SERVER, CLIENT, DB):
    family["dup"] = {**family["old"], **family["new"]}

MODES = ["old", "new", "dup"]


def build(factory: SpanFactory, ctx: MappingContext = CTX) -> dict[str, Any]:
    root, children = factory.split()
    mapped = build_transaction(root, children, ctx)
    assert mapped is not None
    problems = validate_event(mapped.event)
    assert problems == [], problems
    return mapped.event


def by_op(event: dict[str, Any], op: str) -> list[dict[str, Any]]:
    return [s for s in event["spans"] if s["op"] == op]


@pytest.mark.parametrize("mode", MODES)
def test_http_server_root_is_a_route_transaction(mode: str) -> None:
    f = SpanFactory()
    with f.span("GET /orders/<order_id>", SpanKind.SERVER, SERVER[mode]):
        pass
    event = build(f)
    assert event["transaction"] == "GET /orders/<order_id>"
    assert event["transaction_info"] == {"source": "route"}
    trace = event["contexts"]["trace"]
    assert trace["op"] == "http.server"
    assert trace["status"] == "ok"
    assert trace["origin"] == "auto.otel.flask"
    assert trace["data"]["http.request.method"] == "GET"
    assert trace["data"]["http.response.status_code"] == 200
    assert trace["data"]["sentry.kind"] == "server"
    assert event["contexts"]["response"]["status_code"] == 200
    assert event["tags"]["http.status_code"] == "200"
    request = event["request"]
    assert request["method"] == "GET"
    assert request["url"] == "http://shop.local:8000/orders/7"
    assert "query_string" not in request  # private by default
    assert request["headers"]["User-Agent"] == "curl/8"
    assert "REMOTE_ADDR" not in request.get("env", {})
    # release / environment / server name from the OTel resource
    assert event["release"] == "1.2.3"
    assert event["environment"] == "staging"
    assert event["server_name"] == "web-1"
    assert event["contexts"]["otel"]["resource"]["service.name"] == "shop"
    # no client IP and no query string anywhere by default
    text = str(event)
    assert "10.1.2.3" not in text and "x=1" not in text


@pytest.mark.parametrize("mode", MODES)
def test_http_server_pii_opt_in(mode: str) -> None:
    f = SpanFactory()
    with f.span("GET /orders/<order_id>", SpanKind.SERVER,
                {**SERVER[mode], "http.request.header.cookie": ("a=b",)}):
        pass
    event = build(f, MappingContext(send_pii=True))
    assert event["request"]["query_string"] == "x=1"
    assert event["request"]["env"]["REMOTE_ADDR"] == "10.1.2.3"
    assert event["request"]["headers"]["Cookie"] == "a=b"


def test_http_server_without_route_uses_the_path() -> None:
    f = SpanFactory()
    with f.span("GET /raw/7", SpanKind.SERVER, {"http.method": "GET", "http.target": "/raw/7?q=1",
                                                "http.status_code": 503}):
        pass
    event = build(f)
    assert event["transaction"] == "GET /raw/7"
    assert event["transaction_info"]["source"] == "url"
    assert event["contexts"]["trace"]["status"] == "unavailable"


@pytest.mark.parametrize("mode", MODES)
def test_http_client_span(mode: str) -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
        with f.span("GET", SpanKind.CLIENT, CLIENT[mode], lib="requests", status=StatusCode.ERROR):
            pass
    event = build(f)
    (span,) = by_op(event, "http.client")
    assert span["description"] == "GET https://api.example.com:8443/v1/x"
    assert span["status"] == "not_found"
    assert span["origin"] == "auto.otel.requests"
    assert span["tags"] == {"http.status_code": "404"}
    data = span["data"]
    assert data["http.request.method"] == data["http.method"] == "GET"
    assert data["http.response.status_code"] == 404
    assert data["url"] == "https://api.example.com:8443/v1/x"
    assert data["server.address"] == "api.example.com"
    assert data["server.port"] == 8443
    text = str(event)
    assert "token=s" not in text and "pw@" not in text


@pytest.mark.parametrize("mode", MODES)
def test_db_query_span(mode: str) -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
        with f.span("connect", SpanKind.CLIENT,
                    {k: v for k, v in DB[mode].items()
                     if k not in ("db.statement", "db.query.text", "db.operation")},
                    lib="sqlalchemy"):
            pass
        with f.span("SELECT shop", SpanKind.CLIENT, DB[mode], lib="sqlalchemy"):
            pass
    event = build(f)
    (query,) = by_op(event, "db")
    assert query["description"] == "SELECT orders.id FROM orders WHERE orders.id = %(id)s"
    data = query["data"]
    assert data["db.system"] == data["db.system.name"] == "postgresql"
    assert data["db.operation"] == data["db.operation.name"] == "SELECT"
    assert data["db.name"] == data["db.namespace"] == "shop"
    assert data["server.address"] == "db.local" and data["server.port"] == 5432
    (connect,) = by_op(event, "db.connect")
    assert connect["description"] == "connect"


def test_connect_spans_can_be_dropped() -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
        with f.span("connect", SpanKind.CLIENT, {"db.system": "sqlite"}, lib="sqlalchemy"):
            with f.span("inner", SpanKind.INTERNAL):
                pass
    event = build(f, MappingContext(drop_connect_spans=True))
    assert [s["op"] for s in event["spans"]] == ["function"]
    assert event["spans"][0]["parent_span_id"] == event["contexts"]["trace"]["span_id"]


def test_sql_comment_is_stripped_from_description() -> None:
    f = SpanFactory()
    with f.span("q", SpanKind.CLIENT, {"db.system": "mysql",
                                       "db.statement": "/* app=shop */ UPDATE t SET a=1"}):
        pass
    root, _ = f.split()
    event = build_transaction(root, [], CTX)
    assert event is not None
    assert event.event["contexts"]["trace"]["data"]["db.operation"] == "UPDATE"


def test_redis_get_gets_a_cache_parent() -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
        with f.span("GET", SpanKind.CLIENT, {
            "db.system": "redis", "db.statement": "GET ?", "db.redis.database_index": 0,
            "net.peer.name": "localhost", "net.peer.port": 6379,
            "sentry_bridge.redis.keys": ("product:1",), "cache.hit": True,
            "cache.item_size": 42,
        }, lib="redis"):
            pass
        with f.span("SET", SpanKind.CLIENT, {
            "db.system": "redis", "db.statement": "SET ? ? ? ?",
            "sentry_bridge.redis.keys": ("product:1",), "cache.item_size": 42,
        }, lib="redis"):
            pass
        with f.span("INCR", SpanKind.CLIENT, {"db.system": "redis", "db.statement": "INCR ?"},
                    lib="redis"):
            pass
    event = build(f)
    root_id = event["contexts"]["trace"]["span_id"]
    (get,) = by_op(event, "cache.get")
    assert get["description"] == "product:1"
    assert get["data"]["cache.key"] == ["product:1"]
    assert get["data"]["cache.hit"] is True
    assert get["data"]["cache.item_size"] == 42
    assert get["data"]["network.peer.address"] == "localhost"
    assert get["parent_span_id"] == root_id
    (put,) = by_op(event, "cache.put")
    assert "cache.hit" not in put["data"]
    redis = by_op(event, "db.redis")
    assert len(redis) == 3
    assert {r["parent_span_id"] for r in redis} == {get["span_id"], put["span_id"], root_id}
    assert redis[0]["description"] == "GET product:1"
    assert redis[0]["data"]["db.namespace"] == "0"


def test_cache_prefix_filter() -> None:
    f = SpanFactory()
    with f.span("GET", SpanKind.CLIENT, {"db.system": "redis",
                                         "sentry_bridge.redis.keys": ("session:1",)}):
        pass
    root, _ = f.split()
    mapped = build_transaction(root, [], MappingContext(cache_prefixes=("product:",)))
    assert mapped is not None
    assert mapped.event["contexts"]["trace"]["op"] == "db.redis"


def test_celery_spans() -> None:
    f = SpanFactory()
    with f.span("run/shop.tasks.send_receipt", SpanKind.CONSUMER, {
        "celery.action": "run", "celery.task_name": "shop.tasks.send_receipt",
        "messaging.message.id": "abc", "messaging.destination": "celery", "celery.retries": 2,
    }, lib="celery", context=remote_parent()):
        with f.span("apply_async/shop.tasks.other", SpanKind.PRODUCER, {
            "celery.action": "apply_async", "celery.task_name": "shop.tasks.other",
            "messaging.message.id": "def", "messaging.destination": "celery",
        }, lib="celery"):
            pass
    event = build(f)
    assert event["transaction"] == "shop.tasks.send_receipt"
    assert event["transaction_info"]["source"] == "task"
    trace = event["contexts"]["trace"]
    assert trace["op"] == "queue.task.celery"
    assert trace["parent_span_id"] == "00f067aa0ba902b7"
    assert trace["data"]["messaging.message.retry.count"] == 2
    (publish,) = by_op(event, "queue.publish")
    assert publish["description"] == "shop.tasks.other"
    assert publish["data"]["messaging.destination.name"] == "celery"
    assert publish["data"]["messaging.message.id"] == "def"
    assert publish["data"]["messaging.system"] == "celery"


@pytest.mark.parametrize(("attrs", "kind", "op", "status"), [
    ({"rpc.system": "grpc", "rpc.grpc.status_code": 5}, SpanKind.CLIENT, "grpc.client",
     "not_found"),
    ({"rpc.system.name": "grpc", "rpc.response.status_code": "UNAVAILABLE"}, SpanKind.CLIENT,
     "grpc.client", "unavailable"),
    ({"rpc.system": "jsonrpc"}, SpanKind.CLIENT, "rpc.client", "ok"),
    ({"messaging.system": "kafka", "messaging.operation.type": "receive",
      "messaging.destination.name": "orders", "messaging.message.id": "m1"}, SpanKind.CONSUMER,
     "queue.receive", "ok"),
    ({"sentry.op": "serialize", "sentry.description": "to json"}, SpanKind.INTERNAL,
     "serialize", "ok"),
    ({}, SpanKind.INTERNAL, "function", "ok"),
    ({"asgi.event.type": "http.response.start"}, SpanKind.INTERNAL, "middleware.asgi.receive",
     "ok"),
    ({"faas.trigger": "http"}, SpanKind.SERVER, "http", "ok"),
])
def test_other_families(attrs: dict[str, Any], kind: SpanKind, op: str, status: str) -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
        with f.span("/pkg.Svc/Method", kind, attrs, lib="grpc"):
            pass
    event = build(f)
    (span,) = [s for s in event["spans"]]
    assert span["op"] == op
    assert span["status"] == status


def test_grpc_server_root() -> None:
    f = SpanFactory()
    with f.span("/pkg.Svc/Method", SpanKind.SERVER, {"rpc.system": "grpc",
                                                     "rpc.grpc.status_code": 0}, lib="grpc"):
        pass
    event = build(f)
    assert event["transaction"] == "/pkg.Svc/Method"
    assert event["transaction_info"]["source"] == "route"
    assert event["contexts"]["trace"]["op"] == "grpc.server"


@pytest.mark.parametrize(("code", "status"), [
    (200, "ok"), (302, "ok"), (400, "invalid_argument"), (401, "unauthenticated"),
    (403, "permission_denied"), (404, "not_found"), (409, "already_exists"),
    (413, "failed_precondition"), (429, "resource_exhausted"), (499, "cancelled"),
    (500, "internal_error"), (501, "unimplemented"), (503, "unavailable"),
    (504, "deadline_exceeded"), (599, "internal_error"), (600, "unknown"),
])
def test_http_status_table(code: int, status: str) -> None:
    assert status_from_http(code) == status


def test_status_rules() -> None:
    assert derive_status({}, StatusCode.UNSET) == "ok"
    assert derive_status({}, StatusCode.OK) == "ok"
    assert derive_status({}, StatusCode.ERROR) == "internal_error"
    assert derive_status({}, StatusCode.ERROR, "requests.exceptions.ConnectTimeout") == (
        "deadline_exceeded")
    view = concept_view
    assert derive_status(view({"error.type": "ConnectionRefusedError"}), StatusCode.ERROR) == (
        "unavailable")
    assert derive_status(view({"http.status_code": "404"}), StatusCode.UNSET) == "not_found"
    assert derive_status(view({"celery.state": "RETRY"}), StatusCode.ERROR) == "aborted"
    assert status_from_grpc(99) == "unknown"
    assert status_from_grpc(True) is None
    assert status_from_grpc("bogus") is None


def test_user_and_tags_root_wins() -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, {**SERVER["old"], "enduser.id": "42",
                                             "sentry.tag.tenant": "acme",
                                             "tenant.plan": "gold"}):
        with f.span("child", attributes={"enduser.id": "7", "user.email": "a@b.c",
                                         "enduser.role": "admin,billing",
                                         "sentry.tag.tenant": "other",
                                         "sentry.tag.region": "eu", "project.id": 5}):
            pass
    event = build(f, MappingContext(tag_attributes=("tenant.plan", "project.id")))
    assert event["user"] == {"id": "42", "email": "a@b.c",
                             "data": {"roles": ["admin", "billing"]}}
    assert event["tags"]["tenant"] == "acme"
    assert event["tags"]["region"] == "eu"
    assert event["tags"]["tenant.plan"] == "gold"
    assert event["tags"]["project.id"] == "5"


def test_tag_values_are_bounded_and_bad_keys_skipped() -> None:
    f = SpanFactory()
    with f.span("job", attributes={"sentry.tag.long": "x" * 500, "sentry.tag.bad key": "v",
                                   "sentry.tag.flag": True}):
        pass
    event = build(f)
    assert len(event["tags"]["long"]) == 200
    assert "bad key" not in event["tags"]
    assert event["tags"]["flag"] == "true"


def test_settings_win_over_resource() -> None:
    f = SpanFactory()
    with f.span("job"):
        pass
    event = build(f, MappingContext(release="r9", environment="prod", server_name="s1"))
    assert (event["release"], event["environment"], event["server_name"]) == ("r9", "prod", "s1")


def test_requests_to_the_dsn_are_dropped() -> None:
    ctx = MappingContext(own_host="o1.ingest.example.com", own_port=443)
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
        with f.span("POST", SpanKind.CLIENT, {
                "http.method": "POST",
                "url.full": "https://o1.ingest.example.com/api/1/envelope/"}, lib="urllib3"):
            pass
        with f.span("GET", SpanKind.CLIENT, {
                "http.method": "GET", "http.url": "https://o1.ingest.example.com:8443/other"},
                lib="urllib3"):
            pass
    root, children = f.split()
    mapped = build_transaction(root, children, ctx)
    assert mapped is not None
    assert [s["description"] for s in mapped.event["spans"]] == [
        "GET https://o1.ingest.example.com:8443/other"]
    assert mapped.filtered_spans == 1


def test_span_cap_keeps_the_earliest_and_reparents() -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["old"]), f.span("outer"):
        for i in range(10):
            with f.span(f"inner-{i}"):
                pass
    root, children = f.split()
    mapped = build_transaction(root, children, MappingContext(max_spans=5))
    assert mapped is not None
    assert mapped.dropped_spans == 6
    names = [s["description"] for s in mapped.event["spans"]]
    assert names == ["outer", "inner-0", "inner-1", "inner-2", "inner-3"]
    assert validate_event(mapped.event) == []


def test_odd_attribute_values_are_made_json_safe() -> None:
    f = SpanFactory()
    with f.span("job", attributes={"f": float("nan"), "big": "y" * 100_000,
                                   "seq": (1, 2, 3), "api_key": "s3cr3t",
                                   "http.request.header.authorization": ("Bearer x",)}):
        pass
    event = build(f)
    data = event["contexts"]["trace"]["data"]
    assert data["f"] == "nan"
    assert len(data["big"]) < 20_000
    assert data["seq"] == [1, 2, 3]
    assert data["api_key"] == "[Filtered]"
    assert data["http.request.header.authorization"] == "[Filtered]"


def test_links_and_remote_parent() -> None:
    f = SpanFactory()
    with f.span("consume", SpanKind.CONSUMER, context=remote_parent()):
        pass
    root, _ = f.split()
    mapped = build_transaction(root, [], CTX)
    assert mapped is not None
    trace = mapped.event["contexts"]["trace"]
    assert trace["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace["parent_span_id"] == "00f067aa0ba902b7"
    assert mapped.event["event_id"] != ""
    assert len(mapped.event["event_id"]) == 32


def test_template_cache_gives_the_same_result() -> None:
    from otel_sentry_bridge._mapping import SpanMapper

    f = SpanFactory()
    for _ in range(3):
        with f.span("GET /x", SpanKind.SERVER, SERVER["old"]):
            with f.span("SELECT", SpanKind.CLIENT, DB["old"], lib="sqlalchemy"):
                pass
            with f.span("GET", SpanKind.CLIENT, {"db.system": "redis",
                                                 "sentry_bridge.redis.keys": ("k",)}):
                pass
    spans = f.finished()
    mapper = SpanMapper(CTX)
    for i in range(3):
        group = spans[i * 3:(i + 1) * 3]
        root, children = group[-1], group[:-1]
        cached = build_transaction(root, children, CTX, mapper)
        fresh = build_transaction(root, children, CTX)
        assert cached is not None and fresh is not None
        assert cached.event == fresh.event
    assert mapper.hits == 6 and mapper.misses == 3


def test_mapping_is_deterministic() -> None:
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, SERVER["new"]):
        with f.span("SELECT", SpanKind.CLIENT, DB["new"]):
            pass
    root, children = f.split()
    first = build_transaction(root, children, CTX)
    second = build_transaction(root, children, CTX)
    assert first is not None and second is not None
    assert first.event == second.event


class _NoStr:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_values_whose_str_raises_never_break_the_mapping() -> None:
    """Found by tests/test_fuzz.py: only hand-made spans can carry such objects."""
    import time as _time

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext
    from sentry_receiver import validate_event

    from otel_sentry_bridge._mapping import build_transaction

    now = _time.time_ns()
    bad = _NoStr()
    root = ReadableSpan(
        name="GET", context=SpanContext(1, 2, is_remote=False), kind=SpanKind.SERVER,
        attributes={"http.method": bad, "http.route": bad, "enduser.role": [bad],
                    "db.system": "redis", "sentry_bridge.redis.keys": (bad,),
                    "user.id": bad},
        start_time=now - 1000, end_time=now)
    mapped = build_transaction(root, [], MappingContext())
    assert mapped is not None
    assert validate_event(mapped.event) == []


def test_a_span_of_the_segment_names_the_transaction() -> None:
    """``sentry.transaction.name`` on any span (a GraphQL operation under ``POST /graphql``)
    renames the transaction; the root's own ``sentry.name`` still wins."""
    f = SpanFactory()
    with f.span("POST /graphql", SpanKind.SERVER, {**SERVER["new"], "http.route": "/graphql"}):
        with f.span("query GetOrders", SpanKind.INTERNAL,
                    {"sentry.transaction.name": "GetOrders",
                     "sentry.transaction.source": "component"}):
            pass
    event = build(f)
    assert event["transaction"] == "GetOrders"
    assert event["transaction_info"] == {"source": "component"}
    assert validate_event(event, kind="transaction") == []

    f = SpanFactory()
    with f.span("POST /graphql", SpanKind.SERVER,
                {**SERVER["new"], "sentry.name": "explicit"}):
        with f.span("op", SpanKind.INTERNAL, {"sentry.transaction.name": "GetOrders",
                                              "sentry.transaction.source": "bogus"}):
            pass
    assert build(f)["transaction"] == "explicit"

    f = SpanFactory()
    with f.span("job", SpanKind.INTERNAL):
        with f.span("op", SpanKind.INTERNAL, {"sentry.transaction.name": " Named ",
                                              "sentry.transaction.source": "bogus"}):
            pass
    event = build(f)
    assert (event["transaction"], event["transaction_info"]) == ("Named", {"source": "custom"})


def test_websocket_connection_without_the_bridge_instrumentor_is_named_ws() -> None:
    """OpenTelemetry's ASGI middleware alone: a ``ws`` scheme server span is a
    ``websocket.server`` transaction named ``WS <route>`` (or ``WS <path>``, source url)."""
    base = {"url.scheme": "ws", "url.path": "/ws/7", "server.address": "127.0.0.1",
            "server.port": 8000}
    f = SpanFactory()
    with f.span("/ws/{room}", SpanKind.SERVER, {**base, "http.route": "/ws/{room}"}):
        pass
    event = build(f)
    assert event["contexts"]["trace"]["op"] == "websocket.server"
    assert (event["transaction"], event["transaction_info"]) == ("WS /ws/{room}",
                                                                {"source": "route"})
    assert validate_event(event, kind="transaction") == []
    f = SpanFactory()
    with f.span("/ws/7", SpanKind.SERVER, base):
        pass
    event = build(f)
    assert (event["transaction"], event["transaction_info"]) == ("WS /ws/7", {"source": "url"})


def test_client_ip_headers_and_baggage_are_filtered_without_pii() -> None:
    """Headers a framework's instrumentation captured: CDN client-IP headers and baggage
    (which may carry user ids) only with PII."""
    headers = {"http.request.header.cf-connecting-ip": ("203.0.113.9",),
               "http.request.header.true-client-ip": ("203.0.113.9",),
               "http.request.header.baggage": ("user.id=42",),
               "http.request.header.accept": ("text/html",)}
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, {**SERVER["new"], **headers}):
        pass
    sent = build(f)["request"]["headers"]
    assert sent["Accept"] == "text/html"
    assert "203.0.113.9" not in str(sent) and "user.id=42" not in str(sent)
    f = SpanFactory()
    with f.span("GET /x", SpanKind.SERVER, {**SERVER["new"], **headers}):
        pass
    assert build(f, MappingContext(send_pii=True))["request"]["headers"]["Baggage"] == "user.id=42"
