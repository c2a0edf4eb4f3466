"""Settings: one table, precedence, allow-listed booleans, warnings on bad values."""

from __future__ import annotations

import dataclasses

import pytest

from otel_sentry_bridge.config import (
    SETTINGS,
    BridgeConfig,
    load_config,
    mask_dsn,
    parse_bool,
)


def warnings_of(env: dict[str, str], **overrides: object) -> tuple[BridgeConfig, list[str]]:
    seen: list[str] = []
    return load_config(env, overrides, seen.append), seen


def test_table_and_dataclass_agree() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(BridgeConfig) if f.name != "invalid"}
    assert set(fields) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        assert fields[setting.name] == setting.default, setting.name
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    for setting in SETTINGS:
        assert setting.env.startswith(("SENTRY_BRIDGE_", "SENTRY_")), setting.env
        assert setting.doc.strip()


def test_defaults() -> None:
    cfg, warnings = warnings_of({})
    assert cfg == BridgeConfig()
    assert not cfg.active
    assert warnings == []


def test_environment_is_read() -> None:
    cfg, warnings = warnings_of({
        "SENTRY_DSN": "https://abc@o12.ingest.sentry.io/345",
        "SENTRY_ENVIRONMENT": "staging", "SENTRY_RELEASE": "shop@1.0",
        "SENTRY_DEBUG": "yes", "SENTRY_SPOTLIGHT": "true",
        "SENTRY_TRACES_SAMPLE_RATE": "0.25",
        "SENTRY_BRIDGE_TAG_ATTRIBUTES": "tenant.id, project.id,,",
        "SENTRY_BRIDGE_MAX_SPANS": "50", "SENTRY_BRIDGE_SEND_DEFAULT_PII": "on",
        "SENTRY_BRIDGE_LATE_SPAN_GRACE": "2.5", "SENTRY_BRIDGE_BUFFER_TIMEOUT": "30",
        "SENTRY_BRIDGE_MAX_BUFFERED_SPANS": "1000",
    })
    assert warnings == []
    assert cfg.dsn == "https://abc@o12.ingest.sentry.io/345"
    assert cfg.active
    assert (cfg.environment, cfg.release, cfg.debug) == ("staging", "shop@1.0", True)
    assert cfg.spotlight == "http://localhost:8969/stream"
    assert cfg.traces_sample_rate == 0.25
    assert cfg.tag_attributes == ("tenant.id", "project.id")
    assert (cfg.max_spans, cfg.send_default_pii) == (50, True)
    assert (cfg.late_span_grace, cfg.buffer_timeout, cfg.max_buffered_spans) == (2.5, 30.0, 1000)


def test_code_beats_environment() -> None:
    cfg, _ = warnings_of({"SENTRY_BRIDGE_MAX_SPANS": "50", "SENTRY_DEBUG": "true"},
                         max_spans=7)
    assert cfg.max_spans == 7 and cfg.debug is True


def test_unknown_code_setting_is_an_error() -> None:
    with pytest.raises(TypeError, match="unknown otel-sentry-bridge setting"):
        load_config({}, {"max_span": 3})


@pytest.mark.parametrize(("env", "value"), [
    ({"SENTRY_BRIDGE_MAX_SPANS": "lots"}, "SENTRY_BRIDGE_MAX_SPANS"),
    ({"SENTRY_BRIDGE_MAX_SPANS": "0"}, "SENTRY_BRIDGE_MAX_SPANS"),
    ({"SENTRY_DEBUG": "maybe"}, "SENTRY_DEBUG"),
    ({"SENTRY_TRACES_SAMPLE_RATE": "1.5"}, "SENTRY_TRACES_SAMPLE_RATE"),
    ({"SENTRY_TRACES_SAMPLE_RATE": "nan"}, "SENTRY_TRACES_SAMPLE_RATE"),
    ({"SENTRY_BRIDGE_LATE_SPAN_GRACE": "-1"}, "SENTRY_BRIDGE_LATE_SPAN_GRACE"),
    ({"SENTRY_SPOTLIGHT": "ftp://x"}, "SENTRY_SPOTLIGHT"),
    ({"SENTRY_BRIDGE_COMPRESSION_LEVEL": "11"}, "SENTRY_BRIDGE_COMPRESSION_LEVEL"),
    ({"SENTRY_RELEASE": "shop/1.0"}, "SENTRY_RELEASE"),
    ({"SENTRY_RELEASE": ".."}, "SENTRY_RELEASE"),
    ({"SENTRY_RELEASE": "r" * 201}, "SENTRY_RELEASE"),
    ({"SENTRY_ENVIRONMENT": "None"}, "SENTRY_ENVIRONMENT"),
    ({"SENTRY_ENVIRONMENT": "prod\\eu"}, "SENTRY_ENVIRONMENT"),
])
def test_bad_value_warns_once_and_uses_default(env: dict[str, str], value: str) -> None:
    cfg, warnings = warnings_of(env)
    assert len(warnings) == 1
    assert value in warnings[0] and "expected" in warnings[0]
    assert cfg == BridgeConfig(invalid=cfg.invalid)
    assert cfg.invalid[0][0] == value


@pytest.mark.parametrize("dsn", [
    "not a dsn", "https://o1.ingest.sentry.io/1", "ftp://k@host/1", "https://k@host/",
    "https://k@host/abc", "https://k@host:99999/1", "https://k@host/1/",
])
def test_malformed_dsn_is_one_error_and_disables_sending(dsn: str) -> None:
    cfg, warnings = warnings_of({"SENTRY_DSN": dsn})
    assert cfg.dsn is None and not cfg.active
    assert len(warnings) == 1
    assert "SENTRY_DSN is malformed" in warnings[0]
    assert dsn not in warnings[0] or (dsn == "not a dsn" and "<redacted>" in warnings[0])


def test_booleans_are_allow_listed() -> None:
    for raw in ("1", "true", "TRUE", " yes ", "on", "y", "t"):
        assert parse_bool(raw) is True
    for raw in ("0", "false", "No", "off", "", "n", "f"):
        assert parse_bool(raw) is False


def test_dsn_key_is_masked() -> None:
    assert mask_dsn("https://secretkey@o1.ingest.sentry.io:8443/5") == (
        "https://***@o1.ingest.sentry.io:8443/5")
    assert mask_dsn(None) is None


def test_envelope_folder_alone_activates() -> None:
    cfg, _ = warnings_of({"SENTRY_BRIDGE_ENVELOPE_DIR": "/tmp/x"})
    assert cfg.active
    cfg, _ = warnings_of({"SENTRY_BRIDGE_ENVELOPE_DIR": "/tmp/x", "SENTRY_BRIDGE_ENABLED": "0"})
    assert not cfg.active


def test_bad_values_are_reported_under_the_bridges_name(caplog: pytest.LogCaptureFixture) -> None:
    """The process pipeline's warnings say whose they are."""
    from otel_sentry_bridge.pipeline import get_pipeline, reset_pipeline

    previous = reset_pipeline(None)
    try:
        with caplog.at_level("WARNING", logger="otel_sentry_bridge"):
            pipeline = get_pipeline(environ={"SENTRY_BRIDGE_VALIDATION_ERRORS": "loud"})
        pipeline.shutdown(timeout=1.0)
    finally:
        reset_pipeline(previous)
    (message,) = [r.getMessage() for r in caplog.records if "VALIDATION_ERRORS" in r.getMessage()]
    assert message.startswith("otel-sentry-bridge: SENTRY_BRIDGE_VALIDATION_ERRORS='loud' is "
                              "invalid; expected event or breadcrumb or off.")
