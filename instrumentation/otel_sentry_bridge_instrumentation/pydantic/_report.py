"""What a failed validation reports: field errors, a message without input values, and the
span event (an error event or a breadcrumb) that carries them.

pydantic's own ``str(ValidationError)`` shows every rejected input value (and a URL per error),
so it is never sent as is: the message is built from the field locations and error types, and
input values are added only when ``send_default_pii`` is on (values of keys that look like
secrets stay ``[Filtered]`` even then).
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Mapping
from itertools import islice
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode
from pydantic_core import ValidationError

from otel_sentry_bridge._mapping.breadcrumbs import BREADCRUMB_EVENT
from otel_sentry_bridge._mapping.errors import message_digest
from otel_sentry_bridge._mapping.scrub import FILTERED, is_secret_key
from otel_sentry_bridge.breadcrumbs import breadcrumb_attributes
from otel_sentry_bridge.conventions import (
    CAPTURE_JSON_SUFFIX,
    CAPTURE_PREFIX,
    EXCEPTION_HANDLED,
    EXCEPTION_MESSAGE_DIGEST,
    Attr,
)

#: Span data: how many errors the failed validation had.
ERROR_COUNT = "pydantic.error_count"
#: Span data (OpenTelemetry's ``error.type``): the exception's qualified class name.
ERROR_TYPE = Attr.ERROR_TYPE[0]
#: The exception event's capture context key (``contexts.capture.validation``).
CONTEXT_ATTRIBUTE = f"{CAPTURE_PREFIX}validation{CAPTURE_JSON_SUFFIX}"
#: The breadcrumb's category.
CATEGORY = "validation"

#: Field errors carried by an error event, and by a breadcrumb (its data holds 50 keys).
MAX_EVENT_ERRORS = 20
MAX_BREADCRUMB_ERRORS = 10
#: Locations listed in the message, and the message's length.
MAX_MESSAGE_FIELDS = 5
MAX_MESSAGE = 250
#: Lengths of a location, an error type, a message; of an input value's JSON.
MAX_LOC = 200
MAX_TYPE = 100
MAX_MSG = 300
MAX_INPUT = 512
#: Frames above the wrapper added to the stack trace (the innermost ones).
MAX_CALLERS = 100
_HEADER = "Traceback (most recent call last):\n"
#: An input value is copied this deep, with this many items per mapping or sequence.
MAX_INPUT_DEPTH = 3
MAX_INPUT_ITEMS = 10


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc(loc: Any) -> str:
    """pydantic's location tuple dotted (``items.0.price``); ``""`` for the input itself."""
    if not isinstance(loc, tuple):
        return _cut(str(loc), MAX_LOC)
    return _cut(".".join(str(part) for part in loc), MAX_LOC)


def _secret(loc: Any) -> bool:
    """Does the field (its last named part) look like it holds a secret?"""
    if isinstance(loc, tuple):
        names = [part for part in loc if isinstance(part, str)]
        return bool(names) and is_secret_key(names[-1])
    return False


