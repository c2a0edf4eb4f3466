"""End to end: the example apps under ``opentelemetry-instrument``, reporting to a loopback Sentry.

Every test starts apps in subprocesses with ``SENTRY_DSN`` pointing at a ``SentryReceiver``,
drives requests, stops the apps with SIGTERM (they flush at exit) and checks what arrived, span
by span, plus the apps' output (no internal error of the bridge, no unexpected traceback).
Start-up transactions (``connect``, ``CREATE ...``, ``INSERT ...``, ``GET /health``) also arrive;
the tests pick transactions by name.

Nothing here needs ``opentelemetry-distro`` to be installed in the venv: the tests that want it
install it once per session into a folder of their own (``.venv/e2e-distro-target``) and put
that folder first on the app's ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from apps import INVENTORY_APP, REPO_ROOT, SHOP_APP, AppProcess
from conftest import require_service
from e2e_support import (
    BRIDGE_SDK_NAME,
    TRACEBACK_MARKER,
    assert_clean_output,
    assert_no_duplicates,
    assert_receiver_clean,
    bridge_env,
    children_of,
    distro_parent_dir,
    dsn_complaints,
    envelope_problems,
    free_ports,
    install_otel_distro,
    is_bridge_envelope,
    named,
    one,
    prepend_pythonpath,
    request_path,
    running,
    spans_in_start_order,
    stop_all,
    summary,
    trace_of,
)
from sentry_receiver import Envelope, SentryReceiver, normalize_event

from otel_sentry_bridge import console

pytestmark = pytest.mark.e2e

PRODUCT_TXN = "GET /products/<int:product_id>"
STOCK_TXN = "GET /stock/<int:product_id>"
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "secretvalue"

SEMCONV_MODES = [
    pytest.param(None, id="semconv-old"),
    pytest.param("http,database", id="semconv-stable"),
    pytest.param("http/dup,database/dup", id="semconv-dup"),
]


def _json(body: bytes) -> Any:
    return json.loads(body)


@pytest.fixture(scope="session")
def otel_distro_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding opentelemetry-distro 0.66b1 (its entry points included)."""
    return install_otel_distro(distro_parent_dir(tmp_path_factory.mktemp("e2e-distro")))


# --------------------------------------------------------------------------------------------
# Shared assertions on the shop's GET /products/<id> transaction
# --------------------------------------------------------------------------------------------


def assert_http_server_root(txn: dict[str, Any], name: str, status: str, code: int) -> None:
    assert txn["transaction"] == name
    assert txn["transaction_info"] == {"source": "route"}
    assert txn["sdk"]["name"] == BRIDGE_SDK_NAME
    trace = trace_of(txn)
    assert trace["op"] == "http.server"
    assert trace["status"] == status
    assert txn["contexts"]["response"]["status_code"] == code
    assert txn["request"]["method"] == "GET"


def assert_children_of_root(txn: dict[str, Any]) -> None:
    trace = trace_of(txn)
    for span in txn["spans"]:
        assert span["trace_id"] == trace["trace_id"], span
        assert span["parent_span_id"] == trace["span_id"], span


def assert_sqlite_product_spans(
    txn: dict[str, Any], inventory_port: int | None
) -> dict[str, Any] | None:
    """db.connect, db (SELECT), then (with an inventory) http.client; returns the client span."""
    assert_http_server_root(txn, PRODUCT_TXN, "ok", 200)
    assert request_path(txn) == "/products/1"
    assert "parent_span_id" not in trace_of(txn)  # the shop starts the trace
    spans = spans_in_start_order(txn)
    expected_ops = ["db.connect", "db"] + (["http.client"] if inventory_port else [])
    assert [s["op"] for s in spans] == expected_ops, spans
    assert_children_of_root(txn)

    connect, query = spans[0], spans[1]
    assert connect["description"] == "connect"
    assert query["description"].startswith("SELECT shop_products.id"), query
    assert query["data"]["db.system"] == "sqlite"
    assert query["data"]["db.operation"] == "SELECT"
    if inventory_port is None:
        return None
    client = spans[2]
    assert client["description"] == f"GET http://127.0.0.1:{inventory_port}/stock/1"
    assert client["data"]["http.response.status_code"] == 200
    assert client["tags"]["http.status_code"] == "200"
    assert client["status"] == "ok"
    return client


