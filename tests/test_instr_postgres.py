"""PostgreSQL drivers and SQLAlchemy through OpenTelemetry's instrumentations, on a real server.

psycopg (sync and async), psycopg2, asyncpg, and SQLAlchemy on the ``postgresql+psycopg`` and
``postgresql+asyncpg`` dialects, each instrumented with the contrib instrumentor (0.66b1) on a
:class:`BridgeCapture` provider. Every query span must be a Sentry Queries span (``op: db``, the
parameterized SQL as description, ``db.system``/``db.name``/``server.*``/``db.operation``) under
the request's root span; a failing query an ``internal_error`` span and an error event whose
trace context names the query; no parameter value anywhere. SQLAlchemy's span of a query the
driver also traces is dropped (``_mapping/db_duplicates.py``): one query, one span. The last test
runs psycopg, asyncpg and SQLAlchemy under ``opentelemetry-instrument``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apps import opentelemetry_instrument
from conftest import require_service
from e2e_support import assert_clean_output, assert_receiver_clean, bridge_env, summary
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import SpanKind, Tracer
from sentry_receiver import SentryReceiver, validate_event
from sentry_sdk.consts import SPANDATA
from spans import SpanFactory

from otel_sentry_bridge._mapping import MappingContext, build_transaction
from otel_sentry_bridge._mapping.db_duplicates import SQLALCHEMY_ORIGIN
from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge.testing import BridgeCapture

HOST, PORT, DB = "127.0.0.1", 5432, "test"
URL = f"postgresql://postgres@{HOST}:{PORT}/{DB}"
SECRET = "s3cret-parameter-value"  # a parameter value: must never reach a payload
ROUTE = "/orders"


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> Iterator[str]:
    """A table of this module's own (``id`` primary key, ``name``), rows 1 and 2; dropped after."""
    require_service(HOST, PORT, "PostgreSQL")
    import psycopg

    name = f"bridge_pg_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id integer PRIMARY KEY, name text)")
    try:
        yield name
    finally:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(autouse=True)
def _rows(table: str) -> None:
    """Rows 1 and 2 before every test (tests insert more)."""
    import psycopg

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")


@pytest.fixture
def capture() -> Iterator[BridgeCapture]:
    cap = BridgeCapture()
    try:
        yield cap
    finally:
        cap.close()


@contextmanager
def instrumented(capture: BridgeCapture, *instrumentors: BaseInstrumentor) -> Iterator[None]:
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=capture.tracer_provider)
    try:
        yield
    finally:
        # OpenTelemetry's SQLAlchemy instrumentation (0.66b1) registers the listeners of an
        # async engine twice (create_async_engine, then the create_engine it calls) and fails
        # to remove them twice while the engine lives: let the tests' engines go first.
        gc.collect()
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


def server_tracer(capture: BridgeCapture) -> Tracer:
    return capture.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")


@contextmanager
def request(capture: BridgeCapture) -> Iterator[None]:
    """A server span, as a web framework's instrumentation makes it."""
    with server_tracer(capture).start_as_current_span(
        f"GET {ROUTE}", kind=SpanKind.SERVER,
        attributes={Attr.HTTP_METHOD[0]: "GET", Attr.HTTP_ROUTE[0]: ROUTE},
    ):
        yield


def the_transaction(capture: BridgeCapture) -> dict[str, Any]:
    (txn,) = capture.transactions()
    assert txn["transaction"] == f"GET {ROUTE}"
    assert validate_event(txn, kind="transaction") == []
    return txn


def queries(txn: dict[str, Any]) -> list[dict[str, Any]]:
    """The transaction's Queries spans, in start order."""
    spans = [s for s in txn["spans"] if s["op"] == Op.DB]
    return sorted(spans, key=lambda s: s["start_timestamp"])


def assert_query_span(span: dict[str, Any], sql: str, verb: str, origin: str) -> None:
    assert span["description"] == sql
    assert span["origin"] == origin
    data = span["data"]
    assert data[SPANDATA.DB_SYSTEM] == "postgresql"
    assert data[SPANDATA.DB_NAME] == DB
    assert data[SPANDATA.SERVER_ADDRESS] == HOST
    assert data[SPANDATA.SERVER_PORT] == PORT
    assert data[SPANDATA.DB_OPERATION] == verb
    assert data[SPANDATA.DB_QUERY_TEXT] == sql
    assert data["sentry.kind"] == "client"


