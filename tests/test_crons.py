"""Scheduled jobs as Sentry Crons: ``monitor()`` and monitored root spans (docs/crons.md)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from apps import opentelemetry_instrument
from opentelemetry.context import Context
from opentelemetry.trace import NoOpTracerProvider, SpanKind, Status, StatusCode
from sentry_receiver import Item, SentryReceiver, validate_item

from otel_sentry_bridge import _checkins, _internal_errors, monitor
from otel_sentry_bridge._mapping import checkins as ci
from otel_sentry_bridge.crons import MONITOR_SCHEDULE, MONITOR_SLUG
from otel_sentry_bridge.envelopes import build_check_in_envelope
from otel_sentry_bridge.testing import BridgeCapture

# ------------------------------------------------------------------------------ helpers


def captured_check_ins(capture: BridgeCapture) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(envelope header, check-in)`` in the order sent, each checked against §7.2."""
    out = []
    for headers, items in capture.envelopes():
        for item_headers, payload in items:
            if item_headers.get("type") == "check_in":
                assert validate_item(Item(item_headers, payload)) == []
                out.append((headers, orjson.loads(payload)))
    return out


def check_ins(capture: BridgeCapture) -> list[dict[str, Any]]:
    return [payload for _, payload in captured_check_ins(capture)]


def received_check_ins(receiver: SentryReceiver) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(envelope.headers, item.json) for envelope in receiver.envelopes
            for item in envelope.items if item.type == "check_in"]


@pytest.fixture
def capture() -> Any:
    bridge = BridgeCapture(release="shop@1.0", environment="staging")
    try:
        yield bridge
    finally:
        bridge.close()


def _run_pair(found: list[dict[str, Any]], closing: str) -> tuple[dict[str, Any], dict[str, Any]]:
    assert [c["status"] for c in found] == ["in_progress", closing], found
    start, end = found
    assert start["check_in_id"] == end["check_in_id"]
    assert "duration" not in start and end["duration"] >= 0
    return start, end


# ------------------------------------------------------------------------------ pure mapping


@pytest.mark.parametrize(("schedule", "expected"), [
    ("0 3 * * *", {"type": "crontab", "value": "0 3 * * *"}),
    ("  */15  9-17 * * MON-FRI ", {"type": "crontab", "value": "*/15 9-17 * * MON-FRI"}),
    ("0 0 1,15 jan,jul 0", {"type": "crontab", "value": "0 0 1,15 jan,jul 0"}),
    ("0 0 L * 5#2", {"type": "crontab", "value": "0 0 L * 5#2"}),
    ("@daily", {"type": "crontab", "value": "0 0 * * *"}),
    ("@hourly", {"type": "crontab", "value": "0 * * * *"}),
    (timedelta(minutes=10), {"type": "interval", "value": 10, "unit": "minute"}),
    (timedelta(hours=6), {"type": "interval", "value": 6, "unit": "hour"}),
    (timedelta(days=2), {"type": "interval", "value": 2, "unit": "day"}),
    (timedelta(minutes=90), {"type": "interval", "value": 90, "unit": "minute"}),
    ((2, "weeks"), {"type": "interval", "value": 2, "unit": "week"}),
    ((1, "month"), {"type": "interval", "value": 1, "unit": "month"}),
    ("30 minutes", {"type": "interval", "value": 30, "unit": "minute"}),
    ("every 1 day", {"type": "interval", "value": 1, "unit": "day"}),
])
def test_valid_schedules(schedule: Any, expected: dict[str, Any]) -> None:
    assert ci.schedule_config(schedule) == (expected, None)


@pytest.mark.parametrize("schedule", [
    "", "0 3 * *", "0 3 * * * *", "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *",
    "0 0 * * 8", "*/0 * * * *", "a b c d e", "0 0 * * FUN", timedelta(seconds=30),
    timedelta(seconds=90), timedelta(0), (0, "minute"), (5, "second"), (1.5, "hour"),
    (True, "day"), "30 seconds", "10 fortnights", 600, None, ["0", "3"],
])
def test_invalid_schedules_have_a_problem(schedule: Any) -> None:
    config, problem = ci.schedule_config(schedule)
    assert config is None and problem is not None and "invalid" in problem


