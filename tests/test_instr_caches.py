"""In-process caches on Sentry's Caches page: ``otel_sentry_bridge.cached``, cachetools and
Flask-Caching.

Each test runs real libraries under a :class:`BridgeCapture` provider, inside a root span
(cache spans are only made inside a recording span), and checks the mapped transaction: ops,
``cache.*`` data, hit and miss counts, parentage. Every transaction passes Relay's normalizer
and the Insights lint (``validate_event``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import cachetools
import cachetools.func
import flask_caching
import pytest
from flask import Flask
from flask_caching.backends.simplecache import SimpleCache
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from otel_sentry_bridge_instrumentation.cachetools import CachetoolsInstrumentor
from otel_sentry_bridge_instrumentation.flask_caching import FlaskCachingInstrumentor
from sentry_receiver import validate_event
from wrapt import BaseObjectProxy

from otel_sentry_bridge import cached
from otel_sentry_bridge.caching import BoundedCache, item_size, key_text, start_cache_span
from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge.testing import BridgeCapture

CACHE_OPS = (Op.CACHE_GET, Op.CACHE_PUT, Op.CACHE_REMOVE, Op.CACHE_FLUSH)


@pytest.fixture
def capture() -> Iterator[BridgeCapture]:
    cap = BridgeCapture()
    try:
        yield cap
    finally:
        cap.close()


@pytest.fixture
def cachetools_on(capture: BridgeCapture) -> Iterator[BridgeCapture]:
    CachetoolsInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    try:
        yield capture
    finally:
        CachetoolsInstrumentor().uninstrument()


@pytest.fixture
def flask_caching_on(capture: BridgeCapture) -> Iterator[BridgeCapture]:
    FlaskCachingInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    try:
        yield capture
    finally:
        FlaskCachingInstrumentor().uninstrument()


def traced(capture: BridgeCapture, work: Callable[[], Any]) -> dict[str, Any]:
    """Run ``work`` inside a root span; the one transaction sent, validated."""
    with capture.tracer_provider.get_tracer("test").start_as_current_span("job"):
        work()
    (txn,) = capture.transactions()
    assert validate_event(txn, kind="transaction") == []
    return txn


def cache_spans(txn: dict[str, Any]) -> list[dict[str, Any]]:
    spans = [s for s in txn["spans"] if s["op"] in CACHE_OPS]
    return sorted(spans, key=lambda s: s["start_timestamp"])


def ops_hits(txn: dict[str, Any]) -> list[tuple[str, bool | None]]:
    return [(s["op"], s["data"].get(Attr.CACHE_HIT)) for s in cache_spans(txn)]


def root_id(txn: dict[str, Any]) -> str:
    return str(txn["contexts"]["trace"]["span_id"])


# ------------------------------------------------------------------------------ key texts
class Order:
    def __repr__(self) -> str:  # never called: application objects are not repr'd
        raise AssertionError("repr of an application object")


def test_key_text_and_item_size() -> None:
    assert key_text((42, "en"), "get_user") == "get_user(42, 'en')"
    # cachetools' hashkey with keywords: args, marker class, sorted (name, value) pairs
    assert key_text(cachetools.keys.hashkey(1, lang="en"), "f") == "f(1, lang='en')"
    assert key_text(cachetools.keys.typedkey(1, 2.0), "f") == "f(1, 2.0)"
    assert key_text((Order(),), "f") == "f(<Order>)"
    assert key_text("user:42") == "user:42" and key_text(b"user:\xff") == "user:\ufffd"
    assert len(key_text(("x" * 1000,), "f")) < 100
    assert item_size(b"abc") == 3 and item_size("h\u00e9") == 3 and item_size("ab") == 2
    assert item_size({"a": 1}) is None and item_size(12) is None


class _HashedTuple(tuple[Any, ...]):
    """cachetools 5 to 7 made their keys instances of this tuple subclass (8: plain tuples)."""


def test_key_text_of_older_cachetools_keys() -> None:
    key = _HashedTuple((1, _HashedTuple, ("lang", "en")))  # hashkey(1, lang="en") before 8.0
    assert key_text(key, "f") == "f(1, lang='en')"
    assert key_text(_HashedTuple((2,)), "get_user") == "get_user(2)"
    flat = _HashedTuple((1, _HashedTuple, "lang", "en", "n", 2))  # before 5.3: flat pairs
    assert key_text(flat, "f") == "f(1, lang='en', n=2)"


def test_bounded_cache_is_lru_with_ttl() -> None:
    now = [0.0]
    store = BoundedCache(maxsize=2, ttl=10, timer=lambda: now[0])
    store["a"], store["b"] = 1, 2
    assert store["a"] == 1
    store["c"] = 3  # evicts "b", the least recently used
    assert sorted(store) == ["a", "c"]
    now[0] = 11.0
    with pytest.raises(KeyError):
        store["a"]
    with pytest.raises(ValueError):
        BoundedCache(maxsize=0)
    with pytest.raises(ValueError):
        cached({}, ttl=5)


# -------------------------------------------------------------------------------- cached()
def test_cached_sync_miss_put_hit(capture: BridgeCapture) -> None:
    calls = []
    tracer = capture.tracer_provider.get_tracer("app")

    @cached(ttl=30, tracer_provider=capture.tracer_provider)
    def render(page: str, *, lang: str = "en") -> str:
        calls.append(page)
        with tracer.start_as_current_span("render.body"):
            return f"<h1>{page}</h1>"

    def work() -> None:
        assert render("home", lang="fr") == "<h1>home</h1>"
        assert render("home", lang="fr") == "<h1>home</h1>"

    txn = traced(capture, work)
    assert calls == ["home"]
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True)]
    miss, put, hit = cache_spans(txn)
    key = "test_cached_sync_miss_put_hit.<locals>.render('home', lang='fr')"
    for span in (miss, put, hit):
        assert span["description"] == key and span["data"][Attr.CACHE_KEY] == [key]
        assert span["data"][Attr.CACHE_TTL] == 30
        assert span["parent_span_id"] == root_id(txn) and span["status"] == "ok"
    assert put["data"][Attr.CACHE_WRITE] is True
    assert put["data"][Attr.CACHE_ITEM_SIZE] == hit["data"][Attr.CACHE_ITEM_SIZE] == 13
    assert Attr.CACHE_ITEM_SIZE not in miss["data"]
    # The function runs between the lookup and the store, not inside a cache span.
    (body,) = [s for s in txn["spans"] if s["description"] == "render.body"]
    assert body["parent_span_id"] == root_id(txn)
    assert miss["timestamp"] <= body["start_timestamp"] <= put["start_timestamp"]
    assert capture.items("event") == []


def test_cached_async(capture: BridgeCapture) -> None:
    calls = []

    @cached(name="prices", key=lambda sku: f"price:{sku}",
            tracer_provider=capture.tracer_provider)
    async def price(sku: str) -> bytes:
        calls.append(sku)
        await asyncio.sleep(0)
        return b"9.99"

    async def main() -> list[bytes]:
        return [await price("a"), await price("a"), await price("b")]

    txn = traced(capture, lambda: asyncio.run(main()))
    assert calls == ["a", "b"]
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None),
                             (Op.CACHE_GET, True), (Op.CACHE_GET, False), (Op.CACHE_PUT, None)]
    assert [s["description"] for s in cache_spans(txn)] == ["price:a"] * 3 + ["price:b"] * 2
    assert price.cache["price:a"] == b"9.99"  # type: ignore[attr-defined]


def test_cached_exceptions_propagate_and_are_not_cached(capture: BridgeCapture) -> None:
    @cached(tracer_provider=capture.tracer_provider)
    def lookup(item: Any) -> int:
        if item == "bad":
            raise LookupError("no such item")
        return 1

    def work() -> None:
        for _ in range(2):
            with pytest.raises(LookupError, match="no such item"):
                lookup("bad")
        with pytest.raises(TypeError):
            lookup(["unhashable"])

    txn = traced(capture, work)
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_GET, False), (Op.CACHE_GET, None)]
    first, second, failed = cache_spans(txn)
    assert first["status"] == second["status"] == "ok"
    assert failed["status"] == "internal_error"  # the lookup itself failed: unhashable key


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class BrokenStore(dict[Any, Any]):
    """A mapping whose backend fails with an exception that cannot even be printed."""

    def __getitem__(self, key: Any) -> Any:
        raise Unprintable()


def test_cached_backend_failure_with_odd_exception(capture: BridgeCapture) -> None:
    @cached(BrokenStore(), tracer_provider=capture.tracer_provider)
    def value(n: int) -> int:
        return n

    def work() -> None:
        with pytest.raises(Unprintable):
            value(1)

    txn = traced(capture, work)
    (span,) = cache_spans(txn)
    assert span["op"] == Op.CACHE_GET and span["status"] == "internal_error"


def test_cached_clear_and_outside_a_trace(capture: BridgeCapture) -> None:
    calls = []

    @cached(maxsize=8, tracer_provider=capture.tracer_provider)
    def double(n: int) -> int:
        calls.append(n)
        return 2 * n

    assert double(2) == double(2) == 4  # outside any trace: memoized, no span
    assert calls == [2]
    assert capture.transactions() == []
    txn = traced(capture, lambda: (double.cache_clear(), double(2)))  # type: ignore[attr-defined]
    assert calls == [2, 2]
    assert ops_hits(txn) == [(Op.CACHE_FLUSH, None), (Op.CACHE_GET, False), (Op.CACHE_PUT, None)]
    assert cache_spans(txn)[0]["description"].endswith("double (all keys)")


def test_cache_span_limit_per_trace() -> None:
    """A memoized function called in a loop makes at most SENTRY_BRIDGE_CACHE_SPAN_LIMIT
    spans per trace; the next trace has its own budget."""
    capture = BridgeCapture(cache_span_limit=4)
    try:
        @cached(tracer_provider=capture.tracer_provider)
        def tax(rate: int) -> int:
            return rate * 2

        tracer = capture.tracer_provider.get_tracer("test")
        for _ in range(2):
            with tracer.start_as_current_span("job"):
                assert [tax(i % 2) for i in range(10)] == [0, 2] * 5
        first, second = capture.transactions()
    finally:
        capture.close()
    assert ops_hits(first) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None),
                               (Op.CACHE_GET, False), (Op.CACHE_PUT, None)]
    assert ops_hits(second) == [(Op.CACHE_GET, True)] * 4
    for txn in (first, second):
        assert validate_event(txn, kind="transaction") == []


# ------------------------------------------------------------------------------ cachetools
def test_cachetools_cached_ttl_cache(cachetools_on: BridgeCapture) -> None:
    store = cachetools.TTLCache(maxsize=16, ttl=120)

    @cachetools.cached(store, info=True)
    def profile(user_id: int) -> str:
        return "x" * user_id

    txn = traced(cachetools_on, lambda: [profile(3), profile(3), profile(4), profile(3)])
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True),
                             (Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True)]
    hit = cache_spans(txn)[2]
    assert hit["description"] == "test_cachetools_cached_ttl_cache.<locals>.profile(3)"
    assert hit["origin"] == "auto.cache.cachetools"
    assert hit["data"][Attr.CACHE_TTL] == 120 and hit["data"][Attr.CACHE_ITEM_SIZE] == 3
    assert all(s["parent_span_id"] == root_id(txn) for s in cache_spans(txn))
    # The decorated function is cachetools' own; its mapping answers as the TTLCache.
    assert profile.cache_info().hits == 2  # type: ignore[attr-defined]
    assert isinstance(profile.cache, cachetools.TTLCache) and profile.cache.currsize == 2  # type: ignore[attr-defined]


def test_cachetools_func_decorators(cachetools_on: BridgeCapture) -> None:
    @cachetools.func.lru_cache(maxsize=4)
    def square(n: int) -> int:
        return n * n

    @cachetools.func.ttl_cache(maxsize=4, ttl=60)
    def cube(n: int) -> int:
        return n * n * n

    txn = traced(cachetools_on, lambda: [square(2), square(2), cube(2), cube(2)])
    assert [s["description"].rsplit(".", 1)[-1] for s in cache_spans(txn)] == (
        ["square(2)"] * 3 + ["cube(2)"] * 3)
    assert [h for _, h in ops_hits(txn)] == [False, None, True] * 2
    assert square.cache_info().hits == 1  # type: ignore[attr-defined]


def test_cachetools_cachedmethod_and_lock(cachetools_on: BridgeCapture) -> None:
    class Repo:
        def __init__(self) -> None:
            self.store: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(maxsize=8)
            self.loads = 0

        @cachetools.cachedmethod(lambda self: self.store, lock=lambda self: threading.Lock())
        def get(self, name: str) -> str:
            self.loads += 1
            return name.upper()

    first, second = Repo(), Repo()
    txn = traced(cachetools_on, lambda: [first.get("a"), first.get("a"), second.get("a")])
    assert first.loads == second.loads == 1
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True),
                             (Op.CACHE_GET, False), (Op.CACHE_PUT, None)]
    put = cache_spans(txn)[1]  # the locked variant stores with setdefault
    assert put["description"] == "test_cachetools_cachedmethod_and_lock.<locals>.Repo.get('a')"
    assert put["data"][Attr.CACHE_WRITE] is True and put["data"][Attr.CACHE_ITEM_SIZE] == 1
    assert first.get("b") == "B" and "b" in str(list(first.store))  # outside a trace: plain


def test_cachetools_too_large_and_exceptions(cachetools_on: BridgeCapture) -> None:
    @cachetools.cached(cachetools.LRUCache(maxsize=4, getsizeof=len))
    def text(n: int) -> str:
        if n < 0:
            raise ValueError("negative")
        return "y" * n

    def work() -> None:
        assert text(10) == "y" * 10  # too large for the cache: cachetools drops it quietly
        with pytest.raises(ValueError, match="negative"):
            text(-1)

    txn = traced(cachetools_on, work)
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, False)]
    put = cache_spans(txn)[1]
    assert put["data"][Attr.CACHE_WRITE] is False and put["status"] == "ok"
    assert all(s["status"] == "ok" for s in cache_spans(txn))
    assert cachetools_on.items("event") == []


def test_cachetools_uninstrument_restores(capture: BridgeCapture) -> None:
    @cachetools.cached(cachetools.LRUCache(4))
    def before(n: int) -> int:  # decorated before instrument(): not traced (documented)
        return n

    instrumentor = CachetoolsInstrumentor()
    instrumentor.instrument(tracer_provider=capture.tracer_provider)
    try:
        assert isinstance(cachetools.cached, BaseObjectProxy)
        assert isinstance(cachetools.func.cached, BaseObjectProxy)

        @cachetools.cached(cachetools.LRUCache(4))
        def during(n: int) -> int:
            return n

        txn = traced(capture, lambda: (before(1), during(1)))
        assert [s["description"].rsplit(".", 1)[-1] for s in cache_spans(txn)] == [
            "during(1)", "during(1)"]
    finally:
        instrumentor.uninstrument()
    for name in ("cached", "cachedmethod"):
        assert not isinstance(getattr(cachetools, name), BaseObjectProxy)
    assert not isinstance(cachetools.func.cached, BaseObjectProxy)
    # Functions decorated while instrumented stop reporting.
    with capture.tracer_provider.get_tracer("test").start_as_current_span("job"):
        assert during(1) == 1 and during(2) == 2
    txn = capture.transactions()[-1]
    assert txn["transaction"] == "job" and cache_spans(txn) == []


# ---------------------------------------------------------------------------- Flask-Caching
def make_app(config: dict[str, Any] | None = None) -> tuple[Flask, flask_caching.Cache]:
    app = Flask(__name__)
    cache = flask_caching.Cache(app, config={"CACHE_TYPE": "SimpleCache",
                                             "CACHE_DEFAULT_TIMEOUT": 300, **(config or {})})
    return app, cache


def test_flask_caching_api(flask_caching_on: BridgeCapture) -> None:
    app, cache = make_app()

    def work() -> None:
        with app.app_context():
            assert cache.get("user:1") is None
            assert cache.set("user:1", "alice", timeout=60)
            assert cache.get("user:1") == "alice"
            assert cache.get_many("user:1", "user:2") == ["alice", None]
            assert cache.get_many("user:3", "user:4") == [None, None]
            cache.set_many({"a": b"12", "b": "345"})
            assert cache.add("a", "other") is False
            cache.delete("a")
            cache.delete_many("b", "user:1")
            cache.clear()

    txn = traced(flask_caching_on, work)
    assert ops_hits(txn) == [
        (Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True), (Op.CACHE_GET, True),
        (Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_PUT, None),
        (Op.CACHE_REMOVE, None), (Op.CACHE_REMOVE, None), (Op.CACHE_FLUSH, None)]
    spans = cache_spans(txn)
    assert [s["description"] for s in spans] == [
        "user:1", "user:1", "user:1", "user:1, user:2", "user:3, user:4", "a, b", "a", "a",
        "b, user:1", "(all keys)"]
    assert spans[1]["data"][Attr.CACHE_TTL] == 60 and spans[5]["data"][Attr.CACHE_TTL] == 300
    assert spans[1]["data"][Attr.CACHE_ITEM_SIZE] == 5
    assert spans[3]["data"][Attr.CACHE_ITEM_SIZE] == 5
    assert spans[5]["data"][Attr.CACHE_ITEM_SIZE] == 5
    assert spans[5]["data"][Attr.CACHE_WRITE] is True
    assert spans[6]["data"][Attr.CACHE_WRITE] is False  # add of a present key
    assert {s["origin"] for s in spans} == {"auto.cache.flask_caching"}
    assert all(s["parent_span_id"] == root_id(txn) for s in spans)


def test_flask_caching_cached_view(flask_caching_on: BridgeCapture) -> None:
    app, cache = make_app()
    renders = []

    @app.route("/report")
    @cache.cached(timeout=50)
    def report() -> str:
        renders.append(1)
        return "report body"

    FlaskInstrumentor().instrument_app(app, tracer_provider=flask_caching_on.tracer_provider)
    try:
        client = app.test_client()
        assert client.get("/report").text == client.get("/report").text == "report body"
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert renders == [1]
    first, second = flask_caching_on.transactions()
    for txn in (first, second):
        assert txn["transaction"] == "GET /report"
        assert validate_event(txn, kind="transaction") == []
    assert ops_hits(first) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None)]
    assert ops_hits(second) == [(Op.CACHE_GET, True)]
    (hit,) = cache_spans(second)
    assert hit["description"] == "view//report" and hit["data"][Attr.CACHE_ITEM_SIZE] == 11
    assert cache_spans(first)[1]["data"][Attr.CACHE_TTL] == 50


class DownCache(SimpleCache):
    """A backend whose server is gone."""

    def get(self, key: str) -> Any:
        raise ConnectionError(f"cache server down reading {key}")


def test_flask_caching_errors_propagate_and_uninstrument(capture: BridgeCapture) -> None:
    app, cache = make_app()
    app.extensions["cache"][cache] = DownCache()
    instrumentor = FlaskCachingInstrumentor()
    instrumentor.instrument(tracer_provider=capture.tracer_provider)
    try:
        def work() -> None:
            with app.app_context(), pytest.raises(ConnectionError, match="down reading k"):
                cache.get("k")  # the backend's own error, unchanged

        txn = traced(capture, work)
        (span,) = cache_spans(txn)
        assert span["op"] == Op.CACHE_GET and span["status"] == "unavailable"
        assert Attr.CACHE_HIT not in span["data"]
        (event,) = capture.items("event")  # recorded on the span, as OTel's clients do
        assert validate_event(event, kind="event") == []
        assert event["exception"]["values"][-1]["type"] == "ConnectionError"
    finally:
        instrumentor.uninstrument()
    for method in ("get", "set", "add", "delete", "get_many", "set_many", "delete_many", "clear"):
        assert not isinstance(getattr(flask_caching.Cache, method), BaseObjectProxy)


def test_flask_caching_on_redis_counts_once(flask_caching_on: BridgeCapture) -> None:
    """Flask-Caching's RedisCache under OpenTelemetry's redis instrumentation with the bridge's
    hooks: each lookup is one cache span (Flask-Caching's, with the redis server's address),
    the redis command under it is a plain ``db.redis`` span (no second ``cache.*`` parent)."""
    from conftest import require_service
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    from otel_sentry_bridge import redis_request_hook, redis_response_hook

    require_service("127.0.0.1", 6379, "Redis")
    RedisInstrumentor().instrument(tracer_provider=flask_caching_on.tracer_provider,
                                   request_hook=redis_request_hook,
                                   response_hook=redis_response_hook)
    try:
        app, cache = make_app({"CACHE_TYPE": "RedisCache", "CACHE_REDIS_HOST": "127.0.0.1",
                               "CACHE_REDIS_PORT": 6379, "CACHE_KEY_PREFIX": "fc-test:"})

        def work() -> None:
            with app.app_context():
                cache.delete("user:9")
                assert cache.get("user:9") is None
                assert cache.set("user:9", "alice", timeout=30)
                assert cache.get("user:9") == "alice"

        txn = traced(flask_caching_on, work)
    finally:
        RedisInstrumentor().uninstrument()
    assert ops_hits(txn) == [(Op.CACHE_REMOVE, None), (Op.CACHE_GET, False),
                             (Op.CACHE_PUT, None), (Op.CACHE_GET, True)]
    spans = cache_spans(txn)
    assert {s["origin"] for s in spans} == {"auto.cache.flask_caching"}
    assert all(s["data"].get("network.peer.address") == "127.0.0.1" for s in spans)
    assert all(s["data"].get("network.peer.port") == 6379 for s in spans)
    redis_spans = [s for s in txn["spans"] if s["op"] == Op.DB_REDIS]
    assert len(redis_spans) == 4
    by_id = {s["span_id"]: s for s in spans}
    assert all(s["parent_span_id"] in by_id for s in redis_spans)


def test_redis_command_in_another_span_under_a_cache_span_counts_itself(
    capture: BridgeCapture,
) -> None:
    """Only the command right under a cache span is its backend call (no cache span of its
    own); a lookup made by code in a child span (a render step) is a cache lookup itself."""
    import redis
    from conftest import require_service
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    from otel_sentry_bridge import cache_span, redis_request_hook, redis_response_hook, span

    require_service("127.0.0.1", 6379, "Redis")
    provider = capture.tracer_provider
    RedisInstrumentor().instrument(tracer_provider=provider, request_hook=redis_request_hook,
                                   response_hook=redis_response_hook)
    try:
        client = redis.Redis(host="127.0.0.1", port=6379)

        def work() -> None:
            with cache_span("cs-test:page", op=Op.CACHE_PUT, tracer_provider=provider):
                with span("render", tracer_provider=provider):
                    client.get("cs-test:menu")
                client.set("cs-test:page", b"<p>", ex=5)

        txn = traced(capture, work)
        client.close()
    finally:
        RedisInstrumentor().uninstrument()
    assert [(s["op"], s["description"]) for s in cache_spans(txn)] == [
        (Op.CACHE_PUT, "cs-test:page"), (Op.CACHE_GET, "cs-test:menu")]
    put, menu = cache_spans(txn)
    assert put["data"]["network.peer.port"] == 6379 and menu["data"][Attr.CACHE_HIT] is False


def test_start_cache_span_contract() -> None:
    """The span is current only inside ``with``; a cancelled or interrupted cache call ends its
    span without an error event; lookups made with instrumentation suppressed do not spend
    the trace's span budget."""
    capture = BridgeCapture(cache_span_limit=2)
    tracer = capture.tracer_provider.get_tracer("test")

    async def cancelled() -> None:
        operation = start_cache_span(tracer, Op.CACHE_GET, ("slow",))
        assert operation is not None
        with operation:
            await asyncio.sleep(10)

    async def cancel() -> None:
        job = asyncio.ensure_future(cancelled())
        await asyncio.sleep(0)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    try:
        with tracer.start_as_current_span("job") as root:
            with suppress_instrumentation():
                assert [start_cache_span(tracer, Op.CACHE_GET, ("k",)) for _ in range(3)] == [
                    None] * 3
            operation = start_cache_span(tracer, Op.CACHE_GET, ("k",))
            assert operation is not None and trace.get_current_span() is root
            with operation:
                assert trace.get_current_span() is operation.span
                operation.hit(True)
            assert trace.get_current_span() is root
            asyncio.run(cancel())
        (txn,) = capture.transactions()
        assert capture.items("event") == []
    finally:
        capture.close()
    assert validate_event(txn, kind="transaction") == []
    assert [s["description"] for s in cache_spans(txn)] == ["k", "slow"]


def test_cachetools_before_5_3_without_func_cached(capture: BridgeCapture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """cachetools 5.0 to 5.2: ``cachetools.func`` has its own decorators (no ``cached``);
    ``cached`` and ``cachedmethod`` are still traced."""
    monkeypatch.delattr(cachetools.func, "cached")
    instrumentor = CachetoolsInstrumentor()
    instrumentor.instrument(tracer_provider=capture.tracer_provider)
    try:
        @cachetools.cached(cachetools.LRUCache(4))
        def double(n: int) -> int:
            return 2 * n

        txn = traced(capture, lambda: (double(1), double(1)))
    finally:
        instrumentor.uninstrument()
    assert ops_hits(txn) == [(Op.CACHE_GET, False), (Op.CACHE_PUT, None), (Op.CACHE_GET, True)]
    assert not isinstance(cachetools.cached, BaseObjectProxy)
