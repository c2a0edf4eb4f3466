"""The sender threads' side of ``transport.Transport``: the send loop, retries, client reports.

``Transport`` (in ``transport.py``, which holds the sentry-sdk imports) inherits these methods;
the state they use is set up by ``Transport.__init__`` and only declared here. No sentry-sdk
import is needed here.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)

from ._http import HttpTarget
from ._internal_errors import handle_internal_errors, logger
from ._local_targets import LocalTargets
from ._rate_limits import RateLimits
from .envelopes import Outgoing, build_client_report
from .reports import DropCounter

CLIENT_REPORT_INTERVAL = 10.0
#: Socket timeout of the client report sent while flushing or closing (seconds).
REPORT_TIMEOUT = 1.0
#: Backoff after a failed connection (seconds), then the maximum; envelopes stay queued.
_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0
#: An envelope is dropped (``network_error``) after this many failed attempts.
_MAX_ATTEMPTS = 6


class _Sender:
    """Sending half of ``Transport`` (a mixin: the attributes are set by ``Transport``)."""

    drops: DropCounter
    sentry: HttpTarget | None
    spotlight: HttpTarget | None
    local: LocalTargets
    _dsn_str: str | None
    _queue: deque[Outgoing]
    _queued_bytes: int
    _in_flight: int
    _pending: list[Outgoing]
    _cond: threading.Condition
    _closed: bool
    _rate_limits: RateLimits
    _last_report: float
    _down_until: float
    _backoff: float
    _flushing: bool
    sent_envelopes: int

    def _record_loss(self, reason: str, item: Outgoing) -> None:
        if item.category == "internal" or item.abandoned:
            return
        self.drops.record(reason, item.category, item.quantity)
        if item.spans:
            self.drops.record(reason, "span", item.spans)

    # ------------------------------------------------------------------ sending
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            for target in (self.sentry, self.spotlight):
                if target is not None:
                    target.close()

    def _loop(self) -> None:
        with suppress_instrumentation(), suppress_http_instrumentation():
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait(timeout=CLIENT_REPORT_INTERVAL)
                        if not self._queue:
                            break
                    pause = self._down_until - time.monotonic()
                    if self._queue and pause > 0 and not self._closed and not self._flushing:
                        self._cond.wait(timeout=min(pause, 1.0))
                        continue
                    if not self._queue:
                        if self._closed:
                            return
                        item = None
                    else:
                        item = self._queue.popleft()
                        self._queued_bytes -= len(item.body)
                        self._in_flight += 1
                        self._pending.append(item)
                        self._cond.notify_all()
                if item is None:
                    with handle_internal_errors("transport.client_report"):
                        self.maybe_send_client_report()
                    continue
                try:
                    with handle_internal_errors("transport.send"):
                        self._deliver(item)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        if item in self._pending:
                            self._pending.remove(item)
                        if item.followers and item not in self._queue:  # done, not retried
                            for follower in reversed(item.followers):
                                self._queue.appendleft(follower)
                                self._queued_bytes += len(follower.body)
                            item.followers = None
                        self._cond.notify_all()
                with handle_internal_errors("transport.client_report"):
                    self.maybe_send_client_report()

    def _deliver(self, item: Outgoing) -> None:
        self.local.deliver(item.body)
        if self.sentry is None:
            self.sent_envelopes += 1
            return
        if self._rate_limits.limited(item.category):
            self._record_loss("ratelimit_backoff", item)
            return
        try:
            status, headers = self.sentry.post(item.body, compressed=item.compressed)
        except OSError as exc:
            item.attempts += 1
            with self._cond:
                now = time.monotonic()
                if now >= self._down_until:  # one escalation per window, not per sender
                    self._backoff = min(_BACKOFF_MAX, self._backoff * 2 or _BACKOFF_START)
                    self._down_until = now + self._backoff
                if item.attempts < _MAX_ATTEMPTS and not self._closed:
                    logger.debug("otel-sentry-bridge: send failed (%s); retrying in %.1fs",
                                 exc, self._backoff)
                    self._queue.appendleft(item)
                    self._queued_bytes += len(item.body)
                    return
            logger.debug("otel-sentry-bridge: send failed (%s); dropped", exc)
            self._record_loss("network_error", item)
            return
        if self._backoff:
            with self._cond:
                self._backoff = 0.0
                self._down_until = 0.0
        self._rate_limits.update(status, headers)
        if status == 429:
            self._record_loss("ratelimit_backoff", item)
        elif status == 413:
            self._record_loss("send_error", item)
        elif not 200 <= status < 300:
            self._record_loss("network_error", item)
        else:
            self.sent_envelopes += 1

    def maybe_send_client_report(self, force: bool = False, timeout: float | None = None) -> None:
        """Send pending drop counts (at most every 10 s unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_report < CLIENT_REPORT_INTERVAL:
            return
        self._last_report = now
        entries = self.drops.take()
        if not entries:
            return
        body = build_client_report(entries, self._dsn_str)
        self.local.deliver(body, spotlight=False)
        if self.sentry is None:
            return
        try:
            status, headers = self.sentry.post(body, timeout=timeout)
            self._rate_limits.update(status, headers)
            if not 200 <= status < 300:
                self.drops.put_back(entries)
        except OSError:
            self.drops.put_back(entries)
