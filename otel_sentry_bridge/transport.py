"""The only module that talks to sentry-sdk: sending, rate limits, client reports.

sentry-sdk's public pieces do the protocol work: ``Dsn``/``Auth`` for the endpoint and the auth
header, and its envelope parser checks (in a contract test) the wire format that
``envelopes.py`` writes. The sending loop is our own: sentry-sdk's transport sends on one thread
with a 100-envelope queue and drops most of a burst, and its Spotlight client posts
synchronously. Here a bounded queue (count and bytes) feeds a few sender threads, each with one
keep-alive connection; instrumentation is suppressed on them so our own requests are never
traced. Every drop is counted and reported as a client report.

Helpers that need no sentry-sdk import live beside it: the sender threads' loop (retries,
backoff, client reports) in ``_transport_sender.py``, rate-limit bookkeeping in
``_rate_limits.py`` (given sentry-sdk's header parser from here), delivery to the sink,
Spotlight and the envelope folder in ``_local_targets.py``. What the bridge changes in an
app's own ``sentry_sdk.init()`` client lives in ``_sdk_hooks.py`` (the other module allowed
to import sentry-sdk).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)
from sentry_sdk.transport import _parse_rate_limits  # private: pinned + contract-tested
from sentry_sdk.utils import Auth, BadDsn, Dsn

from ._http import HttpTarget, gzip_body
from ._internal_errors import handle_internal_errors, logger
from ._local_targets import LocalTargets
from ._rate_limits import RateLimits
from ._transport_sender import CLIENT_REPORT_INTERVAL, REPORT_TIMEOUT, _Sender
from .config import BridgeConfig, mask_dsn
from .conventions import SDK_NAME
from .envelopes import (
    Outgoing,
    build_batch_envelope,
    build_check_in_envelope,
    build_envelope,
)
from .reports import DropCounter
from .version import __version__

__all__ = [
    "CLIENT_REPORT_INTERVAL", "REPORT_TIMEOUT", "USER_AGENT", "Transport", "parse_dsn",
]

USER_AGENT = f"{SDK_NAME}/{__version__}"


def parse_dsn(dsn: str) -> Dsn | None:
    """Parse with sentry-sdk's ``Dsn``; ``None`` (and one clear error line) when malformed."""
    try:
        return Dsn(dsn)
    except (BadDsn, ValueError) as exc:
        logger.error("otel-sentry-bridge: SENTRY_DSN %s is invalid (%s); sending to Sentry is "
                     "disabled, the application runs untouched", mask_dsn(dsn), exc)
        return None


