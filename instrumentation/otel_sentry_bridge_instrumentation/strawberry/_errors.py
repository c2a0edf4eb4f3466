"""GraphQL errors as ``exception`` span events (so as Sentry error events).

Each error is recorded once, on the span closest to where it happened: a resolver's exception
on its ``graphql.resolve`` span, a syntax error on ``graphql.parse``, a validation error on
``graphql.validate``, anything else on the operation span. The event carries the operation and
the error's ``path`` and ``locations`` as ``capture.*`` attributes (the Sentry event's
``capture`` context, docs/errors.md), and the variables only with PII.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from graphql import GraphQLError
from graphql.language import get_location
from opentelemetry.trace import Span, Status, StatusCode

from otel_sentry_bridge._mapping.scrub import FILTERED
from otel_sentry_bridge.conventions import CAPTURE_NAME, CAPTURE_PREFIX

from ._document import flat_variables

#: Errors recorded per operation (a list resolver failing for each of 10 000 items must not
#: format 10 000 tracebacks); the others still count in ``graphql.errors``.
MAX_ERRORS = 20
MAX_STATUS_CHARS = 200

OPERATION_NAME = "graphql.operation.name"
OPERATION_TYPE = "graphql.operation.type"
PATH = "graphql.path"
LOCATIONS = "graphql.locations"
VARIABLES = "graphql.variables"

# graphql-core quotes a bad variable value in its message: 3.3 "Variable '$id' has invalid
# value: Int cannot represent non-integer value: 'bob@example.com'", 3.2 "Variable '$id' got
# invalid value 'bob@example.com'; Int cannot represent non-integer value: 'bob@example.com'"
_BAD_VARIABLE = re.compile(r"(Variable '\$[^']*' (?:has|got) invalid value)(.*)", re.DOTALL)
_SCALAR_MESSAGE = re.compile(r".*? value: ", re.DOTALL)


def safe_message(message: str, send_pii: bool) -> str:
    """A GraphQL error message without the variable value graphql-core quotes in it: what it
    says about the type stays ("Int cannot represent non-integer value: [Filtered]")."""
    match = None if send_pii else _BAD_VARIABLE.match(message)
    if match is None:
        return message
    head, rest = match.groups()
    if rest.startswith(" ") and not rest.startswith(" at ") and "; " in rest:  # 3.2
        head, detail = head + " [Filtered]; ", rest.split("; ", 1)[1]
    else:  # 3.3: "[ at "path"]: detail"
        where, _, detail = rest.partition(": ")
        head = head + where + ": "
    scalar = _SCALAR_MESSAGE.match(detail)
    if scalar is not None:
        return head + scalar.group() + FILTERED
    if "'" in detail or '"' in detail or "found" in detail:
        return head + FILTERED
    return head + detail  # "Field 'x' of required type 'Int!' was not provided." has no value


def path_text(path: Sequence[str | int] | None) -> str | None:
    """``["orders", 0, "total"]`` as ``"orders.0.total"`` (sentry-sdk's ``graphql.path``)."""
    return ".".join(str(key) for key in path) if path else None


def status_text(exc: BaseException, send_pii: bool) -> str:
    """An ERROR status description: ``Type: message``, as OpenTelemetry writes it."""
    message = safe_message(exc.message, send_pii) if isinstance(exc, GraphQLError) else str(exc)
    return f"{type(exc).__name__}: {message}"[:MAX_STATUS_CHARS]


class ErrorRecorder:
    """Records one operation's errors, each exception once, at most :data:`MAX_ERRORS`."""

    def __init__(self, send_pii: bool, variables: Mapping[str, Any] | None) -> None:
        self.send_pii = send_pii
        self.variables = variables if send_pii and isinstance(variables, Mapping) else None
        self.operation_name: str | None = None
        self.operation_type: str | None = None
        #: id -> the exception (kept alive, so its id is not reused by another)
        self.seen: dict[int, BaseException] = {}
        self.count = 0

    def is_seen(self, error: BaseException) -> bool:
        if id(error) in self.seen:
            return True
        original = getattr(error, "original_error", None)
        return original is not None and id(original) in self.seen

    def _attributes(
        self, path: str | None, locations: list[str] | None
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {CAPTURE_NAME: "graphql"}
        if self.operation_name:
            attrs[CAPTURE_PREFIX + OPERATION_NAME] = self.operation_name
        if self.operation_type:
            attrs[CAPTURE_PREFIX + OPERATION_TYPE] = self.operation_type
        if path:
            attrs[CAPTURE_PREFIX + PATH] = path
        if locations:
            attrs[CAPTURE_PREFIX + LOCATIONS] = locations
        if self.variables:
            attrs.update(flat_variables(self.variables, CAPTURE_PREFIX + VARIABLES))
        return attrs

    def record(
        self,
        span: Span,
        exc: BaseException,
        path: str | None,
        locations: list[str] | None,
    ) -> None:
        """``exc`` as an ``exception`` event of ``span`` (once; within the budget)."""
        if self.is_seen(exc):
            return
        self.seen[id(exc)] = exc
        if self.count >= MAX_ERRORS or not span.is_recording():
            return
        self.count += 1
        attrs = self._attributes(path, locations)
        if isinstance(exc, GraphQLError):
            # str(GraphQLError) quotes the document around the error (literals, a bad
            # variable's value): only its message, in the stack trace's last line too
            message = safe_message(exc.message, self.send_pii)
            attrs["exception.message"] = message
            attrs["exception.stacktrace"] = _stacktrace(exc, message)
        span.record_exception(exc, attributes=attrs, escaped=True)

    def record_result_error(self, span: Span, error: GraphQLError) -> None:
        """An error of the result: its original exception (with its traceback) when it has
        one, else the GraphQL error itself (also when the original is graphql-core's own
        error behind a bad variable: the GraphQL error says more)."""
        original = error.original_error
        exc: BaseException = error
        if isinstance(original, Exception) and not (
            isinstance(original, GraphQLError) and error.path is None
        ):
            exc = original
        locations = [f"{loc.line}:{loc.column}" for loc in error.locations or ()]
        if self.is_seen(error):
            return
        if exc is not error:
            self.seen[id(error)] = error
        self.record(span, exc, path_text(error.path), locations or None)


def _stacktrace(exc: GraphQLError, message: str) -> str:
    """The error's own traceback (if it was raised), its last line saying ``message``."""
    kind = type(exc)
    last = f"{kind.__module__}.{kind.__qualname__}: {message}"
    if exc.__traceback__ is None:
        return last
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{last}\n"


def field_locations(field_nodes: Sequence[Any]) -> list[str] | None:
    """``line:column`` of the field in the document (a resolver's error, as graphql-core will
    report it)."""
    out: list[str] = []
    for node in field_nodes[:5]:
        loc = getattr(node, "loc", None)
        if loc is not None and loc.source is not None:
            where = get_location(loc.source, loc.start)
            out.append(f"{where.line}:{where.column}")
    return out or None


def set_error_status(span: Span, description: str) -> None:
    span.set_status(Status(StatusCode.ERROR, description[:MAX_STATUS_CHARS]))
