"""The Celery app of tests/test_celery.py: three tasks, run by a real worker.

Nothing here knows about the bridge: the worker runs under ``opentelemetry-instrument``. Set
by the test: ``CELERY_BROKER_URL`` and ``CELERY_QUEUE`` (a queue of this run's own).
"""

from __future__ import annotations

import os

from celery import Celery, Task
from kombu import Queue
from opentelemetry import trace

QUEUE = os.environ.get("CELERY_QUEUE", "bridge-test")

app = Celery("bridge_test", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.update(
    task_default_queue=QUEUE,
    # RabbitMQ removes the queue of a run 10 minutes after its last use (Redis ignores it).
    task_queues=[Queue(QUEUE, routing_key=QUEUE, queue_arguments={"x-expires": 600_000})],
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
tracer = trace.get_tracer("bridge_test.tasks")


class PaymentDeclined(RuntimeError):
    pass


@app.task(name="bridge_test.add")
def add(x: int, y: int) -> int:
    with tracer.start_as_current_span("add.compute"):
        return x + y


@app.task(name="bridge_test.charge")
def charge(order_id: int, card: str = "") -> None:
    raise PaymentDeclined(f"card declined for order {order_id}")


@app.task(name="bridge_test.flaky", bind=True, max_retries=1)
def flaky(self: Task, key: str) -> str:
    if self.request.retries == 0:
        try:
            raise ConnectionError(f"upstream down for {key}")
        except ConnectionError as exc:
            raise self.retry(exc=exc, countdown=0) from exc
    return key