class Transport(_Sender):
    """Bounded queue + sender threads + rate limits + client reports.

    The sending side (send loop, retries, client reports) is ``_Sender`` in
    ``_transport_sender.py``.
    """

    def __init__(
        self,
        cfg: BridgeConfig,
        drops: DropCounter,
        sink: Callable[[bytes], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.drops = drops
        self.sink = sink
        self.dsn = parse_dsn(cfg.dsn) if cfg.dsn else None
        self.public_key = self.dsn.public_key if self.dsn else None
        self._dsn_str = cfg.dsn if self.dsn else None
        if self.dsn is not None:
            auth: Auth = self.dsn.to_auth(USER_AGENT)
            self.sentry: HttpTarget | None = HttpTarget(
                auth.get_api_url(),
                {
                    "Content-Type": "application/x-sentry-envelope",
                    "X-Sentry-Auth": auth.to_header(),
                    "User-Agent": USER_AGENT,
                },
                cfg.compression_level,
                cfg.http_timeout,
            )
        else:
            self.sentry = None
        self.local = LocalTargets(cfg, sink, USER_AGENT)
        self.spotlight = self.local.spotlight
        self.envelope_dir = self.local.envelope_dir
        self.max_queue_bytes = max(1 << 20, cfg.max_buffered_bytes // 4)
        self.max_queue_items = 100_000
        self._queue: deque[Outgoing] = deque()
        self._queued_bytes = 0
        self._in_flight = 0
        self._pending: list[Outgoing] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._rate_limits = RateLimits(_parse_rate_limits)
        self._last_report = time.monotonic()
        self._down_until = 0.0
        self._backoff = 0.0
        self._flushing = False
        self.sent_envelopes = 0
        self._compress_early = bool(
            self.sentry is not None and cfg.compression_level
            and not (self.spotlight or self.envelope_dir or self.sink)
        )

    @property
    def enabled(self) -> bool:
        """Anything to send to?"""
        return bool(self.sentry or self.spotlight or self.envelope_dir or self.sink)

    # ------------------------------------------------------------------ intake
    @property
    def backing_off(self) -> bool:
        """Sentry was unreachable at the last attempt (no successful send since)."""
        return bool(self._backoff)

    def submit(
        self, event: dict[str, Any], item_type: str, trace: dict[str, str], wait: float = 0.0,
    ) -> None:
        """Serialize, compress and queue one event (called on the bridge's worker thread).

        When the queue is full it waits a little for the senders (backpressure on our own
        thread, never on the application's), then drops and counts.
        """
        category = "transaction" if item_type == "transaction" else "error"
        spans = len(event.get("spans", ())) + 1 if item_type == "transaction" else 0
        if self._rate_limits.limited(category):
            self.drops.record("ratelimit_backoff", category, 1)
            if spans:
                self.drops.record("ratelimit_backoff", "span", spans)
            return
        body = build_envelope(event, item_type, self._dsn_str, trace)
        self._queue_body(body, category, 1, spans, wait)

    def submit_batch(self, item_type: str, entries: list[dict[str, Any]], category: str) -> None:
        """Queue one container envelope (logs: category ``log_item``); never waits."""
        if self._rate_limits.limited(category):
            self.drops.record("ratelimit_backoff", category, len(entries))
            return
        body = build_batch_envelope(item_type, entries, self._dsn_str)
        self._queue_body(body, category, len(entries), 0, 0.0)

    def submit_check_in(self, payload: dict[str, Any], trace: dict[str, str] | None = None,
                        after: Outgoing | None = None) -> Outgoing | None:
        """Queue one ``check_in`` item (category ``monitor``; any thread, never waits).
        ``after``: the run's earlier check-in: while it is queued or being sent, this one is
        queued only once it is done, so that Sentry receives a run's check-ins in order."""
        if self._rate_limits.limited("monitor"):
            self.drops.record("ratelimit_backoff", "monitor", 1)
            return None
        body = build_check_in_envelope(payload, self._dsn_str, trace)
        if after is not None:
            with self._cond:
                if not self._closed and (after in self._pending or after in self._queue):
                    item = self._item(body, "monitor", 1, 0)
                    after.followers = [*(after.followers or ()), item]
                    return item
        return self._queue_body(body, "monitor", 1, 0, 0.0)

    def _item(self, body: bytes, category: str, quantity: int, spans: int) -> Outgoing:
        if self._compress_early:
            body = gzip_body(body, self.cfg.compression_level)
        return Outgoing(body, category, quantity, spans, compressed=self._compress_early)

    def _queue_body(
        self, body: bytes, category: str, quantity: int, spans: int, wait: float
    ) -> Outgoing:
        item = self._item(body, category, quantity, spans)
        self._enqueue(item, wait=wait)
        return item

    def _full(self, size: int) -> bool:
        return (
            len(self._queue) >= self.max_queue_items
            or self._queued_bytes + size > self.max_queue_bytes
        )

    def _enqueue(self, item: Outgoing, wait: float = 0.0) -> None:
        with self._cond:
            # Wait only for senders that are sending: while Sentry is unreachable (backing
            # off) waiting would only pile spans up in the intake.
            if wait and not self._closed and not self._backoff and self._full(len(item.body)):
                self._ensure_threads()
                deadline = time.monotonic() + wait
                while self._full(len(item.body)) and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(timeout=min(remaining, 0.05))
            if self._closed or self._full(len(item.body)):
                self._record_loss("queue_overflow", item)
                return
            self._queue.append(item)
            self._queued_bytes += len(item.body)
            self._ensure_threads()
            self._cond.notify()

    def _ensure_threads(self) -> None:
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = alive
        while len(self._threads) < self.cfg.sender_threads:
            thread = threading.Thread(
                target=self._run, name=f"otel-sentry-bridge-sender-{len(self._threads)}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    # ------------------------------------------------------------------ lifecycle
    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was handed to its destination (bounded)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._flushing = True  # a flush tries now, whatever the backoff said
            try:
                if self._queue:
                    self._ensure_threads()
                    self._cond.notify_all()
                while self._queue or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(timeout=min(remaining, 0.05))
            finally:
                self._flushing = False
        with suppress_instrumentation(), suppress_http_instrumentation(), \
                handle_internal_errors("transport.client_report"):
            self.maybe_send_client_report(force=True, timeout=REPORT_TIMEOUT)
            if self.sentry is not None:
                self.sentry.close()  # the connection of the flushing thread
        return True

    def close(self, timeout: float) -> None:
        """Flush (bounded), then stop the sender threads; what is left is counted as lost."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            leftover = list(self._queue)
            # Requests still pending (a server that never answers): count them now, since
            # the process may end before they fail; if one still succeeds it is not undone.
            pending = [item for item in self._pending if not item.abandoned]
            # check-ins waiting for one of these: counted below, never released later
            followers = [f for item in leftover + self._pending for f in item.followers or ()]
            for item in leftover + self._pending:
                item.followers = None
            self._queue.clear()
            self._queued_bytes = 0
            self._cond.notify_all()
        reason = "network_error" if self._down_until else "queue_overflow"
        for item in leftover:
            self._record_loss(reason, item)
        for item in pending:
            self._record_loss("network_error", item)
            item.abandoned = True
        for follower in followers:
            self._record_loss(reason, follower)
            follower.abandoned = True
        leftover += pending
        if leftover and self.sentry is not None:  # best effort: report these drops too
            with suppress_instrumentation(), suppress_http_instrumentation(), \
                    handle_internal_errors("transport.final_client_report"):
                self.maybe_send_client_report(force=True, timeout=REPORT_TIMEOUT)
                self.sentry.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's threads, queue and connections."""
        self._cond = threading.Condition()
        self._queue = deque()
        self._queued_bytes = 0
        self._in_flight = 0
        self._pending = []
        self._threads = []
        if self.sentry is not None:
            self.sentry._local = threading.local()
        self.local.reset_after_fork()
