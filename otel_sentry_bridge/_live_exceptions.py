"""Richer stack frames from the live exception behind ``Span.record_exception``.

OpenTelemetry keeps only the formatted traceback of a recorded exception. While a bridge
pipeline runs, ``opentelemetry.sdk.trace.Span.record_exception`` is wrapped: OpenTelemetry's
method runs first, exactly once, with the same arguments (what it records is unchanged), then
the bridge reads the live traceback while it exists and keeps the exception chain with richer
frames (module, function, line, the line of code with 5 lines before and after) in a bounded
table, until the pipeline maps that trace's transaction (``_mapping/error_inputs.py``).

Only plain dicts of text are kept: no exception, traceback or frame object, and local variables
are never read. Source lines come from ``linecache``, which OpenTelemetry's own formatting of
the traceback has just filled. Any failure here is logged once and swallowed.
"""

from __future__ import annotations

import functools
import linecache
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Any

from opentelemetry.sdk.trace import Span

from ._internal_errors import log_internal_error
from ._mapping.frames import MAX_CHAIN, MAX_FRAMES, path_frame
from ._mapping.values import MAX_VALUE_CHARS, safe_str

#: Lines of source before and after the line of each frame (as sentry-sdk).
CONTEXT_LINES = 5
#: Only the innermost frames get source context; outer ones keep their line of code.
CONTEXT_FRAMES = 50
#: Longest line of source kept.
MAX_LINE = 300
#: Bounds of the table: recorded exceptions, and characters of source they hold in all.
MAX_ENTRIES = 1000
MAX_CHARS = 4 << 20

Chain = list[dict[str, Any]]