# --------------------------------------------------------------------------------------------
# 1. shop (SQLite) + inventory, three semantic-convention modes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("semconv", SEMCONV_MODES)
def test_shop_and_inventory_one_trace(tmp_path: Path, semconv: str | None) -> None:
    inventory_port, shop_port = free_ports(2)
    mode = {"OTEL_SEMCONV_STABILITY_OPT_IN": semconv}
    with SentryReceiver() as receiver:
        inventory_env = bridge_env(
            receiver, "inventory",
            INVENTORY_DATABASE_URL=f"sqlite:///{tmp_path / 'inventory.db'}", **mode,
        )
        shop_env = bridge_env(
            receiver, "shop",
            SHOP_DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}",
            SHOP_REDIS_URL="",
            SHOP_INVENTORY_URL=f"http://127.0.0.1:{inventory_port}",
            **mode,
        )
        with running(
            (INVENTORY_APP, inventory_env, inventory_port), (SHOP_APP, shop_env, shop_port)
        ) as (inventory, shop):
            status, body, _ = shop.get("/products/1")
            assert status == 200, shop.output()
            assert _json(body)["stock"] == 42
            assert shop.get("/fail")[0] == 500
            assert shop.get("/products/999")[0] == 404
            assert shop.get(f"/search?q={SECRET}")[0] == 200
            shop_output, inventory_output = stop_all(shop, inventory)

        assert_clean_output(shop_output, tracebacks=1)
        assert "RuntimeError: boom" in shop_output.split(TRACEBACK_MARKER, 1)[1]
        assert_clean_output(inventory_output)
        assert_receiver_clean(receiver)
        txns = receiver.transactions()
        listing = summary(receiver)

        products = named(txns, PRODUCT_TXN)
        found = one([t for t in products if request_path(t) == "/products/1"], "GET /products/1")
        client = assert_sqlite_product_spans(found, inventory_port)
        assert client is not None, listing

        stock = one(named(txns, STOCK_TXN), STOCK_TXN)
        assert_http_server_root(stock, STOCK_TXN, "ok", 200)
        assert trace_of(stock)["trace_id"] == trace_of(found)["trace_id"], listing
        assert trace_of(stock)["parent_span_id"] == client["span_id"], listing
        assert [s["op"] for s in spans_in_start_order(stock)] == ["db.connect", "db"], listing
        assert_children_of_root(stock)

        failed = one(named(txns, "GET /fail"), "GET /fail")
        assert_http_server_root(failed, "GET /fail", "internal_error", 500)
        # The unhandled exception: exactly one error event, raised in the app's own view.
        (error,) = receiver.events()
        (value,) = error["exception"]["values"]
        assert (value["type"], value["value"]) == ("RuntimeError", "boom"), error
        assert value["mechanism"] == {"type": "auto.otel.flask", "handled": False}, error
        top = [f for f in value["stacktrace"]["frames"] if f["in_app"]][-1]
        assert (top["function"], top["filename"]) == ("fail", "app.py"), value
        assert top["context_line"].strip() == 'raise RuntimeError("boom")', top
        assert not value["stacktrace"]["frames"][0]["in_app"], value  # flask's own frames
        assert trace_of(error)["trace_id"] == trace_of(failed)["trace_id"], listing
        assert trace_of(error)["span_id"] == trace_of(failed)["span_id"], listing
        assert error["transaction"] == "GET /fail"
        crumbs = error["breadcrumbs"]["values"]
        assert [(c["category"], " ".join(c["message"].split())) for c in crumbs] == [
            ("query", "SELECT count(*) AS count_1 FROM shop_orders")], crumbs

        missing = one([t for t in products if request_path(t) == "/products/999"], "/999")
        assert_http_server_root(missing, PRODUCT_TXN, "not_found", 404)
        assert [s["op"] for s in spans_in_start_order(missing)] == ["db.connect", "db"]

        search = one(named(txns, "GET /search"), "GET /search")
        assert_http_server_root(search, "GET /search", "ok", 200)
        assert "query_string" not in search["request"]
        # Query strings are private by default: not in any payload, header or body.
        for envelope in receiver.envelopes + receiver.rejected:
            assert SECRET.encode() not in envelope.body, envelope.body[:2000]


