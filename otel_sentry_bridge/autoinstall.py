"""Zero-code set-up for ``opentelemetry-instrument`` (the ``opentelemetry_post_instrument`` hook).

Runs after the distro, the configurator and every instrumentor, whichever of them ran: with
``SENTRY_DSN`` set (or Spotlight or an envelope folder) it makes sure an SDK ``TracerProvider``
exists, adds the bridge's span processor once, gives redis instrumentation its cache hooks, and
links errors captured by a ``sentry_sdk.init()`` client to the active OTel span.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType

from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource, get_aggregated_resources
from opentelemetry.sdk.trace import TracerProvider

from ._internal_errors import handle_internal_errors, logger
from ._process_hooks import exit_flush
from ._profiling import setup_profiling
from ._sdk_hooks import install_sentry_sdk_hooks
from .logs import SentryLogHandler
from .pipeline import get_pipeline
from .processor import SentrySpanProcessor
from .redis_hooks import reinstrument_redis

_INSTALLED: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def default_resource() -> Resource:
    """Resource for a provider the bridge creates: runtime, host and OTEL_* settings."""
    base = Resource.create({
        "host.name": socket.gethostname(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
        "process.runtime.description": " ".join(platform.python_build()),
        "os.type": platform.system().lower(),
    })
    return get_aggregated_resources([OTELResourceDetector()], initial_resource=base)


def ensure_provider() -> TracerProvider:
    """The global SDK provider; one is created and set when there is none yet."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return provider
    created = TracerProvider(resource=default_resource())
    trace.set_tracer_provider(created)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    return created


def install(provider: TracerProvider | None = None) -> SentrySpanProcessor | None:
    """Add the bridge's processor to ``provider`` (default: the global one), at most once."""
    provider = provider or ensure_provider()
    if provider in _INSTALLED:
        return None
    processor = SentrySpanProcessor()
    if processor.pipeline is None:
        return None
    provider.add_span_processor(processor)
    _INSTALLED.add(provider)
    logger.debug("otel-sentry-bridge: span processor installed")
    _link_sentry_sdk()
    with handle_internal_errors("install.profiling"):  # SENTRY_BRIDGE_PROFILING only
        setup_profiling(provider, processor.pipeline)
    return processor


def _current_trace_context() -> dict[str, str] | None:
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def _link_sentry_sdk() -> None:
    with handle_internal_errors("link_sentry_sdk"):
        install_sentry_sdk_hooks(_current_trace_context)


def flush_on_sigterm(shutdown: Callable[[], None], wait: float = 10.0) -> bool:
    """Flush before a SIGTERM ends the process, when the app keeps Python's default handling.

    Python's default SIGTERM action kills the process without running ``atexit``, so buffered
    transactions would be lost. If nothing else handles SIGTERM (the app or a server installs
    its own handler later, which then simply replaces this one), the bridge flushes (bounded
    by ``SENTRY_BRIDGE_SHUTDOWN_TIMEOUT``) and then lets SIGTERM do what it would have done.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        with handle_internal_errors("sigterm_flush"):
            # On a thread of its own: the signal may have interrupted the main thread inside
            # a lock the flush needs (a metric instrument's, a logging handler's); waiting for
            # it here would never end. The wait is bounded instead.
            worker = threading.Thread(target=shutdown, name="otel-sentry-bridge-sigterm",
                                      daemon=True)
            worker.start()
            worker.join(wait)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)
    return True


def post_instrument() -> None:
    """Entry point ``opentelemetry_post_instrument: sentry_bridge``."""
    with handle_internal_errors("post_instrument"):
        pipeline = get_pipeline()  # reports bad settings (e.g. a malformed DSN) once
        cfg = pipeline.cfg
        if not pipeline.enabled:
            return
        install()
        with handle_internal_errors("post_instrument.sigterm"):
            flush_on_sigterm(lambda: exit_flush(pipeline), cfg.shutdown_timeout + 0.5)
        if cfg.redis_cache_spans:
            with handle_internal_errors("post_instrument.redis"):
                reinstrument_redis()
        if "opentelemetry.instrumentation.celery" in sys.modules:  # celery is instrumented
            with handle_internal_errors("post_instrument.celery"):
                from .celery_hooks import install_celery_hooks  # noqa: PLC0415 (celery only)

                install_celery_hooks(cfg.send_default_pii)
        if cfg.logs:
            with handle_internal_errors("post_instrument.logs"):
                install_log_handler(cfg.log_level)


def install_log_handler(level: int) -> bool:
    """Add one :class:`SentryLogHandler` to the root logger (never two). The loggers' own
    levels are left alone: a record they filter out reaches no handler, ours included."""
    root = logging.getLogger()
    if any(isinstance(h, SentryLogHandler) for h in root.handlers):
        return False
    root.addHandler(SentryLogHandler(level))
    return True
