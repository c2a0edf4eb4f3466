"""The producer of tests/test_celery.py: a Flask app whose view calls ``apply_async``.

Run under ``opentelemetry-instrument`` with ``APPS_CELERY_PORT``, ``CELERY_BROKER_URL`` and
``CELERY_QUEUE``. ``POST /enqueue/<task>`` (JSON ``{"args": [...], "kwargs": {...}}``) answers
the task id and the ids of the request's span; ``/health`` and ``/flush`` are not traced
(``OTEL_PYTHON_FLASK_EXCLUDED_URLS``).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from flask import Flask, Response, jsonify, request
from opentelemetry import trace
from tasks import app as celery_app
from werkzeug.serving import make_server

web = Flask("bridge_test_web")


@web.get("/health")
def health() -> Response:
    return Response("ok", mimetype="text/plain")


@web.post("/flush")
def flush() -> Response:
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return jsonify({"flushed": bool(force_flush(10_000)) if force_flush else False})


@web.post("/enqueue/<name>")
def enqueue(name: str) -> Response:
    body: dict[str, Any] = request.get_json(silent=True) or {}
    task = celery_app.tasks[f"bridge_test.{name}"]
    result = task.apply_async(body.get("args", ()), body.get("kwargs", {}))
    ctx = trace.get_current_span().get_span_context()
    return jsonify({"task_id": result.id, "trace_id": f"{ctx.trace_id:032x}",
                    "span_id": f"{ctx.span_id:016x}", "sampled": ctx.trace_flags.sampled})


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server = make_server("127.0.0.1", int(os.environ["APPS_CELERY_PORT"]), web, threaded=True)
    server.serve_forever()
