"""The extra instrumentations end to end: an app written without the bridge in mind
(tests/apps_instr/service.py: FastAPI, cachetools, pymemcache, psycopg, asyncpg, pydantic,
strawberry, a WebSocket route), launched only with ``opentelemetry-instrument`` and the bridge's
environment. Every instrumentation is loaded from its entry point; what reaches the loopback
Sentry is checked against the page it should light (Caches, Queries, GraphQL naming, WebSocket
connections, validation errors) and, for every envelope, by Relay's normalizer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps import AppProcess
from conftest import require_service
from e2e_support import (
    assert_clean_output,
    assert_receiver_clean,
    bridge_env,
    free_ports,
    summary,
)
from sentry_receiver import SentryReceiver
from websockets.asyncio.client import connect

from otel_sentry_bridge.conventions import Attr, Op

pytestmark = pytest.mark.e2e

SERVICE = Path(__file__).resolve().parent / "apps_instr" / "service.py"


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[AppProcess, SentryReceiver]]:
    require_service("127.0.0.1", 5432, "PostgreSQL")
    require_service("127.0.0.1", 11211, "memcached")
    with SentryReceiver() as receiver:
        env = bridge_env(receiver, "instr-shop", OTEL_PYTHON_FASTAPI_EXCLUDED_URLS="health,flush")
        (port,) = free_ports(1)
        app = AppProcess(SERVICE, env, port)
        try:
            yield app, receiver
        finally:
            output = app.stop()
            # The app's own tracebacks only: uvicorn logs the invalid order's ValidationError,
            # strawberry the broken resolver's error.
            expected = (output.count("pydantic_core._pydantic_core.ValidationError: 1 valid")
                        + output.count("RuntimeError: the broken resolver failed"))
            assert expected <= 2, output
            assert_clean_output(output, tracebacks=expected)
            assert "otel-sentry-bridge" not in output, output


def call(app: AppProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, app.base_url + path, timeout=10, **kwargs)


def flush(app: AppProcess) -> None:
    assert call(app, "POST", "/flush").json() == {"flushed": True}


def named(receiver: SentryReceiver, name: str, count: int) -> list[dict[str, Any]]:
    receiver.wait_for(lambda r: len([t for t in r.transactions()
                                     if t["transaction"] == name]) >= count, timeout=15)
    found = [t for t in receiver.transactions() if t["transaction"] == name]
    assert len(found) == count, summary(receiver)
    return sorted(found, key=lambda t: t["start_timestamp"])


def spans_of(txn: dict[str, Any], op: str) -> list[dict[str, Any]]:
    return sorted((s for s in txn["spans"] if s["op"] == op), key=lambda s: s["start_timestamp"])


def test_caches_and_queries(service: tuple[AppProcess, SentryReceiver]) -> None:
    app, receiver = service
    sku = "sku-e2e-1"
    from pymemcache.client.base import Client

    client = Client(("127.0.0.1", 11211))
    client.delete(f"price:{sku}")
    client.close()
    first = call(app, "GET", f"/prices/{sku}").json()
    second = call(app, "GET", f"/prices/{sku}").json()
    assert first == second == {"sku": sku, "price": 900, "stock": 18}
    flush(app)
    miss, hit = named(receiver, "GET /prices/{sku}", 2)

    # Caches page: pymemcache (memcached) and cachetools (in process), hit and miss.
    reads = spans_of(miss, Op.CACHE_GET)
    by_origin = {s["origin"]: s for s in reads}
    memcached_read = next(s for s in reads if s["data"].get(Attr.CACHE_KEY) == [f"price:{sku}"])
    assert memcached_read["data"][Attr.CACHE_HIT] is False
    assert memcached_read["data"]["network.peer.address"] == "127.0.0.1"
    assert memcached_read["data"]["network.peer.port"] == 11211
    assert by_origin["auto.cache.cachetools"]["data"][Attr.CACHE_HIT] is False
    puts = spans_of(miss, Op.CACHE_PUT)
    assert {s["origin"] for s in puts} >= {"auto.cache.cachetools"}
    assert any(s["data"].get(Attr.CACHE_KEY) == [f"price:{sku}"] for s in puts)
    hit_read = next(s for s in spans_of(hit, Op.CACHE_GET)
                    if s["data"].get(Attr.CACHE_KEY) == [f"price:{sku}"])
    assert hit_read["data"][Attr.CACHE_HIT] is True
    assert hit_read["data"][Attr.CACHE_ITEM_SIZE] == 3

    # Queries page: psycopg (inside the cached function, first call only) and asyncpg.
    queries = {s["description"]: s for s in spans_of(miss, Op.DB)}
    assert "SELECT %s::text, length(%s::text) * 100" in queries, summary(receiver)
    assert "SELECT $1::int * 2" in queries, summary(receiver)
    for query in queries.values():
        assert query["data"]["db.system"] == "postgresql"
        assert query["data"]["server.address"] == "127.0.0.1"
    assert [s["description"] for s in spans_of(hit, Op.DB)] == ["SELECT $1::int * 2"]


def test_validation(service: tuple[AppProcess, SentryReceiver]) -> None:
    app, receiver = service
    good = {"customer": "c1", "lines": [{"sku": "ab", "quantity": 2}]}
    assert call(app, "POST", "/orders", json=good).json() == {"customer": "c1", "total": 400}
    bad = {"customer": "c1", "lines": [{"sku": "ab", "quantity": 98765}]}
    assert call(app, "POST", "/orders", json=bad).status_code == 500
    flush(app)
    ok, failed = named(receiver, "POST /orders", 2)
    (span,) = [s for s in spans_of(ok, Op.VALIDATE) if s["description"].startswith("Order")]
    assert span["status"] == "ok"
    (span,) = [s for s in spans_of(failed, Op.VALIDATE) if s["description"].startswith("Order")]
    assert span["status"] == "invalid_argument"
    receiver.wait_for(lambda r: any(
        e.get("transaction") == "POST /orders" for e in r.events()), timeout=10)
    (event,) = [e for e in receiver.events() if e.get("transaction") == "POST /orders"]
    assert event["exception"]["values"][-1]["type"] == "ValidationError"
    assert "98765" not in json.dumps(event)  # input values only with PII
    crumbs = [c for c in event.get("breadcrumbs", {}).get("values", [])
              if c.get("category") == "validation"]
    assert crumbs and "lines.0.quantity" in crumbs[-1]["message"]


def test_graphql(service: tuple[AppProcess, SentryReceiver]) -> None:
    app, receiver = service
    query = 'query Prices { products(skus: ["ab", "abc"]) { sku price } }'
    answer = call(app, "POST", "/graphql", json={"query": query}).json()
    assert answer == {"data": {"products": [{"sku": "ab", "price": 200},
                                            {"sku": "abc", "price": 300}]}}
    broken = call(app, "POST", "/graphql", json={"query": "query Broken { broken }"}).json()
    assert broken["errors"][0]["path"] == ["broken"]
    flush(app)
    (txn,) = named(receiver, "Prices", 1)
    assert txn["transaction_info"] == {"source": "component"}
    assert txn["contexts"]["trace"]["op"] == Op.HTTP_SERVER
    ops = {s["op"] for s in txn["spans"]}
    assert {Op.GRAPHQL_QUERY, Op.GRAPHQL_PARSE, Op.GRAPHQL_VALIDATE, Op.GRAPHQL_EXECUTE,
            Op.GRAPHQL_RESOLVE} <= ops
    named(receiver, "Broken", 1)
    receiver.wait_for(lambda r: any(e.get("transaction") == "Broken" for e in r.events()),
                      timeout=10)
    (event,) = [e for e in receiver.events() if e.get("transaction") == "Broken"]
    assert event["exception"]["values"][-1]["value"] == "the broken resolver failed"
    assert event["contexts"]["capture"]["graphql.path"] == "broken"
    assert event["contexts"]["capture"]["graphql.operation.name"] == "Broken"


def test_websocket(service: tuple[AppProcess, SentryReceiver]) -> None:
    app, receiver = service

    async def chat() -> list[str]:
        url = app.base_url.replace("http://", "ws://") + "/ws/lobby"
        async with connect(url) as ws:
            replies = []
            for text in ("hi", "there"):
                await ws.send(text)
                replies.append(str(await ws.recv()))
            await ws.send("bye")
            await ws.wait_closed()
            assert ws.close_code == 1000
            return replies

    assert asyncio.run(chat()) == ["lobby: hi", "lobby: there"]
    flush(app)
    (txn,) = named(receiver, "WS /ws/{room}", 1)
    trace = txn["contexts"]["trace"]
    assert (trace["op"], trace["status"]) == (Op.WEBSOCKET_SERVER, "ok")
    assert txn["transaction_info"] == {"source": "route"}
    assert len(spans_of(txn, Op.WEBSOCKET_RECEIVE)) == 3
    assert len(spans_of(txn, Op.WEBSOCKET_SEND)) == 2
    # What the bridge's Starlette instrumentation adds to OpenTelemetry's ASGI spans.
    assert trace["data"]["websocket.close.code"] == 1000
    assert trace["data"]["websocket.messages.received"] == 3
    assert txn["measurements"]["websocket.messages_sent"] == {"value": 2.0, "unit": "none"}
    assert txn["measurements"]["websocket.handling_time.max"]["unit"] == "millisecond"


def test_everything_arrived_clean(service: tuple[AppProcess, SentryReceiver]) -> None:
    """Runs last: every envelope valid (Relay's normalizer), nothing sent twice."""
    _, receiver = service
    assert receiver.transactions()
    assert_receiver_clean(receiver)