def test_monitor_config_fields() -> None:
    config, problems = ci.monitor_config(
        "0 3 * * *", ZoneInfo("Europe/Paris"), timedelta(minutes=5), 30, 2, 3)
    assert problems == []
    assert config == {"schedule": {"type": "crontab", "value": "0 3 * * *"},
                      "timezone": "Europe/Paris", "checkin_margin": 5, "max_runtime": 30,
                      "failure_issue_threshold": 2, "recovery_threshold": 3}
    # a bad optional field is left out alone; a bad schedule drops the whole config
    config, problems = ci.monitor_config("@daily", "local time", 0, timedelta(seconds=30),
                                         721, True)
    assert config == {"schedule": {"type": "crontab", "value": "0 0 * * *"}}
    assert len(problems) == 5, problems
    config, problems = ci.monitor_config("61 * * * *", "UTC", 5)
    assert config is None and len(problems) == 1
    config, problems = ci.monitor_config(None, "UTC", 5)
    assert config is None and "no schedule" in problems[0]
    assert ci.monitor_config(None) == (None, [])


def test_slugs_and_rules() -> None:
    assert ci.clean_slug(" nightly ") == ("nightly", None)
    assert ci.clean_slug("")[0] is None and ci.clean_slug(None)[0] is None
    long, problem = ci.clean_slug("x" * 60)
    assert long == "x" * 50 and problem is not None
    assert ci.slug_from_name("App.Tasks.Send Report!") == "app-tasks-send-report"
    rules, problems = ci.compile_rules(("app.tasks.report=daily-report", "cleanup", "=x", " "))
    assert rules == {"app.tasks.report": "daily-report", "cleanup": "cleanup"}
    assert len(problems) == 2
    assert ci.match_rule(rules, "run/app.tasks.report", {}) == "daily-report"
    assert ci.match_rule(rules, "cleanup", {}) == "cleanup"
    assert ci.match_rule(rules, "run/x", {"celery.task_name": "cleanup"}) == "cleanup"
    assert ci.match_rule(rules, "GET /", {}) is None
    assert ci.match_rule({}, "cleanup", {}) is None


def test_check_in_envelope_is_what_sentry_sdk_reads() -> None:
    from sentry_sdk.envelope import Envelope

    payload = ci.check_in("a" * 32, "nightly", "ok", environment="prod", release="1.0",
                          trace_id=1, span_id=2, duration=1.25)
    body = build_check_in_envelope(payload, "https://k@o1.ingest.sentry.io/1",
                                   {"trace_id": f"{1:032x}", "public_key": "k"})
    envelope = Envelope.deserialize(body)
    (item,) = envelope.items
    assert item.type == "check_in" and item.data_category == "monitor"
    assert orjson.loads(item.get_bytes()) == {
        "check_in_id": "a" * 32, "monitor_slug": "nightly", "status": "ok", "duration": 1.25,
        "environment": "prod", "release": "1.0",
        "contexts": {"trace": {"trace_id": f"{1:032x}", "span_id": f"{2:016x}"}}}
    assert envelope.headers["trace"]["trace_id"] == f"{1:032x}"


# ------------------------------------------------------------------------------ monitor()


def test_decorator_reports_a_run_linked_to_its_transaction(capture: BridgeCapture) -> None:
    @monitor("nightly-report", schedule="0 3 * * *", timezone="UTC", checkin_margin=5,
             max_runtime=30, tracer_provider=capture.tracer_provider)
    def nightly(n: int) -> int:
        time.sleep(0.05)
        return n * 2

    assert nightly(21) == 42
    assert nightly.__name__ == "nightly"
    found = captured_check_ins(capture)
    start, end = _run_pair([c for _, c in found], "ok")
    config = {"schedule": {"type": "crontab", "value": "0 3 * * *"}, "timezone": "UTC",
              "checkin_margin": 5, "max_runtime": 30}
    assert start["monitor_config"] == config
    assert start["monitor_slug"] == "nightly-report"
    assert (start["environment"], start["release"]) == ("staging", "shop@1.0")
    assert 0.05 <= end["duration"] < 5
    (txn,) = capture.transactions()
    assert txn["transaction"] == "nightly-report"
    assert txn["transaction_info"] == {"source": "task"}
    assert txn["tags"]["monitor.slug"] == "nightly-report"
    trace = txn["contexts"]["trace"]
    assert trace["data"][ci.CHECK_IN_ID] == start["check_in_id"]
    for headers, check_in in found:
        assert check_in["contexts"] == {"trace": {"trace_id": trace["trace_id"],
                                                  "span_id": trace["span_id"]}}
        assert headers["trace"]["trace_id"] == trace["trace_id"]
        assert headers["trace"]["transaction"] == "nightly-report"
    assert not _checkins.open_runs()