# --------------------------------------------------------------------------------------------
# 2. PostgreSQL + Redis: Queries and Caches
# --------------------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize("semconv", SEMCONV_MODES[:2])
def test_postgres_and_redis_cache_spans(semconv: str | None) -> None:
    require_service("127.0.0.1", 5432, "PostgreSQL")
    require_service("127.0.0.1", 6379, "Redis")
    import redis

    key = "product:2"
    (port,) = free_ports(1)
    with SentryReceiver() as receiver:
        env = bridge_env(
            receiver, "shop",
            SHOP_DATABASE_URL=POSTGRES_URL, SHOP_REDIS_URL=REDIS_URL, SHOP_INVENTORY_URL="",
            OTEL_SEMCONV_STABILITY_OPT_IN=semconv,
        )
        with running((SHOP_APP, env, port)) as (shop,), redis.Redis.from_url(REDIS_URL) as client:
            # Redis is shared with concurrent runs: retry until one miss is followed by a hit.
            for _ in range(3):
                client.delete(key)
                first = shop.get("/products/2")
                second = shop.get("/products/2")
                assert first[0] == second[0] == 200, shop.output()
                if (_json(first[1])["cached"], _json(second[1])["cached"]) == (False, True):
                    break
            else:
                pytest.fail(f"never saw a cache miss then a hit:\n{shop.output()}")
            output = shop.stop()

        assert_clean_output(output)
        assert_receiver_clean(receiver)
        listing = summary(receiver)
        products = named(receiver.transactions(), PRODUCT_TXN)
        assert len(products) >= 2, listing
        miss, hit = products[-2:]

        # Cache miss: cache.get > db.redis GET, connect, SELECT, cache.put > db.redis SET.
        assert_http_server_root(miss, PRODUCT_TXN, "ok", 200)
        root_id = trace_of(miss)["span_id"]
        top = children_of(miss, root_id)
        assert [s["op"] for s in top] == ["cache.get", "db.connect", "db", "cache.put"], listing
        get, connect, query, put = top
        assert get["description"] == key
        assert get["data"]["cache.hit"] is False
        assert get["data"]["cache.key"] == [key]
        get_redis = one(children_of(miss, get["span_id"]), "child of cache.get")
        assert (get_redis["op"], get_redis["description"]) == ("db.redis", f"GET {key}")
        assert connect["description"] == "connect"
        assert query["description"].startswith("SELECT shop_products.id"), query
        assert query["data"]["db.system"] == "postgresql"
        assert query["data"]["db.operation"] == "SELECT"
        assert put["description"] == key
        assert put["data"]["cache.key"] == [key]
        put_redis = one(children_of(miss, put["span_id"]), "child of cache.put")
        assert (put_redis["op"], put_redis["description"]) == ("db.redis", f"SET {key}")
        assert len(miss["spans"]) == 6, listing
        for span in miss["spans"]:
            assert span["trace_id"] == trace_of(miss)["trace_id"]

        # Cache hit: cache.get (hit, with the item's size) > db.redis GET, and no query.
        assert_http_server_root(hit, PRODUCT_TXN, "ok", 200)
        top = children_of(hit, trace_of(hit)["span_id"])
        assert [s["op"] for s in top] == ["cache.get"], listing
        get = top[0]
        assert get["description"] == key
        assert get["data"]["cache.hit"] is True
        assert get["data"]["cache.key"] == [key]
        size = get["data"]["cache.item_size"]
        assert isinstance(size, int) and size > 0, get
        get_redis = one(children_of(hit, get["span_id"]), "child of cache.get")
        assert (get_redis["op"], get_redis["description"]) == ("db.redis", f"GET {key}")
        assert not [s for s in hit["spans"] if s["op"] == "db"], listing


