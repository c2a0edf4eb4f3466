"""An exception that sentry-sdk sends inside a trace gives no second event from the bridge."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sentry_receiver import validate_event

from otel_sentry_bridge import _sdk_events
from otel_sentry_bridge._sdk_events import SENT_BY_SDK, sdk_event_processor
from otel_sentry_bridge.testing import BridgeCapture, parse_envelope


class PaymentDeclined(Exception):
    pass


@pytest.fixture(autouse=True)
def _forget_sent() -> Iterator[None]:
    SENT_BY_SDK.clear()
    yield
    SENT_BY_SDK.clear()


def test_the_sdk_hook_notes_errors_sent_inside_a_trace() -> None:
    ids = {"trace_id": "a" * 32, "span_id": "b" * 16}
    processor = sdk_event_processor(lambda: ids)
    error = {"event_id": "1" * 32, "exception": {"values": [
        {"type": "KeyError", "value": "'k'"},
        {"type": "PaymentDeclined", "value": "card declined", "module": "shop"}]}}
    assert processor(error, {}) is error
    assert SENT_BY_SDK.get("a" * 32) == []  # noted only once sentry-sdk says it sent it
    _sdk_events.capture_done("1" * 32, True)
    assert SENT_BY_SDK.get("a" * 32) == [("PaymentDeclined", "card declined")]
    dropped = {"event_id": "2" * 32, "exception": {"values": [{"type": "OSError"}]}}
    processor(dropped, {})
    _sdk_events.capture_done("2" * 32, False)  # before_send dropped it: the bridge sends it
    assert SENT_BY_SDK.get("a" * 32) == [("PaymentDeclined", "card declined")]
    assert _sdk_events.PENDING == {}
    assert processor({"message": "hello"}, {}) is not None  # no exception: nothing noted
    outside = sdk_event_processor(lambda: None)
    outside({"event_id": "3" * 32, "exception": {"values": [{"type": "OSError"}]}}, {})
    _sdk_events.capture_done("3" * 32, True)
    assert SENT_BY_SDK.get("a" * 32) == [("PaymentDeclined", "card declined")]
    bounded = _sdk_events.SentBySdk(max_traces=2)
    for n in range(3):
        bounded.add(f"{n:032x}", "E", "m" * 5000)
    assert bounded.get(f"{0:032x}") == []
    assert bounded.get(f"{2:032x}") == [("E", "m" * _sdk_events.SENT_MESSAGE)]


def test_an_exception_sentry_sdk_sent_is_not_sent_again(sentry_bridge: BridgeCapture) -> None:
    tracer = sentry_bridge.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /pay") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        try:
            raise PaymentDeclined("card declined for https://psp.example/c?card=4242")
        except PaymentDeclined as exc:
            # as the hook notes it: sentry-sdk's value is the raw str(exc), plus any notes
            SENT_BY_SDK.add(trace_id, "PaymentDeclined", f"{exc}\nnote: retried once")
            span.record_exception(exc)
        try:
            raise PaymentDeclined("card declined for another order")
        except PaymentDeclined as exc:
            span.record_exception(exc)  # not sent by sentry-sdk: the bridge sends it
    SENT_BY_SDK.add("f" * 32, "KeyError", "'k'")  # another trace: no effect here
    (event,) = sentry_bridge.items("event")
    assert validate_event(event, kind="event") == []
    assert event["exception"]["values"][-1]["value"] == "card declined for another order"


SCRIPT = '''
import json
import sys

import sentry_sdk
from sentry_sdk.transport import Transport

sent = []


class Keep(Transport):
    def capture_envelope(self, envelope):
        sent.extend(item.payload.json for item in envelope.items if item.type == "event")


DROP = sys.argv[1:] == ["drop"]  # the app's before_send drops every event
sentry_sdk.init(dsn="https://key@o1.ingest.example.invalid/1", transport=Keep(),
                default_integrations=False, auto_enabling_integrations=False,
                before_send=(lambda event, hint: None) if DROP else None)

from opentelemetry import trace

from otel_sentry_bridge.autoinstall import post_instrument

post_instrument()  # what opentelemetry-instrument runs
tracer = trace.get_tracer("shop")


class PaymentDeclined(Exception):
    pass


def charge(amount):
    raise PaymentDeclined(f"card declined for {amount}")


with tracer.start_as_current_span("POST /pay") as span:
    try:
        charge(12)
    except PaymentDeclined as exc:
        sentry_sdk.capture_exception(exc)  # the app reports it itself
        span.record_exception(exc)  # and so does OpenTelemetry
    try:
        {}["missing"]
    except KeyError as exc:
        span.record_exception(exc)  # only OpenTelemetry sees this one

sentry_sdk.flush()
trace.get_tracer_provider().force_flush()
json.dump([{"type": e["exception"]["values"][-1]["type"],
            "trace_id": e["contexts"]["trace"]["trace_id"]} for e in sent], sys.stdout)
'''


@pytest.mark.parametrize("app_drops", [False, True], ids=["sdk-sends", "sdk-drops"])
def test_sentry_sdk_and_the_bridge_send_one_event_per_exception(
    tmp_path: Path, app_drops: bool,
) -> None:
    folder = tmp_path / "envelopes"
    folder.mkdir()
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {"PATH": "/usr/bin:/bin", "SENTRY_BRIDGE_ENVELOPE_DIR": str(folder),
           "SENTRY_BRIDGE_LATE_SPAN_GRACE": "0", "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1"}
    argv = [sys.executable, str(script), *(["drop"] if app_drops else [])]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    sdk_events = json.loads(result.stdout)
    bridge: dict[str, list[Any]] = {}
    for path in sorted(folder.glob("*.envelope")):
        _, items = parse_envelope(path.read_bytes())
        for headers, payload in items:
            bridge.setdefault(str(headers.get("type")), []).append(json.loads(payload))
    (txn,) = bridge["transaction"]
    trace_id = txn["contexts"]["trace"]["trace_id"]
    for error in bridge["event"]:
        assert validate_event(error, kind="event") == []
        assert error["contexts"]["trace"]["trace_id"] == trace_id
    types = sorted(e["exception"]["values"][-1]["type"] for e in bridge["event"])
    if app_drops:  # sentry-sdk sent nothing: the bridge sends both exceptions
        assert sdk_events == []
        assert types == ["KeyError", "PaymentDeclined"]
    else:
        assert sdk_events == [{"type": "PaymentDeclined", "trace_id": trace_id}]
        assert types == ["KeyError"]
