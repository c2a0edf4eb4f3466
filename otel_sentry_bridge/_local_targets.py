"""Where envelopes go besides Sentry: a sink callable (tests), Spotlight, and an envelope
folder (``SENTRY_BRIDGE_ENVELOPE_DIR``, one file per envelope). Used by the transport's sender
threads; no sentry-sdk here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from ._http import HttpTarget
from ._internal_errors import logger
from .config import BridgeConfig


class LocalTargets:
    """The sink, the Spotlight target and the envelope folder of one transport."""

    def __init__(
        self, cfg: BridgeConfig, sink: Callable[[bytes], None] | None, user_agent: str
    ) -> None:
        self.sink = sink
        self.spotlight = (
            HttpTarget(cfg.spotlight, {"Content-Type": "application/x-sentry-envelope",
                                    "User-Agent": user_agent}, 0, cfg.http_timeout)
            if cfg.spotlight else None
        )
        self.envelope_dir = cfg.envelope_dir
        if self.envelope_dir:
            try:
                os.makedirs(self.envelope_dir, exist_ok=True)
            except OSError as exc:
                logger.warning("otel-sentry-bridge: cannot create envelope folder %s (%s)",
                               self.envelope_dir, exc)
                self.envelope_dir = None
        self._lock = threading.Lock()
        self._file_seq = 0

    def deliver(self, body: bytes, *, spotlight: bool = True) -> None:
        """Hand ``body`` to the sink, the envelope folder and (when ``spotlight``) Spotlight;
        an unreachable Spotlight is only logged (debug)."""
        if self.sink is not None:
            self.sink(body)
        if self.envelope_dir:
            self.write_file(body)
        if spotlight and self.spotlight is not None:
            try:
                self.spotlight.post(body)
            except OSError as exc:
                logger.debug("otel-sentry-bridge: Spotlight unreachable: %s", exc)

    def write_file(self, body: bytes) -> None:
        """One file in the envelope folder; names sort in the order they were written."""
        assert self.envelope_dir is not None
        with self._lock:
            self._file_seq += 1
            seq = self._file_seq
        name = f"{time.time():.6f}-{os.getpid()}-{seq:06d}.envelope"
        try:
            with open(os.path.join(self.envelope_dir, name), "wb") as handle:
                handle.write(body)
        except OSError as exc:
            logger.debug("otel-sentry-bridge: cannot write envelope file: %s", exc)

    def reset_after_fork(self) -> None:
        """In a forked child: a new lock and Spotlight connections (the parent's stay unused)."""
        self._lock = threading.Lock()
        if self.spotlight is not None:
            self.spotlight._local = threading.local()
