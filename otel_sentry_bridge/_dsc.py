"""The dynamic sampling context (DSC) of each trace this process takes part in.

One entry per trace id, created when a local root starts (by the sampler, or by the span
processor when another sampler decided): either the DSC that came from upstream (frozen:
passed on unchanged, only a missing ``sample_rand`` is backfilled) or, at the head of a trace,
a DSC built here (``trace_id``, ``public_key``, ``sample_rate``, ``sample_rand``, ``sampled``,
``org_id``) that is completed with ``release``, ``environment`` and ``transaction`` and frozen
when it is first needed: the first outgoing request, or the transaction's envelope. Outgoing
``baggage`` and every envelope header of the trace carry the same DSC.

The table is bounded (least recently used entries go first); an entry is removed when its
local root's transaction has been sent. Thread-safe: one lock around dict operations.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import create_key

from ._trace_headers import (
    backfill_rand,
    format_rand,
    format_rate,
    parse_rand,
    parse_rate,
    rand_from_trace_id,
)

#: OTel context key under which the propagator leaves what it extracted.
INCOMING_KEY = create_key("otel_sentry_bridge.incoming")
#: Entries kept at most (traces with a local root in flight, plus recently ended ones).
MAX_TRACES = 10_000


@dataclass(frozen=True)
class Incoming:
    """What came in with a request: the upstream trace, its decision and its DSC.

    ``sampled`` is ``None`` when upstream deferred the decision (``sentry-trace`` without a
    flag and no ``traceparent``). ``dsc`` is ``None`` without ``sentry-*`` baggage members.
    """

    trace_id: int
    span_id: int
    sampled: bool | None
    dsc: Mapping[str, str] | None

    def sample_rand(self) -> float:
        """The trace's ``sample_rand``: upstream's, else backfilled as sentry-sdk does."""
        dsc = self.dsc or {}
        rand = parse_rand(dsc.get("sample_rand"))
        if rand is not None:
            return rand
        if self.dsc is None:
            return rand_from_trace_id(self.trace_id)
        return backfill_rand(self.trace_id, self.sampled, parse_rate(dsc.get("sample_rate")))

    def frozen_dsc(self) -> dict[str, str] | None:
        """Upstream's DSC with ``trace_id`` and ``sample_rand`` present (nothing rewritten)."""
        if self.dsc is None:
            return None
        dsc = dict(self.dsc)
        if parse_rand(dsc.get("sample_rand")) is None:
            dsc["sample_rand"] = format_rand(self.sample_rand())
        dsc.setdefault("trace_id", f"{self.trace_id:032x}")
        return dsc


@dataclass
class Entry:
    """The DSC of one trace; ``frozen`` once sent anywhere."""

    dsc: dict[str, str]
    frozen: bool
    #: the live local root span (head entries only, until it ends or the DSC is frozen)
    root: Any = None
    extra: dict[str, str] = field(default_factory=dict)
    #: local roots of the trace started here whose transaction has not been sent yet
    roots: int = 0


@dataclass(frozen=True)
class DscDefaults:
    """What a head DSC takes from the settings."""

    public_key: str | None = None
    release: str | None = None
    environment: str | None = None
    org_id: str | None = None