# --------------------------------------------------------------------------------------------
# 3. Exporter form: OTEL_TRACES_EXPORTER=sentry_bridge with the bridge's configurator and distro
# --------------------------------------------------------------------------------------------


def _run_shop_products(
    tmp_path: Path, receiver: SentryReceiver, **extra: str | None
) -> tuple[AppProcess, str]:
    (port,) = free_ports(1)
    env = bridge_env(
        receiver, "shop", SHOP_DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}",
        SHOP_REDIS_URL="", SHOP_INVENTORY_URL="", **extra,
    )
    with running((SHOP_APP, env, port)) as (shop,):
        status, body, _ = shop.get("/products/1")
        assert status == 200, shop.output()
        assert _json(body)["name"] == "Coffee mug"
        output = shop.stop()
    return shop, output


def _assert_product_once(receiver: SentryReceiver) -> None:
    txns = receiver.transactions()
    assert_no_duplicates(txns)
    found = one(named(txns, PRODUCT_TXN), PRODUCT_TXN)
    assert_sqlite_product_spans(found, None)


def test_exporter_form_reports_once(tmp_path: Path) -> None:
    with SentryReceiver() as receiver:
        _, output = _run_shop_products(
            tmp_path, receiver,
            OTEL_TRACES_EXPORTER="sentry_bridge",
            OTEL_PYTHON_CONFIGURATOR="sentry_bridge",
            OTEL_PYTHON_DISTRO="sentry_bridge",
        )
        assert_clean_output(output)
        assert_receiver_clean(receiver)
        _assert_product_once(receiver)


# --------------------------------------------------------------------------------------------
# 4. With opentelemetry-distro really installed (its distro and configurator compete with ours)
# --------------------------------------------------------------------------------------------


def test_with_opentelemetry_distro_and_exporters_off(
    tmp_path: Path, otel_distro_dir: Path
) -> None:
    with SentryReceiver() as receiver:
        _, output = _run_shop_products(
            tmp_path, receiver, PYTHONPATH=prepend_pythonpath(otel_distro_dir)
        )
        # Both configurators were discovered; OpenTelemetry loads one and names the other.
        assert "Configuration of " in output and " not loaded" in output, output
        assert_clean_output(output)
        assert_receiver_clean(receiver)
        _assert_product_once(receiver)


def test_with_opentelemetry_distro_and_bridge_distro(
    tmp_path: Path, otel_distro_dir: Path
) -> None:
    with SentryReceiver() as receiver:
        _, output = _run_shop_products(
            tmp_path, receiver,
            PYTHONPATH=prepend_pythonpath(otel_distro_dir),
            OTEL_PYTHON_DISTRO="sentry_bridge",
            OTEL_PYTHON_CONFIGURATOR="sentry_bridge",
            OTEL_TRACES_EXPORTER=None,
            OTEL_METRICS_EXPORTER=None,
            OTEL_LOGS_EXPORTER=None,
        )
        assert "Configuration of configurator not loaded" in output, output
        assert_clean_output(output)
        assert_receiver_clean(receiver)
        _assert_product_once(receiver)


