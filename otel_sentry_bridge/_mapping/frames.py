"""Stack frames and exception chains for error events (pure).

Two sources give the same shape, ``{type, value, frames, source}`` per exception, the first
raised (the cause) first: :func:`parse_traceback` reads the formatted traceback an
``exception`` span event carries, and ``_live_exceptions.py`` reads the live exception when
``Span.record_exception`` is called (richer: module, source context). :func:`path_frame` is
what both know from a file path alone: the file name, the module of an installed package and
whether the frame is the application's own code.
"""

from __future__ import annotations

import re
import sysconfig
from typing import Any

from .values import MAX_VALUE_CHARS

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]*)", line (?P<line>\d+)(?:, in (?P<func>.+))?\s*$')
#: Python 3.11+ underlines the failing expression with a line of these characters.
_MARKERS = frozenset(" ~^-")
_CHAIN = {
    "The above exception was the direct cause of the following exception:": "__cause__",
    "During handling of the above exception, another exception occurred:": "__context__",
}
_TRACEBACK_HEADER = "Traceback (most recent call last):"
#: Paths that are not the application's own code.
_NOT_APP = ("site-packages", "dist-packages")
#: The bridge's own packages (an editable install keeps them outside site-packages).
_OWN_PACKAGES = ("otel_sentry_bridge", "otel_sentry_bridge_instrumentation")
_STDLIB = tuple(
    path for path in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")}
    if path
)
MAX_FRAMES = 250
MAX_CHAIN = 10


def path_frame(path: str, line: int | None, function: str | None) -> dict[str, Any]:
    """A Sentry frame from what a traceback line holds: ``abs_path``, ``filename``,
    ``function``, ``lineno`` (when known), ``in_app`` and, for installed packages,
    ``module``."""
    frame: dict[str, Any] = {"abs_path": path}
    if line is not None:
        frame["lineno"] = line
    frame["function"] = function or "<module>"
    marker = next((m for m in _NOT_APP if f"/{m}/" in path), None)
    if marker is None:  # the bridge itself, even from a source checkout: never the app's code
        own = next((m for m in _OWN_PACKAGES if f"/{m}/" in path), None)
        if own is not None:
            path_inside = path.split(f"/{own}/", 1)[1]
            frame["filename"] = f"{own}/{path_inside}"
            if path_inside.endswith(".py"):
                frame["module"] = (f"{own}." + path_inside[:-3].replace("/", ".")
                                   ).removesuffix(".__init__")
            frame["in_app"] = False
            return frame
    if marker is not None:
        relative = path.split(f"/{marker}/", 1)[1]
        frame["filename"] = relative
        if relative.endswith(".py"):
            frame["module"] = relative[:-3].replace("/", ".").removesuffix(".__init__")
        frame["in_app"] = False
    else:
        frame["filename"] = path.rsplit("/", 1)[-1] or path
        frame["in_app"] = not (path.startswith("<") or path.startswith(_STDLIB))
    return frame


def _split_exception_line(text: str) -> tuple[str, str]:
    name, _, value = text.partition(": ")
    return name.strip(), value.strip()


def parse_traceback(text: str) -> list[dict[str, Any]]:
    """A formatted Python traceback -> exceptions ``{type, value, frames, source}``, the first
    raised (the cause) first, as Sentry orders them. Unknown lines are skipped."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        source = _CHAIN.get(line.strip())
        if source is not None:
            blocks.append((source, []))
        else:
            blocks[-1][1].append(line)
    out: list[dict[str, Any]] = []
    for source, lines in blocks[-MAX_CHAIN:]:
        frames: list[dict[str, Any]] = []
        last_line: str | None = None
        for line in lines:
            match = _FRAME.match(line)
            if match:
                frames.append(path_frame(match["path"], int(match["line"]), match["func"]))
                continue
            stripped = line.strip()
            if not stripped or stripped == _TRACEBACK_HEADER or set(stripped) <= _MARKERS:
                continue
            if line.startswith((" ", "\t")):
                if frames and "context_line" not in frames[-1]:
                    frames[-1]["context_line"] = stripped[:MAX_VALUE_CHARS]
                continue
            last_line = stripped
        if last_line is None and not frames:
            continue
        kind, value = _split_exception_line(last_line or "")
        out.append({"type": kind, "value": value, "frames": frames[-MAX_FRAMES:],
                    "source": source})
    return out
