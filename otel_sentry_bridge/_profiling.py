"""Profiling: sentry-sdk's continuous profiler, its profile chunks linked to our transactions.

Opt-in (``SENTRY_BRIDGE_PROFILING``). sentry-sdk samples the stacks of every thread (101 Hz) and
sends them as ``profile_chunk`` envelope items through a sentry-sdk client's transport, each
naming its profiler session (``profiler_id``). A transaction links to them the way sentry-sdk's
own do: ``contexts.profile.profiler_id`` names the session, ``thread.id``/``thread.name`` in its
trace data and in each span's data name the thread whose samples belong to it, and its start
and end times select the samples.

- With no active sentry-sdk client, :func:`setup_profiling` starts a minimal one for the
  profiler alone: ``SENTRY_DSN``, no integrations, no tracing, every event dropped in
  ``before_send`` (the bridge already reports errors), no client reports, no sessions.
- An app that calls ``sentry_sdk.init(profile_session_sample_rate=...)`` itself (before or
  after the bridge starts) keeps its own client and profiler; the bridge links to that one.

:class:`ProfileLinker`, a span processor, stamps each sampled span with its thread (OTel's
``thread.id``/``thread.name``) and each local root with the profiler session running at its
start (``sentry.profiler_id``); for ``profile_lifecycle="trace"`` it also opens a profile while
a local root runs, as sentry-sdk does for its own transactions. :func:`link_profile` (called by
the worker for each transaction while :data:`ACTIVE`) moves the session id into
``contexts.profile`` and writes the thread ids as strings, as sentry-sdk and Sentry's UI have
them. Nothing here runs, and sentry-sdk's profiler is never touched, while profiling is off.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from ._internal_errors import handle_internal_errors, log_internal_error, logger

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: Local-root attribute: the profiler session running when the root started.
PROFILER_ID_ATTR = "sentry.profiler_id"
#: OpenTelemetry semantic-convention attributes of the thread a span started on.
THREAD_ID = "thread.id"
THREAD_NAME = "thread.name"
#: sentry-sdk's transport thread: its requests (traced by urllib3 instrumentation) start no
#: profile, or each profile chunk sent would start the next one.
SDK_THREAD_PREFIX = "sentry-sdk."
#: At most this many trace-lifecycle profiles open at once (roots that never end stay bounded).
MAX_OPEN_PROFILES = 10_000
LIFECYCLES = ("manual", "trace")

#: True once :func:`setup_profiling` linked a profiler: the worker then calls
#: :func:`link_profile` for each transaction (one attribute read per transaction otherwise).
ACTIVE = False
_SETUP_DONE = False


class ProfileLinker(SpanProcessor):
    """While a profiler session runs, stamps sampled spans with their thread and local roots
    with the session id.

    ``keep_running`` keeps a manual-lifecycle profiler running (it restarts after a fork, in
    the child); ``trace_start`` opens a trace-lifecycle profile (``None`` when the profiler is
    not in that lifecycle or not sampled); ``profiler_id`` reads the running session's id.
    """

    def __init__(
        self,
        keep_running: Callable[[], None],
        trace_start: Callable[[], Any],
        profiler_id: Callable[[], str | None],
        first_root: Callable[[], None] | None = None,
    ) -> None:
        self._keep_running = keep_running
        self._trace_start = trace_start
        self._profiler_id = profiler_id
        self._first_root = first_root
        self._profiles: dict[int, Any] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.context
        if not context.trace_flags.sampled:
            return
        try:
            thread = threading.current_thread()
            parent = span.parent
            root = (parent is None or parent.is_remote) and not thread.name.startswith(
                SDK_THREAD_PREFIX
            )
            profiler_id = self._root_started(context.span_id) if root else self._profiler_id()
            if not profiler_id:
                return  # no profiler session runs: nothing to link to
            attributes: dict[str, str | int] = {THREAD_ID: thread.ident or 0,
                                                THREAD_NAME: thread.name}
            if root:
                attributes[PROFILER_ID_ATTR] = profiler_id
            span.set_attributes(attributes)
        except Exception as exc:
            log_internal_error("ProfileLinker.on_start", exc)

    def _root_started(self, span_id: int) -> str | None:
        first_root, self._first_root = self._first_root, None
        if first_root is not None:
            first_root()
        self._keep_running()
        if len(self._profiles) < MAX_OPEN_PROFILES:
            profile = self._trace_start()
            if profile is not None:
                self._profiles[span_id] = profile
        return self._profiler_id()

    def on_end(self, span: ReadableSpan) -> None:
        if not self._profiles:
            return
        try:
            profile = self._profiles.pop(span.context.span_id, None)
            if profile is not None:
                profile.stop()
        except Exception as exc:
            log_internal_error("ProfileLinker.on_end", exc)

    @property
    def open_profiles(self) -> int:
        """Trace-lifecycle profiles still open (their roots have not ended)."""
        return len(self._profiles)


def link_profile(event: dict[str, Any], fallback_id: str | None = None) -> None:
    """Give a mapped transaction sentry-sdk's profile link: ``contexts.profile.profiler_id``
    (from its root's ``sentry.profiler_id``; else ``fallback_id`` when a session ran as the
    root started, e.g. a root whose local parent was never seen) and ``thread.id`` as text in
    its trace data and span data. Dicts the mapping may share are copied, never changed."""
    contexts = event.get("contexts")
    if not isinstance(contexts, dict):
        return
    trace = contexts.get("trace")
    profiler_id: Any = None
    if isinstance(trace, dict) and isinstance(trace.get("data"), dict):
        data = dict(trace["data"])
        profiler_id = data.pop(PROFILER_ID_ATTR, None)
        if not profiler_id and THREAD_ID in data:  # stamped: a session was running
            profiler_id = fallback_id
        _thread_id_as_text(data)
        trace["data"] = data
    if isinstance(profiler_id, str) and profiler_id:
        contexts["profile"] = {"profiler_id": profiler_id}
    for span in event.get("spans", ()):
        span_data = span.get("data")
        if isinstance(span_data, dict) and type(span_data.get(THREAD_ID)) is int:
            span_data = dict(span_data)
            _thread_id_as_text(span_data)
            span["data"] = span_data


def _thread_id_as_text(data: dict[str, Any]) -> None:
    value = data.get(THREAD_ID)
    if type(value) is int:
        data[THREAD_ID] = str(value)  # Sentry's UI compares it with the profile's thread ids


def current_profiler_id() -> str | None:
    """The running profiler session's id (``None`` when none runs); for :func:`link_profile`."""
    from sentry_sdk.profiler.continuous_profiler import get_profiler_id

    return get_profiler_id()


