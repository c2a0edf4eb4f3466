"""Messaging spans -> Sentry's Queues module (pure): sentry-mapping.md section 4.6.

* the messaging data of a ``queue.*`` span (destination, message id, system, retry count, body
  size, receive latency in milliseconds), from old and new keys and the bridge's Celery hooks;
* the ``queue.process`` child that sentry-sdk's Celery integration puts under a task's
  transaction (``queue.task.celery``), synthesized here with the messaging data; the task
  span's direct children move under it;
* the ``celery-job`` extra (task name; arguments only with ``send_default_pii``) and the
  ``celery_task_id`` tag of a task's error events, as sentry-sdk sends them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from otel_sentry_bridge.conventions import Attr, Op

from .scrub import FILTERED
from .values import Attrs, first_int, first_str, hex_span, set_aside

#: Receive latency (ms), written by the bridge's Celery hooks or by any instrumentation.
LATENCY = "messaging.message.receive.latency"
RETRY_COUNT = "messaging.message.retry.count"
BODY_SIZE = "messaging.message.body.size"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
SYSTEM = "messaging.system"
#: A task's arguments (the Celery hooks write them only with ``send_default_pii``).
ARGS = "celery.args"
KWARGS_PREFIX = "celery.kwargs."

#: What the synthesized ``queue.process`` span carries (sentry-sdk's set).
PROCESS_KEYS = (DESTINATION, MESSAGE_ID, SYSTEM, RETRY_COUNT, BODY_SIZE, LATENCY)
_ROUTING_KEY = re.compile(r"'routing_key':\s*'([^']*)'")


def destination(attrs: Attrs) -> str | None:
    """The queue: ``messaging.destination(.name)``, else celery's delivery info routing key."""
    found = first_str(attrs, Attr.MESSAGING_DESTINATION)
    if found is None:
        delivery = attrs.get("celery.delivery_info")
        if isinstance(delivery, str) and "routing_key" in delivery:
            match = _ROUTING_KEY.search(delivery)
            found = (match.group(1).strip() or None) if match else None
    return found


def _count(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def message_data(
    attrs: Attrs, data: dict[str, Any], celery: bool, system: str | None, send_pii: bool
) -> None:
    """Write the Queues module's keys into ``data`` (the span's scrubbed attributes)."""
    message_id = first_str(attrs, Attr.MESSAGING_MESSAGE_ID)
    if message_id is not None:
        data[MESSAGE_ID] = message_id
    else:
        set_aside(data, *Attr.MESSAGING_MESSAGE_ID)
    data[SYSTEM] = system or ("celery" if celery else "unknown")
    retries = first_int(attrs, Attr.CELERY_RETRIES)
    if retries is None and RETRY_COUNT in attrs:
        retries = _count(attrs.get(RETRY_COUNT))
        if retries is None:
            set_aside(data, RETRY_COUNT)
    if celery or retries is not None:
        data[RETRY_COUNT] = max(retries or 0, 0)
    body = first_int(attrs, Attr.MESSAGING_BODY_SIZE)
    if body is not None and body >= 0:
        data[BODY_SIZE] = body
    else:
        set_aside(data, *Attr.MESSAGING_BODY_SIZE)
    latency = attrs.get(LATENCY)
    if latency is not None:
        if type(latency) in (int, float) and math.isfinite(latency) and latency >= 0:
            data[LATENCY] = float(latency)
        else:
            set_aside(data, LATENCY)
    if celery and not send_pii:  # only the Celery hooks write these, only under PII
        for key in data:
            if key == ARGS or key.startswith(KWARGS_PREFIX):
                data[key] = FILTERED


def process_span(task: dict[str, Any], span_id: int) -> dict[str, Any] | None:
    """The ``queue.process`` child of a task span (``None`` without a destination: an eager
    task never went through a queue)."""
    source = task["data"]
    if not isinstance(source.get(DESTINATION), str):
        return None
    return {
        "trace_id": task["trace_id"],
        "span_id": hex_span(span_id),
        "parent_span_id": task["span_id"],
        "op": Op.QUEUE_PROCESS,
        "description": task["description"],
        "status": task["status"],
        "origin": task["origin"],
        "start_timestamp": task["start_timestamp"],
        "timestamp": task["timestamp"],
        "data": {key: source[key] for key in PROCESS_KEYS if key in source},
    }


def add_process_span(task: dict[str, Any], spans: list[dict[str, Any]], span_id: int) -> None:
    """Put the synthesized ``queue.process`` span under ``task`` (a transaction's root) and move
    the root's direct children under it."""
    process = process_span(task, span_id)
    if process is None:
        return
    root_id, process_id = task["span_id"], process["span_id"]
    for span in spans:
        if span["parent_span_id"] == root_id:
            span["parent_span_id"] = process_id
    spans.append(process)


def celery_job(data: dict[str, Any], task_name: str, send_pii: bool) -> dict[str, Any]:
    """sentry-sdk's ``celery-job`` extra: the task name, and its arguments under PII."""
    job: dict[str, Any] = {"task_name": task_name}
    if not send_pii:
        job["args"] = job["kwargs"] = FILTERED
        return job
    args = data.get(ARGS)
    if isinstance(args, (list, tuple)):
        job["args"] = list(args)
    kwargs = {key[len(KWARGS_PREFIX):]: value for key, value in data.items()
              if key.startswith(KWARGS_PREFIX)}
    if kwargs or "args" in job:
        job["kwargs"] = kwargs
    return job


def annotate_errors(errors: list[dict[str, Any]], task: dict[str, Any], send_pii: bool) -> None:
    """The task's name (and, under PII, arguments) and id on each error event of a task."""
    data = task["data"]
    job = celery_job(data, task["description"], send_pii)
    message_id = data.get(MESSAGE_ID)
    for error in errors:
        error.setdefault("extra", {})["celery-job"] = job
        if isinstance(message_id, str):
            error["tags"] = {**error.get("tags", {}), "celery_task_id": message_id[:200]}
