"""Log items waiting for the pipeline's worker, and their batching into log envelopes.

The application's threads add items (through ``Pipeline.on_log``, which applies the queue cap
``pipeline.LOG_QUEUE_CAP`` and counts what it turns away); the worker maps them (pure mapping)
and hands them to the transport in batches.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._internal_errors import handle_internal_errors
from ._mapping.logs import otel_log_entry, python_log_entry

if TYPE_CHECKING:
    from ._mapping import MappingContext
    from .transport import Transport

#: At most LOG_BATCH log items per envelope, sent when a batch is full or the oldest has waited
#: LOG_INTERVAL seconds.
LOG_BATCH = 100
LOG_INTERVAL = 1.0


class LogQueue:
    """Waiting log items, oldest first: ``("python", record, body, trace, span)`` or
    ``("otel", log_record)``."""

    def __init__(self) -> None:
        self.items: deque[tuple[Any, ...]] = deque()
        #: when the oldest waiting item was added (monotonic)
        self.since = 0.0
        #: trace id of log records made outside any span (one per process, as a scope's)
        self.trace_id = int.from_bytes(os.urandom(16), "big") or 1

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: tuple[Any, ...], cap: int) -> bool:
        """Hot path (application threads, no lock): queue ``item``; ``False`` when ``cap``
        items are waiting already (the caller counts the drop)."""
        items = self.items
        if len(items) >= cap:
            return False
        if not items:
            self.since = time.monotonic()
        items.append(item)
        return True

    def send(self, now: float, force: bool, ctx: MappingContext, transport: Transport) -> None:
        """Worker: when a batch is full, the oldest item has waited LOG_INTERVAL or ``force``,
        map every waiting item and submit them in envelopes of at most LOG_BATCH."""
        items = self.items
        if not force and len(items) < LOG_BATCH and now - self.since < LOG_INTERVAL:
            return
        while items:
            batch: list[dict[str, Any]] = []
            while items and len(batch) < LOG_BATCH:
                item = items.popleft()
                with handle_internal_errors("pipeline.log"):
                    if item[0] == "python":
                        _, record, body, trace_id, span_id = item
                        batch.append(python_log_entry(
                            record, body, trace_id or self.trace_id, span_id, ctx))
                    else:
                        batch.append(otel_log_entry(item[1], ctx, self.trace_id, time.time()))
            if batch:
                transport.submit_batch("log", batch, "log_item")
        self.since = now

    def clear(self) -> None:
        """Forget every waiting item."""
        self.items.clear()

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's waiting items are dropped (not counted)."""
        self.items = deque()
