"""Installed entry points resolve to our objects; no name clashes with sentry-sdk."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

EXPECTED = {
    "opentelemetry_distro": "otel_sentry_bridge.distro:SentryBridgeDistro",
    "opentelemetry_configurator": "otel_sentry_bridge.configurator:SentryBridgeConfigurator",
    "opentelemetry_post_instrument": "otel_sentry_bridge.autoinstall:post_instrument",
    "opentelemetry_traces_exporter": "otel_sentry_bridge.exporter:SentrySpanExporter",
    "pytest11": "otel_sentry_bridge.testing",
}


@pytest.mark.parametrize(("group", "value"), sorted(EXPECTED.items()))
def test_entry_point_resolves(group: str, value: str) -> None:
    ours = [ep for ep in entry_points(group=group) if ep.value == value]
    assert len(ours) == 1, f"{group} -> {value} not installed (pip install -e .)"
    ep = ours[0]
    assert ep.name in ("sentry_bridge", "otel_sentry_bridge")
    assert ep.load() is not None


def test_no_bare_sentry_names() -> None:
    for group in ("opentelemetry_propagator", *EXPECTED):
        for ep in entry_points(group=group):
            if ep.value.startswith("otel_sentry_bridge"):
                assert ep.name != "sentry"


def test_exporter_has_a_zero_argument_constructor() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_sentry_bridge.exporter import SentrySpanExporter

    exporter = SentrySpanExporter()  # no DSN: disabled but harmless
    assert exporter.export([]) is SpanExportResult.SUCCESS
    assert exporter.force_flush() is True
    exporter.shutdown()


def test_distro_only_sets_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from otel_sentry_bridge.distro import SentryBridgeDistro

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)
    SentryBridgeDistro().configure()
    assert os.environ["OTEL_TRACES_EXPORTER"] == "otlp"
    assert os.environ["OTEL_METRICS_EXPORTER"] == "none"