# --------------------------------------------------------------------------------------------
# 5. A malformed DSN: the app is untouched, one clear line, nothing sent
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "configurator",
    [
        pytest.param(None, id="default-configurator"),
        pytest.param("sentry_bridge", id="bridge-configurator"),
        pytest.param("configurator", id="opentelemetry-distro-configurator"),
    ],
)
def test_malformed_dsn(
    tmp_path: Path, request: pytest.FixtureRequest, configurator: str | None
) -> None:
    extra: dict[str, str | None] = {
        "SENTRY_DSN": "not a dsn",
        "OTEL_PYTHON_CONFIGURATOR": configurator,
    }
    if configurator == "configurator":
        distro = request.getfixturevalue("otel_distro_dir")
        extra["PYTHONPATH"] = prepend_pythonpath(distro)
    with SentryReceiver() as receiver:
        (port,) = free_ports(1)
        env = bridge_env(
            receiver, "shop", SHOP_DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}",
            SHOP_REDIS_URL="", SHOP_INVENTORY_URL="", **extra,
        )
        with running((SHOP_APP, env, port)) as (shop,):
            status, body, _ = shop.get("/products/1")
            assert status == 200
            assert _json(body) == {
                "id": 1, "name": "Coffee mug", "price_cents": 1200, "cached": False,
                "stock": None,
            }
            assert shop.get("/products/999")[0] == 404
            output = shop.stop()
        assert_clean_output(output)
        receiver.assert_no_problems()
        assert receiver.request_count == 0
        assert receiver.envelopes == [] and receiver.auth_failures == []
        complaints = dsn_complaints(output)
        assert len(complaints) == 1, (
            f"expected exactly one line saying SENTRY_DSN is invalid/malformed, got "
            f"{len(complaints)}: {complaints}\napp output:\n{output}"
        )
        assert "not a dsn" not in output  # the DSN may hold a secret key: never echoed


# --------------------------------------------------------------------------------------------
# 6. Coexistence with sentry_sdk.init() in the same app
# --------------------------------------------------------------------------------------------

SDK_APP = '''\
"""Flask app that calls sentry_sdk.init() itself (test_e2e.py writes it)."""

import os
import signal
import sys

import sentry_sdk
from flask import Flask

sentry_sdk.init(dsn={dsn!r}, traces_sample_rate=1.0)

app = Flask(__name__)


@app.get("/health")
def health():
    return "ok"


@app.get("/boom")
def boom():
    sentry_sdk.capture_message("hello")
    return "captured"


@app.get("/echo")
def echo():
    # What arrived, as the WSGI server saw it (repeated headers are joined with commas).
    from flask import jsonify, request
    return jsonify({{k.lower(): v for k, v in request.headers.items()}})


@app.get("/call")
def call():
    import json

    import requests
    import urllib3
    from flask import jsonify, request
    url = f"http://127.0.0.1:{{request.host.rsplit(':', 1)[1]}}/echo"
    via_requests = requests.get(url, timeout=5).json()
    # urllib3 alone: OTel's urllib3 instrumentation and sentry-sdk's http.client integration
    via_urllib3 = json.loads(urllib3.PoolManager().request("GET", url).data)
    return jsonify({{"requests": via_requests, "urllib3": via_urllib3}})


if __name__ == "__main__":
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    app.run(host="127.0.0.1", port=int(os.environ["SDKAPP_PORT"]), threaded=True)
'''


@dataclass
class SdkRun:
    receiver: SentryReceiver
    output: str
    health_requests: int
    calls: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def sdk_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkRun]:
    """The sentry_sdk.init() app, run once: GET /health (again) and GET /boom."""
    script = tmp_path_factory.mktemp("sdk") / "sdkapp" / "app.py"
    script.parent.mkdir()
    with SentryReceiver() as receiver:
        script.write_text(SDK_APP.format(dsn=receiver.dsn()))
        (port,) = free_ports(1)
        env = bridge_env(receiver, "sdkapp")
        with running((script, env, port)) as (app,):
            assert app.get("/health")[:2] == (200, b"ok")
            assert app.get("/boom")[:2] == (200, b"captured")
            status, body = app.get("/call")[:2]
            assert status == 200, body
            output = app.stop()
        yield SdkRun(receiver, output, health_requests=2, calls=json.loads(body))


def _boom(run: SdkRun) -> dict[str, Any]:
    return one(named(run.receiver.transactions(), "GET /boom"), "GET /boom transaction")


def _hello(run: SdkRun) -> tuple[Envelope, dict[str, Any]]:
    found = [
        (envelope, item.json)
        for envelope in run.receiver.envelopes
        for item in envelope.items
        if item.type == "event" and isinstance(item.json, dict)
        and item.json.get("message") == "hello"
    ]
    assert len(found) == 1, found
    return found[0]