def setup_profiling(provider: TracerProvider, pipeline: Pipeline) -> bool:
    """With ``SENTRY_BRIDGE_PROFILING`` on: make sure a sentry-sdk client with the continuous
    profiler exists (a minimal one when the app has none), start it, and add the
    :class:`ProfileLinker` to ``provider``. Once per process; ``False`` when nothing was done."""
    global ACTIVE, _SETUP_DONE
    cfg = pipeline.cfg
    if not cfg.profiling or _SETUP_DONE:
        return False
    import sentry_sdk
    from sentry_sdk.profiler import continuous_profiler

    if not sentry_sdk.get_client().is_active() and not _init_client(provider, pipeline):
        return False
    _SETUP_DONE = True
    flush_at_exit = _exit_flush(cfg.shutdown_timeout)

    def first_root() -> None:
        # Registered again at the first root, after an app's own sentry_sdk.init() (whose exit
        # hook closes its client): exit hooks run last registered first.
        atexit.register(flush_at_exit)

    linker = ProfileLinker(
        keep_running=continuous_profiler.start_profiler,
        trace_start=continuous_profiler.try_profile_lifecycle_trace_start,
        profiler_id=continuous_profiler.get_profiler_id,
        first_root=first_root,
    )
    provider.add_span_processor(linker)
    continuous_profiler.start_profiler()  # manual lifecycle: runs from now on (else a no-op)
    atexit.register(flush_at_exit)
    ACTIVE = True
    logger.debug("otel-sentry-bridge: profiling on (sentry-sdk continuous profiler, session "
                 "%s)", continuous_profiler.get_profiler_id() or "not started yet")
    return True


def _init_client(provider: TracerProvider, pipeline: Pipeline) -> bool:
    """A sentry-sdk client for the profiler alone (its chunks need a transport)."""
    import sentry_sdk

    from ._mapping.context import resource_fields

    cfg = pipeline.cfg
    if not (cfg.dsn or cfg.spotlight):
        logger.warning("otel-sentry-bridge: SENTRY_BRIDGE_PROFILING needs SENTRY_DSN (or "
                       "SENTRY_SPOTLIGHT); profiling stays off")
        return False
    fields = resource_fields(dict(provider.resource.attributes), pipeline.mapping)
    rate = cfg.profile_session_sample_rate
    options: dict[str, Any] = {
        "dsn": cfg.dsn,
        "release": fields.get("release"),
        "environment": fields.get("environment"),
        "debug": cfg.debug,
        "default_integrations": False,
        "auto_enabling_integrations": False,
        "traces_sample_rate": None,
        "before_send": _drop,
        "before_send_transaction": _drop,
        "before_send_log": _drop,
        "send_client_reports": False,
        "auto_session_tracking": False,
        "max_breadcrumbs": 0,
        "profile_session_sample_rate": 1.0 if rate is None else rate,
        "profile_lifecycle": cfg.profile_lifecycle,
    }
    if cfg.spotlight:
        options["spotlight"] = cfg.spotlight
    sentry_sdk.init(**options)
    _CLIENT.append(sentry_sdk.get_client())
    logger.debug("otel-sentry-bridge: started a sentry-sdk client for the profiler only")
    return True


def _drop(event: Any, hint: Any) -> None:
    """``before_send`` of the profiling-only client: the bridge reports errors itself."""
    del event, hint


_FLUSHED: list[bool] = []
#: the profiling-only client the bridge created (flushed at exit even after an app's own init)
_CLIENT: list[Any] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_FLUSHED.clear)  # a forked child flushes its own


def _exit_flush(timeout: float) -> Callable[[], None]:
    def flush() -> None:
        if _FLUSHED:  # registered more than once (and called from exit_flush): once is enough
            return
        _FLUSHED.append(True)
        with handle_internal_errors("profiling.exit_flush"):
            import sentry_sdk
            from sentry_sdk.profiler import continuous_profiler

            continuous_profiler.stop_profiler()  # sends the last chunk (manual lifecycle)
            # The trace lifecycle has no public stop: end its sampler thread the same way, so
            # the chunk of the last root is handed to the transport before the flush.
            scheduler = getattr(continuous_profiler, "_scheduler", None)
            if getattr(scheduler, "lifecycle", None) == "trace":
                scheduler.teardown()  # type: ignore[union-attr]
            clients = [*_CLIENT, sentry_sdk.get_client()]
            deadline = time.monotonic() + timeout
            for client in dict.fromkeys(clients):  # one budget for both
                client.flush(timeout=max(0.0, deadline - time.monotonic()))

    return flush


def flush_profiler(timeout: float) -> None:
    """On SIGTERM or at exit (``_process_hooks.exit_flush``): hand the last profile chunk to
    the transport and flush it; nothing when profiling is off."""
    if ACTIVE:
        _exit_flush(timeout)()
