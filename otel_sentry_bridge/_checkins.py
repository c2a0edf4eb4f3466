"""Check-ins in flight: the runtime side of Sentry Crons (``docs/crons.md``).

Two ways lead here: ``crons.monitor`` (decorator, context manager) and local root spans with a
``sentry.monitor.slug`` attribute (or named by ``SENTRY_BRIDGE_MONITOR_SPANS``), seen by the
span processor. A run sends ``in_progress`` when it starts and ``ok`` or ``error`` with its
duration when it ends: each is queued on the caller's thread (one small envelope; no network
I/O here), whatever the trace's sampling decision. Runs in progress are kept in a bounded table,
so that the exit path (atexit, SIGTERM) reports the ones the process dies in as ``error``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from ._dsc import dsc_from_event
from ._internal_errors import warn_once as _warn_once
from ._mapping import checkins as ci
from ._mapping.context import resource_fields
from ._mapping.head import describe_root
from ._mapping.spans import raw_attributes
from .envelopes import Outgoing

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: Runs in progress remembered at most (the oldest are forgotten: they then get no ``error``
#: at exit, and a span's run no closing check-in; Sentry times them out by ``max_runtime``).
MAX_OPEN = 1000
#: Span kinds a ``SENTRY_BRIDGE_MONITOR_SPANS`` rule never matches.
_NOT_RUNS = frozenset({SpanKind.PRODUCER, SpanKind.CLIENT})


@dataclass(eq=False)
class Run:
    """One monitored run of a job: what its check-ins say."""

    pipeline: Pipeline
    slug: str
    check_in_id: str
    config: dict[str, Any] | None
    release: str | None
    environment: str | None
    trace_id: int
    span_id: int
    dsc: dict[str, str] | None
    started: float  # time.monotonic()
    #: the root span whose end closes the run (span path); None for ``monitor()``
    span: Any = None
    sent: Outgoing | None = None
    closed: bool = False


_open: OrderedDict[str, Run] = OrderedDict()
_lock = threading.Lock()
def warn_once(problem: str) -> None:
    """Log a problem with a monitor's settings once (they come back at every run)."""
    _warn_once(f"monitor:{problem}", "%s", problem)


def open_runs() -> list[Run]:
    """The runs in progress (tests, ``doctor``)."""
    with _lock:
        return list(_open.values())


def _release_env(pipeline: Pipeline, span: Any) -> tuple[str | None, str | None]:
    resource = getattr(getattr(span, "resource", None), "attributes", None) or {}
    fields = resource_fields(resource, pipeline.mapping)
    return fields.get("release"), fields.get("environment")


def _dsc(pipeline: Pipeline, trace_id: int, release: str | None, environment: str | None,
         sampled: bool, freeze: bool) -> dict[str, str] | None:
    """The trace's DSC (frozen now when still open, as at a first outgoing request, when the
    root is live: ``freeze``)."""
    if not trace_id:
        return None
    traces = pipeline.traces
    entry = traces.get(trace_id)
    if entry is not None and (entry.frozen or freeze):
        if entry.frozen:
            return entry.dsc
        mapping = pipeline.mapping
        return traces.freeze(entry, lambda root: describe_root(root, mapping))
    event = {"contexts": {"trace": {"trace_id": f"{trace_id:032x}"}},
             "release": release, "environment": environment}
    return dsc_from_event(event, traces.defaults, sampled)


def new_run(pipeline: Pipeline, slug: str, span: Any, config: dict[str, Any] | None,
            check_in_id: str | None = None, by_span: bool = False, live: bool = True) -> Run:
    """A run of ``slug`` in ``span`` (nothing sent yet; ``live``: the span has not ended)."""
    context = span.get_span_context()
    valid = context.is_valid
    trace_id = context.trace_id if valid else 0
    release, environment = _release_env(pipeline, span)
    return Run(pipeline, slug, check_in_id or uuid.uuid4().hex, config, release, environment,
               trace_id, context.span_id if valid else 0,
               _dsc(pipeline, trace_id, release, environment, context.trace_flags.sampled,
                    live),
               time.monotonic(), span if by_span else None)


def _submit(run: Run, status: str, duration: float | None = None) -> Outgoing | None:
    # The config goes with every check-in of a run: should the closing one arrive first
    # (a resent envelope), Sentry can still create the monitor from it.
    payload = ci.check_in(run.check_in_id, run.slug, status, environment=run.environment,
                          release=run.release, trace_id=run.trace_id, span_id=run.span_id,
                          duration=duration, config=run.config)
    # after=: the transport sends it once the in_progress is done (the caller never waits)
    return run.pipeline.transport.submit_check_in(payload, run.dsc, after=run.sent)


