"""Sentry's rate limits, as the transport learns them from Sentry's answers.

The header parser is sentry-sdk's (``transport.py``, where the bridge talks to sentry-sdk,
passes it in).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

#: ``(X-Sentry-Rate-Limits header, now)`` -> ``(category or None for all, limited until)``
RateLimitParser = Callable[[str, datetime], Iterable[tuple[str | None, datetime]]]


class RateLimits:
    """Per data category (``None``: every category), until when (monotonic) it is limited."""

    def __init__(self, parse: RateLimitParser) -> None:
        self._parse = parse
        self.until: dict[str | None, float] = {}

    def update(self, status: int, headers: dict[str, str]) -> None:
        """Learn from one answer: its ``X-Sentry-Rate-Limits``, else a 429's ``Retry-After``."""
        header = headers.get("x-sentry-rate-limits")
        now = time.monotonic()
        if header:
            wall = datetime.now(timezone.utc)
            for category, until in self._parse(header, wall):
                self.until[category] = now + (until - wall).total_seconds()
        elif status == 429:
            retry_after = headers.get("retry-after", "60")
            try:
                delay = float(retry_after)
            except ValueError:
                delay = 60.0
            self.until[None] = now + delay

    def limited(self, category: str) -> bool:
        """Is ``category`` rate limited now?"""
        if not self.until:
            return False
        now = time.monotonic()
        until = max(self.until.get(None, 0.0), self.until.get(category, 0.0))
        return until > now