class TraceRegistry:
    """Bounded table ``trace id -> DSC``."""

    def __init__(self, defaults: DscDefaults | None = None, cap: int = MAX_TRACES) -> None:
        self.defaults = defaults or DscDefaults()
        self.cap = cap
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, trace_id: int, entry: Entry) -> Entry:
        """Add ``entry``, unless the trace has one already (which is kept)."""
        with self._lock:
            entries = self._entries
            existing = entries.get(trace_id)
            if existing is not None:
                entries.move_to_end(trace_id)
                return existing
            entries[trace_id] = entry
            entries.move_to_end(trace_id)
            while len(entries) > self.cap:
                entries.popitem(last=False)
        return entry

    def get(self, trace_id: int) -> Entry | None:
        """The entry of a trace, if any (now the most recently used)."""
        entries = self._entries
        entry = entries.get(trace_id)
        if entry is not None:
            with self._lock:
                if trace_id in entries:
                    entries.move_to_end(trace_id)
        return entry

    def start(
        self, trace_id: int, incoming: Incoming | None, sampled: bool,
        sample_rate: float | None, sample_rand: float | None = None,
    ) -> Entry:
        """Create the entry of a trace at its local root's sampling decision (or start).

        Another local root of a trace that has an entry (the same service called again in
        one trace) shares it: the trace keeps one DSC."""
        if incoming is not None and incoming.trace_id == trace_id:
            frozen = incoming.frozen_dsc()
            if frozen is not None:
                return self._put(trace_id, Entry(frozen, True))
            if sample_rand is None:
                sample_rand = incoming.sample_rand()
        if sample_rand is None:
            sample_rand = rand_from_trace_id(trace_id)
        defaults = self.defaults
        dsc = {"trace_id": f"{trace_id:032x}"}
        if defaults.public_key:
            dsc["public_key"] = defaults.public_key
        if sample_rate is not None:
            dsc["sample_rate"] = format_rate(sample_rate)
        dsc["sample_rand"] = format_rand(sample_rand)
        dsc["sampled"] = "true" if sampled else "false"
        if defaults.org_id:
            dsc["org_id"] = defaults.org_id
        return self._put(trace_id, Entry(dsc, False))

    def root_started(self, trace_id: int, span: Any) -> None:
        """Count a local root of the trace; remember the live root of a head entry (for
        freezing at the first request)."""
        entry = self._entries.get(trace_id)
        if entry is not None:
            with self._lock:
                entry.roots += 1
            if not entry.frozen:
                entry.root = span

    def root_sent(self, trace_id: int) -> None:
        """A local root's segment is done (sent, or not sampled): the entry goes with the
        last local root of the trace."""
        entry = self._entries.get(trace_id)
        if entry is not None:
            with self._lock:
                entry.roots -= 1
                if entry.roots <= 0 and self._entries.get(trace_id) is entry:
                    del self._entries[trace_id]

    def root_ended(self, trace_id: int, span_id: int) -> None:
        """Forget the live root when it ends (the worker freezes the DSC from its event)."""
        entry = self._entries.get(trace_id)
        if entry is not None and entry.root is not None:
            context = getattr(entry.root, "context", None)
            if context is None or context.span_id == span_id:
                entry.root = None

    def freeze(
        self, entry: Entry, describe: Callable[[Any], tuple[str | None, str | None, str, str]],
    ) -> dict[str, str]:
        """Complete and freeze a head entry from its live root (first outgoing request).

        ``describe(root)`` gives ``(release, environment, transaction name, source)``.
        """
        if entry.frozen:
            return entry.dsc
        root = entry.root
        described: tuple[str | None, str | None, str | None, str | None] = (
            # no live root known (spans seen by the exporter only): what the settings say
            describe(root) if root is not None else (None, None, None, None))
        release, environment, name, source = described
        with self._lock:
            if not entry.frozen:
                complete(entry.dsc, release, environment, name, source, self.defaults)
                entry.root = None
                entry.frozen = True
        return entry.dsc

    def for_event(
        self, trace_id: int, event: Mapping[str, Any], last: bool, sampled: bool = True,
    ) -> dict[str, str]:
        """The envelope ``trace`` header for an event of a trace (freezing a head entry from
        a transaction event). ``last``: a local root's transaction; the entry goes with the
        last one."""
        entry = self._entries.get(trace_id)
        if entry is None:
            return dsc_from_event(event, self.defaults, sampled)
        if not entry.frozen and event.get("type") == "transaction":
            info = event.get("transaction_info")
            source = info.get("source") if isinstance(info, dict) else None
            with self._lock:
                if not entry.frozen:
                    complete(entry.dsc, event.get("release"), event.get("environment"),
                             event.get("transaction"), source, self.defaults)
                    entry.root = None
                    entry.frozen = True
        if last:
            self.root_sent(trace_id)
        return entry.dsc

    def clear(self) -> None:
        """Forget every trace (tests, fork)."""
        with self._lock:
            self._entries.clear()


def complete(
    dsc: dict[str, str], release: Any, environment: Any, name: Any, source: Any,
    defaults: DscDefaults,
) -> None:
    """Add release, environment and (unless the source is a raw URL) the transaction name."""
    release = defaults.release or release
    environment = defaults.environment or environment
    if isinstance(release, str) and release:
        dsc.setdefault("release", release)
    if isinstance(environment, str) and environment:
        dsc.setdefault("environment", environment)
    if isinstance(name, str) and name and source not in ("url", None):
        dsc.setdefault("transaction", name)


def dsc_from_event(
    event: Mapping[str, Any], defaults: DscDefaults, sampled: bool = True,
) -> dict[str, str]:
    """A DSC for an event of a trace the table does not know (its entry went, or spans came
    through the exporter alone): what the event itself says."""
    contexts = event.get("contexts")
    trace = contexts.get("trace", {}) if isinstance(contexts, dict) else {}
    trace_id = str(trace.get("trace_id", ""))
    dsc: dict[str, str] = {"trace_id": trace_id}
    if defaults.public_key:
        dsc["public_key"] = defaults.public_key
    try:
        dsc["sample_rand"] = format_rand(rand_from_trace_id(int(trace_id, 16)))
    except ValueError:
        pass
    info = event.get("transaction_info")
    source = info.get("source") if isinstance(info, dict) else None
    complete(dsc, event.get("release"), event.get("environment"), event.get("transaction"),
             source, defaults)
    dsc["sampled"] = "true" if sampled else "false"
    if defaults.org_id:
        dsc["org_id"] = defaults.org_id
    return dsc