class LiveStash:
    """Exception chains by trace, bounded in entries and (estimated) size: the oldest chain
    of the least recently added trace is forgotten first. Forgetting one loses nothing: its
    error event gets the frames parsed from ``exception.stacktrace`` instead."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._traces: OrderedDict[int, list[tuple[int, Chain, int]]] = OrderedDict()
        self._entries = 0
        self._chars = 0
        #: chains forgotten to stay within the bounds (their events use the parsed text)
        self.evicted = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._entries

    def put(self, trace_id: int, span_id: int, chain: Chain, chars: int) -> None:
        """Keep ``chain`` (recorded on that span), evicting the oldest traces over the caps."""
        with self._lock:
            entries = self._traces.get(trace_id)
            if entries is None:
                entries = self._traces[trace_id] = []
            else:
                self._traces.move_to_end(trace_id)
            # what a chain costs beyond its source text: dicts, ints, names (~3x measured)
            chars = 3 * chars + 512 * sum(len(e["frames"]) for e in chain)
            entries.append((span_id, chain, chars))
            self._entries += 1
            self._chars += chars
            while self._entries > self.max_entries or self._chars > self.max_chars:
                # the oldest chain of the least recently added trace goes (one long-lived
                # trace can fill the table too)
                oldest_id, oldest = next(iter(self._traces.items()))
                _, _, gone_chars = oldest.pop(0)
                if not oldest:
                    del self._traces[oldest_id]
                self._entries -= 1
                self._chars -= gone_chars
                self.evicted += 1  # its exception still gets frames parsed from the text

    def take(self, trace_id: int, span_ids: set[int] | frozenset[int]) -> list[Chain]:
        """Remove and return the chains recorded on ``span_ids`` of ``trace_id``."""
        if not self._traces:
            return []
        with self._lock:
            entries = self._traces.get(trace_id)
            if entries is None:
                return []
            taken = [item for item in entries if item[0] in span_ids]
            if len(taken) == len(entries):
                del self._traces[trace_id]
            else:
                entries[:] = [item for item in entries if item[0] not in span_ids]
            self._entries -= len(taken)
            self._chars -= sum(item[2] for item in taken)
        return [item[1] for item in taken]

    def clear(self) -> None:
        """Forget everything (and renew the lock: after a fork)."""
        self._lock = threading.Lock()
        self._traces = OrderedDict()
        self._entries = self._chars = 0


STASH = LiveStash()


#: What a frame's file path says (``path_frame`` without line and function), by path.
_PATHS: dict[str, dict[str, Any]] = {}
_MAX_PATHS = 10_000


def _path_fields(path: str) -> dict[str, Any]:
    fields = _PATHS.get(path)
    if fields is None:
        if len(_PATHS) >= _MAX_PATHS:
            _PATHS.clear()
        fields = path_frame(path, None, None)
        del fields["function"]
        _PATHS[path] = fields  # unlocked: at worst two threads compute the same fields
    return fields


def live_frames(tb: TracebackType | None) -> tuple[list[dict[str, Any]], int]:
    """Sentry frames of a traceback, outermost first (at most MAX_FRAMES, the innermost),
    and the characters of source they hold."""
    entries: list[tuple[Any, Any]] = []
    while tb is not None:
        entries.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    entries = entries[-MAX_FRAMES:]
    with_context = len(entries) - CONTEXT_FRAMES
    frames: list[dict[str, Any]] = []
    chars = 0
    for index, (frame, lineno) in enumerate(entries):
        code = frame.f_code
        path = code.co_filename
        line = lineno if type(lineno) is int and lineno > 0 else None
        out = dict(_path_fields(path))
        out["function"] = code.co_name
        module = frame.f_globals.get("__name__")
        if type(module) is str and module:
            out["module"] = module
        if line is not None:
            out["lineno"] = line
            lines = linecache.getlines(path, frame.f_globals)
            if line <= len(lines):
                text = out["context_line"] = lines[line - 1].rstrip("\r\n")[:MAX_LINE]
                chars += len(text)
                if index >= with_context:
                    pre = [t.rstrip("\r\n")[:MAX_LINE]
                           for t in lines[max(0, line - 1 - CONTEXT_LINES):line - 1]]
                    post = [t.rstrip("\r\n")[:MAX_LINE] for t in lines[line:line + CONTEXT_LINES]]
                    out["pre_context"] = pre
                    out["post_context"] = post
                    chars += sum(map(len, pre)) + sum(map(len, post))
        frames.append(out)
        chars += 80  # the frame's own fields
    return frames, chars


def exception_chain(exc: BaseException) -> tuple[Chain, int]:
    """``exc`` and what it was raised from or during (``__cause__``, ``__context__``) as
    ``{type, module, value, frames, source}``, the first raised first, as
    ``_mapping.frames.parse_traceback`` gives them; and the characters they hold."""
    links: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(links) < MAX_CHAIN:
        seen.add(id(current))
        if current.__cause__ is not None:
            earlier, how = current.__cause__, "__cause__"
        elif current.__context__ is not None and not current.__suppress_context__:
            earlier, how = current.__context__, "__context__"
        else:
            earlier, how = None, None
        links.append((current, how))
        current = earlier
    chain: Chain = []
    chars = 0
    for item, how in reversed(links):
        frames, size = live_frames(item.__traceback__)
        kind = type(item)
        value = safe_str(item)[:MAX_VALUE_CHARS]
        chain.append({"type": kind.__name__, "module": kind.__module__ or "builtins",
                      "value": value, "frames": frames, "source": how})
        chars += size + len(value)
    return chain, chars


def _remember(span: Span, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """After OpenTelemetry recorded ``exception`` on ``span``: keep its live chain."""
    exc = args[0] if args else kwargs.get("exception")
    if not isinstance(exc, BaseException) or not span.is_recording():
        return
    events = getattr(span, "_events", None)  # the SDK's own list: no tuple copy
    if events is None:
        events = span.events
    if not events:
        return
    event = events[-1]
    kind = (event.attributes or {}).get("exception.type")
    if (event.name != "exception" or not isinstance(kind, str)
            or kind.rpartition(".")[2] != type(exc).__name__):
        return  # not the event just recorded (its type was overridden, or another thread)
    chain, chars = exception_chain(exc)
    if any(item["frames"] for item in chain):
        context = span.get_span_context()
        STASH.put(context.trace_id, context.span_id, chain, chars)


_LOCK = threading.Lock()
_WRAPPER: Callable[..., Any] | None = None
_ORIGINAL: Callable[..., Any] | None = None
_ACTIVE = False


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def record_exception(self: Span, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if _ACTIVE:
            try:
                _remember(self, args, kwargs)
            except Exception as exc:
                log_internal_error("record_exception.live_frames", exc)
        return result

    return record_exception


def install() -> bool:
    """Wrap ``Span.record_exception`` (once; ``False`` when it already was)."""
    global _WRAPPER, _ORIGINAL, _ACTIVE
    with _LOCK:
        if _WRAPPER is None:
            _ORIGINAL = Span.record_exception
            _WRAPPER = _wrap(_ORIGINAL)
            Span.record_exception = _WRAPPER  # type: ignore[method-assign]
        was_active, _ACTIVE = _ACTIVE, True
        return not was_active


def uninstall() -> None:
    """Undo :func:`install` (tests). When something wrapped the method after us, ours stays
    in place but does nothing more."""
    global _WRAPPER, _ORIGINAL, _ACTIVE
    with _LOCK:
        _ACTIVE = False
        original = _ORIGINAL
        if original is not None and Span.__dict__.get("record_exception") is _WRAPPER:
            Span.record_exception = original  # type: ignore[method-assign]
            _WRAPPER = _ORIGINAL = None
        STASH.clear()


def installed() -> bool:
    """Is the wrapper in place and active?"""
    return _ACTIVE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=STASH.clear)
