"""Helpers of :mod:`.caching`: cache keys as Sentry shows them, item sizes, TTLs, the bounded
LRU of ``cached`` and the per-trace budget of cache spans."""

from __future__ import annotations

import datetime
import enum
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, MutableMapping
from decimal import Decimal
from typing import Any, Final

_MAX_KEY_CHARS: Final = 250
_MAX_ITEM_CHARS: Final = 64
_MAX_ENCODE: Final = 1 << 20


def item_size(value: Any) -> int | None:
    """Bytes of a ``bytes``/``str`` value (UTF-8), else ``None``: nothing is serialized to be
    measured, and a non-ASCII string over 1 MiB is not encoded either."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, str):
        if value.isascii():
            return len(value)
        return len(value.encode("utf-8", "replace")) if len(value) <= _MAX_ENCODE else None
    if isinstance(value, memoryview):
        return value.nbytes
    return None


def total_size(values: Any) -> int | None:
    """Sum of :func:`item_size` over values (``None`` when none is measurable)."""
    total, known = 0, False
    for value in values:
        size = item_size(value)
        if size is not None:
            total += size
            known = True
    return total if known else None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_PLAIN = (int, float, bool, Decimal, type(None))
_STRINGY = (uuid.UUID, datetime.date, datetime.time, datetime.timedelta)


def _item(value: Any, depth: int = 0) -> str:
    """A short, side-effect-free text of one key part (no ``repr`` of application objects)."""
    if isinstance(value, str):
        return repr(_clip(value, _MAX_ITEM_CHARS))
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:_MAX_ITEM_CHARS]))
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, _PLAIN):
        return _clip(repr(value), _MAX_ITEM_CHARS)
    if isinstance(value, _STRINGY):
        return str(value)
    if isinstance(value, (tuple, frozenset)) and depth < 2:
        inner = ", ".join(_item(v, depth + 1) for v in list(value)[:10])
        more = ", \u2026" if len(value) > 10 else ""
        return f"({inner}{more})" if isinstance(value, tuple) else f"{{{inner}{more}}}"
    if isinstance(value, type):
        return value.__name__
    return f"<{type(value).__name__}>"


def _is_kwmark(value: Any) -> bool:
    # The class that cachetools' ``keys._kwmark`` (and our ``_KWMARK``) puts between
    # positional and keyword arguments.
    return isinstance(value, type) and value.__name__ in ("_HashedTuple", "_KwMark")


def key_text(key: Any, label: str | None = None) -> str:
    """The text Sentry shows for a cache key.

    Strings are sent as they are and bytes decoded; an argument tuple (the key of ``cached``,
    cachetools' ``hashkey``/``methodkey``/``typedkey``) becomes ``label(arg, kw=value)``.
    """
    if isinstance(key, str):
        return _clip(key, _MAX_KEY_CHARS)
    if isinstance(key, (bytes, bytearray)):
        return _clip(bytes(key).decode("utf-8", "replace"), _MAX_KEY_CHARS)
    if not isinstance(key, tuple) or label is None:  # cachetools < 8: a tuple subclass
        return _clip(_item(key), _MAX_KEY_CHARS)
    parts: list[str] = []
    named: list[Any] | None = None  # what follows the keyword marker
    for part in key:
        if _is_kwmark(part):
            named = []
        elif isinstance(part, type):
            continue  # typedkey's argument types
        elif named is not None:
            named.append(part)
        else:
            parts.append(_item(part, 1))
    pairs = named or []
    if not all(type(p) is tuple and len(p) == 2 for p in pairs):  # cachetools < 5.3: flat
        pairs = list(zip(pairs[0::2], pairs[1::2], strict=False))
    parts += [f"{p[0]}={_item(p[1], 1)}" if isinstance(p[0], str) else _item(p, 1)
              for p in pairs]
    return _clip(f"{label}({', '.join(parts)})", _MAX_KEY_CHARS)


def ttl_seconds(ttl: Any) -> int | None:
    """A positive, finite TTL in whole seconds (rounded up), else ``None``."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        return None
    if not math.isfinite(ttl) or ttl <= 0:
        return None
    return math.ceil(ttl)


def mapping_ttl(mapping: Any) -> int | None:
    """The time-to-live of a TTL mapping (``cachetools.TTLCache.ttl``, :class:`BoundedCache`)."""
    try:
        return ttl_seconds(getattr(mapping, "ttl", None))
    except Exception:  # an attribute that raises: no TTL to report
        return None


_get_pipeline: Callable[[], Any] | None = None


def _settings() -> Any:
    """The process's bridge settings, read per span (so tests' pipelines apply)."""
    global _get_pipeline
    if _get_pipeline is None:
        from .pipeline import get_pipeline  # noqa: PLC0415 (import cycle)

        _get_pipeline = get_pipeline
    return _get_pipeline().cfg


class SpanBudget:
    """Cache spans made per trace in this process (``SENTRY_BRIDGE_CACHE_SPAN_LIMIT``): a
    memoized function called in a loop must not make thousands of spans. Bounded: the oldest
    traces are forgotten first."""

    def __init__(self, max_traces: int = 4096) -> None:
        self._counts: dict[int, int] = {}
        self._max_traces = max_traces
        self._lock = threading.Lock()

    def take(self, trace_id: int) -> bool:
        """Whether one more cache span may be made in this trace (and count it)."""
        limit = _settings().cache_span_limit
        if limit <= 0:
            return True
        if self._counts.get(trace_id, 0) >= limit:  # spent: no lock needed to say no
            return False
        with self._lock:
            made = self._counts.get(trace_id, 0)
            if made >= limit:
                return False
            if not made and len(self._counts) >= self._max_traces:
                del self._counts[next(iter(self._counts))]
            self._counts[trace_id] = made + 1
        return True


class BoundedCache(MutableMapping[Hashable, Any]):
    """A thread-safe LRU mapping of at most ``maxsize`` items, each expiring ``ttl`` seconds
    after it was stored (``None``: never). The default storage of :func:`cached`."""

    def __init__(self, maxsize: int = 1024, ttl: float | None = None,
                 timer: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if ttl is not None and not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds (or None)")
        self.maxsize = maxsize
        self.ttl = ttl
        self._timer = timer
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: Hashable) -> Any:
        with self._lock:
            expires, value = self._data[key]
            if expires and expires <= self._timer():
                del self._data[key]
                raise KeyError(key)
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        expires = self._timer() + self.ttl if self.ttl else 0.0
        with self._lock:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __delitem__(self, key: Hashable) -> None:
        with self._lock:
            del self._data[key]

    def __iter__(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