def test_sentry_sdk_init_coexists(sdk_run: SdkRun) -> None:
    receiver = sdk_run.receiver
    assert_clean_output(sdk_run.output)
    assert receiver.auth_failures == [] and receiver.rejected == []
    # The receiver's error-event lint wants exception.values and does not know 'sessions'
    # items: sentry-sdk's own message event and session envelopes trip it. Everything the
    # bridge sent must be clean, and every problem recorded must come from sentry-sdk's own.
    assert envelope_problems(receiver, bridge=True) == []
    sdk_problems = set(envelope_problems(receiver, bridge=False))
    assert set(receiver.problems) <= sdk_problems, receiver.problems
    txns = receiver.transactions()
    assert_no_duplicates(txns)
    listing = summary(receiver)
    for txn in txns:  # sentry-sdk's own transactions are dropped: only the bridge's arrive
        assert txn["sdk"]["name"] == BRIDGE_SDK_NAME, listing
    for envelope in receiver.envelopes:
        if "transaction" in envelope.item_types:
            assert is_bridge_envelope(envelope), envelope.request_headers
    health = named(txns, "GET /health")
    # >=: a readiness poll that timed out may still have been served.
    assert len(health) >= sdk_run.health_requests, listing
    boom = _boom(sdk_run)
    assert_http_server_root(boom, "GET /boom", "ok", 200)
    own = [t for t in txns if t["transaction"] in ("GET /health", "GET /boom")]
    assert len({trace_of(t)["trace_id"] for t in own}) == len(own), listing

    _, event = _hello(sdk_run)
    assert event["contexts"]["trace"]["trace_id"] == trace_of(boom)["trace_id"], listing
    assert event["contexts"]["trace"]["span_id"] == trace_of(boom)["span_id"], listing


def test_sentry_sdk_event_envelope_carries_the_otel_trace(sdk_run: SdkRun) -> None:
    """The DSC (envelope ``trace`` header) of an event sentry-sdk captures inside an OTel span
    belongs to the same trace as the event: Relay samples and links by it."""
    boom = _boom(sdk_run)
    envelope, event = _hello(sdk_run)
    trace_id = trace_of(boom)["trace_id"]
    assert event["contexts"]["trace"]["trace_id"] == trace_id
    dsc = envelope.headers.get("trace") or {}
    assert dsc.get("trace_id") == trace_id, (
        f"event {event['event_id']}: contexts.trace.trace_id is the OTel trace {trace_id} but "
        f"its envelope DSC is {dsc}"
    )


# --------------------------------------------------------------------------------------------
# 7. `make demo`: the shop's metrics (trace_metric items), its order measurement, the Celery
#    task and the monitored job's check-ins
# --------------------------------------------------------------------------------------------


