"""Business context: user, roles, tenant and project on transactions, errors and downstream."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import baggage, context, propagate
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import business_context, set_business_context
from otel_sentry_bridge.business import business_attributes
from otel_sentry_bridge.testing import BridgeCapture

SERVER = {"http.method": "POST", "http.route": "/orders", "http.status_code": 500}


def test_context_reaches_the_transaction_its_error_and_a_downstream_service(
    sentry_bridge: BridgeCapture,
) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("opentelemetry.instrumentation.flask")
    carrier: dict[str, str] = {}
    with pytest.raises(ValueError):
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER,
                                          attributes=SERVER):
            with business_context(user_id="u-42", roles=["admin", "billing"], tenant="acme",
                                  project="p-9", plan="enterprise"):
                propagate.inject(carrier)  # what the requests instrumentation sends
                raise ValueError("no stock")
    assert baggage.get_all() == {}  # the block's baggage ended with it
    # The downstream service: its server span starts from the incoming headers.
    incoming = propagate.extract(carrier)
    with tracer.start_as_current_span("GET /stock", kind=SpanKind.SERVER, context=incoming,
                                      attributes={"http.method": "GET", "http.route": "/stock",
                                                  "http.status_code": 200}):
        pass
    shop, stock = sorted(sentry_bridge.transactions(), key=lambda t: t["transaction"])[::-1]
    (error,) = sentry_bridge.items("event")
    expected_tags = {"tenant": "acme", "project": "p-9", "plan": "enterprise"}
    for event in (shop, error, stock):
        assert validate_event(event) == []
        assert {k: event["tags"][k] for k in expected_tags} == expected_tags, event["tags"]
        assert event["user"]["id"] == "u-42"
        assert event["user"]["data"]["roles"] == ["admin", "billing"], event["user"]
    assert stock["transaction"] == "GET /stock" and shop["transaction"] == "POST /orders"
    assert stock["contexts"]["trace"]["trace_id"] == shop["contexts"]["trace"]["trace_id"]


def test_own_attributes_win_over_incoming_baggage(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    token = set_business_context(tenant="from-upstream", user_id="u-1")
    try:
        incoming = context.get_current()
    finally:
        context.detach(token)  # type: ignore[arg-type]
    with tracer.start_as_current_span("job", context=incoming,
                                      attributes={"tenant.id": "own"}):
        pass
    (txn,) = sentry_bridge.transactions()
    assert txn["tags"]["tenant"] == "own" and txn["user"]["id"] == "u-1"


def test_guards(caplog: pytest.LogCaptureFixture) -> None:
    many = {f"k{i}": i for i in range(30)}
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
        attrs = business_attributes(user_id=" ", tenant="t" * 500, project=None,
                                    **{"bad key!": "x", "empty": " ", "multi": "a\nb"}, **many)
    assert "enduser.id" not in attrs and "project.id" not in attrs
    assert len(attrs["tenant.id"]) == 200 and attrs["tenant.id"].endswith("...")
    assert attrs["sentry.tag.multi"] == "a b"
    assert "sentry.tag.bad key!" not in attrs and "sentry.tag.empty" not in attrs
    assert sum(k.startswith("sentry.tag.k") for k in attrs) == 19  # 20 extra tags at most
    assert sum("left out" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("key", ["tenant.id", "tenant_id", "tenant"])
def test_common_tenant_attribute_spellings_become_the_tenant_tag(
    sentry_bridge: BridgeCapture, key: str,
) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job", attributes={key: "acme", "enduser.id": "u-7",
                                                         "project_id": "p-1"}):
        pass
    (txn,) = sentry_bridge.transactions()
    assert txn["tags"]["tenant"] == "acme" and txn["tags"]["project"] == "p-1"
    assert txn["user"]["id"] == "u-7"
    assert validate_event(txn) == []