def test_failing_job_reports_error_and_its_exception_unchanged(capture: BridgeCapture) -> None:
    error = ValueError("no data for 2026-01-01")

    @monitor("import", tracer_provider=capture.tracer_provider)
    def job() -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        job()
    assert raised.value is error
    start, _ = _run_pair(check_ins(capture), "error")
    assert "monitor_config" not in start
    (event,) = capture.items("event")
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    assert event["contexts"]["trace"]["trace_id"] == start["contexts"]["trace"]["trace_id"]
    assert event["tags"]["monitor.slug"] == "import"
    (txn,) = capture.transactions()
    assert txn["contexts"]["trace"]["status"] == "internal_error"


def test_async_decorator_and_context_managers(capture: BridgeCapture) -> None:
    provider = capture.tracer_provider

    @monitor("async-job", schedule=(10, "minutes"), tracer_provider=provider)
    async def job(delay: float) -> str:
        await asyncio.sleep(delay)
        return "done"

    async def both() -> list[str]:
        return list(await asyncio.gather(job(0.05), job(0.01)))

    assert asyncio.run(both()) == ["done", "done"]
    found = check_ins(capture)
    assert len(found) == 4
    by_id: dict[str, list[dict[str, Any]]] = {}
    for check_in in found:
        by_id.setdefault(check_in["check_in_id"], []).append(check_in)
    assert len(by_id) == 2  # concurrent runs never share a check-in
    for run in by_id.values():
        _run_pair(run, "ok")
        assert run[0]["monitor_config"]["schedule"] == {
            "type": "interval", "value": 10, "unit": "minute"}
    durations = sorted(run[1]["duration"] for run in by_id.values())
    assert durations[0] >= 0.01 and durations[1] >= 0.05

    capture.raw.clear()
    cleanup = monitor("cleanup", tracer_provider=provider)
    with cleanup:
        time.sleep(0.02)
    with pytest.raises(KeyError), cleanup:
        raise KeyError("x")

    async def in_async() -> None:
        async with monitor("async-cm", tracer_provider=provider):
            await asyncio.sleep(0)

    asyncio.run(in_async())
    found = check_ins(capture)
    assert [(c["monitor_slug"], c["status"]) for c in found] == [
        ("cleanup", "in_progress"), ("cleanup", "ok"), ("cleanup", "in_progress"),
        ("cleanup", "error"), ("async-cm", "in_progress"), ("async-cm", "ok")]
    assert found[0]["check_in_id"] != found[2]["check_in_id"]


