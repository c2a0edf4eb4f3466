"""Custom spans (``span``, its shortcuts): a real TracerProvider, the bridge, Relay's normalizer.

Every transaction and error event asserted on passes ``validate_event`` (Relay + Insights lint).
"""

from __future__ import annotations

import asyncio
import decimal
import enum
import inspect
import logging
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import INVALID_SPAN, NoOpTracerProvider, SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import (
    _internal_errors,
    cache_span,
    caching,
    deserialize_span,
    http_client_span,
    serialize_span,
    span,
)
from otel_sentry_bridge._span_values import http_method, http_url
from otel_sentry_bridge.conventions import Attr, Op
from otel_sentry_bridge.custom_spans import CODE_FUNCTION, CODE_LINE, CustomSpan
from otel_sentry_bridge.sampler import SentryBridgeSampler
from otel_sentry_bridge.testing import BridgeCapture

OP, DESCRIPTION, ORIGIN = Attr.SENTRY_OP[0], Attr.SENTRY_DESCRIPTION[0], Attr.SENTRY_ORIGIN[0]
ROOT = "nightly import"


class Started(SpanProcessor):
    """Names of the recording spans started on a provider (also unsampled, RECORD_ONLY ones)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.names.append(span.name)


@pytest.fixture
def bridge() -> Iterator[BridgeCapture]:
    capture = BridgeCapture()
    try:
        yield capture
    finally:
        capture.close()


def transaction(capture: BridgeCapture) -> dict[str, Any]:
    (txn,) = capture.transactions()
    assert validate_event(txn, kind="transaction") == [], txn
    return txn


def spans_by_description(txn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["description"]: s for s in txn["spans"]}


def root_id(txn: dict[str, Any]) -> str:
    return str(txn["contexts"]["trace"]["span_id"])


def errors(capture: BridgeCapture) -> list[dict[str, Any]]:
    events = capture.items("event")
    for event in events:
        assert validate_event(event, kind="event") == [], event
    return events


# ---------------------------------------------------------------------------- decorated code
class OrderCodec:
    @span
    def price(self, amount: int, *, currency: str = "EUR") -> str:
        """Format a price."""
        return f"{amount} {currency}"

    @span(op=Op.SERIALIZE)
    @staticmethod
    def encode(order: dict[str, Any]) -> bytes:
        return repr(order).encode()

    @span
    @classmethod
    def name(cls) -> str:
        return cls.__name__


@span(op=Op.SERIALIZE, attributes={"format": "json"}, measurements={"items": (3, "none")})
async def encode_async(order: dict[str, Any]) -> str:
    await asyncio.sleep(0)
    return repr(order)


@span
def numbers(count: int) -> Generator[int, None, int]:
    for number in range(count):
        with span("inside the generator"):
            pass
        yield number
    return count


@span(op=Op.DESERIALIZE)
async def rows(count: int) -> AsyncGenerator[int, None]:
    for number in range(count):
        with span("inside the async generator"):
            await asyncio.sleep(0)
        yield number


def test_decorated_functions_keep_their_signature_and_kind() -> None:
    codec = OrderCodec()
    method = OrderCodec.price
    assert method.__name__ == "price" and method.__qualname__ == "OrderCodec.price"
    assert method.__doc__ == "Format a price."
    assert inspect.signature(method) == inspect.signature(method.__wrapped__)  # type: ignore[attr-defined]
    bound = inspect.signature(codec.price)
    assert list(bound.parameters) == ["amount", "currency"]
    assert bound.parameters["currency"].default == "EUR"
    assert inspect.iscoroutinefunction(encode_async)
    assert inspect.isgeneratorfunction(numbers)
    assert inspect.isasyncgenfunction(rows)
    assert isinstance(OrderCodec.__dict__["encode"], staticmethod)
    assert isinstance(OrderCodec.__dict__["name"], classmethod)
    assert OrderCodec.name() == "OrderCodec" and codec.encode({"id": 1}) == b"{'id': 1}"


def test_decorator_spans_nest_under_the_current_span(monkeypatch: pytest.MonkeyPatch,
                                                     bridge: BridgeCapture) -> None:
    # The global provider, looked up at each call (OpenTelemetry's test helpers do the same).
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", bridge.tracer_provider)
    codec = OrderCodec()
    with span(ROOT):
        assert codec.price(3) == "3 EUR"
        assert codec.encode({"id": 1}) == b"{'id': 1}"
        assert OrderCodec.name() == "OrderCodec"
        assert asyncio.run(encode_async({"id": 2})) == "{'id': 2}"
    txn = transaction(bridge)
    assert txn["transaction"] == ROOT and txn["contexts"]["trace"]["op"] == Op.FUNCTION
    found = spans_by_description(txn)
    price = found[f"{__name__}.OrderCodec.price"]
    assert price["op"] == Op.FUNCTION and price["origin"] == "manual"
    assert price["parent_span_id"] == root_id(txn)
    assert price["data"][CODE_FUNCTION] == f"{__name__}.OrderCodec.price"
    assert price["data"][CODE_LINE] == inspect.getsourcelines(OrderCodec.price)[1]
    assert found[f"{__name__}.OrderCodec.encode"]["op"] == Op.SERIALIZE
    assert found[f"{__name__}.OrderCodec.name"]["op"] == Op.FUNCTION
    encode = found[f"{__name__}.encode_async"]
    assert encode["op"] == Op.SERIALIZE and encode["data"]["format"] == "json"
    assert txn["measurements"] == {"items": {"value": 3.0, "unit": "none"}}


def test_generator_span_covers_the_iteration_and_is_current_only_inside(
    bridge: BridgeCapture,
) -> None:
    provider = bridge.tracer_provider
    inner = span("inside", tracer_provider=provider)
    consumer = span("consumer step", tracer_provider=provider)

    def counting() -> Generator[int, None, int]:
        for number in range(2):
            with inner:
                pass
            yield number
        return 2

    traced = span(tracer_provider=provider)(counting)
    with span(ROOT, tracer_provider=provider):
        generator = traced()
        seen = []
        for number in generator:
            with consumer:  # between two steps: not a child of the generator's span
                seen.append(number)
        assert seen == [0, 1]

        def delegate() -> Generator[int, None, int]:
            result = yield from traced()
            assert result == 2
            return result

        assert list(delegate()) == [0, 1]
    txn = transaction(bridge)
    generators = [s for s in txn["spans"] if s["description"].endswith("counting")]
    assert len(generators) == 2
    ids = {s["span_id"] for s in generators}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in txn["spans"]:
        by_name.setdefault(item["description"], []).append(item)
    assert all(s["parent_span_id"] in ids for s in by_name["inside"])
    assert len(by_name["inside"]) == 4
    assert [s["parent_span_id"] for s in by_name["consumer step"]] == [root_id(txn)] * 2
    first = min(generators, key=lambda s: s["start_timestamp"])
    steps = sorted(by_name["consumer step"], key=lambda s: s["start_timestamp"])
    assert first["timestamp"] >= steps[-1]["timestamp"]  # it ended after the last step
    assert first["status"] == "ok"


def test_generator_close_throw_and_send_reach_the_generator(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    log: list[Any] = []

    def echo() -> Generator[Any, Any, None]:
        try:
            while True:
                try:
                    received = yield len(log)
                    log.append(received)
                except KeyError as exc:
                    log.append(f"caught {exc.args[0]}")
        finally:
            log.append("closed")

    traced = span(tracer_provider=provider)(echo)
    with span(ROOT, tracer_provider=provider):
        generator = traced()
        assert next(generator) == 0
        assert generator.send("a") == 1
        assert generator.throw(KeyError("k")) == 2
        generator.close()
    assert log == ["a", "caught k", "closed"]
    txn = transaction(bridge)
    (echoed,) = [s for s in txn["spans"] if s["description"].endswith("echo")]
    assert echoed["status"] == "ok"
    assert errors(bridge) == []


def test_async_generator_span(bridge: BridgeCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", bridge.tracer_provider)

    async def main() -> list[int]:
        async with span(ROOT):
            collected = [number async for number in rows(3)]
            partial = rows(5)
            assert await partial.__anext__() == 0
            await partial.aclose()
            return collected

    assert asyncio.run(main()) == [0, 1, 2]
    txn = transaction(bridge)
    generators = [s for s in txn["spans"] if s["description"] == f"{__name__}.rows"]
    assert [s["op"] for s in generators] == [Op.DESERIALIZE] * 2
    ids = {s["span_id"] for s in generators}
    inside = [s for s in txn["spans"] if s["description"] == "inside the async generator"]
    assert len(inside) == 4 and all(s["parent_span_id"] in ids for s in inside)
    assert all(s["status"] == "ok" for s in generators)


# ---------------------------------------------------------------------------- context manager
def test_context_manager_gives_the_span_attributes_and_measurements(
    bridge: BridgeCapture,
) -> None:
    provider = bridge.tracer_provider
    with span(ROOT, tracer_provider=provider):
        with span("encode order", op=Op.SERIALIZE, tracer_provider=provider,
                  attributes={"order.id": 7, "format": "json"},
                  measurements={"order.items": 3, "payload": (512, "byte")}) as current:
            assert current is trace.get_current_span() and current.is_recording()
            current.set_attribute("bytes", 512)
            with deserialize_span("decode reply", tracer_provider=provider):
                pass
    txn = transaction(bridge)
    found = spans_by_description(txn)
    encode, decode = found["encode order"], found["decode reply"]
    assert encode["op"] == Op.SERIALIZE and decode["op"] == Op.DESERIALIZE
    assert encode["parent_span_id"] == root_id(txn)
    assert decode["parent_span_id"] == encode["span_id"]
    assert encode["data"]["order.id"] == 7 and encode["data"]["bytes"] == 512
    assert encode["data"][OP] == Op.SERIALIZE and encode["data"][ORIGIN] == "manual"
    assert txn["measurements"] == {"order.items": {"value": 3.0, "unit": "none"},
                                   "payload": {"value": 512.0, "unit": "byte"}}


def test_one_object_shared_by_tasks_and_nested_in_itself(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    step = span("step", tracer_provider=provider)

    async def task(number: int) -> int:
        async with step as current:
            current.set_attribute("task", number)
            await asyncio.sleep(0.001 * (3 - number))
            return number

    async def main() -> list[int]:
        async with span(ROOT, tracer_provider=provider):
            return list(await asyncio.gather(*(task(n) for n in range(3))))

    assert asyncio.run(main()) == [0, 1, 2]
    with span(ROOT, tracer_provider=provider), step, step:
        with suppress_instrumentation(), step:  # started nothing: ends nothing
            pass
    first, second = bridge.transactions()
    for txn in (first, second):
        assert validate_event(txn, kind="transaction") == []
    assert sorted(s["data"]["task"] for s in first["spans"]) == [0, 1, 2]
    assert all(s["parent_span_id"] == root_id(first) for s in first["spans"])
    outer, inner = sorted(second["spans"], key=lambda s: s["start_timestamp"])
    assert inner["parent_span_id"] == outer["span_id"]
    assert outer["timestamp"] >= inner["timestamp"]


def test_root_custom_span_is_a_transaction_unless_only_if_parent(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    with span("lonely", only_if_parent=True, tracer_provider=provider) as current:
        assert current is INVALID_SPAN
    with span(ROOT, tracer_provider=provider):
        with span("child", only_if_parent=True, tracer_provider=provider):
            pass
    txn = transaction(bridge)
    assert txn["transaction"] == ROOT
    assert [s["description"] for s in txn["spans"]] == ["child"]


# ---------------------------------------------------------------------------- exceptions
class PaymentDeclined(Exception):
    pass


def test_exceptions_propagate_unchanged_and_become_error_events(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    raised = [PaymentDeclined(f"card declined {n}") for n in range(3)]

    @span(op=Op.SERIALIZE, tracer_provider=provider)
    def charge() -> None:
        raise raised[0]

    @span(tracer_provider=provider)
    async def charge_async() -> None:
        raise raised[1]

    with span(ROOT, tracer_provider=provider):
        with pytest.raises(PaymentDeclined) as caught:
            charge()
        assert caught.value is raised[0]
        with pytest.raises(PaymentDeclined) as caught:
            asyncio.run(charge_async())
        assert caught.value is raised[1]
        with pytest.raises(PaymentDeclined) as caught, span("pay", tracer_provider=provider):
            raise raised[2]
        assert caught.value is raised[2]
    txn = transaction(bridge)
    failed = {s["description"]: s for s in txn["spans"] if s["status"] != "ok"}
    assert len(failed) == 3 and all(s["status"] == "internal_error" for s in failed.values())
    events = {e["exception"]["values"][-1]["value"]: e for e in errors(bridge)}
    assert sorted(events) == [f"card declined {n}" for n in range(3)]
    places = (f"{__name__}.{charge.__qualname__}", f"{__name__}.{charge_async.__qualname__}", "pay")
    for value, where in zip(sorted(events), places, strict=True):
        event = events[value]
        assert event["exception"]["values"][-1]["type"] == "PaymentDeclined"
        assert event["contexts"]["trace"]["span_id"] == failed[where]["span_id"]


def test_keyboard_interrupt_and_cancellation_end_the_span_without_an_error(
    bridge: BridgeCapture,
) -> None:
    provider = bridge.tracer_provider

    @span(tracer_provider=provider)
    async def waits() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        job = asyncio.ensure_future(waits())
        await asyncio.sleep(0)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    with span(ROOT, tracer_provider=provider):
        asyncio.run(main())
        with pytest.raises(KeyboardInterrupt), span("interrupted", tracer_provider=provider):
            raise KeyboardInterrupt
    txn = transaction(bridge)
    assert len(txn["spans"]) == 2
    assert errors(bridge) == []


# ---------------------------------------------------------------------------- Sentry modules
def test_http_client_span_lights_up_the_requests_page(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    raw = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(raw))

    class Response:
        status_code = 404

    @http_client_span("get", "https://api.example.com/v1/rates?currency=EUR",
                      tracer_provider=provider)
    def fetch_rates() -> Response:
        return Response()

    with span(ROOT, tracer_provider=provider):
        assert fetch_rates().status_code == 404
        url = "https://bot:s3cret@psp.example.com:8443/charge?sig=abc&amount=3"
        with http_client_span("POST", url, tracer_provider=provider) as call:
            call.set_attribute(Attr.HTTP_STATUS[0], 201)
    txn = transaction(bridge)
    found = spans_by_description(txn)
    rates = found["GET https://api.example.com/v1/rates"]
    assert rates["op"] == Op.HTTP_CLIENT and rates["status"] == "not_found"
    assert rates["data"]["http.response.status_code"] == 404
    assert rates["tags"] == {"http.status_code": "404"}
    charge = found["POST https://psp.example.com:8443/charge"]
    assert charge["data"]["server.address"] == "psp.example.com"
    assert charge["data"]["server.port"] == 8443
    attributes = {s.name: dict(s.attributes or {}) for s in raw.get_finished_spans()}
    post = attributes["POST"]
    assert post[Attr.URL_FULL[0]] == (
        "https://REDACTED:REDACTED@psp.example.com:8443/charge?sig=REDACTED&amount=3")
    assert post[Attr.HTTP_METHOD[0]] == "POST" and DESCRIPTION not in post
    assert [s.kind for s in raw.get_finished_spans() if s.name in ("GET", "POST")] == \
        [SpanKind.CLIENT, SpanKind.CLIENT]


def test_cache_span_lights_up_the_caches_page(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    store = {"order:7": b"{\"id\": 7}"}

    @cache_span("order:7", tracer_provider=provider)
    def cached_order() -> bytes | None:
        return store.get("order:7")

    @cache_span("order:8", tracer_provider=provider)
    def missing_order() -> bytes | None:
        return store.get("order:8")

    with span(ROOT, tracer_provider=provider):
        assert cached_order() == b"{\"id\": 7}"
        assert missing_order() is None
        with cache_span([b"a:1", "a:2"], op=Op.CACHE_PUT, item_size=12,
                        tracer_provider=provider) as current:
            assert caching.active_cache_span() is current  # a client inside reports to it
        with cache_span(7, tracer_provider=provider) as current:  # type: ignore[arg-type]
            current.set_attribute(Attr.CACHE_HIT, False)
    txn = transaction(bridge)
    found = spans_by_description(txn)
    hit, miss = found["order:7"], found["order:8"]
    assert hit["op"] == miss["op"] == Op.CACHE_GET
    assert hit["data"][Attr.CACHE_KEY] == ["order:7"] and hit["data"][Attr.CACHE_HIT] is True
    assert hit["data"][Attr.CACHE_ITEM_SIZE] == 9
    assert miss["data"][Attr.CACHE_HIT] is False and Attr.CACHE_ITEM_SIZE not in miss["data"]
    put = found["a:1, a:2"]
    assert put["op"] == Op.CACHE_PUT and put["data"][Attr.CACHE_KEY] == ["a:1", "a:2"]
    assert put["data"][Attr.CACHE_ITEM_SIZE] == 12
    assert found["7"]["data"][Attr.CACHE_KEY] == ["7"]


# ---------------------------------------------------------------------------- bad input
class Color(enum.Enum):
    RED = "red"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_odd_attribute_and_measurement_values_never_raise(bridge: BridgeCapture) -> None:
    provider = bridge.tracer_provider
    raw = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    attributes: dict[Any, Any] = {
        "none": None, "object": Unprintable(), "color": Color.RED, "price": decimal.Decimal("2.5"),
        "blob": b"\xffab", "huge": 1 << 80, "mixed": [1, "a", None], "ints": (1, 2),
        "numbers": [1, 2.5], "nested": [[1], {2}], 42: "int key", "": "empty key",
        "set": {"only"},
    }
    measurements: dict[str, Any] = {"ok": 2, "text": "3", "flag": True, "dec": decimal.Decimal(1)}
    with span(ROOT, tracer_provider=provider):
        with span("odd", attributes=attributes, measurements=measurements,
                  tracer_provider=provider):
            pass
        with span(3.5, attributes=["not", "a", "mapping"],  # type: ignore[call-overload]
                  measurements=[1], tracer_provider=provider):
            pass
    txn = transaction(bridge)
    assert txn["measurements"] == {"ok": {"value": 2.0, "unit": "none"},
                                   "dec": {"value": 1.0, "unit": "none"}}
    odd = {s.name: dict(s.attributes or {}) for s in raw.get_finished_spans()}["odd"]
    assert "none" not in odd and "object" not in odd and "" not in odd
    assert odd["color"] == "red" and odd["price"] == "2.5" and odd["blob"] == "\ufffdab"
    assert odd["huge"] == str(1 << 80) and odd["42"] == "int key"
    assert odd["mixed"] == ("1", "a") and odd["ints"] == (1, 2) and odd["numbers"] == (1.0, 2.5)
    assert odd["nested"] == ("[1]", "{2}") and odd["set"] == ("only",)
    assert "3.5" in {s["description"] for s in txn["spans"]}


class Unreadable:
    def __str__(self) -> str:
        raise RuntimeError("no text either")


def test_bad_measurements_are_left_out_one_by_one_and_said_once(
    bridge: BridgeCapture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value ``float()`` refuses costs only itself; names made at run time (``item.<id>``)
    do not use up the bridge's warnings: later, other warnings are still logged."""
    monkeypatch.setattr(_internal_errors, "_WARNED", set())
    provider = bridge.tracer_provider
    bad: dict[str, Any] = {f"item.{n}": "not a number" for n in range(300)}
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"), \
            span(ROOT, tracer_provider=provider):
        with span("weigh", tracer_provider=provider,
                  measurements={"nan": decimal.Decimal("sNaN"), **bad, "weight": 2}):
            pass
        with span("other", attributes={"value": Unreadable()}, tracer_provider=provider):
            pass
    assert transaction(bridge)["measurements"] == {"weight": {"value": 2.0, "unit": "none"}}
    assert any("Unreadable" in record.getMessage() for record in caplog.records)