def _load_demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/demo.py as a module (registered while the test runs: it has dataclasses)."""
    spec = importlib.util.spec_from_file_location("bridge_demo", REPO_ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _own_attributes(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item["attributes"].items() if not k.startswith("sentry.")}


def test_demo_shows_metrics_and_a_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole demo, its envelopes also sent to a receiver (SENTRY_DSN is passed through):
    what it prints, and what arrived (Relay-valid transactions, well-formed trace metrics)."""
    demo = _load_demo(monkeypatch)
    monkeypatch.setattr(demo, "ENVELOPE_ROOT", tmp_path / "envelopes")
    with SentryReceiver() as receiver:
        monkeypatch.setenv("SENTRY_DSN", receiver.dsn())
        code = demo.main(["--width", "120"])
        out, err = capsys.readouterr()
        assert code == 0, err + out
        assert_receiver_clean(receiver)  # includes the §7 shape of every trace_metric item
        txns = receiver.transactions()
        items = receiver.trace_metrics()
    listing = summary(receiver)

    # The order measurement: on the POST /orders transaction, kept by Relay.
    order = one(named(txns, "POST /orders"), "POST /orders")
    assert order["measurements"] == {"order.items": {"value": 2.0, "unit": "none"}}
    assert normalize_event(order)["measurements"] == order["measurements"]
    assert "measurements: order.items=2" in out

    # The cache counter: two misses (requests 2 and 4), one hit (request 3), each linked by
    # its exemplar to the trace of a GET /products/<id> transaction.
    products = {trace_of(t)["trace_id"]: t for t in named(txns, PRODUCT_TXN)}
    lookups = [i for i in items if i["name"] == "shop.cache.lookups"]
    assert lookups, listing
    totals: dict[str, float] = {}
    for item in lookups:
        assert (item["type"], item["unit"]) == ("counter", "none"), item
        result = _own_attributes(item)["result"]
        assert result["type"] == "string", item
        totals[result["value"]] = totals.get(result["value"], 0.0) + item["value"]
        assert item["trace_id"] in products and len(item["span_id"]) == 16, item
        ops = {s["op"] for s in products[item["trace_id"]]["spans"]}
        assert ("db" in ops) is (result["value"] == "miss"), (item, ops)  # a hit: no SELECT
    assert totals == {"miss": 2.0, "hit": 1.0}
    assert lookups[0]["attributes"]["sentry.sdk.name"]["value"] == BRIDGE_SDK_NAME

    # The queue-depth gauge: read by a callback (no exemplar, no span), one order queued.
    depth = sorted((i for i in items if i["name"] == "shop.queue.depth"),
                   key=lambda i: i["timestamp"])
    assert depth, listing
    for item in depth:
        assert item["type"] == "gauge" and "span_id" not in item, item
        assert _own_attributes(item) == {"queue": {"value": "fulfilment", "type": "string"}}
    assert depth[-1]["value"] == 1.0  # the last export, at exit, saw the order

    # The terminal listing.
    hit_trace = next(i["trace_id"] for i in lookups if _own_attributes(i)["result"]["value"]
                     == "hit")
    lines = out.splitlines()
    assert any("shop.cache.lookups" in line and "result=hit" in line
               and f"trace {hit_trace[:8]} (request 3)" in line for line in lines), out
    assert any("shop.cache.lookups" in line and "result=miss" in line for line in lines), out
    assert any("shop.queue.depth" in line and "gauge" in line and "queue=fulfilment" in line
               for line in lines), out
    assert "items of the instrumentations' metrics, not listed" in out

    # The Celery task (examples/shop/tasks.py, run by the demo's worker): its own transaction,
    # in the trace of the POST /orders request, under the shop's publish span.
    task = one(named(txns, "shop.send_confirmation"), "shop.send_confirmation")
    assert trace_of(task)["op"] == "queue.task.celery", task
    assert trace_of(task)["trace_id"] == trace_of(order)["trace_id"], (task, order)
    publish = [s for s in order["spans"] if s["op"] == "queue.publish"]
    assert [s["span_id"] for s in publish] == [trace_of(task)["parent_span_id"]], order
    process = [s for s in task["spans"] if s["op"] == "queue.process"]
    assert len(process) == 1, task
    assert process[0]["data"]["messaging.message.receive.latency"] >= 0, process
    assert "shop.send_confirmation | queue.task.celery" in out
    assert "receive latency" in out

    # The monitored job (examples/jobs/nightly_report.py): in_progress, then ok with a
    # duration, both linked to the trace of the job's transaction (the shapes: the validator).
    run = one(named(txns, "nightly-report"), "nightly-report")
    check_ins = receiver.check_ins()
    assert sorted(c["status"] for c in check_ins) == ["in_progress", "ok"], check_ins
    assert {c["monitor_slug"] for c in check_ins} == {"nightly-report"}
    assert len({c["check_in_id"] for c in check_ins}) == 1, check_ins
    assert {c["contexts"]["trace"]["trace_id"] for c in check_ins} == {trace_of(run)["trace_id"]}
    done = next(c for c in check_ins if c["status"] == "ok")
    assert done["duration"] > 0, done
    assert done["monitor_config"]["schedule"] == {"type": "crontab", "value": "0 3 * * *"}
    assert any(line.lstrip().startswith("check-in nightly-report  in_progress")
               for line in lines), out
    assert any(line.lstrip().startswith("check-in nightly-report  ok") and "cron 0 3 * * *"
               in line and f"trace {trace_of(run)['trace_id'][:8]}" in line
               for line in lines), out



