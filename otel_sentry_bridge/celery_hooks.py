"""Celery signal hooks that give Sentry's Queues page what OpenTelemetry's instrumentation lacks.

OpenTelemetry's Celery instrumentation (0.66b) records no broker, no message size and no receive
latency. These hooks, connected after it, add them to its spans:

* ``before_task_publish``: stamps the message header ``sentry-task-enqueued-time`` (epoch
  seconds, as sentry-sdk's Celery integration does; the only change made to a message) and puts
  ``messaging.system`` (the broker's driver: ``redis``, ``amqp``...), the retry count and
  ``messaging.message.body.size`` (the serialized body, before compression) on the publish span;
* ``task_prerun``: puts ``messaging.message.receive.latency`` (milliseconds from the enqueue
  stamp to the start of the task), ``messaging.system`` and the body size (the task's
  arguments serialized again as the producer did) on the task's span, and the arguments
  themselves (``celery.args``, ``celery.kwargs.<name>``) only with ``send_default_pii``;
* ``task_retry``: records the exception that caused a retry on the task's span (one error
  event, marked handled; a bare ``self.retry()`` is control flow and records nothing).

``opentelemetry-instrument`` connects them (the bridge's post-instrument hook) when OpenTelemetry's
Celery instrumentation is active; code that instruments Celery itself calls :func:`connect` after
``CeleryInstrumentor().instrument()``. Without Celery nothing is imported.
"""

from __future__ import annotations

import math
import sys
import time
from importlib import import_module
from typing import Any

from opentelemetry import trace

from ._internal_errors import handle_internal_errors, logger
from ._mapping.queues import ARGS, BODY_SIZE, KWARGS_PREFIX, LATENCY, RETRY_COUNT

#: The message header holding the enqueue time (epoch seconds), as sentry-sdk names it.
ENQUEUED_HEADER = "sentry-task-enqueued-time"
#: Arguments kept per task (with ``send_default_pii``), and characters per argument.
MAX_ARGUMENTS = 50
MAX_ARGUMENT_CHARS = 1024

_UID = "otel_sentry_bridge.celery_hooks."
_state: dict[str, bool] = {"connected": False, "send_pii": False}
#: Broker URL -> its kombu driver type (``redis``, ``amqp``...).
_systems: dict[str, str] = {}


