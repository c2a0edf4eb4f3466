"""Celery end to end: a Flask producer and a real worker, both under ``opentelemetry-instrument``.

For each broker (Redis, then RabbitMQ) the module starts, once, a ``SentryReceiver``, the Flask
app of ``tests/apps_celery/web.py`` (its view calls ``apply_async``) and a Celery worker
(``celery -A tasks worker``; prefork with ``SENTRY_BRIDGE_SEND_DEFAULT_PII=1`` on Redis, solo
without it on RabbitMQ), each on a queue of its own. Nothing sets up tracing but
``opentelemetry-instrument``: the bridge's post-instrument hook connects its Celery hooks.

Unit tests at the top (no broker) cover the pure mapping of section 4.6 and the publish hook
in-process. What arrives is checked against sentry-sdk's Celery integration (sentry-mapping.md
section 4.6): ``queue.publish`` spans in the web request's transaction, task transactions
(``queue.task.celery``, source ``task``) in the same trace with a ``queue.process`` child that
carries the Queues page's data (receive latency included), error events of failing and retried
tasks. The receiver runs Relay's normalizer and the Insights lint on every event; the Queues
page's own fields are checked by :func:`queues_page_problems`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from apps import REPO_ROOT, AppProcess, free_port, opentelemetry_instrument
from conftest import require_service
from e2e_support import (
    assert_clean_output,
    assert_receiver_clean,
    bridge_env,
    prepend_pythonpath,
    summary,
    trace_of,
)
from opentelemetry.trace import SpanKind, StatusCode
from sentry_receiver import Envelope, SentryReceiver, validate_event
from spans import SpanFactory, remote_parent

from otel_sentry_bridge import celery_hooks
from otel_sentry_bridge._mapping import MappingContext, build_transaction
from otel_sentry_bridge._mapping.spans import derived_span_id
from otel_sentry_bridge._mapping.transactions import MappedTransaction

APPS_DIR = Path(__file__).resolve().parent / "apps_celery"
WEB_PROJECT, WORKER_PROJECT = 201, 202
WEB_TXN = "POST /enqueue/<name>"


@dataclass(frozen=True)
class Broker:
    url: str
    port: int
    name: str
    system: str  # messaging.system: kombu's driver type
    pool: str
    pii: bool


BROKERS = {
    "redis": Broker("redis://127.0.0.1:6379/0", 6379, "Redis", "redis", "prefork", True),
    "rabbitmq": Broker("amqp://guest:guest@127.0.0.1:5672//", 5672, "RabbitMQ", "amqp", "solo",
                       False),
}


# --------------------------------------------------------------------------------------------
# Without a broker: the mapping (4.6) and the hooks in-process
# --------------------------------------------------------------------------------------------

TASK = "shop.send_receipt"
TASK_ATTRS: dict[str, Any] = {
    "celery.action": "run", "celery.task_name": TASK, "messaging.message.id": "m-1",
    "messaging.destination": "orders", "messaging.system": "redis",
    "messaging.message.receive.latency": 12.5, "messaging.message.body.size": 81,
    "celery.args": ("7",),
    "celery.kwargs.email": "'a@example.com'", "celery.kwargs.password": "'hunter2'",
}


def map_task(attrs: dict[str, Any], ctx: MappingContext | None = None, steps: int = 2,
             fail: bool = False) -> MappedTransaction:
    """A worker's consumer span (remote parent) with ``steps`` children, each with a query."""
    f = SpanFactory()
    with f.span(f"run/{TASK}", SpanKind.CONSUMER, attrs, lib="celery",
                context=remote_parent()) as root:
        for index in range(steps):
            with f.span(f"step {index}", lib="shop.tasks"), f.span(
                    "SELECT", SpanKind.CLIENT,
                    {"db.system": "postgresql", "db.statement": "SELECT 1"}, lib="sqlalchemy"):
                pass
        if fail:
            try:
                raise LookupError("no such order")
            except LookupError as exc:
                root.record_exception(exc)
            root.set_status(StatusCode.ERROR)
    task, children = f.split()
    mapped = build_transaction(task, children, ctx or MappingContext())
    assert mapped is not None
    for event in (mapped.event, *mapped.errors):
        assert validate_event(event) == [], event
    return mapped


