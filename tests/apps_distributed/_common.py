"""What the three services of tests/test_distributed.py share (gateway -> orders -> payments).

Each service is a small Flask app run under ``opentelemetry-instrument``; nothing here touches
the bridge, its sampler or its propagator (the ``opentelemetry_pre_instrument`` hook installs
them). Every traced endpoint answers JSON with:

* ``trace``: the ids and sampling flag of the current (server) span;
* ``received``: the raw trace headers of the incoming request, one ``[name, value]`` pair per
  header line as it came on the wire (WSGI's ``environ`` joins repeated headers with commas, so
  the list is taken from the HTTP request handler before that happens).

``/health``, ``/flush`` and ``/introspect`` are left out of tracing by
``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` (set by the test).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from flask import Flask, Response, jsonify, request
from opentelemetry import propagate, trace
from werkzeug.serving import WSGIRequestHandler, make_server

TRACE_HEADERS = ("traceparent", "tracestate", "sentry-trace", "baggage")
RAW_HEADERS_KEY = "distributed.raw_headers"


class RawHeadersHandler(WSGIRequestHandler):
    """Werkzeug's handler, also leaving the unmerged header lines in ``environ``."""

    def make_environ(self) -> Any:
        environ = super().make_environ()
        environ[RAW_HEADERS_KEY] = [[name.lower(), value] for name, value in self.headers.items()]
        return environ


def received_trace_headers() -> list[list[str]]:
    """The incoming request's trace header lines, unmerged, in order."""
    raw = request.environ.get(RAW_HEADERS_KEY, [])
    return [[name, value] for name, value in raw if name in TRACE_HEADERS]


def current_trace() -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "sampled": ctx.trace_flags.sampled,
    }


def create_app(name: str) -> Flask:
    """A Flask app with the untraced helper endpoints."""
    app = Flask(name)

    @app.get("/health")
    def health() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/introspect")
    def introspect() -> Response:
        provider = trace.get_tracer_provider()
        return jsonify({
            "propagator": type(propagate.get_global_textmap()).__name__,
            "sampler": type(getattr(provider, "sampler", None)).__name__,
        })

    @app.post("/flush")
    def flush() -> Response:
        # Plain OpenTelemetry: ends up in the bridge's processor (transactions and client
        # reports handed to the receiver before this returns).
        force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        return jsonify({"flushed": bool(force_flush(10_000)) if force_flush else False})

    return app


def port() -> int:
    return int(os.environ["APPS_DISTRIBUTED_PORT"])


def serve(app: Flask) -> None:
    """Serve on 127.0.0.1 (threaded) until SIGTERM, which exits through ``atexit`` (flush)."""
    # Errors (Flask's "Exception on ..." with its traceback) to stderr, access lines not.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server = make_server(
        "127.0.0.1", port(), app, threaded=True, request_handler=RawHeadersHandler
    )
    server.serve_forever()