def connect(send_pii: bool = False) -> bool:
    """Connect the hooks to Celery's signals (once); ``False`` when already connected."""
    signals = import_module("celery.signals")
    _state["send_pii"] = send_pii
    if _state["connected"]:
        return False
    signals.before_task_publish.connect(_before_publish, weak=False,
                                        dispatch_uid=_UID + "publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid=_UID + "prerun")
    signals.task_retry.connect(_retry, weak=False, dispatch_uid=_UID + "retry")
    _state["connected"] = True
    logger.debug("otel-sentry-bridge: celery hooks connected")
    return True


def disconnect() -> None:
    """Undo :func:`connect`."""
    if not _state["connected"]:
        return
    signals = import_module("celery.signals")
    signals.before_task_publish.disconnect(dispatch_uid=_UID + "publish")
    signals.task_prerun.disconnect(dispatch_uid=_UID + "prerun")
    signals.task_retry.disconnect(dispatch_uid=_UID + "retry")
    _state["connected"] = False


def install_celery_hooks(send_pii: bool = False) -> bool:
    """Connect the hooks when OpenTelemetry's Celery instrumentation is active (it has imported
    Celery then); otherwise do nothing, at the cost of one dictionary look-up."""
    module = sys.modules.get("opentelemetry.instrumentation.celery")
    if module is None:
        return False
    instrumentor = getattr(module, "CeleryInstrumentor", None)
    if instrumentor is None or not instrumentor().is_instrumented_by_opentelemetry:
        return False
    return connect(send_pii)


# ----------------------------------------------------------------------------------- helpers


def _task_span(prefix: str, task_name: Any) -> Any:
    """The current span when it is OpenTelemetry's span of this task (``prefix/<name>``)."""
    span = trace.get_current_span()
    if not span.is_recording() or getattr(span, "name", None) != f"{prefix}/{task_name}":
        return None
    return span


def broker_system(app: Any, write: bool) -> str | None:
    """The kombu driver type of an app's broker (``redis``, ``amqp``...), cached per URL."""
    conf = app.conf
    url = (conf.broker_write_url if write else conf.broker_read_url) or conf.broker_url
    key = f"{write}:{url!r}"
    found = _systems.get(key)
    if found is None:
        connection = app.connection_for_write() if write else app.connection_for_read()
        try:  # a kombu Connection connects lazily: nothing is opened here
            found = str(connection.transport.driver_type)
        finally:
            connection.release()
        if len(_systems) > 64:
            _systems.clear()
        _systems[key] = found
    return found or None


def body_size(body: Any, serializer: str | None) -> int | None:
    """Bytes of the serialized message body (before compression), as kombu serializes it;
    None when the serializer refuses it (a ``serializer=`` given to one call, say)."""
    serialization = import_module("kombu.serialization")
    try:
        _content_type, encoding, payload = serialization.dumps(body, serializer=serializer)
    except Exception:
        return None
    if isinstance(payload, bytes):
        return len(payload)
    if isinstance(payload, str):
        return len(payload.encode(encoding or "utf-8"))
    return None


def enqueued_time(request: Any) -> float | None:
    """The enqueue stamp of a task request (a message header), or None."""
    value = getattr(request, ENQUEUED_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            value = headers.get(ENQUEUED_HEADER)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text[:MAX_ARGUMENT_CHARS]


# ----------------------------------------------------------------------------------- signals


def _before_publish(sender: Any = None, body: Any = None, headers: Any = None,
                    **_: Any) -> None:
    with handle_internal_errors("celery.before_task_publish"):
        if isinstance(headers, dict):
            headers[ENQUEUED_HEADER] = time.time()
        span = _task_span("apply_async", sender)
        if span is None:
            return
        if isinstance(headers, dict):
            retries = headers.get("retries")
            if type(retries) is int:
                span.set_attribute(RETRY_COUNT, retries)
        current_app = import_module("celery").current_app
        task = current_app.tasks.get(sender) if isinstance(sender, str) else None
        app = getattr(task, "app", None) or current_app
        system = broker_system(app, write=True)
        if system:
            span.set_attribute("messaging.system", system)
        if span.get_span_context().trace_flags.sampled:  # its transaction is sent
            # measuring means serializing the body once more: only when it is reported
            serializer = getattr(task, "serializer", None) or app.conf.task_serializer
            size = body_size(body, serializer)
            if size is not None:
                span.set_attribute(BODY_SIZE, size)


def _prerun(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    with handle_internal_errors("celery.task_prerun"):
        span = _task_span("run", getattr(task, "name", None))
        if span is None:
            return
        request = task.request
        if not getattr(request, "is_eager", False):  # an eager task never saw a broker
            enqueued = enqueued_time(request)
            # a task with an ETA or countdown waited on purpose: that is no receive latency
            if enqueued is not None and getattr(request, "eta", None) is None:
                start = getattr(span, "start_time", None)
                started = start / 1e9 if type(start) is int else time.time()
                span.set_attribute(LATENCY, max(0.0, (started - enqueued) * 1000.0))
            system = broker_system(task.app, write=False)
            if system:
                span.set_attribute("messaging.system", system)
            if span.get_span_context().trace_flags.sampled:
                # The body as the producer serialized it: (args, kwargs, embed), protocol 2.
                embed = {key: getattr(request, key, None)
                         for key in ("callbacks", "errbacks", "chain", "chord")}
                size = body_size((list(args or ()), dict(kwargs or {}), embed),
                                 getattr(task, "serializer", None)
                                 or task.app.conf.task_serializer)
                if size is not None:
                    span.set_attribute(BODY_SIZE, size)
        if _state["send_pii"]:
            if isinstance(args, (list, tuple)):
                span.set_attribute(ARGS, [_short_repr(a) for a in args[:MAX_ARGUMENTS]])
            if isinstance(kwargs, dict):
                for name in list(kwargs)[:MAX_ARGUMENTS]:
                    span.set_attribute(KWARGS_PREFIX + str(name), _short_repr(kwargs[name]))


def _retry(sender: Any = None, reason: Any = None, **_: Any) -> None:
    with handle_internal_errors("celery.task_retry"):
        # ``reason`` is Celery's Retry; its ``exc`` the exception that caused it, if any (a
        # bare ``self.retry()`` is control flow: no error).
        cause = getattr(reason, "exc", None)
        if not isinstance(cause, Exception):
            return
        span = _task_span("run", getattr(sender, "name", None))
        if span is not None:
            span.record_exception(cause, escaped=False)
