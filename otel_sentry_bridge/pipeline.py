"""One pipeline per process: span intake -> trace buffer -> mapping -> transport.

The application's threads only append to a bounded deque (``on_start``/``on_end`` cost well
under a microsecond each); one worker thread groups spans by local root, maps finished segments
(pure mapping), and hands serialized envelopes to the transport's sender threads. Log items
wait in a :class:`~otel_sentry_bridge._log_queue.LogQueue`; exit and fork handling is
registered by ``_process_hooks.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList

from ._dsc import TraceRegistry
from ._error_inputs import start_error_inputs
from ._internal_errors import handle_internal_errors, logger
from ._log_queue import LOG_BATCH, LOG_INTERVAL, LogQueue
from ._mapping import MappingContext, SpanMapper
from ._process_hooks import register_process_hooks
from ._rules_env import context_env
from ._sampling_support import dsc_defaults
from ._send import send_segment
from .buffer import OpenRoot, TraceBuffer
from .config import BridgeConfig, load_config
from .filters import EventFilter
from .reports import DropCounter
from .transport import Transport
from .version import __version__

__all__ = [
    "DRAIN_BATCH", "IDLE_WAIT", "LOG_BATCH", "LOG_INTERVAL", "LOG_QUEUE_CAP",
    "OUTAGE_INTAKE_DIVISOR", "SHUTDOWN_DRAIN_WAIT", "SUBMIT_BUDGET", "Pipeline",
    "create_pipeline", "get_pipeline", "reset_pipeline",
]

IDLE_WAIT = 0.05
#: Longest total time one worker round may wait for room in a full send queue (seconds).
SUBMIT_BUDGET = 2.0
DRAIN_BATCH = 8192
#: While Sentry is unreachable the intake holds at most max_buffered_spans / this.
OUTAGE_INTAKE_DIVISOR = 10
#: Log items: at most this many waiting (more are dropped and counted); read by ``on_log`` at
#: each call. Batching (LOG_BATCH, LOG_INTERVAL, importable from here): see ``_log_queue.py``.
LOG_QUEUE_CAP = 1_000
#: How long shutdown waits for the worker's batch to finish before counting what is left.
SHUTDOWN_DRAIN_WAIT = 0.5


class Pipeline:
    """Intake queue, worker thread, trace buffer, mapping and transport."""

    def __init__(self, cfg: BridgeConfig, sink: Callable[[bytes], None] | None = None) -> None:
        self.cfg = cfg
        self.drops = DropCounter()
        self.transport = Transport(cfg, self.drops, sink=sink)
        self.mapping = MappingContext.from_config(cfg, __version__, context_env(cfg),
                                                  logger.warning)
        self.mapper = SpanMapper(self.mapping)
        filters = EventFilter(cfg)
        self.filters: EventFilter | None = filters if filters.active else None
        self.buffer = self._new_buffer()
        # Three intake deques, appended to by the application's threads without locks:
        # started spans, ended spans (processor) and exported spans (exporter, no starts).
        self.starts: deque[ReadableSpan] = deque()
        self.queue: deque[ReadableSpan] = deque()
        self.exported: deque[ReadableSpan] = deque()
        self.logs = LogQueue()
        #: SentryLogExporter instances feeding this pipeline (for the exit hook)
        self.log_exporters = self.metric_exporters = 0
        self.queue_cap = self.full_cap = cfg.max_buffered_spans
        self.starts_seen = False
        self.processors = 0
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._stopped = False
        self.submit_budget = 0.0
        self.lost_starts: set[int] = set()
        self.lost_cap = max(10_000, 4 * self.queue_cap)
        self.buffer.lost_starts = self.lost_starts
        self.wake_at = min(DRAIN_BATCH, max(1, self.queue_cap // 4))
        self.enabled = cfg.active and self.transport.enabled
        self.traces = TraceRegistry(dsc_defaults(cfg, self.transport.public_key))

    def _new_buffer(self) -> TraceBuffer:
        cfg = self.cfg
        return TraceBuffer(
            grace=cfg.late_span_grace,
            timeout=cfg.buffer_timeout,
            max_spans=cfg.max_spans,
            max_buffered_spans=cfg.max_buffered_spans,
            max_buffered_bytes=cfg.max_buffered_bytes * 3 // 4,
            on_drop=self.drops.record,
            partial_segments=cfg.partial_segments,
        )

    # ------------------------------------------------------------ app thread
    def on_start(self, span: ReadableSpan) -> None:
        """Hot path: remember a start (processor mode)."""
        starts = self.starts
        if len(starts) < self.queue_cap:
            starts.append(span)
            if self._worker is None:
                self._start_worker()
        elif len(self.lost_starts) < self.lost_cap:
            # Remember whose start was lost: its end (and its children) are then grouped
            # without start knowledge instead of becoming stray transactions.
            self.lost_starts.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        """Hot path: hand a finished span to the worker."""
        queue = self.queue
        if len(queue) < self.queue_cap:
            # An ended SDK span keeps an empty bounded list (a deque) for its events and one
            # for its links: about 1.9 KB of a 3 KB span. Empty tuples read the same
            # (``events``, ``links``, ``dropped_*``: the lists were empty and dropped nothing)
            # and let a span waiting in the intake cost a third as much.
            events = span._events
            if type(events) is BoundedList and not events and not events.dropped:
                span._events = ()
            links = span._links
            if type(links) is BoundedList and not links and not links.dropped:
                span._links = ()
            queue.append(span)
            if self._worker is None:
                self._start_worker()
            elif len(queue) > self.wake_at and not self._wake.is_set():
                self._wake.set()
        else:
            self.drops.record("queue_overflow", "span", 1)
            parent = span.parent
            if parent is None or parent.is_remote:
                self.drops.record("queue_overflow", "transaction", 1)
            span_id = span.context.span_id
            lost = self.lost_starts
            if lost and span_id in lost:
                lost.discard(span_id)  # its start was lost too: the worker never saw it
            else:
                # the worker must not wait for this span (nor send its transaction if a root)
                self.buffer.note_dropped_end(span_id, time.monotonic())

    def on_log(self, item: tuple[Any, ...]) -> None:
        """Hot path: a log record for the worker (``("python", record, body, trace, span)``
        or ``("otel", log_record)``)."""
        logs = self.logs
        if self._stopped or not logs.add(item, LOG_QUEUE_CAP):
            self.drops.record("queue_overflow", "log_item", 1)
            return
        if self._worker is None:
            self._start_worker()
        elif len(logs) >= LOG_BATCH and not self._wake.is_set():
            self._wake.set()

    @property
    def fallback_trace_id(self) -> int:
        """Trace id of log records and metric points made outside any span (one per process,
        as a scope's)."""
        return self.logs.trace_id

    def export(self, spans: Any) -> None:
        """Exporter path: finished spans without start events."""
        exported = self.exported
        for span in spans:
            if len(exported) < self.queue_cap:
                exported.append(span)
            else:
                self.drops.record("queue_overflow", "span", 1)
        if self._worker is None:
            self._start_worker()
        self._wake.set()

    # ------------------------------------------------------------ worker
    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is not None or self._stopped:
                return
            thread = threading.Thread(target=self._run, name="otel-sentry-bridge-worker",
                                      daemon=True)
            self._worker = thread
            thread.start()
            start_error_inputs(self.cfg)

    def _run(self) -> None:
        with suppress_instrumentation():
            while not self._stopped:
                if len(self.queue) < DRAIN_BATCH:
                    self._wake.wait(IDLE_WAIT)
                    self._wake.clear()
                with handle_internal_errors("pipeline.worker"):
                    self.process(force=False)

    def process(self, force: bool, deadline: float | None = None) -> int:
        """Drain the intake queue into the buffer; map and send what is ready.

        Works in batches: spans that keep arriving while we drain wait for the next batch, and
        ready segments are collected after each batch, so memory is released at a steady pace
        (also during a flush of a large backlog).
        """
        sent = 0
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            return 0  # another thread is mid-batch and the deadline passed
        try:
            # A full send queue may hold up our own worker a little (backpressure), never a
            # flush: that must stay bounded.
            self.submit_budget = 0.0 if force else SUBMIT_BUDGET
            while True:
                now = time.monotonic()
                if not self._stopped:
                    # While Sentry is unreachable, a burst is not worth holding at full size:
                    # the intake shrinks (what it turns away is counted) and grows back as
                    # soon as a send succeeds. The send queue still holds what can be resent.
                    self.queue_cap = (max(1, self.full_cap // OUTAGE_INTAKE_DIVISOR)
                                      if self.transport.backing_off else self.full_cap)
                drained = self._drain(now, DRAIN_BATCH)
                ready = self.buffer.collect(now, force=force)
                # Mapped under the lock too, so a flush returns only after segments that
                # another thread collected were handed to the transport.
                for root, children in ready:
                    with handle_internal_errors("pipeline.map"):
                        self._send(root, children)
                sent += len(ready)
                if self.logs:
                    self.logs.send(now, force, self.mapping, self.transport)
                if not force or not (self.queue or self.exported) or not drained:
                    return sent
                if deadline is not None and time.monotonic() >= deadline:
                    return sent
        finally:
            self._lock.release()

    def _drain(self, now: float, limit: int) -> int:
        """Move up to ``limit`` ended spans (and every start before them) into the buffer.

        Ordering: the number of ended spans is read first, then all starts are drained, then
        that many ends: a span's start was appended before its end, so it is always seen first.
        """
        buffer = self.buffer
        queue = self.queue
        ends = min(len(queue), limit)
        starts = self.starts
        if starts:
            self.starts_seen = True
            popstart = starts.popleft
            for _ in range(len(starts)):
                buffer.start(popstart(), now)
        popleft = queue.popleft
        for _ in range(ends):
            buffer.end(popleft(), now, starts_seen=True)
        exported = self.exported
        count = ends
        if exported:
            popexp = exported.popleft
            for _ in range(min(len(exported), limit)):
                buffer.end(popexp(), now, starts_seen=False)
                count += 1
        return count

    def _send(self, root: ReadableSpan | OpenRoot, children: list[ReadableSpan]) -> None:
        send_segment(self, root, children)  # _send.py

    # ------------------------------------------------------------ lifecycle
    def flush(self, timeout: float | None = None) -> bool:
        """Send everything finished now (ignoring the grace), bounded by ``timeout``."""
        timeout = self.cfg.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with handle_internal_errors("pipeline.flush"):
            self.process(force=True, deadline=deadline)
            return self.transport.flush(max(0.0, deadline - time.monotonic()))
        return False

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush, then stop threads. Later spans are ignored."""
        if self._stopped:
            return
        self.flush(timeout)
        self._stopped = True
        self.queue_cap = 0
        self._wake.set()
        with handle_internal_errors("pipeline.shutdown"):
            # What is still in the intake goes into the buffer first (cheap: no mapping), so
            # that the spans and the transactions given up below are counted alike.
            if self._lock.acquire(timeout=SHUTDOWN_DRAIN_WAIT):
                try:
                    now = time.monotonic()
                    while self._drain(now, DRAIN_BATCH):
                        pass
                finally:
                    self._lock.release()
            spans, transactions = self.buffer.drop_all()
            spans += len(self.queue) + len(self.exported)
            self.starts.clear()
            self.queue.clear()
            self.exported.clear()
            if self.logs:
                self.drops.record("queue_overflow", "log_item", len(self.logs))
                self.logs.clear()
            self.drops.record("queue_overflow", "span", spans)
            self.drops.record("queue_overflow", "transaction", transactions)
        self.transport.close(0.0)

    def reset_after_fork(self) -> None:
        """In a forked child: new locks and threads; the parent's queued spans are dropped."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._worker = None
        self.starts = deque()
        self.queue = deque()
        self.exported = deque()
        self.logs.reset_after_fork()
        self.buffer = self._new_buffer()
        self.traces = TraceRegistry(self.traces.defaults)  # its lock may be held by a thread
        self.lost_starts = set()
        self.buffer.lost_starts = self.lost_starts
        self.drops = DropCounter()
        self.transport.drops = self.drops
        self.buffer.on_drop = self.drops.record
        self.transport.reset_after_fork()


# ------------------------------------------------------------------ process singleton
_PIPELINE: Pipeline | None = None
_PIPELINE_LOCK = threading.Lock()


def get_pipeline(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Pipeline:
    """The process-wide pipeline, created on first use (code overrides > env > defaults)."""
    global _PIPELINE
    pipeline = _PIPELINE
    if pipeline is not None and not overrides:
        return pipeline  # the hot path (propagator, sampler): no lock
    with _PIPELINE_LOCK:
        if _PIPELINE is not None:
            if overrides and any(
                getattr(_PIPELINE.cfg, k, None) != v for k, v in overrides.items()
            ):
                logger.warning(
                    "otel-sentry-bridge: already configured; settings passed later (%s) are "
                    "ignored: one pipeline per process", ", ".join(sorted(overrides)))
            return _PIPELINE
        cfg = load_config(os.environ if environ is None else environ, overrides,
                          lambda message: logger.warning("otel-sentry-bridge: %s", message))
        _PIPELINE = create_pipeline(cfg)
        return _PIPELINE


def create_pipeline(cfg: BridgeConfig, sink: Callable[[bytes], None] | None = None) -> Pipeline:
    """Build a pipeline and register exit/fork handling for it."""
    if cfg.debug:
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
            )
            logger.addHandler(handler)
    pipeline = Pipeline(cfg, sink=sink)
    if not pipeline.enabled:
        if not cfg.enabled:
            logger.info("otel-sentry-bridge: disabled by SENTRY_BRIDGE_ENABLED")
        else:
            logger.debug("otel-sentry-bridge: no SENTRY_DSN (nor Spotlight or an envelope "
                         "folder): spans are not sent")
    register_process_hooks(pipeline)
    return pipeline


def reset_pipeline(pipeline: Pipeline | None = None) -> Pipeline | None:
    """Replace the process pipeline (tests and the pytest plugin). Returns the old one."""
    global _PIPELINE
    with _PIPELINE_LOCK:
        old, _PIPELINE = _PIPELINE, pipeline
    return old
