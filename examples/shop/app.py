"""Example "shop" service: a small Flask app with a database, a cache and a downstream call.

The auto-instrumentations create its spans when it runs under ``opentelemetry-instrument`` (see
README.md beside this file). Its own telemetry is a few API calls that do nothing otherwise: a
cache hit/miss counter and a fulfilment queue-depth gauge (OpenTelemetry's metrics API), and the
number of items of an order as a Sentry transaction measurement (the bridge's
``set_measurement``, which only sets a span attribute).

Configuration (environment variables; an empty value counts as unset):

``SHOP_PORT``
    Port to listen on, on 127.0.0.1 (default 8000).
``SHOP_DATABASE_URL``
    SQLAlchemy URL (default ``sqlite:///<tempdir>/shop.db``). SQLite and PostgreSQL are tested.
``SHOP_REDIS_URL``
    Redis URL for the product cache; unset means no caching at all, unless...
``SHOP_MEMORY_CACHE``
    ``1``: without Redis, cache products in this process instead (``make demo`` does).
``SHOP_INVENTORY_URL``
    Base URL of the inventory service (``examples/inventory/app.py``); unset means the shop
    never calls it.
``SHOP_CELERY_BROKER``
    Celery broker URL: ``POST /orders`` then enqueues ``shop.send_confirmation(order_id)``
    (``tasks.py`` beside this file; ``make demo`` runs a worker). Unset: no Celery at all.

Importing this module only creates ``engine``, ``cache`` and ``app`` (none of them connects
anywhere). ``main()`` creates the tables, seeds the products and serves.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
import requests
import sqlalchemy as sa
from flask import Flask, Response, jsonify, request
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from otel_sentry_bridge import set_measurement


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


DATABASE_URL = _env("SHOP_DATABASE_URL") or f"sqlite:///{Path(tempfile.gettempdir()) / 'shop.db'}"
REDIS_URL = _env("SHOP_REDIS_URL")
MEMORY_CACHE = _env("SHOP_MEMORY_CACHE") == "1"
INVENTORY_URL = (_env("SHOP_INVENTORY_URL") or "").rstrip("/") or None
CELERY_BROKER = _env("SHOP_CELERY_BROKER")
CACHE_TTL_SECONDS = 60
HTTP_TIMEOUT_SECONDS = 5.0
# Arbitrary constant for pg_advisory_xact_lock, serialising concurrent schema set-up.
_PG_SCHEMA_LOCK_KEY = 0x5EED_5409

metadata = sa.MetaData()

products = sa.Table(
    "shop_products",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
)

orders = sa.Table(
    "shop_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("product_id", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
)

SEED_PRODUCTS: list[dict[str, Any]] = [
    {"id": 1, "name": "Coffee mug", "price_cents": 1200},
    {"id": 2, "name": "T-shirt", "price_cents": 2500},
    {"id": 3, "name": "Sticker pack", "price_cents": 500},
    {"id": 4, "name": "Travel mug", "price_cents": 1800},
]

# Created at import so that OpenTelemetry's SQLAlchemy instrumentation (which patches
# sqlalchemy.create_engine) sees it. create_engine does not connect.
engine: sa.Engine = sa.create_engine(DATABASE_URL, pool_pre_ping=False)


class MemoryCache:
    """The part of redis.Redis the shop uses, in this process (SHOP_MEMORY_CACHE=1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, str]] = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            expires, value = self._items.get(key, (0.0, ""))
            return value if expires > time.monotonic() else None

    def set(self, key: str, value: str, ex: int) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + ex, value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


# redis.Redis.from_url does not connect either; None means "no cache".
cache: redis.Redis | MemoryCache | None = (
    redis.Redis.from_url(REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0)
    if REDIS_URL
    else MemoryCache() if MEMORY_CACHE else None
)

# Metrics (OpenTelemetry API: no-ops unless a MeterProvider is configured, e.g. by
# opentelemetry-instrument with OTEL_METRICS_EXPORTER=sentry_bridge).
meter = metrics.get_meter("shop")
cache_lookups = meter.create_counter(
    "shop.cache.lookups", description="Product cache lookups, by result (hit or miss)")
# Orders waiting to be shipped (no shipping service in this example: it only grows).
fulfilment_queue: deque[int] = deque()


