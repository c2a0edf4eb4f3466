"""What error events get besides the spans (pure), applied to the events of ``error_events``.

The pipeline knows three things the spans do not hold and hands them in as
:class:`ErrorInputs`:

- the exception chains read from the live exceptions when ``Span.record_exception`` was called
  (``_live_exceptions.py``): a chain whose main exception is the event's (same type, value and
  innermost frame, the key ``error_events`` groups records by) replaces the frames parsed from
  ``exception.stacktrace`` (an event whose message was replaced takes the unclaimed chain of its
  type and innermost frame); without one the parsed frames stay;
- the ``logging`` records made while a span of the transaction was current
  (``_log_breadcrumbs.py``): merged into each event's breadcrumbs, up to the error; a record
  that logs the event's own exception (``exc_info``) is the event, not a breadcrumb of it;
- the exceptions sentry-sdk already sent in this trace (``_sdk_events.py``): no second event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .breadcrumbs import MAX_BREADCRUMBS, log_crumb
from .errors import dedupe_key
from .scrub import scrub_text
from .values import MAX_VALUE_CHARS, text_or_none

#: Characters of an exception message compared to recognise the same exception elsewhere.
MATCH_PREFIX = 200

#: One exception seen elsewhere: its short type name and message.
ExceptionKey = tuple[str, str]
#: One ``logging`` record: ``(created, levelno, logger, message, exception or None)``.
LogRecordTuple = tuple[float, int, str, str, "ExceptionKey | None"]


@dataclass(frozen=True)
class ErrorInputs:
    """What the pipeline knows about a transaction's exceptions besides its spans."""

    #: exception chains of the live exceptions recorded in the transaction, each
    #: ``[{type, module, value, frames, source}, ...]``, the first raised first
    live: Sequence[Sequence[dict[str, Any]]] = ()
    #: the transaction's ``logging`` records, any order
    logs: Sequence[LogRecordTuple] = ()
    #: exceptions sentry-sdk sent in this trace
    sent_by_sdk: Sequence[ExceptionKey] = field(default_factory=tuple)


def same_exception(main: dict[str, Any], other: ExceptionKey, send_pii: bool) -> bool:
    """Is ``other`` (type name, raw message) the event's main exception value ``main``?
    Types compare by short name; messages by their start, after the same scrubbing (the
    other side may append notes)."""
    kind, message = other
    if kind.rpartition(".")[2] != main.get("type"):
        return False
    ours = (main.get("value") or "")[:MATCH_PREFIX]
    theirs = scrub_text(message.strip(), send_pii)
    return theirs.startswith(ours) if ours else not theirs


def _live_key(chain: Sequence[dict[str, Any]], send_pii: bool) -> tuple[Any, ...]:
    main = chain[-1]
    text = text_or_none(main.get("value"))
    value: dict[str, Any] = {"type": main["type"]}
    if text:
        value["value"] = scrub_text(text, send_pii)[:MAX_VALUE_CHARS]
    if main["frames"]:
        value["stacktrace"] = {"frames": main["frames"]}
    return dedupe_key([value])


def _with_live(
    values: list[dict[str, Any]], chain: Sequence[dict[str, Any]], send_pii: bool
) -> list[dict[str, Any]]:
    """The event's exception values with the live chain's frames; the main exception keeps
    what the span event said (type, value, mechanism)."""
    out: list[dict[str, Any]] = []
    for item in chain[:-1]:
        value: dict[str, Any] = {"type": item["type"] or "Error",
                                 "module": item.get("module") or "builtins"}
        text = text_or_none(item.get("value"))
        if text:
            value["value"] = scrub_text(text, send_pii)[:MAX_VALUE_CHARS]
        if item["frames"]:
            value["stacktrace"] = {"frames": item["frames"]}
        out.append(value)
    main = dict(values[-1])
    if chain[-1]["frames"]:
        parsed = main.get("stacktrace", {}).get("frames", [])
        main["stacktrace"] = {"frames": _main_frames(parsed, chain[-1]["frames"])}
    out.append(main)
    return out


def _main_frames(parsed: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The live frames, after the parsed ones above them when the record's stack trace also
    showed the code that called where the exception was caught (the live traceback starts
    there)."""
    count = len(live)
    if len(parsed) > count and all(
        p["abs_path"] == f["abs_path"] and p.get("lineno") == f.get("lineno")
        for p, f in zip(parsed[-count:], live, strict=True)
    ):
        return parsed[:-count] + live
    return live


def _by_place(
    live: dict[tuple[Any, ...], Sequence[dict[str, Any]]], errors: list[dict[str, Any]]
) -> dict[tuple[Any, ...], Sequence[dict[str, Any]]]:
    """The chains no event has the message of (its record replaced the message: private data
    left out), by exception type and innermost frame: that event's chain all the same."""
    claimed = {dedupe_key(error["exception"]["values"]) for error in errors}
    out: dict[tuple[Any, ...], Sequence[dict[str, Any]]] = {}
    for key, chain in live.items():
        if key not in claimed and key[2] is not None:
            place = (key[0], key[2])
            known = out.get(place)
            if known is None or len(chain[-1]["frames"]) > len(known[-1]["frames"]):
                out[place] = chain
    return out


def complete_errors(
    errors: list[dict[str, Any]], inputs: ErrorInputs, send_pii: bool
) -> tuple[list[dict[str, Any]], int]:
    """``errors`` (of one transaction) with ``inputs`` applied; also how many were left out
    because sentry-sdk sent them."""
    live: dict[tuple[Any, ...], Sequence[dict[str, Any]]] = {}
    for chain in inputs.live:
        if chain:
            key = _live_key(chain, send_pii)
            known = live.get(key)
            if known is None or len(chain[-1]["frames"]) > len(known[-1]["frames"]):
                live[key] = chain  # the longest, as error_events keeps the longest trace
    unclaimed = _by_place(live, errors) if live else {}
    out: list[dict[str, Any]] = []
    skipped = 0
    for error in errors:
        values = error["exception"]["values"]
        main = values[-1]
        if any(same_exception(main, sent, send_pii) for sent in inputs.sent_by_sdk):
            skipped += 1
            continue
        key = dedupe_key(values)
        found = live.get(key) if live else None
        if found is None and unclaimed:
            found = unclaimed.get((key[0], key[2]))
        if found is not None:
            error["exception"]["values"] = _with_live(values, found, send_pii)
        if inputs.logs:
            _merge_logs(error, main, inputs.logs, send_pii)
        out.append(error)
    return out, skipped


def _merge_logs(
    error: dict[str, Any], main: dict[str, Any], logs: Sequence[LogRecordTuple], send_pii: bool
) -> None:
    moment = error["timestamp"]
    crumbs = [
        log_crumb(created, levelno, name, message, send_pii)
        for created, levelno, name, message, exception in logs
        if created <= moment
        and (exception is None or not same_exception(main, exception, send_pii))
    ]
    if not crumbs:
        return
    trail = error.get("breadcrumbs", {}).get("values", [])
    merged = sorted([*trail, *crumbs], key=lambda c: c["timestamp"])  # stable: spans first
    error["breadcrumbs"] = {"values": merged[-MAX_BREADCRUMBS:]}