def test_not_a_function_is_left_undecorated() -> None:
    class Job:
        pass

    assert span(Job) is Job


# ---------------------------------------------------------------------------- tracing off
def call_everything() -> list[Any]:
    async def async_parts() -> list[Any]:
        async with span("async block") as block:
            assert block is INVALID_SPAN
            return [await encode_async({"a": 1}), [n async for n in rows(2)]]

    with span("block") as block:
        assert block is INVALID_SPAN
        inside = trace.get_current_span()
    return [OrderCodec().price(1), list(numbers(2)), asyncio.run(async_parts()), inside]


def test_without_a_provider_nothing_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    outside = trace.get_current_span()
    assert call_everything() == ["1 EUR", [0, 1], ["{'a': 1}", [0, 1]], outside]
    assert http_client_span("GET", "https://x.example/").open() is None
    assert CustomSpan("x", tracer_provider=NoOpTracerProvider()).open() is None


def test_sdk_disabled_suppressed_or_unsampled_starts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    disabled = TracerProvider()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    unsampled = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    started = Started()
    unsampled.add_span_processor(started)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", disabled)
    expected = ["1 EUR", [0, 1], ["{'a': 1}", [0, 1]], INVALID_SPAN]
    assert call_everything() == expected
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", unsampled)
    with unsampled.get_tracer("t").start_as_current_span("unsampled root") as root:
        assert not root.is_recording()
        assert call_everything() == [*expected[:3], root]  # nothing made current inside
    with suppress_instrumentation():
        assert call_everything() == expected
    assert started.names == []