def assert_no_secret(capture: BridgeCapture) -> None:
    payloads = json.dumps([capture.transactions(), capture.items("event")])
    assert SECRET not in payloads


def errors_by_type(capture: BridgeCapture, txn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The error events, by exception type; each valid and pointing at a span of ``txn``."""
    events = capture.items("event")
    span_ids = {s["span_id"] for s in txn["spans"]}
    out = {}
    for event in events:
        assert validate_event(event, kind="event") == []
        trace = event["contexts"]["trace"]
        assert trace["trace_id"] == txn["contexts"]["trace"]["trace_id"]
        assert trace["span_id"] in span_ids
        assert trace["op"] == Op.DB and trace["status"] == "internal_error"
        out[event["exception"]["values"][-1]["type"]] = event
    assert len(out) == len(events)
    return out


def failed(span: dict[str, Any]) -> bool:
    return span["status"] == "internal_error"


# --------------------------------------------------------------------------------------------
# psycopg (3)
# --------------------------------------------------------------------------------------------

ORIGIN_PSYCOPG = "auto.otel.psycopg"


def test_psycopg_sync_queries_errors_and_no_parameters(
    capture: BridgeCapture, table: str
) -> None:
    import psycopg

    select = f"SELECT name FROM {table} WHERE id = %s"
    insert = f"INSERT INTO {table} (id, name) VALUES (%s, %s)"
    named = f"SELECT id FROM {table} WHERE name = %(name)s"
    bad = f"SELEC name FROM {table}"
    with instrumented(capture, PsycopgInstrumentor()), request(capture):
        with psycopg.connect(URL, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute(select, (1,))
                assert cur.fetchall() == [("one",)]
                cur.executemany(insert, [(3, SECRET), (4, SECRET)])
                cur.execute(named, {"name": SECRET})
                assert len(cur.fetchall()) == 2
                with pytest.raises(psycopg.errors.SyntaxError):
                    cur.execute(bad)
                with pytest.raises(psycopg.errors.UniqueViolation):
                    cur.execute(insert, (1, SECRET))
            assert conn.execute("SELECT 1").fetchone() == (1,)

    txn = the_transaction(capture)
    spans = queries(txn)
    root = txn["contexts"]["trace"]["span_id"]
    assert [s["description"] for s in spans] == [select, insert, named, bad, insert, "SELECT 1"]
    assert all(s["parent_span_id"] == root for s in spans)
    for span, verb in zip(spans, ["SELECT", "INSERT", "SELECT", "SELEC", "INSERT", "SELECT"],
                          strict=True):
        assert_query_span(span, span["description"], verb, ORIGIN_PSYCOPG)
    assert [failed(s) for s in spans] == [False, False, False, True, True, False]
    assert txn["contexts"]["trace"]["status"] == "ok"  # the app handled both errors

    errors = errors_by_type(capture, txn)
    assert set(errors) == {"SyntaxError", "UniqueViolation"}
    syntax = errors["SyntaxError"]
    assert syntax["exception"]["values"][-1]["module"] == "psycopg.errors"
    assert syntax["contexts"]["trace"]["description"] == bad
    assert syntax["transaction"] == f"GET {ROUTE}"
    unique = errors["UniqueViolation"]["contexts"]["trace"]
    assert unique["description"] == insert
    # the failing query is the last breadcrumb, a warning
    crumb = errors["UniqueViolation"]["breadcrumbs"]["values"][-1]
    assert (crumb["category"], crumb["message"], crumb["level"]) == ("query", insert, "warning")
    assert_no_secret(capture)


def test_psycopg_async_connection(capture: BridgeCapture, table: str) -> None:
    import psycopg

    select = f"SELECT name FROM {table} WHERE id = %s"
    update = f"UPDATE {table} SET name = %s WHERE id = %s"

    async def handler() -> None:
        with request(capture):
            conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
            async with conn:
                async with conn.cursor() as cur:
                    await cur.execute(select, (2,))
                    assert await cur.fetchall() == [("two",)]
                    await cur.executemany(update, [(SECRET, 1), (SECRET, 2)])
                    with pytest.raises(psycopg.errors.UndefinedTable):
                        await cur.execute("SELECT id FROM no_such_table_here")
                await conn.execute("SELECT 2")

    with instrumented(capture, PsycopgInstrumentor()):
        asyncio.run(handler())

    txn = the_transaction(capture)
    spans = queries(txn)
    assert [s["description"] for s in spans] == [
        select, update, "SELECT id FROM no_such_table_here", "SELECT 2"]
    root = txn["contexts"]["trace"]["span_id"]
    assert all(s["parent_span_id"] == root for s in spans)
    assert_query_span(spans[1], update, "UPDATE", ORIGIN_PSYCOPG)
    assert [failed(s) for s in spans] == [False, False, True, False]
    assert set(errors_by_type(capture, txn)) == {"UndefinedTable"}
    assert_no_secret(capture)


# --------------------------------------------------------------------------------------------
# psycopg2
# --------------------------------------------------------------------------------------------


def test_psycopg2(capture: BridgeCapture, table: str) -> None:
    import psycopg2
    import psycopg2.errors

    select = f"SELECT name FROM {table} WHERE id = %s"
    insert = f"INSERT INTO {table} (id, name) VALUES (%s, %s)"
    with instrumented(capture, Psycopg2Instrumentor()), request(capture):
        conn = psycopg2.connect(URL)
        try:
            cur = conn.cursor()
            cur.execute(select, (1,))
            assert cur.fetchall() == [("one",)]
            cur.executemany(insert, [(5, SECRET)])
            conn.commit()
            with pytest.raises(psycopg2.errors.UniqueViolation):
                cur.execute(insert, (5, SECRET))
            conn.rollback()
        finally:
            conn.close()

    txn = the_transaction(capture)
    spans = queries(txn)
    assert [s["description"] for s in spans] == [select, insert, insert]
    for span, verb in zip(spans, ["SELECT", "INSERT", "INSERT"], strict=True):
        assert_query_span(span, span["description"], verb, "auto.otel.psycopg2")
    assert [failed(s) for s in spans] == [False, False, True]
    errors = errors_by_type(capture, txn)
    assert set(errors) == {"UniqueViolation"}
    assert errors["UniqueViolation"]["exception"]["values"][-1]["module"] == "psycopg2.errors"
    assert_no_secret(capture)


# --------------------------------------------------------------------------------------------
# asyncpg
# --------------------------------------------------------------------------------------------

ORIGIN_ASYNCPG = "auto.otel.asyncpg"


def test_asyncpg_every_call_kind(capture: BridgeCapture, table: str) -> None:
    import asyncpg

    by_id = f"SELECT name FROM {table} WHERE id = $1"
    insert = f"INSERT INTO {table} (id, name) VALUES ($1, $2)"
    ids = f"SELECT id FROM {table} ORDER BY id"
    count = f"SELECT count(*) FROM {table}"

    async def handler() -> None:
        with request(capture):
            conn = await asyncpg.connect(URL)
            try:
                await conn.execute(f"UPDATE {table} SET name = $1 WHERE id = 2", SECRET)
                assert [r["name"] for r in await conn.fetch(by_id, 1)] == ["one"]
                assert (await conn.fetchrow(by_id, 1))["name"] == "one"
                assert await conn.fetchval(count) == 2
                await conn.executemany(insert, [(6, SECRET), (7, SECRET)])
                statement = await conn.prepare(by_id)
                assert await statement.fetchval(6) == SECRET
                async with conn.transaction():
                    rows = [r["id"] async for r in conn.cursor(ids)]
                    assert rows == [1, 2, 6, 7]
                with pytest.raises(asyncpg.exceptions.PostgresSyntaxError):
                    await conn.execute("SELEC 1")
                with pytest.raises(asyncpg.exceptions.UniqueViolationError):
                    await conn.execute(insert, 1, SECRET)
            finally:
                await conn.close()

    with instrumented(capture, AsyncPGInstrumentor()):
        asyncio.run(handler())

    txn = the_transaction(capture)
    spans = queries(txn)
    update = f"UPDATE {table} SET name = $1 WHERE id = 2"
    # The cursor: one span per row fetched, plus the one that ends the iteration (0.66b1 wraps
    # CursorIterator.__anext__).
    assert [s["description"] for s in spans] == [
        update, by_id, by_id, count, insert, by_id, "BEGIN;", *[ids] * 5, "COMMIT;",
        "SELEC 1", insert,
    ]
    root = txn["contexts"]["trace"]["span_id"]
    assert all(s["parent_span_id"] == root for s in spans)
    for span in spans:
        verb = span["description"].split()[0].rstrip(";").upper()
        assert_query_span(span, span["description"], verb, ORIGIN_ASYNCPG)
    assert [s["description"] for s in spans if failed(s)] == ["SELEC 1", insert]
    errors = errors_by_type(capture, txn)
    assert set(errors) == {"PostgresSyntaxError", "UniqueViolationError"}
    unique = errors["UniqueViolationError"]
    assert unique["exception"]["values"][-1]["module"] == "asyncpg.exceptions"
    assert unique["contexts"]["trace"]["description"] == insert
    assert_no_secret(capture)


# --------------------------------------------------------------------------------------------
# SQLAlchemy (core and ORM, sync and async), with and without the driver's instrumentation
# --------------------------------------------------------------------------------------------


def _orm(table: str) -> Any:
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = table
        id = mapped_column(sa.Integer, primary_key=True)
        name = mapped_column(sa.Text)

    return Item


@pytest.mark.parametrize("driver_too", [True, False], ids=["sqlalchemy+psycopg", "sqlalchemy"])
def test_sqlalchemy_psycopg_one_span_per_query(
    capture: BridgeCapture, table: str, driver_too: bool
) -> None:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    item = _orm(table)
    instrumentors: list[BaseInstrumentor] = [SQLAlchemyInstrumentor()]
    if driver_too:
        instrumentors.append(PsycopgInstrumentor())
    with instrumented(capture, *instrumentors):
        engine = sa.create_engine(f"postgresql+psycopg://postgres@{HOST}:{PORT}/{DB}")
        try:
            with request(capture), Session(engine) as session:
                assert session.get(item, 1).name == "one"
                session.add(item(id=8, name=SECRET))
                session.commit()
                session.add(item(id=8, name=SECRET))
                with pytest.raises(sa.exc.IntegrityError):
                    session.commit()
        finally:
            engine.dispose()

    txn = the_transaction(capture)
    spans = queries(txn)
    statements = [s["description"] for s in spans]
    select = next(s for s in statements if s.startswith("SELECT") and table in s)
    insert = next(s for s in statements if s.startswith("INSERT"))
    assert "%(pk_1)s" in select and "%(id)s" in insert  # parameterized
    # each query of the request once, whichever instrumentation made its span
    assert statements.count(select) == 1
    assert statements.count(insert) == 2
    origin = ORIGIN_PSYCOPG if driver_too else SQLALCHEMY_ORIGIN
    ours = [s for s in spans if table in s["description"]]
    assert {s["origin"] for s in ours} == {origin}
    for span in ours:
        verb = span["description"].split()[0]
        assert_query_span(span, span["description"], verb, origin)  # not "SELECT test"
    assert [failed(s) for s in ours] == [False, False, True]
    connects = [s for s in txn["spans"] if s["op"] == Op.DB_CONNECT]
    assert connects and all(s["origin"] == SQLALCHEMY_ORIGIN for s in connects)
    assert all(s["data"][SPANDATA.DB_SYSTEM] == "postgresql" for s in connects)
    if driver_too:
        # SQLAlchemy's dialect set-up queries (first connect) are the driver's children of
        # the connect span: real round trips, kept.
        setup = [s for s in spans if s["parent_span_id"] in {c["span_id"] for c in connects}]
        assert setup and all(s["origin"] == ORIGIN_PSYCOPG for s in setup)
        errors = errors_by_type(capture, txn)
        assert set(errors) == {"UniqueViolation"}
        assert errors["UniqueViolation"]["contexts"]["trace"]["description"] == insert
    else:
        # OpenTelemetry's SQLAlchemy instrumentation records no exception: only the status
        assert capture.items("event") == []
    assert_no_secret(capture)


@pytest.mark.parametrize("driver_too", [True, False], ids=["sqlalchemy+asyncpg", "sqlalchemy"])
def test_sqlalchemy_asyncpg_one_span_per_query(
    capture: BridgeCapture, table: str, driver_too: bool
) -> None:
    import sqlalchemy as sa
    import sqlalchemy.ext.asyncio as sa_async

    item = _orm(table)
    select = f"SELECT {table}.id, {table}.name \nFROM {table} \nWHERE {table}.id = $1::INTEGER"

    async def handler() -> None:
        # looked up when called: the instrumentation wraps the module's function
        engine = sa_async.create_async_engine(f"postgresql+asyncpg://postgres@{HOST}:{PORT}/{DB}")
        try:
            with request(capture):
                async with sa_async.AsyncSession(engine) as session:
                    found = await session.execute(sa.select(item).where(item.id == 2))
                    assert found.scalar_one().name == "two"
                async with engine.connect() as conn:
                    result = await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))
                    assert result.scalar() == 2
        finally:
            await engine.dispose()

    instrumentors: list[BaseInstrumentor] = [SQLAlchemyInstrumentor()]
    if driver_too:
        instrumentors.append(AsyncPGInstrumentor())
    with instrumented(capture, *instrumentors):
        asyncio.run(handler())

    txn = the_transaction(capture)
    statements = [s["description"] for s in queries(txn)]
    count = f"SELECT count(*) FROM {table}"
    assert statements.count(select) == 1, statements
    assert statements.count(count) == 1, statements
    origin = ORIGIN_ASYNCPG if driver_too else SQLALCHEMY_ORIGIN
    for span in queries(txn):
        if span["description"] in (select, count):
            assert_query_span(span, span["description"], "SELECT", origin)


# --------------------------------------------------------------------------------------------
# The duplicate rule, with spans made by hand (pure mapping)
# --------------------------------------------------------------------------------------------

_DB_ATTRS = {Attr.DB_SYSTEM[1]: "postgresql", Attr.DB_NAMESPACE[1]: DB}


def _mapped_origins(factory: SpanFactory) -> list[tuple[str, str]]:
    root, children = factory.split()
    mapped = build_transaction(root, children, MappingContext())
    assert mapped is not None
    assert validate_event(mapped.event, kind="transaction") == []
    spans = sorted(mapped.event["spans"], key=lambda s: s["start_timestamp"])
    return [(s["origin"], s["description"]) for s in spans]


def _orm_span(factory: SpanFactory, statement: str) -> Any:
    """A query span as OpenTelemetry's SQLAlchemy instrumentation makes it: not current."""
    verb = statement.split(maxsplit=1)[0]
    return factory.tracer("sqlalchemy").start_span(
        f"{verb} {DB}", kind=SpanKind.CLIENT,
        attributes={**_DB_ATTRS, Attr.DB_STATEMENT[1]: statement,
                    Attr.DB_OPERATION[1]: f"{verb} {DB}"},
    )


def _driver_query(factory: SpanFactory, statement: str) -> None:
    with factory.span(statement.split(maxsplit=1)[0], SpanKind.CLIENT, lib="psycopg",
                      attributes={**_DB_ATTRS, Attr.DB_STATEMENT[1]: statement}):
        pass


def test_orm_span_dropped_only_beside_the_same_query_of_the_driver() -> None:
    factory = SpanFactory()
    with factory.span("GET /orders", SpanKind.SERVER,
                      attributes={Attr.HTTP_METHOD[0]: "GET", Attr.HTTP_ROUTE[0]: ROUTE}):
        for _ in range(3):  # the pair, in a loop: each SQLAlchemy span dropped
            orm = _orm_span(factory, "SELECT 1")
            _driver_query(factory, "SELECT 1")
            orm.end()
        orm = _orm_span(factory, "SELECT 2")  # another statement below it: both kept
        _driver_query(factory, "SELECT 3")
        orm.end()
        _driver_query(factory, "SELECT 4")  # the driver's span before, not inside: both kept
        _orm_span(factory, "SELECT 4").end()
        _orm_span(factory, "SELECT 5").end()  # SQLAlchemy alone: kept
        orm = _orm_span(factory, "SELECT 6")  # the same query under another parent: both kept
        with factory.span("batch", lib="app"):
            _driver_query(factory, "SELECT 6")
        orm.end()
    assert _mapped_origins(factory) == [
        *[(ORIGIN_PSYCOPG, "SELECT 1")] * 3,
        (SQLALCHEMY_ORIGIN, "SELECT 2"), (ORIGIN_PSYCOPG, "SELECT 3"),
        (ORIGIN_PSYCOPG, "SELECT 4"), (SQLALCHEMY_ORIGIN, "SELECT 4"),
        (SQLALCHEMY_ORIGIN, "SELECT 5"),
        (SQLALCHEMY_ORIGIN, "SELECT 6"), ("auto.otel.app", "batch"), (ORIGIN_PSYCOPG, "SELECT 6"),
    ]


def test_orm_span_with_a_recorded_exception_is_kept() -> None:
    factory = SpanFactory()
    with factory.span("job", lib="app"):
        orm = _orm_span(factory, "SELECT 1")
        _driver_query(factory, "SELECT 1")
        orm.record_exception(RuntimeError("seen by SQLAlchemy"))
        orm.end()
    assert _mapped_origins(factory) == [
        (SQLALCHEMY_ORIGIN, "SELECT 1"), (ORIGIN_PSYCOPG, "SELECT 1")]


# --------------------------------------------------------------------------------------------
# Zero-code: opentelemetry-instrument loads the instrumentations, the bridge maps their spans
# --------------------------------------------------------------------------------------------

SCRIPT = """
import asyncio, asyncpg, psycopg, sqlalchemy
from opentelemetry import trace

URL = {url!r}
TABLE = {table!r}
tracer = trace.get_tracer("nightly")


async def with_asyncpg():
    conn = await asyncpg.connect(URL)
    try:
        await conn.fetch(f"SELECT name FROM {{TABLE}} WHERE id = $1", 1)
    finally:
        await conn.close()


with tracer.start_as_current_span("nightly-report"):
    with psycopg.connect(URL) as conn:
        conn.execute(f"SELECT name FROM {{TABLE}} WHERE id = %s", (2,)).fetchall()
    asyncio.run(with_asyncpg())
    engine = sqlalchemy.create_engine(URL.replace("postgresql:", "postgresql+psycopg:"))
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {{TABLE}}")).scalar()
    engine.dispose()
print("done")
"""


@pytest.mark.e2e
def test_zero_code_psycopg_asyncpg_sqlalchemy(table: str, tmp_path: Path) -> None:
    script = tmp_path / "nightly.py"
    script.write_text(SCRIPT.format(url=URL, table=table))
    with SentryReceiver() as receiver:
        env = {**os.environ, **bridge_env(receiver, "nightly")}
        proc = subprocess.run(
            [str(opentelemetry_instrument()), sys.executable, str(script)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "done" in proc.stdout, output
        assert_clean_output(output)
        transactions = receiver.wait_for_transactions(1, timeout=10)
        assert len(transactions) == 1, summary(receiver)
        txn = transactions[0]
        assert txn["transaction"] == "nightly-report"
        statements = {
            (s["origin"], s["description"]) for s in txn["spans"] if s["op"] == Op.DB
        }
        assert (ORIGIN_PSYCOPG, f"SELECT name FROM {table} WHERE id = %s") in statements
        assert (ORIGIN_ASYNCPG, f"SELECT name FROM {table} WHERE id = $1") in statements
        counts = [s for s in txn["spans"] if s["description"] == f"SELECT count(*) FROM {table}"]
        assert [s["origin"] for s in counts] == [ORIGIN_PSYCOPG], summary(receiver)
        assert any(s["op"] == Op.DB_CONNECT for s in txn["spans"])
        assert_receiver_clean(receiver)