def test_nested_in_a_request_the_check_in_names_the_job_span(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("web")
    with tracer.start_as_current_span("POST /reports", kind=SpanKind.SERVER):
        with monitor("on-demand-report", tracer_provider=capture.tracer_provider):
            pass
    start, _ = _run_pair(check_ins(capture), "ok")  # one run: the processor adds none
    (txn,) = capture.transactions()
    (job,) = [s for s in txn["spans"] if s["description"] == "on-demand-report"]
    assert start["contexts"]["trace"] == {"trace_id": txn["contexts"]["trace"]["trace_id"],
                                          "span_id": job["span_id"]}


@pytest.mark.parametrize(("raised", "status"), [
    (KeyboardInterrupt(), "error"), (SystemExit(1), "error"), (SystemExit("bad"), "error"),
    (SystemExit(0), "ok"), (SystemExit(None), "ok"), (asyncio.CancelledError(), "error"),
])
def test_base_exceptions(capture: BridgeCapture, raised: BaseException, status: str) -> None:
    @monitor("exits", tracer_provider=capture.tracer_provider)
    def job() -> None:
        raise raised

    with pytest.raises(type(raised)):
        job()
    _run_pair(check_ins(capture), status)
    assert capture.items("event") == []  # not an error event: only the check-in says it


def test_invalid_settings_are_warned_once_and_left_out(
    capture: BridgeCapture, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="otel_sentry_bridge")
    job = monitor("warned", schedule="every 45 seconds", timezone="Mars/Olympus Mons",
                  tracer_provider=capture.tracer_provider)
    assert job.config is None
    monitor("warned", schedule="every 45 seconds", tracer_provider=capture.tracer_provider)
    assert [r.getMessage() for r in caplog.records].count(
        "otel-sentry-bridge: monitor schedule 'every 45 seconds' is invalid: expected a "
        "5-field crontab ('0 3 * * *', '@daily'), a timedelta of whole minutes or (count, "
        "unit) with unit in minute, hour, day, week, month, year; the monitor config is left "
        "out") == 1
    partial = monitor("partial", schedule="@weekly", timezone="local", max_runtime=-1,
                      tracer_provider=capture.tracer_provider)
    assert partial.config == {"schedule": {"type": "crontab", "value": "0 0 * * 0"}}
    text = caplog.text
    assert "timezone 'local' is not an IANA zone name" in text
    assert "max_runtime -1 is invalid" in text
    with job:
        pass
    start, _ = _run_pair(check_ins(capture), "ok")
    assert "monitor_config" not in start
    nameless = monitor("", tracer_provider=capture.tracer_provider)
    assert nameless(lambda: 7)() == 7  # runs, reports nothing
    assert "must be a non-empty string" in caplog.text


def test_monitoring_failures_never_reach_the_job(
    capture: BridgeCapture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bridge bug")

    monkeypatch.setattr(_internal_errors, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_checkins, "begin", broken)

    @monitor("robust", tracer_provider=capture.tracer_provider)
    def job() -> str:
        return "result"

    assert job() == "result"
    with pytest.raises(ZeroDivisionError), monitor("robust",
                                                   tracer_provider=capture.tracer_provider):
        _ = 1 / 0
    assert check_ins(capture) == []
    assert len(capture.transactions()) == 2  # the spans still ended


def test_rate_limited_check_ins_are_counted(capture: BridgeCapture) -> None:
    transport = capture.pipeline.transport
    transport._rate_limits.until["monitor"] = time.monotonic() + 60
    with monitor("limited", tracer_provider=capture.tracer_provider):
        pass
    assert check_ins(capture) == []
    assert capture.pipeline.drops.total("ratelimit_backoff", "monitor") == 2


def test_without_an_sdk_provider_check_ins_have_no_trace(capture: BridgeCapture) -> None:
    with monitor("untraced", tracer_provider=NoOpTracerProvider()):
        pass
    start, end = _run_pair(check_ins(capture), "ok")
    assert "contexts" not in start and "contexts" not in end
    assert capture.transactions() == []


# ------------------------------------------------------------------------------ root spans


def test_root_span_with_a_slug_attribute(capture: BridgeCapture) -> None:
    tracer = capture.tracer_provider.get_tracer("jobs")
    attributes = {MONITOR_SLUG: "sync-invoices", MONITOR_SCHEDULE: "30 minutes",
                  ci.MAX_RUNTIME: 10}
    with tracer.start_as_current_span("sync invoices", attributes=attributes):
        # in_progress went out at the start, not at the end
        (started,) = check_ins(capture)
        assert started["status"] == "in_progress"
        assert started["monitor_config"] == {
            "schedule": {"type": "interval", "value": 30, "unit": "minute"}, "max_runtime": 10}
        with tracer.start_as_current_span("child", attributes={MONITOR_SLUG: "ignored"}):
            time.sleep(0.02)
    start, end = _run_pair(check_ins(capture), "ok")
    assert start is not None and end["duration"] >= 0.02
    (txn,) = capture.transactions()
    assert txn["contexts"]["trace"]["trace_id"] == end["contexts"]["trace"]["trace_id"]
    assert txn["contexts"]["trace"]["span_id"] == end["contexts"]["trace"]["span_id"]

    capture.raw.clear()
    with pytest.raises(RuntimeError), tracer.start_as_current_span(
            "sync invoices", attributes={MONITOR_SLUG: "sync-invoices"}):
        raise RuntimeError("upstream down")
    _run_pair(check_ins(capture), "error")
    assert len(capture.items("event")) == 1

    capture.raw.clear()
    span = tracer.start_span("sync invoices", attributes={MONITOR_SLUG: "sync-invoices"})
    span.set_status(Status(StatusCode.ERROR, "3 invoices failed"))
    span.end()
    _run_pair(check_ins(capture), "error")


def test_monitor_spans_setting_matches_task_names() -> None:
    capture = BridgeCapture(monitor_spans=("app.tasks.report=daily-report", "cleanup"))
    try:
        tracer = capture.tracer_provider.get_tracer("opentelemetry.instrumentation.celery")
        with tracer.start_as_current_span("run/app.tasks.report", kind=SpanKind.CONSUMER):
            pass
        with tracer.start_as_current_span("cleanup"):
            pass
        with tracer.start_as_current_span("run/other"):
            pass
        with tracer.start_as_current_span("apply_async/app.tasks.report",
                                          kind=SpanKind.PRODUCER):
            pass  # sending the task is not running it
        found = check_ins(capture)
        assert [(c["monitor_slug"], c["status"]) for c in found] == [
            ("daily-report", "in_progress"), ("daily-report", "ok"),
            ("cleanup", "in_progress"), ("cleanup", "ok")]
        # named only at its end (as OpenTelemetry's Celery instrumentation sets
        # celery.task_name): one closing check-in
        capture.raw.clear()
        with tracer.start_as_current_span("run/late") as span:
            span.set_attribute("celery.task_name", "cleanup")
        (late,) = check_ins(capture)
        assert (late["monitor_slug"], late["status"]) == ("cleanup", "ok")
        assert late["duration"] >= 0
        # the late check-in froze nothing: the transaction's DSC names it as usual
        (dsc,) = [headers["trace"] for headers, items in capture.envelopes()
                  if items[0][0]["type"] == "transaction"]
        assert dsc["transaction"] == "run/late"
    finally:
        capture.close()


def test_exit_reports_runs_in_progress_as_errors(capture: BridgeCapture) -> None:
    stuck = monitor("stuck", tracer_provider=capture.tracer_provider)
    stuck.__enter__()
    tracer = capture.tracer_provider.get_tracer("jobs")
    span = tracer.start_span("span job", Context(), attributes={MONITOR_SLUG: "span-job"})
    time.sleep(0.02)
    assert _checkins.fail_open(capture.pipeline) == 2
    found = check_ins(capture)
    assert sorted((c["monitor_slug"], c["status"]) for c in found) == [
        ("span-job", "error"), ("span-job", "in_progress"),
        ("stuck", "error"), ("stuck", "in_progress")]
    assert all(c["duration"] >= 0.02 for c in found if c["status"] == "error")
    # the process lives on after all: the runs end without another check-in
    stuck.__exit__(None, None, None)
    span.end()
    assert len(check_ins(capture)) == 4
    assert _checkins.fail_open(capture.pipeline) == 0


# ------------------------------------------------------------------------------ real processes

CRON_SCRIPT = """
import os
import time

from otel_sentry_bridge import monitor


@monitor("nightly-report", schedule="0 3 * * *", timezone="Europe/Paris", checkin_margin=5,
         max_runtime=30)
def nightly_report():
    time.sleep(0.2)
    if os.environ.get("FAIL") == "1":
        raise RuntimeError("report failed")
    return "done"


print(nightly_report())
"""


def _env(receiver: SentryReceiver, **extra: str) -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "SENTRY_DSN": receiver.dsn(), "SENTRY_RELEASE": "reports@2.1",
            "SENTRY_ENVIRONMENT": "production", "OTEL_SERVICE_NAME": "reports",
            "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1", **extra}


def _instrumented(script: Path) -> list[str]:
    return [str(opentelemetry_instrument()), sys.executable, str(script)]


@pytest.mark.e2e
def test_cron_script_run_twice_success_then_failure(tmp_path: Path) -> None:
    script = tmp_path / "nightly.py"
    script.write_text(CRON_SCRIPT)
    ids = []
    with SentryReceiver() as receiver:
        for fail, code, closing in (("0", 0, "ok"), ("1", 1, "error")):
            receiver.clear()
            result = subprocess.run(_instrumented(script), env=_env(receiver, FAIL=fail),
                                    capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == code, result.stderr
            assert ("RuntimeError: report failed" in result.stderr) == (fail == "1")
            receiver.wait_for(lambda r: len(r.check_ins()) >= 2 and bool(r.transactions()))
            found = received_check_ins(receiver)
            start, end = _run_pair([c for _, c in found], closing)
            ids.append(start["check_in_id"])
            assert start["monitor_config"] == {
                "schedule": {"type": "crontab", "value": "0 3 * * *"},
                "timezone": "Europe/Paris", "checkin_margin": 5, "max_runtime": 30}
            assert (end["environment"], end["release"]) == ("production", "reports@2.1")
            assert 0.2 <= end["duration"] < 10
            (txn,) = receiver.transactions()
            assert txn["transaction"] == "nightly-report"
            trace = txn["contexts"]["trace"]
            for headers, check_in in found:
                assert check_in["contexts"]["trace"] == {
                    "trace_id": trace["trace_id"], "span_id": trace["span_id"]}
                assert headers["trace"]["trace_id"] == trace["trace_id"]
                assert headers["trace"]["public_key"] == receiver.key
            events = receiver.events()
            if fail == "1":
                (event,) = events
                assert event["exception"]["values"][-1]["value"] == "report failed"
                assert event["contexts"]["trace"]["trace_id"] == trace["trace_id"]
            else:
                assert events == []
            receiver.assert_no_problems()
    assert ids[0] != ids[1]


HARD_EXIT_SCRIPT = """
import sys
import time

from opentelemetry import trace

from otel_sentry_bridge import monitor

how = sys.argv[1]


def work():
    print("ready", flush=True)
    if how == "keyboard":
        raise KeyboardInterrupt
    if how.startswith("exit"):
        sys.exit(int(how[4:]))
    time.sleep(60)


if how == "span":
    tracer = trace.get_tracer("jobs")
    with tracer.start_as_current_span("hourly sync", attributes={"sentry.monitor.slug": "sync"}):
        work()
else:
    monitor("hard-exit", schedule="@hourly")(work)()
"""


@pytest.mark.e2e
@pytest.mark.parametrize(("how", "status"), [
    ("sigterm", "error"), ("span", "error"), ("keyboard", "error"), ("exit1", "error"),
    ("exit0", "ok"),
])
def test_a_job_that_dies_still_reports(tmp_path: Path, how: str, status: str) -> None:
    script = tmp_path / "hard_exit.py"
    script.write_text(HARD_EXIT_SCRIPT)
    with SentryReceiver() as receiver:
        proc = subprocess.Popen([*_instrumented(script), how], env=_env(receiver),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            started = time.monotonic()
            if how in ("sigterm", "span"):
                time.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            proc.kill()
        expected_code = {"sigterm": -signal.SIGTERM, "span": -signal.SIGTERM,
                         "keyboard": -signal.SIGINT, "exit1": 1, "exit0": 0}[how]
        assert proc.returncode == expected_code, stderr
        assert "otel-sentry-bridge" not in stderr, stderr
        receiver.wait_for(lambda r: len(r.check_ins()) >= 2)
        found = [c for _, c in received_check_ins(receiver)]
        start, end = _run_pair(found, status)
        assert start["monitor_slug"] == ("sync" if how == "span" else "hard-exit")
        assert end["duration"] < took + 1
        if how in ("sigterm", "span"):
            assert end["duration"] >= 0.3
        receiver.assert_no_problems()