def test_task_transaction_gets_a_queue_process_child() -> None:
    event = map_task(TASK_ATTRS).event
    trace = trace_of(event)
    assert (event["transaction"], event["transaction_info"]) == (TASK, {"source": "task"})
    assert trace["op"] == "queue.task.celery"
    (process,) = spans_with_op(event, "queue.process")
    assert process["parent_span_id"] == trace["span_id"]
    assert process["description"] == TASK
    assert (process["start_timestamp"], process["timestamp"]) == (
        event["start_timestamp"], event["timestamp"])
    assert process["data"] == {
        "messaging.destination.name": "orders", "messaging.message.id": "m-1",
        "messaging.system": "redis", "messaging.message.retry.count": 0,
        "messaging.message.body.size": 81, "messaging.message.receive.latency": 12.5,
    }
    steps = [s for s in event["spans"] if s["description"].startswith("step")]
    assert [s["parent_span_id"] for s in steps] == [process["span_id"]] * 2
    queries = spans_with_op(event, "db")
    assert sorted(q["parent_span_id"] for q in queries) == sorted(s["span_id"] for s in steps)
    assert queues_page_problems(event) == []
    # Its id derives from the task span's: mapping the same spans twice gives the same event.
    assert process["span_id"] == f"{derived_span_id(int(trace['span_id'], 16)):016x}"


def test_eager_task_has_no_queue_process() -> None:
    """``task.apply()`` never went through a queue: no destination, no Queues span."""
    attrs = {k: v for k, v in TASK_ATTRS.items() if k != "messaging.destination"}
    event = map_task(attrs).event
    assert trace_of(event)["op"] == "queue.task.celery"
    assert spans_with_op(event, "queue.process") == []
    steps = [s for s in event["spans"] if s["description"].startswith("step")]
    assert {s["parent_span_id"] for s in steps} == {trace_of(event)["span_id"]}


def test_queue_process_counts_towards_max_spans() -> None:
    mapped = map_task(TASK_ATTRS, MappingContext(max_spans=3), steps=3)
    assert len(mapped.event["spans"]) == 3
    assert mapped.dropped_spans == 4  # 6 children, 2 kept beside queue.process
    assert len(spans_with_op(mapped.event, "queue.process")) == 1


@pytest.mark.parametrize("latency", [-5.0, "soon", math.inf, True])
def test_unusable_receive_latency_is_set_aside(latency: Any) -> None:
    event = map_task({**TASK_ATTRS, "messaging.message.receive.latency": latency}).event
    (process,) = spans_with_op(event, "queue.process")
    assert "messaging.message.receive.latency" not in process["data"]


@pytest.mark.parametrize("pii", [False, True])
def test_task_arguments_only_with_pii(pii: bool) -> None:
    mapped = map_task(TASK_ATTRS, MappingContext(send_pii=pii), fail=True)
    data = trace_of(mapped.event)["data"]
    (error,) = mapped.errors
    assert error["transaction"] == TASK
    assert error["tags"]["celery_task_id"] == "m-1"
    assert "celery_task_id" not in mapped.event.get("tags", {})  # the event's own copy
    job = error["extra"]["celery-job"]
    if pii:
        assert data["celery.args"] == ["7"]
        # secret-looking names are filtered even then
        assert job == {"task_name": TASK, "args": ["7"],
                       "kwargs": {"email": "'a@example.com'", "password": "[Filtered]"}}
    else:
        assert data["celery.args"] == data["celery.kwargs.email"] == "[Filtered]"
        assert job == {"task_name": TASK, "args": "[Filtered]", "kwargs": "[Filtered]"}