def test_unsampled_but_recording_parent_keeps_the_error() -> None:
    capture = BridgeCapture(sampler=SentryBridgeSampler(0.0))
    started = Started()
    capture.tracer_provider.add_span_processor(started)
    provider = capture.tracer_provider
    try:
        @span(tracer_provider=provider)
        def fails() -> None:
            raise PaymentDeclined("unsampled")

        with provider.get_tracer("jobs").start_as_current_span(ROOT) as root:
            assert root.is_recording() and not root.get_span_context().trace_flags.sampled
            with span("skipped", tracer_provider=provider) as skipped:
                assert skipped is INVALID_SPAN
            with pytest.raises(PaymentDeclined):
                fails()
        assert started.names == [ROOT]
        assert capture.transactions() == []
        (event,) = errors(capture)
        assert event["exception"]["values"][-1]["value"] == "unsampled"
        assert event["contexts"]["trace"]["span_id"] == f"{root.get_span_context().span_id:016x}"
    finally:
        capture.close()


def test_shortcuts_decorate_bare_and_keep_results(bridge: BridgeCapture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", bridge.tracer_provider)

    @serialize_span
    def dump(value: int) -> str:
        return str(value)

    @deserialize_span
    def load(text: str) -> int:
        return int(text)

    with span(ROOT):
        assert load(dump(5)) == 5
    txn = transaction(bridge)
    assert sorted(s["op"] for s in txn["spans"]) == [Op.DESERIALIZE, Op.SERIALIZE]


def test_http_values_of_odd_methods_and_urls() -> None:
    assert http_method("purge") == ("PURGE", None)
    assert http_method("GET /x") == ("_OTHER", "GET /x")
    assert http_method(7) == ("_OTHER", "7")
    assert http_url("http://[::1") == {Attr.URL_FULL[0]: "http://[::1"}  # not a URL: as is
    assert http_url("http://u:p@[::1") == {Attr.URL_FULL[0]: "REDACTED"}
    assert http_url("https://h.example:port/x") == {
        Attr.URL_FULL[0]: "https://h.example:port/x", Attr.URL_SCHEME[0]: "https",
        Attr.SERVER_ADDRESS[0]: "h.example", Attr.SERVER_PORT[0]: 443}
    assert http_url("/relative") == {Attr.URL_FULL[0]: "/relative"}


def test_one_tracer_per_explicit_provider() -> None:
    """``with span(..., tracer_provider=p)`` made anew at each call asks ``p`` for a tracer
    once (``get_tracer`` is the costly part of an unsampled call); another provider gets its
    own."""

    class CountingProvider(TracerProvider):
        asked = 0

        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            type(self).asked += 1
            return super().get_tracer(*args, **kwargs)

    exporter = InMemorySpanExporter()
    provider = CountingProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for index in range(5):
        with span(f"step {index}", tracer_provider=provider):
            pass
    assert CountingProvider.asked == 1
    assert len(exporter.get_finished_spans()) == 5
    other = CountingProvider()
    with span("elsewhere", tracer_provider=other):
        pass
    assert CountingProvider.asked == 2
