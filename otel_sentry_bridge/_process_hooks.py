"""Process exit and fork handling for a pipeline (registered by ``create_pipeline``)."""

from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import TYPE_CHECKING

from opentelemetry._logs import get_logger_provider
from opentelemetry.metrics import get_meter_provider

from ._checkins import fail_open
from ._internal_errors import handle_internal_errors

if TYPE_CHECKING:
    from .pipeline import Pipeline


def exit_flush(pipeline: Pipeline) -> None:
    """At exit (or SIGTERM): have OpenTelemetry's logger and meter providers hand over what
    they hold (they may stop after us: exit hooks run last registered first, and SIGTERM skips
    them), then flush and stop the pipeline."""
    total = pipeline.cfg.shutdown_timeout
    deadline = time.monotonic() + total
    with handle_internal_errors("pipeline.exit_check_ins"):
        fail_open(pipeline)  # monitored jobs the process dies in: error (queued, in order)
    for feeding, name, get_provider in (
        (pipeline.log_exporters, "logs", get_logger_provider),
        (pipeline.metric_exporters, "metrics", get_meter_provider),
    ):
        if feeding:
            with handle_internal_errors(f"pipeline.exit_{name}"):
                flush = getattr(get_provider(), "force_flush", None)
                if flush is not None:  # at most a quarter of the budget each
                    flush(int(max(0.0, min(total / 4, deadline - time.monotonic())) * 1000))
    with handle_internal_errors("pipeline.exit_profiling"):
        from ._profiling import flush_profiler  # noqa: PLC0415 (only when exiting)
        flush_profiler(max(0.0, min(total / 4, deadline - time.monotonic())))
    pipeline.shutdown(max(0.0, deadline - time.monotonic()))  # one budget for all of it


def register_process_hooks(pipeline: Pipeline) -> None:
    """Shut ``pipeline`` down at exit (and in multiprocessing's fork children, which skip
    atexit); reset it in forked children. Holds it weakly."""
    ref = weakref.ref(pipeline)

    def at_exit() -> None:
        live = ref()
        if live is not None:
            exit_flush(live)

    def after_fork() -> None:
        live = ref()
        if live is not None:
            live.reset_after_fork()

    atexit.register(at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork)
    # multiprocessing's fork children end with os._exit() (no atexit) but run its finalizers.
    with handle_internal_errors("pipeline.multiprocessing"):
        import multiprocessing.util as mp_util  # noqa: PLC0415 (only needed here)

        def in_mp_child(live: Pipeline) -> None:
            mp_util.Finalize(live, live.shutdown, exitpriority=10)

        mp_util.register_after_fork(pipeline, in_mp_child)
