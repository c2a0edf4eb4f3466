"""Counts of dropped data, reported to Sentry as client reports."""

from __future__ import annotations

import threading
from collections import Counter


class DropCounter:
    """Thread-safe ``(reason, category) -> quantity`` counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str]] = Counter()
        self.totals: Counter[tuple[str, str]] = Counter()

    def record(self, reason: str, category: str, quantity: int = 1) -> None:
        """Count ``quantity`` items of ``category`` dropped for ``reason``."""
        if quantity <= 0:
            return
        with self._lock:
            self._pending[(reason, category)] += quantity
            self.totals[(reason, category)] += quantity

    def take(self) -> list[dict[str, object]]:
        """Pending drops as client-report entries; resets the pending counts."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        return [
            {"reason": reason, "category": category, "quantity": quantity}
            for (reason, category), quantity in sorted(pending.items())
        ]

    def put_back(self, entries: list[dict[str, object]]) -> None:
        """Return entries that could not be sent, so they are reported later."""
        with self._lock:
            for entry in entries:
                key = (str(entry["reason"]), str(entry["category"]))
                quantity = entry["quantity"]
                if isinstance(quantity, int):
                    self._pending[key] += quantity

    def total(self, reason: str | None = None, category: str | None = None) -> int:
        """Total dropped so far, optionally filtered."""
        with self._lock:
            return sum(
                q for (r, c), q in self.totals.items()
                if (reason is None or r == reason) and (category is None or c == category)
            )
