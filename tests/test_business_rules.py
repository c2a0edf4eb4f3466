"""Business-context rules: span attributes, W3C baggage and resource attributes -> Sentry user,
tags and a named context; environment variables as a context (docs/business-context.md#rules)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind
from sentry_receiver import validate_event

from otel_sentry_bridge import _send
from otel_sentry_bridge._mapping import MappingContext, build_transaction
from otel_sentry_bridge._mapping.context import merge_tags
from otel_sentry_bridge._mapping.rules import BAGGAGE_PREFIX, Rule, compile_rules
from otel_sentry_bridge._rules_env import context_env
from otel_sentry_bridge.business import from_baggage
from otel_sentry_bridge.config import load_config
from otel_sentry_bridge.testing import BridgeCapture

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#: What an upstream service sends: W3C baggage (percent-encoded values) next to traceparent.
BAGGAGE = "user_id=u-7,tenant=acme,plan=gold,roles=admin%2Cbilling,unrelated=not-copied"
SERVER: dict[str, Any] = {"http.method": "POST", "http.route": "/orders",
                          "http.status_code": 500}


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[BridgeCapture]:
    """A BridgeCapture with the settings of ``@pytest.mark.parametrize("capture", [...])``."""
    settings: dict[str, Any] = getattr(request, "param", {})
    bridge = BridgeCapture(**settings)
    try:
        yield bridge
    finally:
        bridge.close()


def provider_with(bridge: BridgeCapture, resource: dict[str, str]) -> TracerProvider:
    """A second provider (its own resource) feeding the same capture."""
    provider = TracerProvider(resource=Resource.create(resource), shutdown_on_exit=False)
    provider.add_span_processor(bridge.processor)
    return provider


RULES = {
    "user_attributes": ("id=baggage:user_id", "email=attr:app.user.email",
                        "username=resource:service.owner", "roles=baggage:roles"),
    "tag_attributes": ("tenant.plan", "tenant=baggage:tenant", "region=resource:cloud.region",
                       "resource:service.namespace", "order=app.order_id"),
    "context_attributes": ("order=attr:app.order_id", "baggage:plan", "resource:cloud.region",
                           "items=app.items"),
    "context_name": "shop",
}


@pytest.mark.parametrize("capture", [RULES], indirect=True)
def test_rules_from_span_baggage_and_resource_reach_the_transaction_and_its_error(
    capture: BridgeCapture,
) -> None:
    provider = provider_with(capture, {"service.name": "orders", "service.owner": "team-a",
                                       "cloud.region": "eu-west-1", "service.namespace": "shop"})
    tracer = provider.get_tracer("opentelemetry.instrumentation.flask")
    incoming = propagate.extract({"traceparent": TRACEPARENT, "baggage": BAGGAGE})
    with pytest.raises(ValueError):
        with tracer.start_as_current_span(
            "POST /orders", kind=SpanKind.SERVER, context=incoming,
            attributes={**SERVER, "enduser.id": "from-convention", "tenant.plan": "pro",
                        "app.user.email": "root@example.com"},
        ):
            with tracer.start_as_current_span(
                "reserve", attributes={"app.order_id": "o-1", "app.items": 3,
                                       "app.user.email": "child@example.com"},
            ):
                raise ValueError("no stock")
    (txn,) = capture.transactions()
    (error,) = capture.items("event")
    for event in (txn, error):
        assert validate_event(event) == []
        # Rules win over the enduser.id convention; the root's attribute wins over a child's.
        assert event["user"] == {"id": "u-7", "email": "root@example.com", "username": "team-a",
                                 "data": {"roles": ["admin", "billing"]}}
        tags = event["tags"]
        assert {k: tags.get(k) for k in ("tenant", "region", "service.namespace", "tenant.plan",
                                          "order")} == {
            "tenant": "acme", "region": "eu-west-1", "service.namespace": "shop",
            "tenant.plan": "pro", "order": "o-1"}
        assert event["contexts"]["shop"] == {"order": "o-1", "plan": "gold",
                                             "cloud.region": "eu-west-1", "items": 3}
    assert error["exception"]["values"][-1]["type"] == "ValueError"
    # Only the baggage entries a rule names are copied onto the local root.
    data = txn["contexts"]["trace"]["data"]
    copied = {k[len(BAGGAGE_PREFIX):] for k in data if k.startswith(BAGGAGE_PREFIX)}
    assert copied == {"user_id", "tenant", "plan", "roles"}


@pytest.mark.parametrize("capture", [{"user_attributes": ("id=baggage:user_id",)}], indirect=True)
def test_baggage_rules_apply_to_local_roots_only(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("app")
    incoming = propagate.extract({"traceparent": TRACEPARENT, "baggage": BAGGAGE})
    with tracer.start_as_current_span("root", context=incoming):
        with tracer.start_as_current_span("child") as child:
            assert isinstance(child, ReadableSpan)
            assert not any(k.startswith(BAGGAGE_PREFIX) for k in child.attributes or {})
    (txn,) = capture.transactions()
    assert validate_event(txn) == []
    assert txn["user"] == {"id": "u-7"}


def test_without_rules_no_baggage_entry_is_copied(sentry_bridge: BridgeCapture) -> None:
    pipeline = sentry_bridge.pipeline
    assert pipeline.mapping.rules.baggage == frozenset() and not pipeline.mapping.rules
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    incoming = propagate.extract({"traceparent": TRACEPARENT, "baggage": BAGGAGE})
    with tracer.start_as_current_span("root", context=incoming) as root:
        pass
    assert isinstance(root, ReadableSpan)
    assert not any(k.startswith(BAGGAGE_PREFIX) for k in root.attributes or {})
    (txn,) = sentry_bridge.transactions()
    assert "user" not in txn and "shop" not in txn["contexts"]


def test_from_baggage_takes_only_wanted_entries_cut_to_tag_length() -> None:
    entries = {"plan": "g" * 300, "tenant.id": "acme", "other": "x", "empty": " "}
    adopted = from_baggage(entries, frozenset({"plan", "empty", "absent"}))
    assert adopted == {"tenant.id": "acme", BAGGAGE_PREFIX + "plan": "g" * 197 + "..."}
    assert from_baggage(entries) == {"tenant.id": "acme"}


def test_environment_variables_context_filters_secret_looking_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_REGION", "eu-west-1")
    monkeypatch.setenv("APP_API_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("DATABASE_URL", "postgres://shop:pw-in-url@db:5432/shop")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    # The environment is read once, when the pipeline is built (here: after setenv).
    bridge = BridgeCapture(context_env=("APP_REGION", "APP_API_TOKEN", "DATABASE_URL",
                                        "NOT_SET_ANYWHERE"))
    try:
        monkeypatch.setenv("APP_REGION", "changed-later")
        tracer = bridge.tracer_provider.get_tracer("app")
        with pytest.raises(RuntimeError):
            with tracer.start_as_current_span("job"):
                raise RuntimeError("boom")
        (txn,) = bridge.transactions()
        (error,) = bridge.items("event")
        for event in (txn, error):
            assert validate_event(event) == []
            assert event["contexts"]["environment_variables"] == {
                "APP_REGION": "eu-west-1", "APP_API_TOKEN": "[Filtered]",
                "DATABASE_URL": "postgres://[Filtered]@db:5432/shop"}
        assert not any(b"s3cr3t" in body or b"pw-in-url" in body for body in bridge.raw)
    finally:
        bridge.close()


def test_bad_rule_entries_are_warned_once_per_setting_and_good_ones_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "SENTRY_BRIDGE_USER_ATTRIBUTES": "id=baggage:user_id, phone=attr:x, email, "
                                         "username=resource:,roles=attr:app.roles",
        "SENTRY_BRIDGE_TAG_ATTRIBUTES": "tenant.id,bad key=attr:x,plan=baggage:plan,attr:,"
                                        "sess=baggage:session_id",
        "SENTRY_BRIDGE_CONTEXT_ATTRIBUTES": "api_key=attr:x,order=attr:app.order",
        "SENTRY_BRIDGE_CONTEXT_NAME": "trace",
        "SENTRY_BRIDGE_MAX_TAGS": "0",
    }
    seen: list[str] = []
    cfg = load_config(env, None, seen.append)
    assert cfg.user_attributes[0] == "id=baggage:user_id" and cfg.max_tags == 200
    assert [w.split("=", 1)[0] for w in seen] == ["SENTRY_BRIDGE_MAX_TAGS"]
    # The mapping only hands its problems to the caller's sink: it never logs by itself.
    with caplog.at_level(logging.DEBUG, logger="otel_sentry_bridge"):
        quiet = MappingContext.from_config(cfg, "1.0")
        assert caplog.records == []
        messages: list[str] = []
        ctx = MappingContext.from_config(cfg, "1.0", warn=messages.append)
        assert caplog.records == []
    assert quiet == ctx
    assert compile_rules(cfg.user_attributes, cfg.tag_attributes, cfg.context_attributes,
                         cfg.context_name)[2] == tuple(messages)
    assert len(messages) == 4, messages
    user, tags, contexts, name = messages
    assert user.startswith("SENTRY_BRIDGE_USER_ATTRIBUTES: left out 'phone=attr:x'")
    assert "'email'" in user and "'username=resource:'" in user
    assert "'attr:'" in tags
    assert "'bad key=attr:x'" in tags and "'sess=baggage:session_id' (a secret-looking" in tags
    assert "'api_key=attr:x'" in contexts and contexts.endswith("The other entries apply.")
    assert name.startswith("SENTRY_BRIDGE_CONTEXT_NAME='trace' is invalid")
    rules = ctx.rules
    assert rules.user == (Rule("id", "attr", BAGGAGE_PREFIX + "user_id"),
                          Rule("roles", "attr", "app.roles"))
    assert rules.tags == (Rule("plan", "attr", BAGGAGE_PREFIX + "plan"),)
    assert rules.context == (Rule("order", "attr", "app.order"),)
    assert rules.context_name == "business" and rules.baggage == {"user_id", "plan"}
    assert ctx.tag_attributes == ("tenant.id",)  # bare names keep the historical path
    # The pipeline logs them, one warning per setting, when it is built.
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
        bridge = BridgeCapture(user_attributes=cfg.user_attributes,
                               tag_attributes=cfg.tag_attributes,
                               context_attributes=cfg.context_attributes,
                               context_name=cfg.context_name)
    bridge.close()
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SENTRY_")]
    assert logged == messages


@pytest.mark.parametrize(
    "capture",
    [{"user_attributes": ("id=attr:app.user", "phone=x"),
      "tag_attributes": ("bad key=x", "plan=attr:app.plan"),
      "context_attributes": ("order=attr:app.order", "token=attr:x")}],
    indirect=True,
)
def test_good_entries_apply_next_to_bad_ones(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job", attributes={"app.user": 42, "app.plan": "gold",
                                                         "app.order": "o-9"}):
        pass
    (txn,) = capture.transactions()
    assert validate_event(txn) == []
    assert txn["user"] == {"id": "42"}
    assert txn["tags"]["plan"] == "gold"
    assert txn["contexts"]["business"] == {"order": "o-9"}


@pytest.mark.parametrize(
    "capture",
    [{"max_tags": 3, "tag_attributes": ("first=attr:app.first",)}],
    indirect=True,
)
def test_tag_cap_keeps_rule_tags_first_and_warns_once(
    capture: BridgeCapture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_send, "_tags_warned", [])
    tracer = capture.tracer_provider.get_tracer("app")
    attributes = {f"sentry.tag.t{i}": f"v{i}" for i in range(10)}
    with caplog.at_level(logging.WARNING, logger="otel_sentry_bridge"):
        for _ in range(2):
            with tracer.start_as_current_span("job", attributes={**attributes,
                                                                 "app.first": "x" * 500}):
                pass
        txns = capture.transactions()
    assert len(txns) == 2
    for txn in txns:
        assert validate_event(txn) == []
        assert txn["tags"] == {"first": "x" * 197 + "...", "t0": "v0", "t1": "v1"}
    warnings = [m for m in (r.getMessage() for r in caplog.records) if "MAX_TAGS" in m]
    assert len(warnings) == 1 and warnings[0].startswith("an event had 8 tags more")
    assert capture.pipeline.drops.total() == 0  # tags are no item category: not a drop


def test_merge_tags_is_pure_and_returns_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts = [(("a", "root"), ("b", "1")), (("a", "child"), ("c", "2"), ("d", "3"))]
    with caplog.at_level(logging.DEBUG, logger="otel_sentry_bridge"):
        assert merge_tags(parts, 2) == ({"a": "root", "b": "1"}, 2)
        assert merge_tags(parts, 2) == ({"a": "root", "b": "1"}, 2)
        assert merge_tags(parts) == ({"a": "root", "b": "1", "c": "2", "d": "3"}, 0)
    assert caplog.records == []
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("app").start_as_current_span(
        "job", attributes={f"sentry.tag.t{i}": "v" for i in range(5)},
    ) as root:
        pass
    assert isinstance(root, ReadableSpan)
    mapped = build_transaction(root, [], MappingContext(max_tags=2))
    assert mapped is not None and mapped.dropped_tags == 3
    assert mapped.event["tags"] == {"t0": "v", "t1": "v"}


def test_settings_come_from_the_environment() -> None:
    seen: list[str] = []
    cfg = load_config({
        "SENTRY_BRIDGE_USER_ATTRIBUTES": "id=baggage:user_id,email=app.email",
        "SENTRY_BRIDGE_CONTEXT_ATTRIBUTES": "resource:cloud.region",
        "SENTRY_BRIDGE_CONTEXT_NAME": "checkout",
        "SENTRY_BRIDGE_CONTEXT_ENV": "APP_REGION, HOSTNAME",
        "SENTRY_BRIDGE_MAX_TAGS": "50",
    }, None, seen.append)
    assert seen == []
    assert cfg.user_attributes == ("id=baggage:user_id", "email=app.email")
    assert cfg.context_attributes == ("resource:cloud.region",)
    assert (cfg.context_name, cfg.context_env, cfg.max_tags) == (
        "checkout", ("APP_REGION", "HOSTNAME"), 50)
    # Read once, outside the mapping (the pipeline passes os.environ's filtered values on).
    env = context_env(cfg, {"APP_REGION": "eu", "OTHER": "x"})
    assert env == (("APP_REGION", "eu"),)
    assert context_env(cfg.replace(context_env=()), {"APP_REGION": "eu"}) == ()
    ctx = MappingContext.from_config(cfg, "1.0", env)
    assert ctx.context_env == (("APP_REGION", "eu"),)
    assert ctx.rules.context_name == "checkout" and ctx.max_tags == 50
