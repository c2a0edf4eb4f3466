"""An app "written elsewhere" for tests/test_instr_e2e.py: plain library code, no bridge import.

FastAPI on uvicorn with: a cachetools-cached lookup and pymemcache reads/writes (Caches), psycopg
and asyncpg queries on PostgreSQL (Queries), pydantic validation of the request body, a
strawberry GraphQL endpoint, and a WebSocket route. Run as
``opentelemetry-instrument python tests/apps_instr/service.py`` with ``APPS_INSTR_PORT`` set;
everything Sentry-related comes from the environment and the installed entry points.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
import psycopg
import strawberry
import uvicorn
from cachetools import TTLCache, cached
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry import trace
from pydantic import BaseModel, Field
from pymemcache.client.base import Client as MemcacheClient
from strawberry.fastapi import GraphQLRouter

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
memcache = MemcacheClient(("127.0.0.1", 11211), connect_timeout=2, timeout=2)


@cached(cache=TTLCache(maxsize=128, ttl=300))
def price_of(sku: str) -> int:
    """The catalogue price of a SKU (slow: cached in process)."""
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute("SELECT %s::text, length(%s::text) * 100", (sku, sku)).fetchone()
    return int(row[1]) if row else 0


class OrderLine(BaseModel):
    sku: str = Field(min_length=1, max_length=32)
    quantity: int = Field(gt=0, le=100)


class Order(BaseModel):
    customer: str
    lines: list[OrderLine]


app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/flush")
def flush() -> dict[str, bool]:
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return {"flushed": bool(force_flush(10_000)) if force_flush else False}


@app.get("/prices/{sku}")
async def price(sku: str) -> dict[str, Any]:
    cached_value = memcache.get(f"price:{sku}")
    if cached_value is None:
        value = price_of(sku)
        memcache.set(f"price:{sku}", str(value).encode(), expire=60)
    else:
        value = int(cached_value)
    conn = await asyncpg.connect(PG_DSN)
    try:
        stock = await conn.fetchval("SELECT $1::int * 2", len(sku))
    finally:
        await conn.close()
    return {"sku": sku, "price": value, "stock": stock}


@app.post("/orders")
async def create_order(payload: dict[str, Any]) -> dict[str, Any]:
    order = Order.model_validate(payload)  # a ValidationError here is a 500 for this app
    total = sum(price_of(line.sku) * line.quantity for line in order.lines)
    return {"customer": order.customer, "total": total}


@strawberry.type
class Product:
    sku: str

    @strawberry.field
    def price(self) -> int:
        return price_of(self.sku)


@strawberry.type
class Query:
    @strawberry.field
    def products(self, skus: list[str]) -> list[Product]:
        return [Product(sku=s) for s in skus]

    @strawberry.field
    def broken(self) -> int:
        raise RuntimeError("the broken resolver failed")


app.include_router(GraphQLRouter(strawberry.Schema(query=Query)), prefix="/graphql")


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=1000)
                return
            await websocket.send_text(f"{room}: {text}")
    except WebSocketDisconnect:
        return


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APPS_INSTR_PORT"]),
                log_level="warning")