def _queue_depth(options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(len(fulfilment_queue), {"queue": "fulfilment"})


meter.create_observable_gauge(
    "shop.queue.depth", callbacks=[_queue_depth], description="Orders waiting to be shipped")

app = Flask(__name__)


def init_db() -> None:
    """Create the tables and seed the products; safe to run concurrently and repeatedly."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # CREATE TABLE IF NOT EXISTS can still race in PostgreSQL (pg_type unique key).
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK_KEY)))
        for table in metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))
        _seed(conn)


def _seed(conn: sa.Connection) -> None:
    name = conn.dialect.name
    if name == "postgresql":
        conn.execute(postgresql.insert(products).on_conflict_do_nothing(), SEED_PRODUCTS)
    elif name == "sqlite":
        conn.execute(sqlite.insert(products).on_conflict_do_nothing(), SEED_PRODUCTS)
    else:
        existing = set(conn.execute(sa.select(products.c.id)).scalars())
        missing = [row for row in SEED_PRODUCTS if row["id"] not in existing]
        if missing:
            conn.execute(products.insert(), missing)


def _product_dict(row: sa.Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "price_cents": row.price_cents}


def _cache_key(product_id: int) -> str:
    return f"product:{product_id}"


def _load_product(product_id: int) -> tuple[dict[str, Any] | None, bool]:
    """Return (product or None, whether it came from the cache)."""
    if cache is not None:
        cached = cache.get(_cache_key(product_id))
        cache_lookups.add(1, {"result": "miss" if cached is None else "hit"})
        if cached is not None:
            return json.loads(cached), True
    with engine.connect() as conn:
        row = conn.execute(sa.select(products).where(products.c.id == product_id)).first()
    if row is None:
        return None, False
    product = _product_dict(row)
    if cache is not None:
        cache.set(_cache_key(product_id), json.dumps(product), ex=CACHE_TTL_SECONDS)
    return product, False


def _fetch_stock(product_id: int) -> int | None:
    if INVENTORY_URL is None:
        return None
    try:
        resp = requests.get(f"{INVENTORY_URL}/stock/{product_id}", timeout=HTTP_TIMEOUT_SECONDS)
    except requests.RequestException:
        app.logger.warning("inventory unreachable", exc_info=True)
        return None
    if resp.status_code != 200:
        return None
    stock = resp.json().get("stock")
    return stock if isinstance(stock, int) else None


def _reserve(product_id: int, quantity: int) -> bool | None:
    if INVENTORY_URL is None:
        return None
    try:
        resp = requests.post(
            f"{INVENTORY_URL}/reserve",
            json={"product_id": product_id, "quantity": quantity},
            timeout=HTTP_TIMEOUT_SECONDS,
        )
    except requests.RequestException:
        app.logger.warning("inventory unreachable", exc_info=True)
        return False
    return resp.status_code == 200


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


@app.get("/health")
def health() -> Response:
    return Response("ok", mimetype="text/plain")


@app.get("/products")
def list_products() -> Response:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(products).order_by(products.c.id)).all()
    return jsonify([_product_dict(row) for row in rows])


@app.get("/products/<int:product_id>")
def get_product(product_id: int) -> tuple[Response, int]:
    product, cached = _load_product(product_id)
    if product is None:
        return _error(404, "product not found")
    stock = _fetch_stock(product_id)
    return jsonify({**product, "cached": cached, "stock": stock}), 200


def _enqueue_confirmation(order_id: int) -> None:
    """``shop.send_confirmation.delay(order_id)``: an ``apply_async`` span in this request's
    trace; the worker's task continues it. Imported here: without a broker, no Celery."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from tasks import send_confirmation  # noqa: PLC0415

    send_confirmation.delay(order_id)


@app.post("/orders")
def create_order() -> tuple[Response, int]:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return _error(400, "expected a JSON object")
    product_id = payload.get("product_id")
    quantity = payload.get("quantity", 1)
    if type(product_id) is not int or type(quantity) is not int or quantity < 1:
        return _error(400, "product_id and quantity must be integers, quantity >= 1")
    with engine.begin() as conn:
        exists = conn.execute(sa.select(products.c.id).where(products.c.id == product_id)).first()
        if exists is None:
            return _error(404, "product not found")
        result = conn.execute(orders.insert().values(product_id=product_id, quantity=quantity))
        order_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    set_measurement("order.items", quantity)  # on this request's Sentry transaction
    if order_id is not None:
        fulfilment_queue.append(order_id)
    reserved = _reserve(product_id, quantity)
    if CELERY_BROKER is not None and order_id is not None:
        _enqueue_confirmation(order_id)
    if cache is not None:
        cache.delete(_cache_key(product_id))
    body = {"order_id": order_id, "product_id": product_id, "quantity": quantity}
    return jsonify({**body, "reserved": reserved}), 201


@app.get("/fail")
def fail() -> Response:
    """Fails after some work: the error event carries that work as breadcrumbs."""
    with engine.connect() as conn:
        conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar()
    raise RuntimeError("boom")


@app.get("/slow")
def slow() -> Response:
    time.sleep(0.05)
    return Response("slow", mimetype="text/plain")


@app.get("/search")
def search() -> Response:
    q = request.args.get("q", "")
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stmt = (
        sa.select(products)
        .where(products.c.name.like(f"%{escaped}%", escape="\\"))
        .order_by(products.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return jsonify([_product_dict(row) for row in rows])


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every atexit hook runs: span processors and
    OpenTelemetry's MeterProvider (its last metric export) flush. Replaces any handler set
    before (e.g. the bridge's, which flushes spans only)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def main() -> None:
    port = int(_env("SHOP_PORT") or 8000)
    init_db()
    _exit_on_sigterm()
    app.run(
        host="127.0.0.1",
        port=port,
        threaded=True,
        debug=False,
        use_reloader=False,
        load_dotenv=False,
    )


if __name__ == "__main__":
    main()
