"""Input values out of validation-error texts (pydantic's and FastAPI's own ``str``)."""

from __future__ import annotations

import pydantic
import pytest
from fastapi.exceptions import RequestValidationError, ResponseValidationError

from otel_sentry_bridge._mapping.validation_text import filter_validation_inputs

SECRETS = ("carol-secret", "bob@example.com")


class Signup(pydantic.BaseModel):
    age: int
    email: str
    nested: dict[str, int]


def failure() -> pydantic.ValidationError:
    with pytest.raises(pydantic.ValidationError) as info:
        Signup.model_validate({"age": "carol-secret", "nested": {"a": "bob@example.com"}})
    return info.value


@pytest.mark.parametrize("make", [
    lambda e: str(e),
    lambda e: f"ValidationError: {e}",  # a span status description (Flask's instrumentation)
    lambda e: str(RequestValidationError(e.errors())),
    lambda e: str(ResponseValidationError(e.errors(), body={"x": "carol-secret"})),
], ids=["pydantic", "status-description", "fastapi-request", "fastapi-response"])
def test_inputs_are_filtered_and_what_failed_stays(make: object) -> None:
    text = make(failure())  # type: ignore[operator]
    assert all(secret in text for secret in SECRETS)
    filtered = filter_validation_inputs(text)
    assert not any(secret in filtered for secret in SECRETS), filtered
    assert "[Filtered]" in filtered
    assert "3 validation errors" in filtered
    assert "Input should be a valid integer" in filtered and "Field required" in filtered
    assert "age" in filtered and "nested" in filtered


def test_other_texts_are_unchanged() -> None:
    for text in ("ValueError: input_value=1", "boom", "", "{'input': 'x'}",
                 "1 validation error for X\nno quoted input"):
        assert filter_validation_inputs(text) == text


# ------------------------------------------------- through the bridge, with real frameworks
import asyncio  # noqa: E402
import json  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from flask import Flask, request  # noqa: E402
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: E402
from opentelemetry.instrumentation.flask import FlaskInstrumentor  # noqa: E402
from otel_sentry_bridge_instrumentation.pydantic import PydanticInstrumentor  # noqa: E402
from sentry_receiver import validate_event  # noqa: E402

from otel_sentry_bridge.testing import BridgeCapture  # noqa: E402


class Price(pydantic.BaseModel):
    price: float


@pytest.mark.parametrize("pii", [False, True])
@pytest.mark.parametrize("instrumented", [False, True], ids=["plain", "pydantic-instrumented"])
def test_flask_status_description_without_inputs(pii: bool, instrumented: bool) -> None:
    """Flask's instrumentation puts ``ValidationError: <pydantic's text>`` in the server span's
    status description: sent as ``otel.status_description`` without the inputs unless PII."""
    capture = BridgeCapture(send_default_pii=pii)
    if instrumented:
        PydanticInstrumentor().instrument(tracer_provider=capture.tracer_provider)
    app = Flask("shop")

    @app.post("/signup")
    def signup() -> dict[str, Any]:
        return {"age": Signup.model_validate(request.get_json()).age}

    FlaskInstrumentor().instrument_app(app, tracer_provider=capture.tracer_provider)
    try:
        body = {"age": SECRETS[0], "nested": {"a": SECRETS[1]}}
        assert app.test_client().post("/signup", json=body).status_code == 500
        (txn,) = capture.transactions()
        events = capture.items("event")
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        if instrumented:
            PydanticInstrumentor().uninstrument()
        capture.close()
    assert validate_event(txn, kind="transaction") == []
    description = txn["contexts"]["trace"]["data"]["otel.status_description"]
    assert "3 validation errors for Signup" in description
    sent = json.dumps([txn, *events])
    assert all((secret in sent) is pii for secret in SECRETS), sent


def test_fastapi_response_validation_error_without_inputs() -> None:
    """FastAPI's ResponseValidationError quotes every error dict, ``'input'`` included."""
    capture = BridgeCapture()
    app = FastAPI()

    @app.get("/price", response_model=Price)
    def price() -> dict[str, str]:
        return {"price": SECRETS[0]}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=capture.tracer_provider)

    async def get() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            assert (await client.get("/price")).status_code == 500

    try:
        asyncio.run(get())
        (txn,) = capture.transactions()
        (event,) = capture.items("event")
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        capture.close()
    assert validate_event(event, kind="event") == []
    value = event["exception"]["values"][-1]
    assert value["type"] == "ResponseValidationError"
    assert "float_parsing" in value["value"] and "[Filtered]" in value["value"]
    assert "carol-secret" not in json.dumps([txn, event])
