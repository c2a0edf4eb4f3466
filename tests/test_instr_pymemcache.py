"""pymemcache against a real memcached (127.0.0.1:11211) on Sentry's Caches page.

The bridge's ``PymemcacheInstrumentor`` is tested alone and together with OpenTelemetry's
own pymemcache instrumentation, applied in both orders: every get/set/delete becomes a
``db.memcached`` span under a synthesized ``cache.get``/``cache.put``/``cache.remove`` parent
with the keys, ``cache.hit``, exact item sizes and the server address. A zero-code run under
``opentelemetry-instrument`` checks what reaches a loopback Sentry. Every transaction passes
Relay's normalizer and the Insights lint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from apps import opentelemetry_instrument
from conftest import require_service
from e2e_support import assert_clean_output, bridge_env, summary
from opentelemetry.instrumentation.pymemcache import (
    PymemcacheInstrumentor as OtelPymemcacheInstrumentor,
)
from otel_sentry_bridge_instrumentation.pymemcache import PymemcacheInstrumentor
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from sentry_receiver import SentryReceiver, validate_event
from wrapt import BaseObjectProxy

from otel_sentry_bridge import cache_span, cached
from otel_sentry_bridge import span as custom_span
from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge.testing import BridgeCapture

HOST, PORT = "127.0.0.1", 11211
CACHE_OPS = (Op.CACHE_GET, Op.CACHE_PUT, Op.CACHE_REMOVE)
MODES = ["bridge-only", "otel-then-bridge", "bridge-then-otel"]
ORIGINS = {"bridge-only": "auto.cache.pymemcache", "otel-then-bridge": "auto.otel.pymemcache",
           "bridge-then-otel": "auto.otel.pymemcache"}


@pytest.fixture(autouse=True)
def memcached() -> None:
    require_service(HOST, PORT, "memcached")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def instrument(mode: str, capture: BridgeCapture) -> list[Any]:
    """Apply the instrumentations of ``mode`` in its order; returns them for teardown."""
    order = {"bridge-only": [PymemcacheInstrumentor()],
             "otel-then-bridge": [OtelPymemcacheInstrumentor(), PymemcacheInstrumentor()],
             "bridge-then-otel": [PymemcacheInstrumentor(), OtelPymemcacheInstrumentor()]}[mode]
    for instrumentor in order:
        instrumentor.instrument(tracer_provider=capture.tracer_provider)
    return order


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[tuple[str, BridgeCapture]]:
    capture = BridgeCapture()
    applied = instrument(request.param, capture)
    try:
        yield request.param, capture
    finally:
        for instrumentor in reversed(applied):
            instrumentor.uninstrument()
        capture.close()


def traced(capture: BridgeCapture, work: Any) -> dict[str, Any]:
    with capture.tracer_provider.get_tracer("test").start_as_current_span("job"):
        work()
    (txn,) = capture.transactions()
    assert validate_event(txn, kind="transaction") == []
    return txn


def by_time(txn: dict[str, Any], ops: tuple[str, ...]) -> list[dict[str, Any]]:
    return sorted((s for s in txn["spans"] if s["op"] in ops),
                  key=lambda s: (s["start_timestamp"], s["op"] not in CACHE_OPS))


def test_cache_commands(mode: tuple[str, BridgeCapture], prefix: str) -> None:
    name, capture = mode
    client = Client((HOST, PORT), default_noreply=False)
    k1, k2, k3 = prefix + "a", prefix + "b", prefix + "c"

    def work() -> None:
        assert client.get(k1) is None
        assert client.set(k1, b"hello", expire=60)
        assert client.get(k1) == b"hello"
        assert client.get_many([k1, k2]) == {k1: b"hello"}
        assert client.get_many([k2, k3]) == {}
        client.set_many({k2: b"12", k3: "345"})
        assert client.add(k1, b"other") is False
        assert client.gets(k2)[0] == b"12"
        assert client.delete(k1)
        client.delete_many([k2, k3])
        client.incr(k1, 1)  # not a cache command: no cache span

    try:
        txn = traced(capture, work)
    finally:
        client.close()
    caches = by_time(txn, CACHE_OPS)
    assert [(s["op"], s["data"].get(Attr.CACHE_HIT)) for s in caches] == [
        (Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True), (Op.CACHE_GET, True),
        (Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_PUT, None), (Op.CACHE_GET, True),
        (Op.CACHE_REMOVE, None), (Op.CACHE_REMOVE, None)]
    assert [s["description"] for s in caches] == [
        k1, k1, k1, f"{k1}, {k2}", f"{k2}, {k3}", f"{k2}, {k3}", k1, k2, k1, f"{k2}, {k3}"]
    get_miss, put, get_hit, partial, _, put_many, add, gets, _, _ = caches
    assert put["data"][Attr.CACHE_ITEM_SIZE] == 5 and put["data"][Attr.CACHE_TTL] == 60
    assert put["data"][Attr.CACHE_WRITE] is True and add["data"][Attr.CACHE_WRITE] is False
    assert get_hit["data"][Attr.CACHE_ITEM_SIZE] == partial["data"][Attr.CACHE_ITEM_SIZE] == 5
    assert put_many["data"][Attr.CACHE_ITEM_SIZE] == 5 and gets["data"][Attr.CACHE_ITEM_SIZE] == 2
    assert Attr.CACHE_ITEM_SIZE not in get_miss["data"]
    for span in caches:
        assert span["data"]["network.peer.address"] == span["data"]["server.address"] == HOST
        assert span["data"]["network.peer.port"] == span["data"]["server.port"] == PORT
        assert span["parent_span_id"] == txn["contexts"]["trace"]["span_id"]
        assert span["origin"] == ORIGINS[name]
    # Each cache span wraps exactly one db.memcached command span, same timing.
    commands = by_time(txn, (Op.DB_MEMCACHED,))
    otel = name != "bridge-only"  # OpenTelemetry's instrumentation also traces incr
    assert len(commands) == len(caches) + otel
    children = {s["parent_span_id"]: s for s in commands}
    for span in caches:
        child = children[span["span_id"]]
        assert child["start_timestamp"] == span["start_timestamp"]
        assert child["data"]["db.system"] == "memcached"
    incr = [s for s in commands if s["data"]["db.operation"] == "INCR"]
    assert [s["parent_span_id"] for s in incr] == [txn["contexts"]["trace"]["span_id"]] * otel
    assert capture.items("event") == []


def test_prefix_filter_and_key_prefix(prefix: str) -> None:
    """``SENTRY_BRIDGE_CACHE_PREFIXES`` keeps other keys off the Caches page; pymemcache's own
    ``key_prefix`` is not part of the key shown."""
    capture = BridgeCapture(cache_prefixes=(prefix + "page:",))
    PymemcacheInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    try:
        client = Client((HOST, PORT), key_prefix=b"app1:")
        txn = traced(capture, lambda: (client.get(prefix + "page:1"), client.get(prefix + "lock"),
                                       client.delete(prefix + "page:1")))
        client.close()
    finally:
        PymemcacheInstrumentor().uninstrument()
        capture.close()
    caches = by_time(txn, CACHE_OPS)
    assert [(s["op"], s["description"]) for s in caches] == [
        (Op.CACHE_GET, prefix + "page:1"), (Op.CACHE_REMOVE, prefix + "page:1")]
    assert len(by_time(txn, (Op.DB_MEMCACHED,))) == 3  # the command spans all stay


def test_outside_a_trace_and_pooled_client(prefix: str) -> None:
    capture = BridgeCapture()
    PymemcacheInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    try:
        pool = PooledClient((HOST, PORT), max_pool_size=2)
        pool.set(prefix + "x", b"1")  # no span around it: nothing is made
        assert capture.transactions() == []
        txn = traced(capture, lambda: pool.get(prefix + "x"))
        pool.close()
    finally:
        PymemcacheInstrumentor().uninstrument()
        capture.close()
    ((get, db),) = [(s, c) for s in txn["spans"] for c in txn["spans"]
                    if s["op"] == Op.CACHE_GET and c["parent_span_id"] == s["span_id"]]
    assert get["data"][Attr.CACHE_HIT] is True and db["op"] == Op.DB_MEMCACHED


@pytest.mark.parametrize("name", MODES)
def test_errors_propagate(name: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    capture = BridgeCapture()
    applied = instrument(name, capture)
    try:
        down = Client((HOST, port), connect_timeout=1)
        tolerant = Client((HOST, port), connect_timeout=1, ignore_exc=True)

        def work() -> None:
            with pytest.raises(ConnectionRefusedError):
                down.get("k")
            assert tolerant.get("k") is None  # ignore_exc: pymemcache answers a miss

        txn = traced(capture, work)
    finally:
        for instrumentor in reversed(applied):
            instrumentor.uninstrument()
        capture.close()
    failed, tolerated = by_time(txn, (Op.CACHE_GET,))
    assert failed["status"] != "ok" and Attr.CACHE_HIT not in failed["data"]
    assert tolerated["data"][Attr.CACHE_HIT] is False


def _dead_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("name", MODES)
def test_swallowed_failures_make_no_issue(name: str, prefix: str) -> None:
    """``HashClient(ignore_exc=True)`` over a ring with a dead node (and a
    ``PooledClient(ignore_exc=True)``'s reads) answers the failed command with a default:
    the span keeps its error status, a failed write says ``cache.write`` false, a failed
    read is a miss, and no error event is sent. Without ``ignore_exc`` the exception
    reaches the app and its event stays."""
    dead = _dead_port()
    capture = BridgeCapture()
    applied = instrument(name, capture)
    try:
        ring = HashClient([(HOST, PORT), (HOST, dead)], ignore_exc=True, retry_attempts=1,
                          retry_timeout=0, dead_timeout=60, connect_timeout=0.5,
                          default_noreply=False)
        reader = HashClient([(HOST, PORT), (HOST, dead)], ignore_exc=True, retry_attempts=1,
                            retry_timeout=0, dead_timeout=60, connect_timeout=0.5)
        strict = HashClient([(HOST, dead)], connect_timeout=0.5, retry_attempts=1)
        pooled = PooledClient((HOST, dead), connect_timeout=0.5, ignore_exc=True)
        keys = [f"{prefix}{i}" for i in range(24)]

        def work() -> None:
            for key in keys:
                ring.set(key, b"v")
            for key in keys:
                reader.get(key)
            assert pooled.get(keys[0]) is None and pooled.get_many(keys[:2]) == {}
            with pytest.raises(ConnectionRefusedError):
                strict.set("k", b"v")

        txn = traced(capture, work)
        events = capture.items("event")
        for client in (ring, reader, strict, pooled):
            client.close()
    finally:
        for instrumentor in reversed(applied):
            instrumentor.uninstrument()
        capture.close()
    puts = [s for s in txn["spans"] if s["op"] == Op.CACHE_PUT]
    gets = [s for s in txn["spans"] if s["op"] == Op.CACHE_GET]
    live = [s for s in puts if s["data"].get(Attr.NETWORK_PEER_PORT[0]) == PORT]
    down = [s for s in puts if s["data"].get(Attr.NETWORK_PEER_PORT[0]) == dead]
    assert live and all(s["status"] == "ok" and s["data"][Attr.CACHE_WRITE] is True
                        for s in live)
    assert len(down) >= 2  # the ring's failed writes and the strict client's
    assert all(s["status"] != "ok" and s["data"][Attr.CACHE_WRITE] is False for s in down)
    swallowed_gets = [s for s in gets if s["data"].get(Attr.NETWORK_PEER_PORT[0]) == dead]
    assert len(swallowed_gets) >= 2
    assert all(s["data"][Attr.CACHE_HIT] is False for s in swallowed_gets)
    swallowed_db = [s for s in txn["spans"] if s["op"] == Op.DB_MEMCACHED
                    and s["data"].get(Attr.ERROR_TYPE[0]) == "ConnectionRefusedError"]
    assert swallowed_db and all(s["status"] != "ok" for s in swallowed_db)
    (event,) = events  # only the strict client's error, which reached the app
    assert validate_event(event, kind="event") == []
    (value,) = event["exception"]["values"]
    assert value["type"] == "ConnectionRefusedError"
    assert value["mechanism"]["handled"] is False


class MemcachedMapping(MutableMapping[str, Any]):
    """A mapping over memcached, as an application might hand to ``cached``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __getitem__(self, key: str) -> Any:
        value = self.client.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.client.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.client.delete(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize("name", ["bridge-only", "otel-then-bridge"])
def test_under_a_higher_level_cache_counts_once(name: str, prefix: str) -> None:
    capture = BridgeCapture()
    applied = instrument(name, capture)
    try:
        client = Client((HOST, PORT))

        @cached(MemcachedMapping(client), key=lambda n: f"{prefix}sq:{n}",
                tracer_provider=capture.tracer_provider)
        def square(n: int) -> bytes:
            return str(n * n).encode()

        txn = traced(capture, lambda: (square(4), square(4)))
        client.close()
    finally:
        for instrumentor in reversed(applied):
            instrumentor.uninstrument()
        capture.close()
    caches = by_time(txn, CACHE_OPS)
    assert [(s["op"], s["data"].get(Attr.CACHE_HIT)) for s in caches] == [
        (Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True)]
    for span in caches:  # the memcached command told its server to the cache operation
        assert span["data"]["network.peer.address"] == HOST
        assert span["data"]["network.peer.port"] == PORT
        assert span["origin"] == "manual"
    if name == "otel-then-bridge":  # OpenTelemetry's command spans are the children
        children = [s for s in txn["spans"] if s["op"] == Op.DB_MEMCACHED]
        assert sorted(c["parent_span_id"] for c in children) == sorted(
            s["span_id"] for s in caches)
        assert all(Attr.CACHE_KEY not in c["data"] for c in children)


@pytest.mark.parametrize("name", ["bridge-only", "otel-then-bridge"])
def test_only_the_cache_spans_own_backend_call_reports_to_it(name: str, prefix: str) -> None:
    """Under a cache span, a command run inside another span (a render step) is a lookup of
    its own, counted as such; the command right under the cache span reports to it."""
    capture = BridgeCapture()
    applied = instrument(name, capture)
    provider = capture.tracer_provider
    try:
        client = Client((HOST, PORT))

        def work() -> None:
            with cache_span(prefix + "page", op=Op.CACHE_PUT, tracer_provider=provider):
                with custom_span("render", tracer_provider=provider):
                    assert client.get(prefix + "menu") is None
                client.set(prefix + "page", b"<p>", noreply=False)

        txn = traced(capture, work)
        client.close()
    finally:
        for instrumentor in reversed(applied):
            instrumentor.uninstrument()
        capture.close()
    caches = by_time(txn, CACHE_OPS)
    assert [(s["op"], s["description"], s["data"].get(Attr.CACHE_HIT)) for s in caches] == [
        (Op.CACHE_PUT, prefix + "page", None), (Op.CACHE_GET, prefix + "menu", False)]
    put, menu = caches
    (render,) = [s for s in txn["spans"] if s["description"] == "render"]
    assert menu["parent_span_id"] == render["span_id"]
    assert put["data"]["network.peer.port"] == menu["data"]["network.peer.port"] == PORT


def test_uninstrument_restores() -> None:
    capture = BridgeCapture()
    instrumentor = PymemcacheInstrumentor()
    instrumentor.instrument(tracer_provider=capture.tracer_provider)
    assert isinstance(Client.__dict__["_fetch_cmd"], BaseObjectProxy)
    instrumentor.uninstrument()
    try:
        for method in ("_fetch_cmd", "_store_cmd", "_misc_cmd", "_extract_value"):
            assert not isinstance(Client.__dict__[method], BaseObjectProxy)
        client = Client((HOST, PORT))
        txn = traced(capture, lambda: client.get("anything"))
        client.close()
        assert txn["spans"] == []
    finally:
        capture.close()


ZERO_CODE_SCRIPT = """
import cachetools
from opentelemetry import trace
from pymemcache.client.base import Client

KEY = {key!r}


@cachetools.cached(cachetools.LRUCache(maxsize=8))
def slow_square(n):
    return n * n


client = Client(("127.0.0.1", 11211))
with trace.get_tracer("zero-code").start_as_current_span("warm-cache"):
    assert client.get(KEY) is None
    client.set(KEY, b"cached-value", expire=30)
    assert client.get(KEY) == b"cached-value"
    assert slow_square(7) == slow_square(7) == 49
print("done")
"""


@pytest.mark.e2e
def test_zero_code_under_opentelemetry_instrument(tmp_path: Path, prefix: str) -> None:
    script = tmp_path / "warm_cache.py"
    script.write_text(ZERO_CODE_SCRIPT.format(key=prefix + "zc"))
    with SentryReceiver() as receiver:
        env = {**os.environ, **bridge_env(receiver, "warm-cache")}
        proc = subprocess.run([str(opentelemetry_instrument()), sys.executable, str(script)],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "done" in proc.stdout, output
        assert_clean_output(output)
        transactions = receiver.wait_for_transactions(1, timeout=10)
        assert len(transactions) == 1, summary(receiver)
        (txn,) = transactions
        assert txn["transaction"] == "warm-cache"
        gets = [(s["origin"], s["data"][Attr.CACHE_HIT]) for s in txn["spans"]
                if s["op"] == Op.CACHE_GET]
        assert sorted(gets) == sorted([
            ("auto.otel.pymemcache", False), ("auto.otel.pymemcache", True),
            ("auto.cache.cachetools", False), ("auto.cache.cachetools", True)]), summary(receiver)
        puts = [s for s in txn["spans"] if s["op"] == Op.CACHE_PUT]
        assert {s["origin"] for s in puts} == {"auto.otel.pymemcache", "auto.cache.cachetools"}
        receiver.assert_no_problems()
