"""Strawberry GraphQL instrumentation: operation/step/resolver spans, the transaction named after
the operation, GraphQL errors as error events (docs/instrumentation/graphql.md).

Real strawberry schemas executed through ``execute_sync``, ``execute``, ``subscribe`` and the
Starlette and Flask views (under their OpenTelemetry instrumentations); every payload through
Relay's normalizer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator, Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from apps import AppProcess, free_port
from e2e_support import assert_clean_output, assert_receiver_clean, bridge_env
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from otel_sentry_bridge_instrumentation.strawberry import (
    BridgeTracingExtension,
    StrawberryInstrumentor,
)
from otel_sentry_bridge_instrumentation.strawberry._document import document_text, flat_variables
from otel_sentry_bridge_instrumentation.strawberry._errors import MAX_ERRORS, safe_message
from otel_sentry_bridge_instrumentation.strawberry._extension import (
    MAX_RESOLVER_SPANS,
    ORIGIN,
    OperationTracingExtension,
)
from sentry_receiver import SentryReceiver, validate_event
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.flask.views import GraphQLView

from otel_sentry_bridge.conventions import Op, Source
from otel_sentry_bridge.testing import BridgeCapture

#: the provider of the running test's BridgeCapture (the resolvers' own spans go there)
PROVIDER: list[TracerProvider] = []


class PaymentDeclined(Exception):
    pass


@strawberry.type
class Address:
    city: str

    @strawberry.field
    def country(self) -> str:
        return "FR"


@strawberry.type
class Customer:
    name: str

    @strawberry.field
    def address(self) -> Address:  # depth 3 in GetOrders
        return Address(city="Lyon")


@strawberry.type
class Order:
    id: int
    total: float  # a plain attribute: strawberry's default resolver, never a span

    @strawberry.field
    async def customer(self) -> Customer:
        await asyncio.sleep(0)
        db = PROVIDER[-1].get_tracer("shop.db")
        with db.start_as_current_span("SELECT customer"):  # inside the resolver span
            await asyncio.sleep(0)
        return Customer(name="bob")

    @strawberry.field
    def lines(self) -> list[str]:
        return [f"line {self.id}"]

    @strawberry.field
    def discount(self) -> float | None:
        raise ValueError(f"no discount for order {self.id}")


@strawberry.type
class Query:
    @strawberry.field
    def orders(self, status: str = "open", count: int = 2) -> list[Order]:
        return [Order(id=i, total=10.0 * i) for i in range(count)]

    @strawberry.field
    def order(self, order_id: int) -> Order:
        return Order(id=order_id, total=1.0)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def pay(self, order_id: int, password: str = "") -> bool:
        raise PaymentDeclined(f"card declined for order {order_id}")

    @strawberry.mutation
    def touch(self, order_id: int) -> int:
        return order_id


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, n: int) -> AsyncGenerator[int, None]:
        for i in range(n):
            yield i
        raise RuntimeError("feed lost")


GET_ORDERS = 'query GetOrders { orders(status: "paid") { id total customer { name address { city country } } lines } }'  # noqa: E501


def make_schema(**kwargs: Any) -> strawberry.Schema:
    return strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription, **kwargs)


@pytest.fixture
def bridge() -> Iterator[Callable[..., BridgeCapture]]:
    """``bridge(**settings)``: a BridgeCapture with strawberry instrumented on its provider."""
    made: list[BridgeCapture] = []

    def make(sampler: Any = None, **settings: Any) -> BridgeCapture:
        capture = BridgeCapture(sampler=sampler, **settings)
        made.append(capture)
        PROVIDER.append(capture.tracer_provider)
        StrawberryInstrumentor().instrument(tracer_provider=capture.tracer_provider)
        return capture

    yield make
    PROVIDER.clear()
    StrawberryInstrumentor().uninstrument()
    for capture in made:
        capture.close()


def only_transaction(capture: BridgeCapture) -> dict[str, Any]:
    (txn,) = capture.transactions()
    assert validate_event(txn, kind="transaction") == []
    return txn


def events(capture: BridgeCapture) -> list[dict[str, Any]]:
    found = capture.items("event")
    for event in found:
        assert validate_event(event, kind="event") == []
    return found


def spans_of(txn: dict[str, Any], op: str) -> list[dict[str, Any]]:
    return sorted((s for s in txn["spans"] if s["op"] == op), key=lambda s: s["start_timestamp"])


def one_span(txn: dict[str, Any], op: str) -> dict[str, Any]:
    (span,) = spans_of(txn, op)
    return span


def resolver_paths(txn: dict[str, Any]) -> list[str]:
    return sorted(s["data"]["graphql.path"] for s in spans_of(txn, Op.GRAPHQL_RESOLVE))


# --------------------------------------------------------------------------------------------
# Operation, steps and resolvers
# --------------------------------------------------------------------------------------------


def test_named_query_is_the_transaction_with_its_steps_and_resolvers(
    bridge: Callable[..., BridgeCapture],
) -> None:
    capture = bridge()
    result = asyncio.run(make_schema().execute(GET_ORDERS))
    assert result.errors is None
    assert result.data is not None and result.data["orders"][1]["customer"]["name"] == "bob"
    txn = only_transaction(capture)
    root = txn["contexts"]["trace"]
    assert txn["transaction"] == "GetOrders"
    assert txn["transaction_info"] == {"source": Source.COMPONENT}
    assert root["op"] == Op.GRAPHQL_QUERY and root["origin"] == ORIGIN
    assert root["status"] == "ok"
    data = root["data"]
    assert data["graphql.operation.name"] == "GetOrders"
    assert data["graphql.operation.type"] == "query"
    # literals filtered without PII: the shape of the query stays
    assert data["graphql.document"] == GET_ORDERS.replace('"paid"', '"[Filtered]"')

    steps = [one_span(txn, op) for op in (Op.GRAPHQL_PARSE, Op.GRAPHQL_VALIDATE,
                                          Op.GRAPHQL_EXECUTE)]
    assert [s["description"] for s in steps] == ["parsing", "validation", "execution"]
    assert all(s["parent_span_id"] == root["span_id"] for s in steps)
    assert steps[0]["timestamp"] <= steps[1]["start_timestamp"]
    assert steps[1]["timestamp"] <= steps[2]["start_timestamp"]
    execute = steps[2]

    # default depth 2: Query.orders and Order.customer/lines per order, not Customer.address
    assert resolver_paths(txn) == ["orders", "orders.0.customer", "orders.0.lines",
                                   "orders.1.customer", "orders.1.lines"]
    resolvers = spans_of(txn, Op.GRAPHQL_RESOLVE)
    assert all(s["parent_span_id"] == execute["span_id"] for s in resolvers)
    assert all(s["origin"] == ORIGIN for s in resolvers)
    customer = next(s for s in resolvers if s["data"]["graphql.path"] == "orders.1.customer")
    assert customer["description"] == "resolving Order.customer"
    assert {k: v for k, v in customer["data"].items() if k.startswith("graphql.")} == {
        "graphql.field_name": "customer", "graphql.parent_type": "Order",
        "graphql.field_path": "Order.customer", "graphql.path": "orders.1.customer"}
    # the async resolver's own work nests in its span
    selects = [s for s in txn["spans"] if s["description"] == "SELECT customer"]
    assert len(selects) == 2
    assert {s["parent_span_id"] for s in selects} == {
        s["span_id"] for s in resolvers if s["data"]["graphql.field_name"] == "customer"}
    assert events(capture) == []


@pytest.mark.parametrize(("depth", "expected"), [
    (0, []),
    (1, ["order"]),
    (2, ["order", "order.customer", "order.lines"]),
    (3, ["order", "order.customer", "order.customer.address", "order.lines"]),
])
def test_resolver_depth_is_honoured(
    bridge: Callable[..., BridgeCapture], depth: int, expected: list[str]
) -> None:
    capture = bridge(graphql_resolver_depth=depth)
    schema = make_schema()
    query = "query One { order(orderId: 7) { id total customer { address { city country } } lines } }"  # noqa: E501
    result = asyncio.run(schema.execute(query))
    assert result.errors is None
    assert result.data == {"order": {"id": 7, "total": 1.0, "lines": ["line 7"], "customer": {
        "address": {"city": "Lyon", "country": "FR"}}}}
    txn = only_transaction(capture)
    assert resolver_paths(txn) == expected
    kinds = {type(e) for e in schema.get_extensions()}
    # depth 0: no resolve hook at all, so strawberry adds no middleware to every field
    assert kinds == ({OperationTracingExtension} if depth == 0 else {BridgeTracingExtension})
    assert one_span(txn, Op.GRAPHQL_EXECUTE)


def test_resolver_spans_are_capped_per_operation(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    count = MAX_RESOLVER_SPANS + 30
    result = make_schema().execute_sync(f"query Many {{ orders(count: {count}) {{ id lines }} }}")
    assert result.errors is None and result.data is not None
    assert len(result.data["orders"]) == count
    txn = only_transaction(capture)
    assert len(spans_of(txn, Op.GRAPHQL_RESOLVE)) == MAX_RESOLVER_SPANS
    assert txn["contexts"]["trace"]["data"]["graphql.resolvers.untraced"] == count + 1 - (
        MAX_RESOLVER_SPANS)


def test_mutation_and_anonymous_operation(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    schema = make_schema()
    assert schema.execute_sync("mutation Touch { touch(orderId: 3) }").data == {"touch": 3}
    assert schema.execute_sync("{ order(orderId: 1) { id } }").data == {"order": {"id": 1}}
    touch, anonymous = capture.transactions()
    for txn in (touch, anonymous):
        assert validate_event(txn, kind="transaction") == []
    assert touch["transaction"] == "Touch"
    assert touch["contexts"]["trace"]["op"] == Op.GRAPHQL_MUTATION
    assert touch["contexts"]["trace"]["data"]["graphql.operation.type"] == "mutation"
    # no name: the span is named as OpenTelemetry's semantic conventions say, and names nothing
    assert anonymous["transaction"] == "query"
    assert anonymous["transaction_info"] == {"source": Source.CUSTOM}
    assert "graphql.operation.name" not in anonymous["contexts"]["trace"]["data"]


def test_not_recording_and_suppressed_cost_nothing(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge(sampler=ALWAYS_OFF)
    schema = make_schema()
    result = schema.execute_sync("mutation Pay { pay(orderId: 1) }")
    assert result.errors and result.errors[0].message == "card declined for order 1"
    with capture.tracer_provider.get_tracer("web").start_as_current_span("GET /"):
        # inside a trace that is not sampled: no resolver hook at all
        assert [type(e) for e in schema.get_extensions()] == [OperationTracingExtension]
        assert schema.execute_sync("{ order(orderId: 3) { id } }").data == {"order": {"id": 3}}
    with suppress_instrumentation():
        assert not any(isinstance(e, BridgeTracingExtension) for e in schema.get_extensions())
        assert schema.execute_sync("{ order(orderId: 2) { id } }").data == {"order": {"id": 2}}
    assert capture.transactions() == [] and capture.items("event") == []


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_resolver_exception_is_one_event_with_path_and_operation(
    bridge: Callable[..., BridgeCapture],
) -> None:
    uninstrumented = make_schema().execute_sync("mutation Pay { pay(orderId: 5) }")
    capture = bridge()
    result = make_schema().execute_sync("mutation Pay { pay(orderId: 5) }")
    # the caller sees exactly what it saw without the bridge
    assert result.data == uninstrumented.data is None
    assert [e.formatted for e in result.errors or []] == [
        e.formatted for e in uninstrumented.errors or []]
    assert isinstance(result.errors[0].original_error, PaymentDeclined)  # type: ignore[index]

    txn = only_transaction(capture)
    assert txn["contexts"]["trace"]["status"] == "internal_error"
    assert txn["contexts"]["trace"]["data"]["graphql.errors"] == 1
    resolver = one_span(txn, Op.GRAPHQL_RESOLVE)
    assert resolver["status"] == "internal_error"
    (event,) = events(capture)  # resolver span and operation span: one event
    (value,) = event["exception"]["values"]
    assert value["type"] == "PaymentDeclined" and value["value"] == "card declined for order 5"
    assert value["mechanism"] == {"type": ORIGIN, "handled": False}
    assert value["stacktrace"]["frames"][-1]["function"] == "pay"
    assert event["contexts"]["trace"]["span_id"] == resolver["span_id"]
    assert event["contexts"]["trace"]["op"] == Op.GRAPHQL_RESOLVE
    assert event["transaction"] == "Pay"
    assert event["contexts"]["capture"] == {
        "name": "graphql", "graphql.operation.name": "Pay", "graphql.operation.type": "mutation",
        "graphql.path": "pay", "graphql.locations": ["1:16"]}


def test_error_below_the_resolver_depth_is_recorded_on_the_operation(
    bridge: Callable[..., BridgeCapture],
) -> None:
    capture = bridge(graphql_resolver_depth=1)
    result = make_schema().execute_sync("query D { orders(count: 2) { id discount } }")
    assert result.data == {"orders": [{"id": 0, "discount": None}, {"id": 1, "discount": None}]}
    assert [e.path for e in result.errors or []] == [["orders", 0, "discount"],
                                                     ["orders", 1, "discount"]]
    txn = only_transaction(capture)
    assert resolver_paths(txn) == ["orders"]
    found = sorted(events(capture), key=lambda e: e["contexts"]["capture"]["graphql.path"])
    assert [e["exception"]["values"][-1]["value"] for e in found] == [
        "no discount for order 0", "no discount for order 1"]
    assert [e["contexts"]["capture"]["graphql.path"] for e in found] == [
        "orders.0.discount", "orders.1.discount"]
    assert {e["contexts"]["trace"]["span_id"] for e in found} == {
        txn["contexts"]["trace"]["span_id"]}
    assert all(e["exception"]["values"][-1]["stacktrace"]["frames"][-1]["function"]
               == "discount" for e in found)


def test_error_events_are_capped_per_operation(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    count = MAX_ERRORS + 10
    result = make_schema().execute_sync(f"query D {{ orders(count: {count}) {{ discount }} }}")
    assert len(result.errors or []) == count
    assert only_transaction(capture)["contexts"]["trace"]["data"]["graphql.errors"] == count
    assert len(events(capture)) == MAX_ERRORS


def test_syntax_and_validation_errors_are_events_of_their_step(
    bridge: Callable[..., BridgeCapture],
) -> None:
    capture = bridge()
    schema = make_schema()
    syntax = schema.execute_sync('query Broken { order(orderId: "x" ')
    invalid = schema.execute_sync('query Invalid { nope order(orderId: "seven") { id } }')
    assert [type(e).__name__ for e in syntax.errors or []] == ["GraphQLSyntaxError"]
    assert len(invalid.errors or []) == 2
    broken, wrong = capture.transactions()
    for txn in (broken, wrong):
        assert validate_event(txn, kind="transaction") == []
    # unparsed: no name, but the (filtered) text
    assert broken["contexts"]["trace"]["data"]["graphql.document"] == (
        'query Broken { order(orderId: "[Filtered]" ')
    assert one_span(broken, Op.GRAPHQL_PARSE)["status"] == "internal_error"
    assert spans_of(broken, Op.GRAPHQL_VALIDATE) == []
    assert wrong["transaction"] == "Invalid"
    validate = one_span(wrong, Op.GRAPHQL_VALIDATE)
    assert validate["status"] == "internal_error"
    assert spans_of(wrong, Op.GRAPHQL_EXECUTE) == []

    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events(capture):
        by_type.setdefault(event["exception"]["values"][-1]["type"], []).append(event)
    (syntax_event,) = by_type["GraphQLSyntaxError"]
    assert syntax_event["contexts"]["trace"]["op"] == Op.GRAPHQL_PARSE
    (where,) = (syntax.errors or [])[0].locations or []
    assert syntax_event["contexts"]["capture"]["graphql.locations"] == [
        f"{where.line}:{where.column}"]
    invalid_events = by_type["GraphQLError"]
    assert sorted(e["exception"]["values"][-1]["value"] for e in invalid_events) == sorted(
        e.message for e in invalid.errors or [])
    for event in invalid_events:
        assert event["contexts"]["trace"]["span_id"] == validate["span_id"]
        assert event["contexts"]["capture"]["graphql.operation.name"] == "Invalid"
        # the message only: str(GraphQLError) would quote the document's lines
        assert "GraphQL request" not in event["exception"]["values"][-1]["value"]


def test_variables_only_with_pii(bridge: Callable[..., BridgeCapture]) -> None:
    pay = "mutation Pay($id: Int!, $password: String!) { pay(orderId: $id, password: $password) }"
    variables = {"id": 8, "password": "hunter2", "card": {"number": "4242", "token": "tok_1"}}
    bad = "query O($id: Int!) { order(orderId: $id) { id } }"

    capture = bridge()
    schema = make_schema()
    schema.execute_sync(pay, variable_values=variables)
    result = schema.execute_sync(bad, variable_values={"id": "bob@example.com"})
    assert "bob@example.com" in (result.errors or [])[0].message  # graphql-core quotes it
    # breadcrumbs included: strawberry's own log record of each error quotes the values, and
    # the bridge leaves its `strawberry.execution` logger out of breadcrumbs
    sent = json.dumps([*capture.transactions(), *capture.items("event")])
    assert "hunter2" not in sent and "4242" not in sent and "bob@example.com" not in sent
    txns = capture.transactions()
    assert not any(k.startswith("graphql.variables") for t in txns
                   for k in t["contexts"]["trace"]["data"])
    found = events(capture)
    assert len(found) == 2
    assert not any(k.startswith("graphql.variables") for e in found
                   for k in e["contexts"]["capture"])
    coerce = next(e for e in found if e["transaction"] == "O")
    assert coerce["exception"]["values"][-1]["value"] == (
        "Variable '$id' has invalid value: Int cannot represent non-integer value: [Filtered]")
    assert coerce["contexts"]["trace"]["op"] == Op.GRAPHQL_QUERY
    StrawberryInstrumentor().uninstrument()

    capture = bridge(send_default_pii=True)
    make_schema().execute_sync(pay, variable_values=variables)
    txn = only_transaction(capture)
    data = txn["contexts"]["trace"]["data"]
    assert data["graphql.variables.id"] == 8
    assert data["graphql.variables.card.number"] == "4242"
    # secrets never leave, PII or not
    assert data["graphql.variables.password"] == "[Filtered]"
    assert data["graphql.variables.card.token"] == "[Filtered]"
    assert data["graphql.document"] == pay
    (event,) = events(capture)
    assert event["contexts"]["capture"]["graphql.variables.id"] == 8
    assert event["contexts"]["capture"]["graphql.variables.card.token"] == "[Filtered]"
    assert "hunter2" not in str(event)


def test_exception_attributes_quote_no_document_and_no_variable(
    bridge: Callable[..., BridgeCapture],
) -> None:
    """What other OpenTelemetry exporters see of a GraphQL error: ``str(GraphQLError)`` quotes
    the document's lines around the error (its literals) and a bad variable's value; the
    recorded ``exception.message`` and ``exception.stacktrace`` do not."""
    capture = bridge()
    exported = InMemorySpanExporter()
    capture.tracer_provider.add_span_processor(SimpleSpanProcessor(exported))
    schema = make_schema()
    schema.execute_sync('query Broken { order(orderId: 7) { id } lines(q: "bob@example.com"')
    bad = schema.execute_sync("query O($id: Int!) { order(orderId: $id) { id } }",
                              variable_values={"id": "bob@example.com"})
    assert "bob@example.com" in str((bad.errors or [])[0])  # what OpenTelemetry would record
    records = [dict(e.attributes or {}) for s in exported.get_finished_spans()
               for e in s.events if e.name == "exception"]
    assert {r["exception.type"].rpartition(".")[2] for r in records} == {
        "GraphQLSyntaxError", "GraphQLError"}
    for record in records:
        assert "bob@example.com" not in json.dumps(record)
        assert record["exception.stacktrace"].startswith("Traceback (most recent call last):")
        assert record["exception.stacktrace"].rstrip().endswith(record["exception.message"])
    found = events(capture)
    assert len(found) == 2 and "bob@example.com" not in json.dumps(found)
    assert all(e["exception"]["values"][-1]["stacktrace"]["frames"] for e in found)


# --------------------------------------------------------------------------------------------
# Inside HTTP servers: the request's transaction is named after the operation
# --------------------------------------------------------------------------------------------


def test_starlette_request_is_named_after_the_operation(
    bridge: Callable[..., BridgeCapture],
) -> None:
    capture = bridge()
    app = Starlette(routes=[Route("/graphql", GraphQL(make_schema()))])
    StarletteInstrumentor.instrument_app(app, tracer_provider=capture.tracer_provider)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.post("/graphql", json={"query": GET_ORDERS}),
                await client.post("/graphql", json={"query": "{ order(orderId: 4) { id } }"}),
                await client.get("/graphql", params={"query": "mutation M { touch(orderId: 1) }"}),
            ]

    try:
        named, anonymous, over_get = asyncio.run(run())
    finally:
        StarletteInstrumentor.uninstrument_app(app)
    assert named.status_code == 200 and "errors" not in named.json()
    assert anonymous.json() == {"data": {"order": {"id": 4}}}
    # strawberry answers a mutation over GET itself (400): the operation fails, no event
    assert over_get.status_code == 400
    get_orders, other, refused = capture.transactions()
    for txn, method in ((get_orders, "POST"), (other, "POST"), (refused, "GET")):
        assert validate_event(txn, kind="transaction") == []
        assert txn["contexts"]["trace"]["op"] == Op.HTTP_SERVER
        assert txn["request"]["method"] == method
    assert get_orders["transaction"] == "GetOrders"
    assert get_orders["transaction_info"] == {"source": Source.COMPONENT}
    operation = one_span(get_orders, Op.GRAPHQL_QUERY)
    assert operation["parent_span_id"] == get_orders["contexts"]["trace"]["span_id"]
    assert operation["description"] == "query GetOrders"
    assert len(spans_of(get_orders, Op.GRAPHQL_RESOLVE)) == 5
    # anonymous: the route stays the name
    assert other["transaction"] == "POST /graphql"
    assert other["transaction_info"] == {"source": Source.ROUTE}
    assert one_span(other, Op.GRAPHQL_QUERY)["description"] == "query"
    assert refused["transaction"] == "M"
    assert one_span(refused, Op.GRAPHQL_MUTATION)["status"] == "internal_error"
    assert spans_of(refused, Op.GRAPHQL_EXECUTE) == []
    assert events(capture) == []


def test_flask_request_names_and_errors(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    app = Flask(__name__)
    app.add_url_rule("/graphql", view_func=GraphQLView.as_view("graphql", schema=make_schema()))
    FlaskInstrumentor().instrument_app(app, tracer_provider=capture.tracer_provider)
    try:
        response = app.test_client().post(
            "/graphql", json={"query": "mutation Pay { pay(orderId: 9) }"})
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert response.status_code == 200
    assert response.json == {"data": None, "errors": [{
        "message": "card declined for order 9", "locations": [{"line": 1, "column": 16}],
        "path": ["pay"]}]}
    txn = only_transaction(capture)
    assert txn["transaction"] == "Pay"
    assert txn["contexts"]["trace"]["op"] == Op.HTTP_SERVER
    assert txn["contexts"]["trace"]["status"] == "ok"  # the request answered 200
    assert one_span(txn, Op.GRAPHQL_MUTATION)["status"] == "internal_error"
    (event,) = events(capture)
    assert event["transaction"] == "Pay"
    assert event["contexts"]["capture"]["graphql.path"] == "pay"


def test_operation_inside_other_work_does_not_rename_it(
    bridge: Callable[..., BridgeCapture],
) -> None:
    capture = bridge()
    tracer = capture.tracer_provider.get_tracer("shop.jobs")
    with tracer.start_as_current_span("nightly export"):
        make_schema().execute_sync("query Export { orders { id } }")
    txn = only_transaction(capture)
    assert txn["transaction"] == "nightly export"
    assert one_span(txn, Op.GRAPHQL_QUERY)["description"] == "query Export"


# --------------------------------------------------------------------------------------------
# The schema's own extensions, subscriptions, uninstrument, loading
# --------------------------------------------------------------------------------------------


class CountingExtension(SchemaExtension):
    calls: list[str] = []

    def on_operation(self) -> Iterator[None]:
        CountingExtension.calls.append("operation")
        yield

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        CountingExtension.calls.append(info.field_name)
        return _next(root, info, *args, **kwargs)


def test_user_extensions_keep_working(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    CountingExtension.calls.clear()
    schema = make_schema(extensions=[MaskErrors, CountingExtension])
    result = schema.execute_sync("mutation Pay { pay(orderId: 2) }")
    # MaskErrors still masks what the client gets; Sentry gets the real exception
    assert [e.message for e in result.errors or []] == ["Unexpected error."]
    assert CountingExtension.calls == ["operation", "pay"]
    (event,) = events(capture)
    assert event["exception"]["values"][-1]["value"] == "card declined for order 2"
    assert [type(e) for e in schema.get_extensions()] == [
        BridgeTracingExtension, MaskErrors, CountingExtension]
    capture.flush()
    capture.raw.clear()

    # added by hand as well: not twice
    mine = make_schema(extensions=[BridgeTracingExtension])
    assert mine.execute_sync("query Q { order(orderId: 1) { id } }").errors is None
    assert [type(e) for e in mine.get_extensions()] == [BridgeTracingExtension]
    txn = only_transaction(capture)
    assert txn["transaction"] == "Q"
    assert len(spans_of(txn, Op.GRAPHQL_PARSE)) == 1


class BrokenCacheExtension(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        raise RuntimeError("result cache unreachable")
        yield  # a generator hook


def test_exception_escaping_the_operation_is_one_event(
    bridge: Callable[..., BridgeCapture],
) -> None:
    capture = bridge()
    schema = make_schema(extensions=[BrokenCacheExtension])

    async def run() -> Any:
        result = await schema.execute("query Q { order(orderId: 1) { id } }")
        # strawberry never exits the bridge's execute hook, entered before the failing one:
        # the operation's end closed it, in its context (no span left current)
        assert not trace.get_current_span().get_span_context().is_valid
        return result

    result = asyncio.run(run())
    assert result.data is None
    assert [e.message for e in result.errors or []] == ["result cache unreachable"]
    sync_result = schema.execute_sync("query Q { order(orderId: 1) { id } }")
    assert [e.message for e in sync_result.errors or []] == ["result cache unreachable"]
    assert not trace.get_current_span().get_span_context().is_valid
    txn, _ = capture.transactions()
    assert validate_event(txn, kind="transaction") == []
    assert txn["contexts"]["trace"]["status"] == "internal_error"
    assert one_span(txn, Op.GRAPHQL_EXECUTE)["status"] == "internal_error"
    found = events(capture)
    assert len(found) == 2  # one per operation
    event = next(e for e in found if e["contexts"]["trace"]["trace_id"] == (
        txn["contexts"]["trace"]["trace_id"]))
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["contexts"]["trace"]["span_id"] == txn["contexts"]["trace"]["span_id"]
    assert event["contexts"]["capture"]["graphql.operation.name"] == "Q"


def test_subscription_setup_span_and_event_errors(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    schema = make_schema()
    tracer = capture.tracer_provider.get_tracer("shop.ws")

    async def run() -> list[Any]:
        with tracer.start_as_current_span("websocket /graphql", kind=trace.SpanKind.SERVER):
            stream = await schema.subscribe("subscription Ticks { ticks(n: 2) }")
            results = [r async for r in stream]  # type: ignore[union-attr]
            assert trace.get_current_span().get_span_context().is_valid
            return results

    results = asyncio.run(run())
    assert [r.data for r in results] == [{"ticks": 0}, {"ticks": 1}, None]
    assert [e.message for e in results[-1].errors] == ["feed lost"]
    txn = only_transaction(capture)
    # a connection carries many operations: not renamed
    assert txn["transaction"] == "websocket /graphql"
    setup, failed = spans_of(txn, Op.GRAPHQL_SUBSCRIPTION)
    assert setup["description"] == failed["description"] == "subscription Ticks"
    assert setup["status"] == "ok" and failed["status"] == "internal_error"
    assert one_span(txn, Op.GRAPHQL_EXECUTE)["parent_span_id"] == setup["span_id"]
    (event,) = events(capture)
    assert event["exception"]["values"][-1]["value"] == "feed lost"
    assert event["contexts"]["trace"]["span_id"] == failed["span_id"]
    assert event["contexts"]["capture"]["graphql.operation.type"] == "subscription"


def test_uninstrument_restores_every_schema(bridge: Callable[..., BridgeCapture]) -> None:
    capture = bridge()
    schema = make_schema()
    assert any(isinstance(e, BridgeTracingExtension) for e in schema.get_extensions())
    StrawberryInstrumentor().uninstrument()
    assert schema.get_extensions() == []
    assert schema.execute_sync("query Q { order(orderId: 1) { id } }").data == {
        "order": {"id": 1}}
    assert capture.transactions() == []


def test_entry_point_and_missing_library() -> None:
    (point,) = [p for p in entry_points(group="opentelemetry_instrumentor")
                if p.name == "sentry_bridge_strawberry"]
    assert point.load() is StrawberryInstrumentor
    code = ("import sys; sys.modules['strawberry'] = None\n"
            "try:\n    import otel_sentry_bridge_instrumentation.strawberry\n"
            "except ModuleNotFoundError as exc:\n    print('skipped', exc.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "skipped strawberry"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def test_document_and_messages_are_filtered() -> None:
    query = ('query Q($a: Int = 5) { # by bob@example.com\n'
             '  x(s: "a\\"b", b: """blk""", n: -1.5e3, e: OPEN, t: true, v: $a, f2: 3) { f12 } }')
    assert document_text(query, False) == (
        'query Q($a: Int = "[Filtered]") { \n'
        '  x(s: "[Filtered]", b: "[Filtered]", n: "[Filtered]", e: OPEN, t: true, v: $a, '
        'f2: "[Filtered]") { f12 } }')
    assert document_text('{ login(user: "bob", password: "hunter2") }', True) == (
        '{ login(user: "bob", password: "[Filtered]") }')
    long = "{ " + "a " * 10_000 + "}"
    assert len(document_text(long, True)) == 8192 + 3
    assert document_text('{ a(s: "open', False) == '{ a(s: "[Filtered]"'
    for message, safe in [
        ("Variable '$e' has invalid value: Int cannot represent non-integer value: 'a: b@c'",
         "Variable '$e' has invalid value: Int cannot represent non-integer value: [Filtered]"),
        ('Variable \'$e\' has invalid value at "e.x": Expected value of type \'T\', found 5.',
         'Variable \'$e\' has invalid value at "e.x": [Filtered]'),
        ("Variable '$e' of required type 'Int!' was not provided.",
         "Variable '$e' of required type 'Int!' was not provided."),
        ("Variable '$e' got invalid value 'x@y'; Int cannot represent non-integer value: 'x@y'",
         "Variable '$e' got invalid value [Filtered]; Int cannot represent non-integer value: "
         "[Filtered]"),
    ]:
        assert safe_message(message, False) == safe
        assert safe_message(message, True) == message
    deep: dict[str, Any] = {"v": 1}
    for _ in range(10):
        deep = {"d": deep}
    many = {f"k{i}": i for i in range(100)}
    flat = flat_variables({"deep": deep, "many": many, "obj": object(), "none": None,
                           "list": [1, "a"]}, "graphql.variables")
    assert len(flat) == 50
    assert "graphql.variables.none" not in flat
    assert flat.get("graphql.variables.list", ["1", "a"]) == ["1", "a"]


def test_broken_literals_leave_nothing_of_their_value() -> None:
    """A document that does not parse is sent too (with its syntax error): a string broken by
    a line break hides the rest; a number glued to letters goes whole."""
    assert document_text('{ a(s: "bob\nsmith@example.com", n: 1) { b } }', False) == (
        '{ a(s: "[Filtered]"')
    assert document_text("{ a(h: 0xDEADBEEF, n: 12ab, e: 1.5E+3) }", False) == (
        '{ a(h: "[Filtered]", n: "[Filtered]", e: "[Filtered]") }')


def test_secret_keys_inside_lists_and_deep_variables_stay_filtered() -> None:
    """With PII, variables are sent, but never the values of secret-looking keys: also inside
    a list item or a mapping nested deeper than the flattening goes."""
    deep: dict[str, Any] = {"password": "hunter2", "city": "Lyon"}
    for _ in range(6):
        deep = {"d": deep}
    flat = flat_variables({"users": [{"email": "a@b.c", "password": "hunter2"}, 7],
                           "deep": deep}, "graphql.variables")
    assert "hunter2" not in json.dumps(flat)
    assert json.loads(flat["graphql.variables.users"][0]) == {
        "email": "a@b.c", "password": "[Filtered]"}
    assert flat["graphql.variables.users"][1] == "7"
    (deepest,) = [v for k, v in flat.items() if k.startswith("graphql.variables.deep")]
    assert "Lyon" in deepest and "[Filtered]" in deepest


# --------------------------------------------------------------------------------------------
# Zero-code: opentelemetry-instrument, a Flask app serving strawberry
# --------------------------------------------------------------------------------------------

APP = textwrap.dedent('''
    import os
    import signal
    import sys

    import strawberry
    from flask import Flask
    from strawberry.flask.views import GraphQLView


    @strawberry.type
    class Query:
        @strawberry.field
        def stock(self, sku: str) -> int:
            return len(sku)

        @strawberry.field
        def broken(self) -> int:
            raise KeyError("sku-404")


    app = Flask(__name__)
    app.add_url_rule("/graphql", view_func=GraphQLView.as_view(
        "graphql", schema=strawberry.Schema(query=Query)))


    @app.get("/health")
    def health():
        return "ok"


    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.run(host="127.0.0.1", port=int(os.environ["GQLAPP_PORT"]), threaded=True)
''')


@pytest.mark.e2e
def test_zero_code_under_opentelemetry_instrument(tmp_path: Path) -> None:
    script = tmp_path / "gqlapp" / "app.py"
    script.parent.mkdir()
    script.write_text(APP)
    with SentryReceiver() as receiver:
        with AppProcess(script, bridge_env(receiver, "graphql"), free_port()) as app:
            status, body, _ = app.post("/graphql", json={
                "query": 'query Stock { stock(sku: "abc") }'})
            assert (status, json.loads(body)) == (200, {"data": {"stock": 3}})
            status, body, _ = app.post("/graphql", json={"query": "query Broken { broken }"})
            assert status == 200 and b"sku-404" in body
            found = receiver.wait_for(
                lambda r: len(r.transactions()) >= 3 and len(r.events()) >= 1, timeout=20)
            output = app.stop()
        assert found, output
        assert_receiver_clean(receiver)
        # strawberry logs the resolver's error with its traceback (its logger, not ours)
        assert_clean_output(output, tracebacks=1)
        by_name = {t["transaction"]: t for t in receiver.transactions()}
        for txn in by_name.values():
            assert validate_event(txn, kind="transaction") == []
        stock, broken = by_name["Stock"], by_name["Broken"]
        assert stock["transaction_info"] == {"source": Source.COMPONENT}
        assert stock["contexts"]["trace"]["op"] == Op.HTTP_SERVER
        assert [s["op"] for s in sorted(stock["spans"], key=lambda s: s["start_timestamp"])
                if s["op"].startswith("graphql")] == [
            Op.GRAPHQL_QUERY, Op.GRAPHQL_PARSE, Op.GRAPHQL_VALIDATE, Op.GRAPHQL_EXECUTE,
            Op.GRAPHQL_RESOLVE]
        (event,) = receiver.events()
        assert validate_event(event, kind="event") == []
        assert event["transaction"] == "Broken"
        assert event["exception"]["values"][-1]["type"] == "KeyError"
        assert event["contexts"]["capture"]["graphql.path"] == "broken"
        assert event["contexts"]["trace"]["trace_id"] == broken["contexts"]["trace"]["trace_id"]
