"""pydantic v2 validation as spans; failures as error events, breadcrumbs or nothing.

Real pydantic, real TracerProvider, the bridge's own pipeline (``BridgeCapture``); every
transaction and event asserted on passes Relay's normalizer (``validate_event``). The last test
runs a script under ``opentelemetry-instrument`` against a loopback Sentry.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps import opentelemetry_instrument
from e2e_support import assert_clean_output, bridge_env
from fastapi import FastAPI
from flask import Flask, request
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_sentry_bridge_instrumentation.pydantic import (
    INPUT_LENGTH,
    ORIGIN,
    SCHEMA_NAME,
    TARGETS,
    VALIDATION_METHOD,
    VALIDATION_MODE,
    PydanticInstrumentor,
    type_name,
)
from otel_sentry_bridge_instrumentation.pydantic._report import (
    CATEGORY,
    ERROR_COUNT,
    MAX_EVENT_ERRORS,
)
from pydantic import BaseModel, RootModel, TypeAdapter, ValidationError, field_validator
from sentry_receiver import SentryReceiver, validate_event

from otel_sentry_bridge.conventions import Op
from otel_sentry_bridge.testing import BridgeCapture

SECRET_INPUT = "lots-of-private-text"


class Address(BaseModel):
    street: str
    zip: str


class Customer(BaseModel):
    name: str
    age: int
    address: Address
    password: str = ""


class Tagged(BaseModel):
    """A custom ``__init__`` (pydantic then calls it for nested instances too)."""

    tag: str

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)


class Order(BaseModel):
    sku: str
    qty: int
    tags: list[Tagged] = []
    customer: Customer | None = None

    @field_validator("sku")
    @classmethod
    def _known(cls, value: str) -> str:
        if value == "boom":
            raise KeyError("a validator's bug")  # not a ValueError: pydantic lets it through
        Address(street="validator's own", zip="1")  # a model built inside a validation
        return value


class Skus(RootModel[list[str]]):
    pass


GOOD = {"name": "Ada", "age": 36, "address": {"street": "Main", "zip": "1"}}
BAD = {"name": "Ada", "age": SECRET_INPUT, "address": {"street": "Main"},
       "password": "hunter2-secret"}


@pytest.fixture
def capture_factory() -> Iterator[Callable[..., BridgeCapture]]:
    made: list[BridgeCapture] = []

    def make(**settings: Any) -> BridgeCapture:
        capture = BridgeCapture(**settings)
        PydanticInstrumentor().instrument(tracer_provider=capture.tracer_provider)
        made.append(capture)
        return capture

    yield make
    PydanticInstrumentor().uninstrument()
    for capture in made:
        capture.close()


@pytest.fixture
def capture(capture_factory: Callable[..., BridgeCapture]) -> BridgeCapture:
    return capture_factory()


def in_request(capture: BridgeCapture, work: Callable[[], Any]) -> Any:
    """``work()`` inside a root span; its exception (if any) returned, not raised."""
    tracer = capture.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /orders"):
        try:
            return work()
        except Exception as exc:
            return exc


def only_transaction(capture: BridgeCapture) -> dict[str, Any]:
    (txn,) = capture.transactions()
    assert validate_event(txn, kind="transaction") == []
    return txn


def validation_spans(txn: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in txn["spans"] if s["op"] == Op.VALIDATE]


def events(capture: BridgeCapture) -> list[dict[str, Any]]:
    out = capture.items("event")
    for event in out:
        assert validate_event(event, kind="event") == []
    return out


def data_of(event: dict[str, Any]) -> str:
    """The event as JSON, without its stack frames (whose lines of source are this file's)."""
    values = [{k: v for k, v in value.items() if k != "stacktrace"}
              for value in event["exception"]["values"]]
    return json.dumps({**event, "exception": {"values": values}})


# ------------------------------------------------------------------------------ spans


def test_a_model_with_nested_models_is_one_span(capture: BridgeCapture) -> None:
    order = in_request(capture, lambda: Order(
        sku="a", qty=1, tags=[{"tag": "x"}, {"tag": "y"}], customer=GOOD))
    assert isinstance(order, Order) and order.tags[1].tag == "y"
    (span,) = validation_spans(only_transaction(capture))
    assert span["description"] == "Order (python)"
    assert span["origin"] == ORIGIN and span["status"] == "ok"
    assert span["data"][SCHEMA_NAME] == "Order"
    assert span["data"][VALIDATION_MODE] == "python"
    assert span["data"][VALIDATION_METHOD] == "__init__"
    assert ERROR_COUNT not in span["data"]


ENTRY_POINTS: list[tuple[str, Callable[[], Any], str, str]] = [
    ("model_validate", lambda: Customer.model_validate(GOOD), "Customer (python)",
     "model_validate"),
    ("model_validate_json", lambda: Customer.model_validate_json(json.dumps(GOOD)),
     "Customer (json)", "model_validate_json"),
    ("model_validate_strings", lambda: Address.model_validate_strings({"street": "a", "zip": "1"}),
     "Address (strings)", "model_validate_strings"),
    ("root_model", lambda: Skus(["a", "b"]), "Skus (python)", "__init__"),
    ("adapter_python", lambda: TypeAdapter(list[Customer]).validate_python([GOOD]),
     "list[Customer] (python)", "TypeAdapter.validate_python"),
    ("adapter_json", lambda: TypeAdapter(dict[str, int]).validate_json(b'{"a": 1}'),
     "dict[str, int] (json)", "TypeAdapter.validate_json"),
    ("adapter_strings", lambda: TypeAdapter(Address).validate_strings({"street": "a", "zip": "1"}),
     "Address (strings)", "TypeAdapter.validate_strings"),
]


@pytest.mark.parametrize(("call", "description", "method"),
                         [e[1:] for e in ENTRY_POINTS], ids=[e[0] for e in ENTRY_POINTS])
def test_each_entry_point_is_a_span(
    capture: BridgeCapture, call: Callable[[], Any], description: str, method: str,
) -> None:
    assert not isinstance(in_request(capture, call), Exception)
    (span,) = validation_spans(only_transaction(capture))
    assert (span["description"], span["data"][VALIDATION_METHOD]) == (description, method)
    if "json" in description:
        assert span["data"][INPUT_LENGTH] > 0


def test_adapters_of_one_plain_value_make_no_span(capture: BridgeCapture) -> None:
    """FastAPI validates each query, path and header parameter through such an adapter."""
    in_request(capture, lambda: (TypeAdapter(int).validate_python("3"),
                                 TypeAdapter(int | None).validate_json("null"),
                                 TypeAdapter(list[int]).validate_python([1])))
    assert [s["description"] for s in validation_spans(only_transaction(capture))] == [
        "list[int] (python)"]
    assert type_name(list[Customer]) == "list[Customer]"


def test_validation_outside_a_span_sends_nothing(capture: BridgeCapture) -> None:
    Customer.model_validate(GOOD)
    with pytest.raises(ValidationError):
        Customer.model_validate(BAD)
    assert capture.transactions() == [] and capture.items("event") == []


def test_suppressed_instrumentation_makes_no_span(capture: BridgeCapture) -> None:
    def work() -> None:
        with suppress_instrumentation():
            Customer.model_validate(GOOD)
    in_request(capture, work)
    assert validation_spans(only_transaction(capture)) == []


def test_a_validator_bug_is_recorded_as_any_escaping_exception(capture: BridgeCapture) -> None:
    assert isinstance(in_request(capture, lambda: Order(sku="boom", qty=1)), KeyError)
    (span,) = validation_spans(only_transaction(capture))
    assert span["status"] == "internal_error" and ERROR_COUNT not in span["data"]
    (event,) = events(capture)
    assert event["exception"]["values"][-1]["type"] == "KeyError"


# ------------------------------------------------------------------------------ failures


def _assert_failed_span(capture: BridgeCapture) -> dict[str, Any]:
    (span,) = validation_spans(only_transaction(capture))
    assert span["status"] == "invalid_argument"
    assert span["data"][ERROR_COUNT] == 2
    assert span["data"]["error.type"] == "pydantic_core._pydantic_core.ValidationError"
    return span


def test_failure_as_an_event_without_input_values(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    capture = capture_factory(validation_errors="event")
    exc = in_request(capture, lambda: Customer.model_validate(BAD))
    assert isinstance(exc, ValidationError)
    span = _assert_failed_span(capture)
    (event,) = events(capture)
    (value,) = event["exception"]["values"]
    assert value["type"] == "ValidationError"
    assert value["value"] == ("2 validation errors for Customer: age [int_parsing], "
                              "address.zip [missing]")
    assert value["mechanism"] == {"type": ORIGIN, "handled": True}
    assert event["contexts"]["trace"]["span_id"] == span["span_id"]
    assert event["contexts"]["capture"]["validation"] == {
        "schema": "Customer", "mode": "python", "error_count": 2, "errors": [
            {"loc": "age", "type": "int_parsing",
             "msg": "Input should be a valid integer, unable to parse string as an integer"},
            {"loc": "address.zip", "type": "missing", "msg": "Field required"},
        ]}
    sent = data_of(event)
    assert SECRET_INPUT not in sent and "hunter2" not in sent and "input" not in sent
    frames = value["stacktrace"]["frames"]
    assert frames[-1]["module"] == "pydantic.main"
    # the code that validated, then the live exception's frames (with source context)
    (caller,) = [f for f in frames if f["function"] == "<lambda>"
                 and "Customer.model_validate(BAD)" in f.get("context_line", "")]
    assert caller["in_app"] and caller["filename"] == Path(__file__).name
    assert frames[-1]["pre_context"] and frames.index(caller) < len(frames) - 1


def test_failure_event_carries_input_values_only_with_pii(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    capture = capture_factory(validation_errors="event", send_default_pii=True)
    in_request(capture, lambda: Customer.model_validate(BAD))
    (event,) = events(capture)
    errors = event["contexts"]["capture"]["validation"]["errors"]
    assert errors[0]["input"] == SECRET_INPUT
    # a missing field's input is the object holding it; secret-looking keys stay filtered
    assert errors[1]["input"] == {"street": "Main"}
    capture.pipeline.flush()
    in_request(capture, lambda: Customer.model_validate({**BAD, "password": 7}))
    *_, second = events(capture)
    by_loc = {e["loc"]: e for e in second["contexts"]["capture"]["validation"]["errors"]}
    assert by_loc["password"]["input"] == "[Filtered]"
    assert "hunter2" not in data_of(second)


def test_type_adapter_failure_event_locates_the_item(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    capture = capture_factory(validation_errors="event")
    exc = in_request(capture, lambda: TypeAdapter(list[Address]).validate_json(
        '[{"street": "a", "zip": "1"}, {"street": 5}]'))
    assert isinstance(exc, ValidationError)
    (event,) = events(capture)
    errors = event["contexts"]["capture"]["validation"]["errors"]
    assert [(e["loc"], e["type"]) for e in errors] == [("1.street", "string_type"),
                                                       ("1.zip", "missing")]
    assert event["contexts"]["capture"]["validation"]["mode"] == "json"
    assert event["exception"]["values"][-1]["value"].startswith(
        "2 validation errors for list[Address]: 1.street [string_type]")


def _later_error(capture: BridgeCapture, work: Callable[[], Any]) -> dict[str, Any]:
    """Run ``work`` then fail the request otherwise: the error event of that failure."""
    def request_then_fail() -> None:
        assert isinstance(work(), ValidationError)
        raise RuntimeError("payment failed")
    tracer = capture.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /orders") as root:
        try:
            request_then_fail()
        except RuntimeError as exc:
            root.record_exception(exc)
    (event,) = events(capture)
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    return event


def _caught(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return call()
        except ValidationError as exc:
            return exc
    return run


@pytest.mark.parametrize("pii", [False, True])
def test_failure_as_a_breadcrumb(capture_factory: Callable[..., BridgeCapture], pii: bool) -> None:
    capture = capture_factory(send_default_pii=pii)  # breadcrumb: the default
    event = _later_error(capture, _caught(lambda: Customer.model_validate(BAD)))
    _assert_failed_span(capture)
    (crumb,) = [c for c in event["breadcrumbs"]["values"] if c["category"] == CATEGORY]
    assert crumb["level"] == "warning"
    assert crumb["message"] == ("2 validation errors for Customer: age [int_parsing], "
                                "address.zip [missing]")
    data = crumb["data"]
    assert (data["schema"], data["mode"], data["error_count"]) == ("Customer", "python", 2)
    assert (data["errors.0.loc"], data["errors.0.type"]) == ("age", "int_parsing")
    assert (data["errors.1.loc"], data["errors.1.msg"]) == ("address.zip", "Field required")
    assert ("errors.0.input" in data) is pii and (SECRET_INPUT in data_of(event)) is pii
    if pii:
        assert data["errors.0.input"] == SECRET_INPUT
    assert "hunter2" not in data_of(event)


@pytest.mark.parametrize("setting", ["event", "breadcrumb"])
def test_exception_attributes_hold_no_input_values(
    capture_factory: Callable[..., BridgeCapture], setting: str,
) -> None:
    """What other OpenTelemetry exporters see of a failure (the exception event, or the
    breadcrumb event with the exception's message): no input value."""
    capture = capture_factory(validation_errors=setting)
    exported = InMemorySpanExporter()
    capture.tracer_provider.add_span_processor(SimpleSpanProcessor(exported))
    assert isinstance(in_request(capture, _caught(lambda: Customer.model_validate(BAD))),
                      ValidationError)
    (attributes,) = [dict(e.attributes or {}) for s in exported.get_finished_spans()
                     for e in s.events]
    assert attributes["exception.message"].startswith("2 validation errors for Customer: ")
    assert SECRET_INPUT not in json.dumps(attributes) and "hunter2" not in json.dumps(attributes)


def test_failure_off_only_marks_the_span(capture_factory: Callable[..., BridgeCapture]) -> None:
    capture = capture_factory(validation_errors="off")
    event = _later_error(capture, _caught(lambda: Customer.model_validate(BAD)))
    _assert_failed_span(capture)
    assert all(c["category"] != CATEGORY for c in event.get("breadcrumbs", {}).get("values", ()))


def test_many_errors_are_bounded(capture_factory: Callable[..., BridgeCapture]) -> None:
    capture = capture_factory(validation_errors="event")
    in_request(capture, lambda: TypeAdapter(list[int]).validate_python(["x" * 5000] * 100))
    (event,) = events(capture)
    context = event["contexts"]["capture"]["validation"]
    assert context["error_count"] == 100 and len(context["errors"]) == MAX_EVENT_ERRORS
    value = event["exception"]["values"][-1]["value"]
    assert value.endswith("...") and len(value) <= 250
    assert validation_spans(only_transaction(capture))[0]["data"][ERROR_COUNT] == 100


# ------------------------------------------------------------------------ web frameworks


def _flask_app(capture: BridgeCapture) -> Flask:
    app = Flask("shop")

    @app.post("/orders")
    def create() -> dict[str, Any]:
        order = Customer.model_validate(request.get_json())
        return {"name": order.name}

    FlaskInstrumentor().instrument_app(app, tracer_provider=capture.tracer_provider)
    return app


@pytest.mark.parametrize("setting", ["event", "breadcrumb"])
def test_an_error_escaping_the_view_is_one_event_without_input_values(
    capture_factory: Callable[..., BridgeCapture], setting: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Flask's instrumentation records the exception again, with ``str(exc)`` (pydantic's text,
    input values included): one event all the same, with the bridge's message."""
    capture = capture_factory(validation_errors=setting)
    app = _flask_app(capture)
    try:
        assert app.test_client().post("/orders", json=BAD).status_code == 500
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    (txn,) = capture.transactions()
    assert validate_event(txn, kind="transaction") == []
    (span,) = validation_spans(txn)
    (event,) = events(capture)
    (value,) = event["exception"]["values"]
    assert value["value"].startswith("2 validation errors for Customer: age [int_parsing]")
    assert value["mechanism"] == {"type": "auto.otel.flask", "handled": False}  # it escaped
    assert "create" in [f["function"] for f in value["stacktrace"]["frames"]]
    assert SECRET_INPUT not in data_of(event)
    if setting == "event":  # linked to the validation span, with the field errors
        assert event["contexts"]["trace"]["span_id"] == span["span_id"]
        assert event["contexts"]["capture"]["validation"]["error_count"] == 2
    else:  # Flask's event, with the breadcrumb
        assert event["contexts"]["trace"]["op"] == Op.HTTP_SERVER
        assert CATEGORY in [c["category"] for c in event["breadcrumbs"]["values"]]


def _validate_billing() -> None:
    Customer.model_validate(BAD)


def _validate_shipping() -> None:
    Customer.model_validate(BAD)


def test_same_failure_at_two_places_is_two_events(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    """Same model, same field errors (so the same message without input values), same
    innermost frame (pydantic's): two exceptions all the same, each with its own caller."""
    capture = capture_factory(validation_errors="event")

    def both() -> None:
        _caught(_validate_billing)()
        _caught(_validate_shipping)()

    in_request(capture, both)
    found = events(capture)
    callers = sorted(
        {f["function"] for f in e["exception"]["values"][-1]["stacktrace"]["frames"]}
        & {"_validate_billing", "_validate_shipping"}
        for e in found
    )
    assert callers == [{"_validate_billing"}, {"_validate_shipping"}]
    spans = {s["span_id"] for s in validation_spans(only_transaction(capture))}
    assert {e["contexts"]["trace"]["span_id"] for e in found} == spans


def test_failures_alike_at_one_place_are_one_event(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    """A loop validating rows: each failure is a span of its own, but the same failure from the
    same line is one event (records of one exception are told apart by place, not count)."""
    capture = capture_factory(validation_errors="event")
    in_request(capture, lambda: [_caught(_validate_billing)() for _ in range(3)])
    assert [s["status"] for s in validation_spans(only_transaction(capture))] == [
        "invalid_argument"] * 3
    (event,) = events(capture)
    assert event["exception"]["values"][-1]["mechanism"]["handled"] is True


def test_a_caught_and_an_escaping_failure_are_two_events(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    """The view catches one failure, then another escapes (Flask records it again): the
    escaping one is unhandled, the caught one stays handled, each with its own caller."""
    capture = capture_factory(validation_errors="event")
    app = Flask("shop")

    @app.post("/orders")
    def create() -> dict[str, Any]:
        _caught(_validate_billing)()
        _validate_shipping()
        return {}

    FlaskInstrumentor().instrument_app(app, tracer_provider=capture.tracer_provider)
    try:
        assert app.test_client().post("/orders", json={}).status_code == 500
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    outcome = {}
    for event in events(capture):
        value = event["exception"]["values"][-1]
        (caller,) = {f["function"] for f in value["stacktrace"]["frames"]} & {
            "_validate_billing", "_validate_shipping"}
        outcome[caller] = value["mechanism"]
    assert outcome == {"_validate_billing": {"type": ORIGIN, "handled": True},
                       "_validate_shipping": {"type": "auto.otel.flask", "handled": False}}


@pytest.mark.parametrize("setting", ["event", "breadcrumb"])
def test_a_failure_raised_from_is_sent_without_input_values(
    capture_factory: Callable[..., BridgeCapture], setting: str,
) -> None:
    """``raise ImportFailed(...) from exc``: the ValidationError is in the chain of the error
    that escapes; its message there is the bridge's too, not ``str(exc)``."""
    capture = capture_factory(validation_errors=setting)

    def work() -> None:
        try:
            Customer.model_validate(BAD)
        except ValidationError as exc:
            raise LookupError("import failed") from exc

    tracer = capture.tracer_provider.get_tracer("app")
    with pytest.raises(LookupError), tracer.start_as_current_span("import"):
        work()
    found = events(capture)
    (failed,) = [e for e in found if e["exception"]["values"][-1]["type"] == "LookupError"]
    cause, main = failed["exception"]["values"]
    assert cause["type"] == "ValidationError" and main["value"] == "import failed"
    assert cause["value"] == ("2 validation errors for Customer: age [int_parsing], "
                              "address.zip [missing]")
    assert [e["exception"]["values"][-1]["type"] for e in found].count("ValidationError") == (
        1 if setting == "event" else 0)
    for event in found:
        assert SECRET_INPUT not in data_of(event) and "hunter2" not in data_of(event)


def test_a_long_failure_raised_from_is_sent_without_input_values(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    """``str(exc)`` longer than what the live chain keeps of a message: recognised all the
    same (the digest is of the part kept)."""
    capture = capture_factory()
    rows = [SECRET_INPUT * 40] * 100  # str(exc) quotes each row: far over 16 kB

    def work() -> None:
        try:
            TypeAdapter(list[int]).validate_python(rows)
        except ValidationError as exc:
            raise LookupError("import failed") from exc

    tracer = capture.tracer_provider.get_tracer("app")
    with pytest.raises(LookupError), tracer.start_as_current_span("import"):
        work()
    (event,) = events(capture)
    cause, _main = event["exception"]["values"]
    assert cause["value"].startswith("100 validation errors for list[int]: 0 [int_parsing]")
    assert SECRET_INPUT not in data_of(event)


def test_fastapi_request_gets_body_and_response_spans_not_parameter_spans(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    capture = capture_factory(validation_errors="event")
    app = FastAPI()

    @app.post("/shops/{shop}/customers", response_model=Address)
    def create(shop: int, customer: Customer, page: int = 1) -> dict[str, str]:
        return {"street": customer.address.street, "zip": str(shop)}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=capture.tracer_provider)

    async def post(body: dict[str, Any]) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            response = await client.post("/shops/3/customers?page=2", json=body)
            return response.status_code

    try:
        assert asyncio.run(post(GOOD)) == 200
        assert asyncio.run(post(BAD)) == 422
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    ok, invalid = capture.transactions()
    for txn in (ok, invalid):
        assert validate_event(txn, kind="transaction") == []
    assert [s["description"] for s in validation_spans(ok)] == [
        "Customer (python)", "Address (python)"]
    assert [s["status"] for s in validation_spans(invalid)] == ["invalid_argument"]
    (event,) = events(capture)  # the 422: a handled error, the caller turned it into a response
    assert event["exception"]["values"][-1]["mechanism"]["handled"] is True


# ------------------------------------------------------------------ pydantic unchanged


CASES: list[tuple[Callable[[], Any], ...]] = [
    (lambda: Customer(**GOOD),),
    (lambda: Customer(**BAD),),
    (lambda: Customer.model_validate(BAD, strict=True),),
    (lambda: Customer.model_validate_json(json.dumps(BAD)),),
    (lambda: Customer.model_validate_json("{not json"),),
    (lambda: Address.model_validate_strings({"street": 1}),),
    (lambda: Order(sku="a", qty="2", tags=[{"tag": 1}]),),
    (lambda: Skus(["a", 2]),),
    (lambda: TypeAdapter(list[Address]).validate_python([{"street": "a", "zip": "1"}, 3]),),
    (lambda: TypeAdapter(dict[str, int]).validate_json(b'{"a": "x"}'),),
    (lambda: TypeAdapter(Address).validate_strings({"zip": "1"}),),
]


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        result = call()
    except ValidationError as exc:
        return ("error", exc.title, exc.errors(), str(exc), exc.error_count())
    dumped = result.model_dump() if isinstance(result, BaseModel) else result
    return ("ok", type(result), dumped)


def test_results_and_exceptions_are_pydantics_own(
    capture_factory: Callable[..., BridgeCapture],
) -> None:
    PydanticInstrumentor().uninstrument()
    plain = [_outcome(call) for (call,) in CASES]
    signatures = [inspect.signature(getattr(owner, name)) for owner, name, _ in TARGETS]
    for setting in ("event", "breadcrumb", "off"):
        capture = capture_factory(validation_errors=setting, send_default_pii=True)
        traced = in_request(capture, lambda: [_outcome(call) for (call,) in CASES])
        assert traced == plain
        assert [inspect.signature(getattr(owner, name)) for owner, name, _ in TARGETS] == signatures
        assert len(validation_spans(only_transaction(capture))) == len(CASES)
        PydanticInstrumentor().uninstrument()


def test_uninstrument_puts_pydantic_back(capture: BridgeCapture) -> None:
    PydanticInstrumentor().uninstrument()
    originals = {(owner, name): owner.__dict__[name] for owner, name, _ in TARGETS}
    PydanticInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    assert all(owner.__dict__[name] is not originals[owner, name] for owner, name, _ in TARGETS)
    assert BaseModel.__init__.__pydantic_base_init__ is True  # type: ignore[attr-defined]
    PydanticInstrumentor().uninstrument()
    assert all(owner.__dict__[name] is originals[owner, name] for owner, name, _ in TARGETS)
    assert isinstance(in_request(capture, lambda: Customer.model_validate(GOOD)), Customer)
    assert isinstance(Address.model_validate({"street": "a", "zip": "1"}), Address)
    assert validation_spans(only_transaction(capture)) == []


def test_models_defined_while_instrumented_keep_pydantics_own_init(
    capture: BridgeCapture,
) -> None:
    class Late(BaseModel):
        x: int

    assert Late.__pydantic_custom_init__ is False  # pydantic's fast path for nested instances
    assert Tagged.__pydantic_custom_init__ is True


def test_entry_point_names_the_instrumentor() -> None:
    (point,) = [p for p in entry_points(group="opentelemetry_instrumentor")
                if p.name == "sentry_bridge_pydantic"]
    assert point.load() is PydanticInstrumentor


# ----------------------------------------------------------------------- the mapping side


def test_capture_json_attributes_are_decoded_only_when_sane(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("app")
    deep = "[" * 20 + "]" * 20
    with tracer.start_as_current_span("job") as span:
        try:
            raise ValueError("bad")
        except ValueError as exc:
            span.record_exception(exc, attributes={
                "capture.rows.json": '{"a": [1, {"b": 2}]}', "capture.deep.json": deep,
                "capture.text.json": "not json", "capture.number.json": "3",
                "sentry.exception.handled": False,
            })
    (event,) = events(capture)
    assert event["contexts"]["capture"] == {
        "rows": {"a": [1, {"b": 2}]}, "deep.json": deep, "text.json": "not json",
        "number.json": "3"}
    assert event["exception"]["values"][-1]["mechanism"]["handled"] is False


# ------------------------------------------------------------------------------ zero-code

SCRIPT = f'''
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

class Line(BaseModel):
    sku: str
    qty: int

class Invoice(BaseModel):
    number: str
    lines: list[Line]

Invoice.model_validate({{"number": "outside", "lines": []}})  # no span around: nothing sent
tracer = trace.get_tracer("billing")
with tracer.start_as_current_span("import invoices"):
    Invoice.model_validate_json('{{"number": "1", "lines": [{{"sku": "a", "qty": 2}}]}}')
    try:
        Invoice(number="2", lines=[{{"sku": "b", "qty": "{SECRET_INPUT}"}}])
    except ValidationError:
        pass
print("done")
'''


def run_instrumented(
    receiver: SentryReceiver, argv: list[str], cwd: Path, **extra: str,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "OTEL_"))}
    # the bridge's other instrumentations have tests of their own
    others = ",".join(p.name for p in entry_points(group="opentelemetry_instrumentor")
                      if p.name.startswith("sentry_bridge_") and p.name != "sentry_bridge_pydantic")
    env.update(bridge_env(receiver, "billing", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=others,
                          **extra))
    proc = subprocess.run([str(opentelemetry_instrument()), sys.executable, *argv], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert_clean_output(output)
    return proc


@pytest.mark.e2e
def test_zero_code_under_opentelemetry_instrument(tmp_path: Path) -> None:
    script = tmp_path / "invoices.py"
    script.write_text(SCRIPT)
    with SentryReceiver() as receiver:
        proc = run_instrumented(receiver, [str(script)], tmp_path,
                                SENTRY_BRIDGE_VALIDATION_ERRORS="event")
        assert "done" in proc.stdout
        (txn,) = receiver.wait_for_transactions(1, timeout=10)
        receiver.wait_for(lambda r: len(r.events()) >= 1, timeout=10)
        receiver.assert_no_problems()
        assert txn["transaction"] == "import invoices"
        assert [(s["description"], s["status"], s["origin"]) for s in validation_spans(txn)] == [
            ("Invoice (json)", "ok", ORIGIN), ("Invoice (python)", "invalid_argument", ORIGIN)]
        (event,) = receiver.events()
        assert validate_event(event, kind="event") == []
        assert event["exception"]["values"][-1]["value"] == (
            "1 validation error for Invoice: lines.0.qty [int_parsing]")
        assert SECRET_INPUT not in data_of(event)


@pytest.mark.e2e
def test_without_pydantic_the_instrumentation_is_skipped_quietly(tmp_path: Path) -> None:
    """A ``pydantic`` that cannot be imported (as when it is not installed)."""
    (tmp_path / "pydantic").mkdir()
    (tmp_path / "pydantic" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pydantic'\", name='pydantic')\n")
    with SentryReceiver() as receiver:
        proc = run_instrumented(
            receiver, ["-c", "import sys; print('pydantic' in sys.modules)"], tmp_path,
            PYTHONPATH=str(tmp_path))
        assert proc.stdout.strip() == "False"
        assert "pydantic" not in proc.stderr
        receiver.assert_no_problems()