def test_metric_items_listing() -> None:
    """The demo's listing (console.render_metric_items): equal lines once with xN, the trace
    only for items with an exemplar (span_id), sentry.* attributes left out, within width."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    base = {"timestamp": 1.0, "trace_id": "0" * 31 + "1", "unit": "none",
            "attributes": {"sentry.sdk.name": {"value": BRIDGE_SDK_NAME, "type": "string"}}}
    hit = {**base, "name": "shop.cache.lookups", "type": "counter", "value": 1.0,
           "trace_id": trace_id, "span_id": "00f067aa0ba902b7",
           "attributes": {**base["attributes"], "result": {"value": "hit", "type": "string"}}}
    gauge = {**base, "name": "shop.queue.depth", "type": "gauge", "value": 0.5, "unit": "ratio"}
    text = console.render_metric_items([hit, gauge, gauge, "junk"], 100, labels=["a", "b", "b"],
                                       trace_notes={trace_id: "request 3"})
    first, second = text.splitlines()
    assert first.split() == ["a", "shop.cache.lookups", "counter", "1", "result=hit", "trace",
                             "4bf92f35", "(request", "3)"]
    assert second.split() == ["b", "shop.queue.depth", "gauge", "0.5", "ratio", "x2", "-"]
    wide = {**hit, "attributes": {f"k{i}": {"value": "v" * 20, "type": "string"}
                                  for i in range(9)}}
    for line in console.render_metric_items([wide], 80).splitlines():
        assert len(line) <= 80 and line.endswith("trace 4bf92f35"), line
    assert console.render_metric_items([], 80) == "(no metric items)"
    assert "x2" in console.render_event("trace_metric", {"items": [gauge, gauge]})


def test_check_in_listing() -> None:
    """The demo's check-ins (console.render_check_ins): slug, status, duration, schedule and
    the trace with its note, one line each within width; render_event shows one."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    start = {"check_in_id": "a" * 32, "monitor_slug": "nightly-report", "status": "in_progress",
             "contexts": {"trace": {"trace_id": trace_id}},
             "monitor_config": {"schedule": {"type": "crontab", "value": "0 3 * * *"},
                                "max_runtime": 10}}
    done = {**start, "status": "ok", "duration": 0.0235}
    first, second = console.render_check_ins([start, done, "junk"], 120,
                                             trace_notes={trace_id: "job"}).splitlines()
    assert first.split() == ["check-in", "nightly-report", "in_progress", "cron", "0", "3", "*",
                             "*", "*,", "max", "10", "min", "trace", "4bf92f35", "(job)"]
    assert second.split()[:5] == ["check-in", "nightly-report", "ok", "23.5", "ms"]
    assert all(len(line) <= 60 for line in console.render_check_ins([done], 60).splitlines())
    assert console.render_check_ins([], 80) == "(no check-ins)"
    assert console.render_event("check_in", {**done, "status": "error", "duration": 2.5}
                                ).split()[2:5] == ["error", "2.50", "s"]


def test_sentry_sdk_init_outgoing_requests_carry_one_set_of_trace_headers(
    sdk_run: SdkRun,
) -> None:
    """sentry-sdk's own http.client integration and OTel's requests and urllib3 instrumentations
    all add trace headers: each request must carry exactly one sentry-trace, one traceparent and
    one Sentry DSC, all of the OTel trace of /call."""
    call = one(named(sdk_run.receiver.transactions(), "GET /call"), "GET /call transaction")
    trace_id = trace_of(call)["trace_id"]
    for client, headers in sdk_run.calls.items():
        sentry_trace, traceparent = headers.get("sentry-trace"), headers.get("traceparent")
        assert sentry_trace and "," not in sentry_trace, (client, headers)
        assert traceparent and "," not in traceparent, (client, headers)
        assert sentry_trace.split("-")[0] == traceparent.split("-")[1] == trace_id, client
        assert sentry_trace.split("-")[1] == traceparent.split("-")[2], client
        assert headers.get("baggage", "").count("sentry-trace_id=") == 1, (client, headers)
        assert f"sentry-trace_id={trace_id}" in headers["baggage"], client