def _plain(value: Any, depth: int = 0) -> Any:
    """A small JSON-safe copy of an input value (secret-looking keys filtered)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value, MAX_INPUT)
    if isinstance(value, (bytes, bytearray)):
        return _cut(bytes(value[:MAX_INPUT]).decode("utf-8", "replace"), MAX_INPUT)
    if depth >= MAX_INPUT_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {
            _cut(str(key), MAX_LOC): FILTERED if is_secret_key(str(key))
            else _plain(item, depth + 1)
            for key, item in islice(value.items(), MAX_INPUT_ITEMS)
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth + 1) for item in islice(value, MAX_INPUT_ITEMS)]
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return _cut(text, MAX_INPUT)


def _input(error: Mapping[str, Any]) -> Any:
    if _secret(error.get("loc")):
        return FILTERED
    value = _plain(error.get("input"))
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > MAX_INPUT:
            return _cut(text, MAX_INPUT)
    return value


def field_errors(exc: ValidationError, limit: int, with_input: bool) -> list[dict[str, Any]]:
    """The first ``limit`` errors as ``{loc, type, msg[, input]}`` (input only ``with_input``)."""
    out: list[dict[str, Any]] = []
    errors = exc.errors(include_url=False, include_context=False, include_input=with_input)
    for error in errors[:limit]:
        item: dict[str, Any] = {
            "loc": _loc(error.get("loc", ())),
            "type": _cut(str(error.get("type", "")), MAX_TYPE),
            "msg": _cut(str(error.get("msg", "")), MAX_MSG),
        }
        if with_input and "input" in error:
            item["input"] = _input(error)
        out.append(item)
    return out


def message(count: int, schema: str, errors: list[dict[str, Any]]) -> str:
    """``2 validation errors for User: address.zip [missing], age [int_parsing]``."""
    noun = "error" if count == 1 else "errors"
    fields = [f"{e['loc']} [{e['type']}]" if e["loc"] else f"[{e['type']}]"
              for e in errors[:MAX_MESSAGE_FIELDS]]
    if count > len(fields):
        fields.append("...")
    return _cut(f"{count} validation {noun} for {schema}: {', '.join(fields)}", MAX_MESSAGE)


def _type_name(exc: BaseException) -> str:
    """The exception's type as OpenTelemetry's ``exception.type`` says it."""
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ and kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    return name


def _stacktrace(exc: BaseException, text: str) -> str:
    """Python's formatted traceback, its last line saying ``text`` instead of ``str(exc)``,
    with the frames that called the validation before the traceback's own.

    The exception is recorded where the wrapper catches it: its traceback starts there, and
    alone would show the wrapper and pydantic, not the application code that validated.
    """
    lines = traceback.format_exception(exc)
    tail = traceback.format_exception_only(exc)
    if lines[-len(tail):] == tail:
        lines = lines[: -len(tail)]
    else:  # notes or an unusual layout: the traceback of this exception alone
        lines = [_HEADER, *traceback.format_tb(exc.__traceback__)]
    tb = exc.__traceback__
    if tb is not None and _HEADER in lines:
        outer = traceback.format_list(traceback.extract_stack(tb.tb_frame.f_back, MAX_CALLERS))
        at = len(lines) - lines[::-1].index(_HEADER)  # the main exception's traceback
        lines[at:at] = outer
    return "".join(lines) + f"{_type_name(exc)}: {text}\n"


def report_failure(
    span: Span, exc: ValidationError, schema: str, mode: str, setting: str, send_pii: bool,
) -> None:
    """The span failed (status, error count); then an error event, a breadcrumb or nothing
    (``setting``: ``event``, ``breadcrumb``, ``off``)."""
    count = exc.error_count()
    span.set_attributes({ERROR_COUNT: count, ERROR_TYPE: _type_name(exc)})
    noun = "error" if count == 1 else "errors"
    span.set_status(Status(StatusCode.ERROR, f"{count} validation {noun}"))
    if setting == "event":
        errors = field_errors(exc, MAX_EVENT_ERRORS, send_pii)
        text = message(count, schema, errors)
        context = {"schema": schema, "mode": mode, "error_count": count, "errors": errors}
        span.record_exception(exc, escaped=True, attributes={
            "exception.message": text,
            "exception.stacktrace": _stacktrace(exc, text),
            EXCEPTION_MESSAGE_DIGEST: message_digest(str(exc)),
            EXCEPTION_HANDLED: True,  # the caller may catch it; if it escapes, it says so
            CONTEXT_ATTRIBUTE: json.dumps(context, ensure_ascii=False, default=str),
        })
    elif setting == "breadcrumb":
        errors = field_errors(exc, MAX_BREADCRUMB_ERRORS, send_pii)
        for error in errors:  # breadcrumb data are flat values
            if isinstance(error.get("input"), (dict, list)):
                error["input"] = json.dumps(error["input"], ensure_ascii=False, default=str)
        text = message(count, schema, errors)
        attributes = breadcrumb_attributes(
            CATEGORY, text,
            {"schema": schema, "mode": mode, "error_count": count,
             "errors": {str(i): e for i, e in enumerate(errors)}},
            level="warning",
        )
        # What ``add_breadcrumb`` records, plus this message for the exception: if it escapes
        # (a web framework records it with ``str(exc)``), its error event says this instead.
        attributes.update({
            "exception.type": _type_name(exc),
            "exception.message": text,
            EXCEPTION_MESSAGE_DIGEST: message_digest(str(exc)),
        })
        span.add_event(BREADCRUMB_EVENT, attributes)