def test_hooks_need_the_celery_instrumentation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OpenTelemetry's Celery instrumentation loaded nothing is connected (nor
    imported)."""
    monkeypatch.delitem(sys.modules, "opentelemetry.instrumentation.celery", raising=False)
    assert celery_hooks.install_celery_hooks() is False


def test_hook_helpers() -> None:
    assert celery_hooks.body_size(([1, 2], {}, {}), "json") == len(b"[[1, 2], {}, {}]")
    assert celery_hooks.body_size(([object()], {}, {}), "json") is None  # not for json

    class Request:
        headers: dict[str, Any] | None = None

    request = Request()
    assert celery_hooks.enqueued_time(request) is None
    request.headers = {celery_hooks.ENQUEUED_HEADER: "1700000000.5"}  # in the inner headers
    assert celery_hooks.enqueued_time(request) == 1_700_000_000.5
    setattr(request, celery_hooks.ENQUEUED_HEADER, 1_700_000_001)  # a message header
    assert celery_hooks.enqueued_time(request) == 1_700_000_001.0
    for bad in ("soon", math.nan, True):
        setattr(request, celery_hooks.ENQUEUED_HEADER, bad)
        assert celery_hooks.enqueued_time(request) is None


def test_publish_hook_in_process() -> None:
    """``apply_async`` over kombu's in-memory broker: the publish span gets the Queues data
    and the message the enqueue stamp (and nothing else of ours)."""
    from celery import Celery
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    f = SpanFactory()
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=f.provider)
    try:
        assert celery_hooks.install_celery_hooks() is True
        app = Celery("unit", broker="memory://", set_as_current=True)
        app.conf.update(task_default_queue="unit-q", task_ignore_result=True)

        @app.task(name="unit.echo")
        def echo(text: str) -> str:
            return text

        before = time.time()
        result = echo.apply_async(("hello",))
        with app.connection_for_read() as connection:
            queue = connection.SimpleQueue("unit-q")
            message = queue.get(timeout=5)
            message.ack()
            queue.close()
    finally:
        celery_hooks.disconnect()
        instrumentor.uninstrument()
    stamped = message.headers[celery_hooks.ENQUEUED_HEADER]
    assert before <= stamped <= time.time()
    (span,) = f.finished()
    assert span.name == "apply_async/unit.echo"
    attrs = dict(span.attributes or {})
    assert attrs["messaging.system"] == "memory"
    assert attrs["messaging.message.retry.count"] == 0
    assert attrs["messaging.message.body.size"] == len(message.body)
    mapped = build_transaction(span, [], MappingContext())
    assert mapped is not None
    trace = trace_of(mapped.event)
    assert (trace["op"], mapped.event["transaction"]) == ("queue.publish", "apply_async/unit.echo")
    assert trace["data"]["messaging.message.id"] == result.id


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------


class Worker:
    """``opentelemetry-instrument python -m celery -A tasks worker``, ready once it logs
    ``ready.``; stdout and stderr to a temporary file."""

    def __init__(self, env: dict[str, str], queue: str, pool: str, timeout: float = 30.0) -> None:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "OTEL_"))}
        child_env.update(env)
        child_env["PYTHONPATH"] = prepend_pythonpath(APPS_DIR)
        child_env["PYTHONUNBUFFERED"] = "1"
        argv = [str(opentelemetry_instrument()), sys.executable, "-m", "celery", "-A", "tasks",
                "worker", f"--pool={pool}", "--concurrency=1", "-Q", queue, "-n", f"{queue}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
        fd, name = tempfile.mkstemp(prefix="celery-worker-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "ab") as log:
            self._proc = subprocess.Popen(argv, env=child_env, cwd=REPO_ROOT,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT)
        self._final: str | None = None
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                output = self.stop()
                raise RuntimeError(f"the Celery worker did not start:\n{output}")
            time.sleep(0.05)

    def output(self) -> str:
        if self._final is not None:
            return self._final
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> str:
        """Warm shutdown (SIGTERM; the bridge flushes at exit), SIGKILL after ``timeout``."""
        if self._final is not None:
            return self._final
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._final = self.output()
        self.log_path.unlink(missing_ok=True)
        return self._final


# --------------------------------------------------------------------------------------------
# The set-up shared by the module (one per broker)
# --------------------------------------------------------------------------------------------


@dataclass
class Setup:
    broker: Broker
    queue: str
    receiver: SentryReceiver
    web: AppProcess
    worker: Worker
    #: tasks that raised (each logs one traceback in the worker)
    failures: int = 0
    enqueued: list[str] = field(default_factory=list)

    def enqueue(self, task: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``POST /enqueue/<task>``; the task id and the request's trace ids."""
        status, body, _ = self.web.post(f"/enqueue/{task}", json={"args": args, "kwargs": kwargs})
        assert status == 200, (status, body, self.web.output()[-3000:])
        answer: dict[str, Any] = json.loads(body)
        assert answer["sampled"] is True, answer
        self.enqueued.append(answer["task_id"])
        return answer

    def wait(self, ready: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        if not self.receiver.wait_for(lambda _: ready(), timeout=timeout, interval=0.05):
            pytest.fail(f"timed out waiting for {what}; received:\n{summary(self.receiver)}\n"
                        f"worker:\n{self.worker.output()[-4000:]}")


@pytest.fixture(scope="module", params=sorted(BROKERS))
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    broker = BROKERS[request.param]
    require_service("127.0.0.1", broker.port, broker.name)
    queue = f"bridge-test-{uuid.uuid4().hex[:12]}"
    common = {"CELERY_BROKER_URL": broker.url, "CELERY_QUEUE": queue}
    with SentryReceiver() as receiver:
        web_env = bridge_env(receiver, "celery-web", SENTRY_DSN=receiver.dsn(WEB_PROJECT),
                             OTEL_PYTHON_FLASK_EXCLUDED_URLS="health,flush", **common)
        worker_env = bridge_env(receiver, "celery-worker", SENTRY_DSN=receiver.dsn(WORKER_PROJECT),
                                SENTRY_BRIDGE_SEND_DEFAULT_PII="1" if broker.pii else None,
                                **common)
        with ThreadPoolExecutor(2) as pool:
            web_future = pool.submit(AppProcess, APPS_DIR / "web.py", web_env, free_port())
            worker_future = pool.submit(Worker, worker_env, queue, broker.pool)
        started = [f.result() for f in (web_future, worker_future) if f.exception() is None]
        try:
            # (re-raises the start-up error of either process, the other one stopped below)
            yield Setup(broker, queue, receiver, web_future.result(), worker_future.result())
        finally:
            for process in started:
                process.stop()
            if broker.system == "redis":
                _forget_redis_queue(queue)


def _forget_redis_queue(queue: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    try:
        client.delete(queue, f"_kombu.binding.{queue}")
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# Queries and checks
# --------------------------------------------------------------------------------------------


def sent(receiver: SentryReceiver, item_type: str, project: int) -> list[tuple[Envelope, dict[
        str, Any]]]:
    return [(envelope, item.json) for envelope in receiver.envelopes
            if envelope.project_id == project
            for item in envelope.items if item.type == item_type and isinstance(item.json, dict)]


def task_transactions(receiver: SentryReceiver, task_id: str) -> list[dict[str, Any]]:
    """The worker's transactions of one message (a retried task has several), in start order."""
    found = [txn for _, txn in sent(receiver, "transaction", WORKER_PROJECT)
             if trace_of(txn).get("op") == "queue.task.celery"
             and trace_of(txn)["data"].get("messaging.message.id") == task_id]
    return sorted(found, key=lambda t: t["start_timestamp"])


def web_transaction(receiver: SentryReceiver, trace_id: str) -> dict[str, Any] | None:
    for _, txn in sent(receiver, "transaction", WEB_PROJECT):
        if trace_of(txn)["trace_id"] == trace_id and txn["transaction"] == WEB_TXN:
            return txn
    return None


def error_events(receiver: SentryReceiver, trace_id: str) -> list[dict[str, Any]]:
    """The worker's error events of a trace, but for the broker's own redis errors (a
    ``NoScriptError`` when kombu's script is not cached: see docs/background-work.md)."""
    return [event for _, event in sent(receiver, "event", WORKER_PROJECT)
            if trace_of(event)["trace_id"] == trace_id
            and trace_of(event).get("origin") != "auto.otel.redis"]


def spans_with_op(txn: dict[str, Any], op: str) -> list[dict[str, Any]]:
    return [span for span in txn["spans"] if span["op"] == op]


def queues_page_problems(txn: dict[str, Any]) -> list[str]:
    """What Sentry's Queues page reads (sentry-mapping.md 4.6), on every ``queue.publish`` and
    ``queue.process`` span: the required message id, destination and system, and the optional
    retry count, body size and (process) receive latency in milliseconds."""
    problems: list[str] = []
    for span in txn["spans"]:
        op, data = span["op"], span["data"]
        if op not in ("queue.publish", "queue.process"):
            continue
        where = f"{txn['transaction']!r} {op} {span['span_id']}"
        for key in ("messaging.message.id", "messaging.destination.name", "messaging.system"):
            if not (isinstance(data.get(key), str) and data[key].strip()):
                problems.append(f"{where}: {key} missing")
        retries = data.get("messaging.message.retry.count")
        if type(retries) is not int or retries < 0:
            problems.append(f"{where}: retry count {retries!r}")
        if not span["description"] or span["description"] == op:
            problems.append(f"{where}: description {span['description']!r} is not the task")
        size = data.get("messaging.message.body.size")
        if type(size) is not int or size <= 0:
            problems.append(f"{where}: body size {size!r}")
        if op == "queue.process":
            latency = data.get("messaging.message.receive.latency")
            if not (type(latency) in (int, float) and math.isfinite(latency) and latency >= 0):
                problems.append(f"{where}: receive latency {latency!r}")
    return problems


def check_task_transaction(setup: Setup, txn: dict[str, Any], task: str, task_id: str,
                           retries: int, status: str) -> dict[str, Any]:
    """The shape of a task transaction; returns its ``queue.process`` span."""
    trace = trace_of(txn)
    assert txn["transaction"] == task
    assert txn["transaction_info"] == {"source": "task"}
    assert (trace["op"], trace["status"], trace["origin"]) == (
        "queue.task.celery", status, "auto.otel.celery")
    (process,) = spans_with_op(txn, "queue.process")
    assert process["parent_span_id"] == trace["span_id"]
    assert process["description"] == task
    assert process["status"] == status
    data = process["data"]
    assert data["messaging.message.id"] == task_id
    assert data["messaging.destination.name"] == setup.queue
    assert data["messaging.system"] == setup.broker.system
    assert data["messaging.message.retry.count"] == retries
    assert data["messaging.message.body.size"] > 10
    latency = data["messaging.message.receive.latency"]
    # Stamped at publish, read at the task's start: positive and well under the wait here.
    assert 0 < latency < 15_000, latency
    # Only the queue.process span hangs off the task's span.
    assert [s["op"] for s in txn["spans"] if s["parent_span_id"] == trace["span_id"]] == [
        "queue.process"]
    assert queues_page_problems(txn) == []
    return process


def check_publish(setup: Setup, txn: dict[str, Any], task: str, task_id: str,
                  retries: int) -> dict[str, Any]:
    """The ``queue.publish`` span of ``task_id`` in ``txn``."""
    (publish,) = [s for s in spans_with_op(txn, "queue.publish")
                  if s["data"].get("messaging.message.id") == task_id]
    assert publish["description"] == task
    assert publish["origin"] == "auto.otel.celery"
    data = publish["data"]
    assert data["messaging.destination.name"] == setup.queue
    assert data["messaging.system"] == setup.broker.system
    assert data["messaging.message.retry.count"] == retries
    assert data["messaging.message.body.size"] > 10
    assert queues_page_problems(txn) == []
    return publish


def check_job_extra(setup: Setup, event: dict[str, Any], task: str, args: list[str],
                    kwargs: dict[str, str]) -> None:
    """sentry-sdk's ``celery-job`` extra: the task name; its arguments only under PII."""
    job = event["extra"]["celery-job"]
    if setup.broker.pii:
        assert job == {"task_name": task, "args": args, "kwargs": kwargs}, job
    else:
        assert job == {"task_name": task, "args": "[Filtered]", "kwargs": "[Filtered]"}, job


# --------------------------------------------------------------------------------------------
# 1. A web request enqueues a task: one trace, publish -> task -> queue.process
# --------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_task_continues_the_web_request_trace(setup: Setup) -> None:
    answer = setup.enqueue("add", 2, 3)
    trace_id, task_id = answer["trace_id"], answer["task_id"]
    receiver = setup.receiver
    setup.wait(lambda: bool(task_transactions(receiver, task_id))
               and web_transaction(receiver, trace_id) is not None, f"task {task_id}")

    web = web_transaction(receiver, trace_id)
    assert web is not None
    assert trace_of(web)["span_id"] == answer["span_id"]
    publish = check_publish(setup, web, "bridge_test.add", task_id, retries=0)
    assert publish["parent_span_id"] == answer["span_id"]

    (txn,) = task_transactions(receiver, task_id)
    trace = trace_of(txn)
    assert trace["trace_id"] == trace_id
    assert trace["parent_span_id"] == publish["span_id"]  # the task's parent: the publish span
    process = check_task_transaction(setup, txn, "bridge_test.add", task_id, 0, "ok")
    # The worker serializes the arguments again as the producer did: the same size.
    assert process["data"]["messaging.message.body.size"] == publish["data"][
        "messaging.message.body.size"]
    # The task's own span (a direct child of the consumer span) moved under queue.process.
    (compute,) = [s for s in txn["spans"] if s["description"] == "add.compute"]
    assert compute["parent_span_id"] == process["span_id"]
    assert process["start_timestamp"] <= compute["start_timestamp"]
    assert compute["timestamp"] <= process["timestamp"]
    # The task's arguments are span data only under PII.
    assert ("celery.args" in trace["data"]) is setup.broker.pii
    if setup.broker.pii:
        assert trace["data"]["celery.args"] == ["2", "3"]

    # Both services' envelopes carry the trace's one dynamic sampling context (the web's).
    headers = [envelope.headers.get("trace") for envelope in receiver.envelopes
               for item in envelope.items if item.type == "transaction"
               and isinstance(item.json, dict) and trace_of(item.json)["trace_id"] == trace_id]
    assert len(headers) == 2 and headers[0] == headers[1], headers
    assert headers[0]["transaction"] == WEB_TXN
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# 2. A failing task: an error event with the task's name, status internal_error
# --------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_failing_task_sends_an_error_event(setup: Setup) -> None:
    answer = setup.enqueue("charge", 42, card="4242")
    setup.failures += 1
    trace_id, task_id = answer["trace_id"], answer["task_id"]
    receiver = setup.receiver
    setup.wait(lambda: bool(task_transactions(receiver, task_id))
               and bool(error_events(receiver, trace_id)), f"the failure of task {task_id}")

    (txn,) = task_transactions(receiver, task_id)
    check_task_transaction(setup, txn, "bridge_test.charge", task_id, 0, "internal_error")
    (event,) = error_events(receiver, trace_id)
    (value,) = event["exception"]["values"]
    assert (value["type"], value["value"]) == ("PaymentDeclined", "card declined for order 42")
    assert value["mechanism"] == {"type": "auto.otel.celery", "handled": False}
    assert any(frame["function"] == "charge" for frame in value["stacktrace"]["frames"])
    assert event["transaction"] == "bridge_test.charge"
    assert event["tags"]["celery_task_id"] == task_id
    assert trace_of(event)["span_id"] == trace_of(txn)["span_id"]
    check_job_extra(setup, event, "bridge_test.charge", ["42"], {"card": "'4242'"})
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# 3. A task that retries once: aborted, then ok with retry count 1, in one trace
# --------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_retrying_task(setup: Setup) -> None:
    answer = setup.enqueue("flaky", "k1")
    trace_id, task_id = answer["trace_id"], answer["task_id"]
    receiver = setup.receiver
    setup.wait(lambda: len(task_transactions(receiver, task_id)) >= 2
               and bool(error_events(receiver, trace_id)), f"both runs of task {task_id}")

    first, second = task_transactions(receiver, task_id)
    check_task_transaction(setup, first, "bridge_test.flaky", task_id, 0, "aborted")
    check_task_transaction(setup, second, "bridge_test.flaky", task_id, 1, "ok")
    assert "celery.retry.reason" in trace_of(first)["data"]
    # The first run published the retry (retry count 1): the second run's parent.
    republish = check_publish(setup, first, "bridge_test.flaky", task_id, retries=1)
    assert trace_of(first)["trace_id"] == trace_of(second)["trace_id"] == trace_id
    assert trace_of(second)["parent_span_id"] == republish["span_id"]

    # The exception that caused the retry: one error event, handled (the task goes on).
    (event,) = error_events(receiver, trace_id)
    (value,) = event["exception"]["values"]
    assert (value["type"], value["value"]) == ("ConnectionError", "upstream down for k1")
    assert value["mechanism"] == {"type": "auto.otel.celery", "handled": True}
    assert event["transaction"] == "bridge_test.flaky"
    assert trace_of(event)["span_id"] == trace_of(first)["span_id"]
    assert trace_of(event)["status"] == "aborted"
    check_job_extra(setup, event, "bridge_test.flaky", ["'k1'"], {})
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# Last: both processes stop cleanly, and everything sent was valid
# --------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_processes_stop_cleanly(setup: Setup) -> None:
    web_output = setup.web.stop()
    worker_output = setup.worker.stop()
    assert_clean_output(web_output)
    # Celery logs the traceback of each task that raised.
    assert_clean_output(worker_output, tracebacks=setup.failures)
    receiver = setup.receiver
    assert_receiver_clean(receiver)
    # Every task enqueued ran and was reported (the retried one twice).
    for task_id in setup.enqueued:
        assert task_transactions(receiver, task_id), f"no transaction for {task_id}"
    for _, txn in sent(receiver, "transaction", WORKER_PROJECT) + sent(
            receiver, "transaction", WEB_PROJECT):
        assert queues_page_problems(txn) == [], txn["transaction"]