def begin(pipeline: Pipeline, slug: str, span: Any, config: dict[str, Any] | None,
          check_in_id: str | None = None, by_span: bool = False) -> Run:
    """Start a run: send ``in_progress`` and remember the run until it ends."""
    run = new_run(pipeline, slug, span, config, check_in_id, by_span)
    run.sent = _submit(run, "in_progress")
    with _lock:
        _open[run.check_in_id] = run
        evicted = _open.popitem(last=False)[1] if len(_open) > MAX_OPEN else None
    if evicted is not None:
        warn_once(f"more than {MAX_OPEN} monitored runs in progress: the oldest ones are not "
                  "reported at exit any more")
    return run


def finish(run: Run, status: str, duration: float | None) -> bool:
    """End a run with ``ok`` or ``error`` (once: later calls do nothing)."""
    with _lock:
        if run.closed:
            return False
        run.closed = True
        _open.pop(run.check_in_id, None)
    _submit(run, status, duration)
    return True


@lru_cache(maxsize=8)
def _rules(entries: tuple[str, ...]) -> dict[str, str]:
    rules, problems = ci.compile_rules(entries)
    for problem in problems:
        warn_once(problem)
    return rules


@lru_cache(maxsize=128)
def _config(values: tuple[Any, ...]) -> dict[str, Any] | None:
    config, problems = ci.monitor_config(*values)
    for problem in problems:
        warn_once(problem)
    return config


def _span_config(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    values = tuple(attrs.get(key) for key in (
        ci.SCHEDULE, ci.TIMEZONE, ci.CHECKIN_MARGIN, ci.MAX_RUNTIME,
        ci.FAILURE_ISSUE_THRESHOLD, ci.RECOVERY_THRESHOLD))
    if all(value is None for value in values):
        return None
    try:
        return _config(values)
    except TypeError:  # not hashable: a list value
        return ci.monitor_config(*values)[0]


def _span_slug(pipeline: Pipeline, span: ReadableSpan, attrs: Mapping[str, Any]) -> str | None:
    slug = attrs.get(ci.SLUG)
    if slug is None:
        rules = pipeline.cfg.monitor_spans
        if not rules or span.kind in _NOT_RUNS:
            return None  # sending a task (``apply_async/<task>``) is not running it
        slug = ci.match_rule(_rules(rules), span.name, attrs)
        if slug is None:
            return None
    slug, problem = ci.clean_slug(slug)
    if problem:
        warn_once(problem)
    return slug


def root_started(pipeline: Pipeline, span: Any) -> None:
    """Span processor, a local root starts: a monitored one sends ``in_progress``."""
    attrs = raw_attributes(span)
    if ci.CHECK_IN_ID in attrs:
        return  # ``monitor()`` (or the app) looks after its check-ins
    slug = _span_slug(pipeline, span, attrs)
    if slug is None:
        return
    check_in_id = uuid.uuid4().hex
    span.set_attributes({ci.SLUG: slug, ci.CHECK_IN_ID: check_in_id, ci.SLUG_TAG: slug})
    begin(pipeline, slug, span, _span_config(attrs), check_in_id, by_span=True)


def root_ended(pipeline: Pipeline, span: ReadableSpan) -> None:
    """Span processor, a local root ended: a monitored one sends ``ok`` or ``error``."""
    attrs = raw_attributes(span)
    check_in_id = attrs.get(ci.CHECK_IN_ID)
    if check_in_id is not None:
        run = _open.get(check_in_id) if isinstance(check_in_id, str) else None
        if run is not None and run.span is not None:
            finish(run, ci.span_outcome(span), ci.span_duration(span))
        return  # else ``monitor()``'s, or already reported
    slug = _span_slug(pipeline, span, attrs)
    if slug is not None:
        # Monitored only by its end (the slug or ``celery.task_name`` came late): one closing
        # check-in, which Sentry accepts without an ``in_progress`` before it.
        run = new_run(pipeline, slug, span, _span_config(attrs), by_span=True, live=False)
        finish(run, ci.span_outcome(span), ci.span_duration(span))


def fail_open(pipeline: Pipeline) -> int:
    """At exit: ``error``, with the duration so far, for each run of ``pipeline`` still in
    progress (a root that did end gets what its span says). Returns how many."""
    with _lock:
        runs = [run for run in _open.values() if run.pipeline is pipeline]
    for run in runs:
        span = run.span
        if span is not None and getattr(span, "end_time", None) is not None:
            finish(run, ci.span_outcome(span), ci.span_duration(span))
        else:
            finish(run, "error", time.monotonic() - run.started)
    return len(runs)


def _after_fork() -> None:
    """A forked child reports none of its parent's runs."""
    global _lock
    _lock = threading.Lock()
    for run in _open.values():
        run.closed = True
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
