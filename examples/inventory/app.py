"""Example "inventory" service, called over HTTP by the shop (``examples/shop/app.py``).

Configuration (environment variables; an empty value counts as unset):

``INVENTORY_PORT``
    Port to listen on, on 127.0.0.1 (default 8001).
``INVENTORY_DATABASE_URL``
    SQLAlchemy URL (default ``sqlite:///<tempdir>/inventory.db``).

Importing this module only creates ``engine`` and ``app``; ``main()`` creates and seeds the
table, then serves.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, jsonify, request
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


DATABASE_URL = (
    _env("INVENTORY_DATABASE_URL") or f"sqlite:///{Path(tempfile.gettempdir()) / 'inventory.db'}"
)
_PG_SCHEMA_LOCK_KEY = 0x5EED_1417

metadata = sa.MetaData()

stock = sa.Table(
    "inventory_stock",
    metadata,
    sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("quantity", sa.Integer, nullable=False),
)

SEED_STOCK: list[dict[str, Any]] = [
    {"product_id": 1, "quantity": 42},
    {"product_id": 2, "quantity": 7},
    {"product_id": 3, "quantity": 0},
    {"product_id": 4, "quantity": 15},
]

# Created at import so that OpenTelemetry's SQLAlchemy instrumentation sees it; no connection yet.
engine: sa.Engine = sa.create_engine(DATABASE_URL)

app = Flask(__name__)


def init_db() -> None:
    """Create and seed the stock table; safe to run concurrently and repeatedly."""
    with engine.begin() as conn:
        name = conn.dialect.name
        if name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK_KEY)))
        conn.execute(CreateTable(stock, if_not_exists=True))
        if name == "postgresql":
            conn.execute(postgresql.insert(stock).on_conflict_do_nothing(), SEED_STOCK)
        elif name == "sqlite":
            conn.execute(sqlite.insert(stock).on_conflict_do_nothing(), SEED_STOCK)
        else:
            existing = set(conn.execute(sa.select(stock.c.product_id)).scalars())
            missing = [row for row in SEED_STOCK if row["product_id"] not in existing]
            if missing:
                conn.execute(stock.insert(), missing)


@app.get("/health")
def health() -> Response:
    return Response("ok", mimetype="text/plain")


@app.get("/stock/<int:product_id>")
def get_stock(product_id: int) -> Response:
    with engine.connect() as conn:
        quantity = conn.execute(
            sa.select(stock.c.quantity).where(stock.c.product_id == product_id)
        ).scalar()
    return jsonify({"product_id": product_id, "stock": quantity or 0})


@app.post("/reserve")
def reserve() -> Response:
    payload = request.get_json(silent=True)
    body = payload if isinstance(payload, dict) else {}
    return jsonify(
        {"reserved": True, "product_id": body.get("product_id"), "quantity": body.get("quantity")}
    )


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every atexit hook runs: span processors and
    OpenTelemetry's MeterProvider (its last metric export) flush. Replaces any handler set
    before (e.g. the bridge's, which flushes spans only)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def main() -> None:
    port = int(_env("INVENTORY_PORT") or 8001)
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
