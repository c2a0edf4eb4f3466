"""What error events get besides the spans (pure), applied to the events of ``error_events``.

The pipeline knows three things the spans do not hold and hands them in as
:class:`ErrorInputs`:

- the exception chains read from the live exceptions when ``Span.record_exception`` was called
  (``_live_exceptions.py``): a chain whose main exception is the event's (same type, value and
  innermost frame, the key ``error_events`` groups records by) replaces the frames parsed from
  ``exception.stacktrace``; without one the parsed frames stay. A message that a record
  replaced (``sentry.exception.message_digest``: private data left out) is replaced in the
  chains too, the main exception's and those it was raised from;
- the ``logging`` records made while a span of the transaction was current
  (``_log_breadcrumbs.py``): merged into each event's breadcrumbs, up to the error; a record
  that logs the event's own exception (``exc_info``) is the event, not a breadcrumb of it;
- the exceptions sentry-sdk already sent in this trace (``_sdk_events.py``): no second event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .breadcrumbs import MAX_BREADCRUMBS, log_crumb
from .errors import common_tail, dedupe_key, message_digest
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
    #: the messages records gave instead of ``str(exception)``, by exception type (as
    #: ``exception.type`` says it) and digest of ``str(exception)`` (``errors.replaced_messages``)
    messages: Mapping[tuple[Any, str], str] = field(default_factory=dict)


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


def _without_private_messages(
    chain: Sequence[dict[str, Any]], messages: dict[tuple[str, str], str]
) -> Sequence[dict[str, Any]]:
    """``chain`` with each message a record replaced (by short type name and digest) replaced
    the same way: the event's own exception is then recognised, and no exception it was raised
    from shows the private data its record left out."""
    out: list[dict[str, Any]] | None = None
    for index, item in enumerate(chain):
        value = item.get("value")
        if not isinstance(value, str):
            continue
        better = messages.get((str(item.get("type")), message_digest(value)))
        if better is not None:
            out = list(chain) if out is None else out
            out[index] = {**item, "value": better}
    return chain if out is None else out


def _live_chain(
    chains: Sequence[Sequence[dict[str, Any]]], values: Sequence[dict[str, Any]]
) -> Sequence[dict[str, Any]] | None:
    """Of the live chains of the event's key (two exceptions may have one message and
    innermost frame), the longest whose frames are the innermost part of the event's stack
    trace; else the one sharing the most innermost frames with it."""
    if not chains:
        return None
    parsed = values[-1].get("stacktrace", {}).get("frames", [])

    def fit(chain: Sequence[dict[str, Any]]) -> tuple[bool, int, int]:
        frames = chain[-1]["frames"]
        shared = common_tail(parsed, frames)
        return shared == len(frames), shared, len(frames)

    return max(chains, key=fit)


def complete_errors(
    errors: list[dict[str, Any]], inputs: ErrorInputs, send_pii: bool
) -> tuple[list[dict[str, Any]], int]:
    """``errors`` (of one transaction) with ``inputs`` applied; also how many were left out
    because sentry-sdk sent them."""
    messages = {(str(kind).rpartition(".")[2], digest): text
                 for (kind, digest), text in inputs.messages.items()}
    live: dict[tuple[Any, ...], list[Sequence[dict[str, Any]]]] = {}
    for chain in inputs.live:
        if chain:
            if messages:
                chain = _without_private_messages(chain, messages)
            live.setdefault(_live_key(chain, send_pii), []).append(chain)
    out: list[dict[str, Any]] = []
    skipped = 0
    for error in errors:
        values = error["exception"]["values"]
        main = values[-1]
        if any(same_exception(main, sent, send_pii) for sent in inputs.sent_by_sdk):
            skipped += 1
            continue
        found = _live_chain(live.get(dedupe_key(values), ()), values) if live else None
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
