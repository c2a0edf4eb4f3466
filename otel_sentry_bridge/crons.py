"""Scheduled jobs as Sentry Crons: ``monitor(slug, schedule=...)`` (docs/crons.md).

``monitor`` is a decorator (sync and async functions) and a context manager (``with`` and
``async with``). Each run starts an OpenTelemetry span named after the slug (its transaction
in Sentry, source ``task``), sends an ``in_progress`` check-in linked to that span's trace, and
at the end ``ok`` or ``error`` with the duration: ``error`` when an exception leaves the job
(also ``KeyboardInterrupt``, ``asyncio.CancelledError`` and ``SystemExit`` with a non-zero
code), and when the process dies during the run (atexit, SIGTERM). With a schedule, the monitor
is created or updated in Sentry from the check-ins (upsert).

Plain OpenTelemetry code gets the same from a local root span that carries the attribute
:data:`MONITOR_SLUG` (and optionally :data:`MONITOR_SCHEDULE` and the others below), or whose
name ``SENTRY_BRIDGE_MONITOR_SPANS`` lists.

The job's result and exceptions are never changed; a failure of the monitoring itself is logged
once and never raised.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
import uuid
from collections.abc import Callable
from datetime import timedelta, tzinfo
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import _checkins
from ._internal_errors import log_internal_error
from ._mapping import checkins as ci
from .conventions import Attr, Source
from .pipeline import get_pipeline
from .version import __version__

__all__ = [
    "MONITOR_CHECKIN_MARGIN", "MONITOR_FAILURE_ISSUE_THRESHOLD", "MONITOR_MAX_RUNTIME",
    "MONITOR_RECOVERY_THRESHOLD", "MONITOR_SCHEDULE", "MONITOR_SLUG", "MONITOR_TIMEZONE",
    "Schedule", "monitor",
]

#: Span attributes read from a local root span at its start (docs/crons.md#span-attributes).
MONITOR_SLUG = ci.SLUG
MONITOR_SCHEDULE = ci.SCHEDULE
MONITOR_TIMEZONE = ci.TIMEZONE
MONITOR_CHECKIN_MARGIN = ci.CHECKIN_MARGIN
MONITOR_MAX_RUNTIME = ci.MAX_RUNTIME
MONITOR_FAILURE_ISSUE_THRESHOLD = ci.FAILURE_ISSUE_THRESHOLD
MONITOR_RECOVERY_THRESHOLD = ci.RECOVERY_THRESHOLD

#: A crontab (``"0 3 * * *"``, ``"@daily"``), an interval (``timedelta(hours=6)``,
#: ``(6, "hour")``, ``"6 hours"``): whole minutes, units minute to year.
Schedule = str | timedelta | tuple[int, str]
F = TypeVar("F", bound=Callable[..., Any])

_TRACER_NAME = "otel_sentry_bridge.crons"


def _failed(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, SystemExit):
        return exc.code not in (None, 0)
    return True


def _span_attributes(slug: str, check_in_id: str, config: dict[str, Any] | None
                     ) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        ci.SLUG: slug, ci.CHECK_IN_ID: check_in_id, ci.SLUG_TAG: slug,
        Attr.SENTRY_NAME[0]: slug, Attr.SENTRY_SOURCE[0]: Source.TASK,
    }
    for key, value in (config or {}).items():
        if key == "schedule":
            value = value["value"] if value["type"] == "crontab" else \
                f"{value['value']} {value['unit']}"
        attributes[f"sentry.monitor.{key}"] = value
    return attributes


class _Run:
    """One run of a monitored job: its span and its check-ins."""

    __slots__ = ("check_in", "monitor", "span", "token")

    def __init__(self, monitor: monitor) -> None:
        self.monitor = monitor
        self.span: trace.Span | None = None
        self.token: contextvars.Token[otel_context.Context] | None = None
        self.check_in: _checkins.Run | None = None

    def start(self) -> None:
        spec = self.monitor
        slug = spec.slug
        if slug is None:
            return
        try:
            check_in_id = uuid.uuid4().hex
            provider = spec.tracer_provider or trace.get_tracer_provider()
            span = provider.get_tracer(_TRACER_NAME, __version__).start_span(
                slug, attributes=_span_attributes(slug, check_in_id, spec.config))
            self.span = span
            self.token = otel_context.attach(trace.set_span_in_context(span))
            pipeline = get_pipeline()
            if pipeline.enabled:
                self.check_in = _checkins.begin(pipeline, slug, span, spec.config, check_in_id)
        except Exception as exc:
            log_internal_error("crons.monitor.start", exc)

    def finish(self, exc: BaseException | None) -> None:
        failed = _failed(exc)
        run = self.check_in
        if run is not None:
            try:
                _checkins.finish(run, "error" if failed else "ok",
                                 time.monotonic() - run.started)
            except Exception as error:
                log_internal_error("crons.monitor.finish", error)
        span = self.span
        if span is None:
            return
        try:
            if isinstance(exc, Exception):
                span.record_exception(exc, escaped=True)
            if failed and exc is not None:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        except Exception as error:
            log_internal_error("crons.monitor.record", error)
        finally:
            try:
                if self.token is not None:
                    otel_context.detach(self.token)
                span.end()
            except Exception as error:
                log_internal_error("crons.monitor.end", error)


class monitor:  # a decorator and a context manager, lower case like sentry-sdk's
    """Report each run of a job to Sentry Crons as the monitor ``slug``.

    ``schedule``: a crontab string or an interval (whole minutes); with it, the monitor is
    created or updated in Sentry (``timezone``, an IANA name; ``checkin_margin`` and
    ``max_runtime``, minutes or ``timedelta``; ``failure_issue_threshold`` and
    ``recovery_threshold``, runs). Without it the monitor must exist in Sentry. An invalid
    value is logged once and left out. ``tracer_provider``: where the job's span is started
    (default: the global provider).
    """

    def __init__(
        self, slug: str, schedule: Schedule | None = None, *,
        timezone: str | tzinfo | None = None,
        checkin_margin: int | timedelta | None = None,
        max_runtime: int | timedelta | None = None,
        failure_issue_threshold: int | None = None,
        recovery_threshold: int | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.slug: str | None = None
        self.config: dict[str, Any] | None = None
        self.tracer_provider = tracer_provider
        self._runs: contextvars.ContextVar[tuple[_Run, ...]] = contextvars.ContextVar(
            "otel_sentry_bridge.monitor", default=())
        try:
            self.slug, problem = ci.clean_slug(slug)
            self.config, problems = ci.monitor_config(
                schedule, timezone, checkin_margin, max_runtime, failure_issue_threshold,
                recovery_threshold)
            for text in ([problem] if problem else []) + problems:
                _checkins.warn_once(text)
        except Exception as exc:
            log_internal_error("crons.monitor", exc)

    def __repr__(self) -> str:
        return f"monitor({self.slug!r}, config={self.config!r})"

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> monitor:
        run = _Run(self)
        run.start()
        self._runs.set((*self._runs.get(), run))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        runs = self._runs.get()
        if runs:
            self._runs.set(runs[:-1])
            runs[-1].finish(exc)
        return False

    async def __aenter__(self) -> monitor:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Literal[False]:
        return self.__exit__(kind, exc, tb)

    # ------------------------------------------------------------ decorator
    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                run = _Run(self)
                run.start()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    run.finish(exc)
                    raise
                run.finish(None)
                return result

            return cast(F, run_async)

        @functools.wraps(func)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            run = _Run(self)
            run.start()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                run.finish(exc)
                raise
            run.finish(None)
            return result

        return cast(F, run_sync)
