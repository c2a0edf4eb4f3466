"""One WebSocket connection: its span, its message spans (at most
``SENTRY_BRIDGE_WEBSOCKET_MESSAGE_SPANS``), its counts and its message-handling times. Shared by
the websockets and Starlette instrumentations (docs/instrumentation/websockets.md).

A message span is made once its receive or send call has returned, with the call's start as
its start: a call that ends without a message (the peer closed) makes none, and a message over
the limit costs two clock reads and a few additions, never a span. The handling time of a
received message runs from the moment its receive call returned to the start of the
connection's next receive or send call (the time the handler spent on it); it goes to the
``websocket.message.handling.duration`` histogram (every message, whatever the sampling or the
span limit) and, per server connection, to the transaction's ``websocket.handling_time.*``
measurements.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Final, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from otel_sentry_bridge._internal_errors import guarded
from otel_sentry_bridge._server_request import HEADER_GETTER
from otel_sentry_bridge.conventions import Attr, Op, Source

from ._base import bridge_config

__all__ = ["ConnectionTrace", "handling_histogram", "payload_size", "payload_type"]

# Data of a connection span.
CLOSE_CODE: Final = Attr.WEBSOCKET_CLOSE_CODE[0]
CLOSE_REASON: Final = "websocket.close.reason"
CLOSE_INITIATOR: Final = "websocket.close.initiator"
SUBPROTOCOL: Final = "websocket.subprotocol"
MESSAGES_RECEIVED: Final = "websocket.messages.received"
MESSAGES_SENT: Final = "websocket.messages.sent"
BYTES_RECEIVED: Final = "websocket.bytes.received"
BYTES_SENT: Final = "websocket.bytes.sent"
SPANS_DROPPED: Final = "websocket.message_spans.dropped"
PROTOCOL_NAME: Final = Attr.NETWORK_PROTOCOL_NAME[0]
# Data of a message span (and attributes of the handling histogram).
MESSAGE_TYPE: Final = "websocket.message.type"
MESSAGE_SIZE: Final = "websocket.message.size"
MESSAGE_INDEX: Final = "websocket.message.index"
ROLE: Final = "websocket.role"
ROUTE: Final = Attr.HTTP_ROUTE[0]
# Transaction measurements of a server connection.
MEASURE_RECEIVED: Final = "websocket.messages_received"
MEASURE_SENT: Final = "websocket.messages_sent"
MEASURE_HANDLING_AVG: Final = "websocket.handling_time.avg"
MEASURE_HANDLING_MAX: Final = "websocket.handling_time.max"

HANDLING_METRIC: Final = "websocket.message.handling.duration"
SERVER: Final = "server"
CLIENT: Final = "client"
TEXT: Final = "text"
BINARY: Final = "binary"
FRAGMENTED: Final = "fragmented"
#: RFC 6455 caps a close reason at 123 bytes; a longer one (never sent) is cut.
MAX_REASON: Final = 123
_HANDLING_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                            1.0, 2.5, 5.0, 10.0)


def handling_histogram(meter: Meter) -> Histogram:
    """The message-handling histogram (seconds) of an instrumentation's meter."""
    return meter.create_histogram(
        HANDLING_METRIC, unit="s",
        description="Time a WebSocket handler spent on a received message, until its next "
                    "receive or send.",
        explicit_bucket_boundaries_advisory=list(_HANDLING_BUCKETS),
    )


def payload_type(data: object, text: bool | None = None) -> str:
    """``text``, ``binary`` or ``fragmented`` (an iterable of fragments) for a payload; ``text``
    overrides the payload's own type (websockets' ``send(..., text=...)``)."""
    if isinstance(data, str):
        return BINARY if text is False else TEXT
    if isinstance(data, (bytes, bytearray, memoryview)):
        return TEXT if text is True else BINARY
    return FRAGMENTED


def payload_size(data: object) -> int | None:
    """A payload's size on the wire in bytes (UTF-8 for text), None for fragments."""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, memoryview):
        return data.nbytes
    return None




def extract_parent(headers: Iterable[tuple[str, str]]) -> Context:
    """The context a handshake's headers continue (the global propagator's formats)."""
    carrier: dict[str, list[str]] = {}
    for name, value in headers:
        carrier.setdefault(name.lower(), []).append(value)
    return propagate.extract(carrier, getter=HEADER_GETTER)


def address_attributes(local: Any, remote: Any) -> dict[str, Any]:
    """``server.*`` and (only with ``SENTRY_BRIDGE_SEND_DEFAULT_PII``, as the HTTP middleware)
    ``client.*`` attributes of a server connection's socket addresses (IPv4 or IPv6 tuples; a
    Unix socket's path has none)."""
    out: dict[str, Any] = {}
    sides = (("server", local), ("client", remote)) if bridge_config().send_default_pii else (
        ("server", local),)
    for side, address in sides:
        if (isinstance(address, (tuple, list)) and len(address) >= 2
                and isinstance(address[0], str) and type(address[1]) is int):
            out[f"{side}.address"], out[f"{side}.port"] = address[0], address[1]
    return out


class ConnectionTrace:
    """The bookkeeping of one connection (thread-safe: the sync API sends from any thread)."""

    __slots__ = (
        "_closed",
        "_depth",
        "_handled",
        "_handling_max",
        "_handling_total",
        "_lock",
        "_metric_attrs",
        "_pending",
        "_token",
        "bytes_received",
        "bytes_sent",
        "dropped",
        "finished",
        "histogram",
        "limit",
        "origin",
        "own_span",
        "parent",
        "received",
        "recording",
        "role",
        "sent",
        "span",
        "spans",
        "trace_id",
        "tracer",
    )

    def __init__(self, tracer: Tracer, span: Span, role: str, *, own_span: bool, origin: str,
                 histogram: Histogram | None, context: Context | None = None) -> None:
        """``context``: the one the span was started in (the handshake's, with its baggage),
        under the span for the handler; default: the current one."""
        self.tracer = tracer
        self.span = span
        self.role = role
        self.own_span = own_span
        self.origin = origin
        self.histogram = histogram
        self.recording = span.is_recording()
        self.trace_id = span.get_span_context().trace_id
        self.parent = trace.set_span_in_context(span, context)
        self.limit = bridge_config().websocket_message_spans if self.recording else 0
        # Few attributes (the route, when known, comes with ``set_route``): each costs the
        # SDK about a microsecond per measurement.
        self._metric_attrs: dict[str, str] = {ROLE: role}
        self._lock = threading.Lock()
        self.received = self.sent = self.bytes_received = self.bytes_sent = 0
        self.spans = self.dropped = 0
        self._pending: int | None = None
        self._handled = self._handling_total = self._handling_max = 0
        self._closed: tuple[int, str, str | None] | None = None
        self._token: object | None = None
        self._depth = 0
        self.finished = False

    # -- messages -----------------------------------------------------------------------

    @guarded("websocket message", cast("tuple[int, Context | None]", (0, None)))
    def begin(self) -> tuple[int, Context | None]:
        """A receive or send call starts: its start (ns) and the parent of its message span
        (None when the limit is reached). The handling of the message received last, if any,
        ends here."""
        now = time.time_ns()
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                elapsed = max(0, now - pending)
                self._handled += 1
                self._handling_total += elapsed
                self._handling_max = max(self._handling_max, elapsed)
        if pending is not None and self.histogram is not None:
            self.histogram.record(elapsed / 1e9, self._metric_attrs, context=self.parent)
        return now, (self._message_parent() if self.spans < self.limit else None)

    def _message_parent(self) -> Context:
        """Under the connection's span, or, for a server connection, under the current span
        when it is in the connection's trace (a span the handler opened). A client's current
        span is where it was opened, not inside it."""
        if self.role != SERVER:
            return self.parent
        current = trace.get_current_span()
        if current is not self.span and current.is_recording() and (
                current.get_span_context().trace_id == self.trace_id):
            return otel_context.get_current()
        return self.parent

    @guarded("websocket message", None)
    def message(self, received: bool, begun: tuple[int, Context | None], data: object,
                text: bool | None = None) -> None:
        """A message (``data``: its payload) was received (``received``) or sent by a call
        that ``begin`` started; ``text`` overrides the payload's type (``send(..., text=)``)."""
        end = time.time_ns()
        start, parent = begun
        kind, size = payload_type(data, text), payload_size(data)
        with self._lock:
            if received:
                self.received += 1
                index = self.received
                self.bytes_received += size or 0
                self._pending = end
            else:
                self.sent += 1
                index = self.sent
                self.bytes_sent += size or 0
            traced = self.spans < self.limit and start > 0
            if traced:
                self.spans += 1
            elif self.recording:
                self.dropped += 1
        if not traced:
            return
        attributes: dict[str, Any] = {
            Attr.SENTRY_OP[0]: Op.WEBSOCKET_RECEIVE if received else Op.WEBSOCKET_SEND,
            Attr.SENTRY_ORIGIN[0]: self.origin,
            MESSAGE_TYPE: kind,
            MESSAGE_INDEX: index,
        }
        if size is not None:
            attributes[MESSAGE_SIZE] = size
        span = self.tracer.start_span(
            f"{'receive' if received else 'send'} {kind}", context=parent or self.parent,
            kind=SpanKind.INTERNAL, attributes=attributes, start_time=start)
        span.end(end_time=max(end, start))

    # -- connection ---------------------------------------------------------------------

    @guarded("websocket route", None)
    def set_route(self, route: str) -> None:
        """The route template the connection matched: the transaction's name (``WS <route>``)
        and the handling histogram's ``http.route``."""
        name = f"WS {route}"
        if self.recording:
            self.span.set_attributes({
                ROUTE: route, Attr.SENTRY_TRANSACTION_NAME[0]: name,
                Attr.SENTRY_TRANSACTION_SOURCE[0]: Source.ROUTE})
            if self.own_span:
                self.span.update_name(name)
        self._metric_attrs = {**self._metric_attrs, ROUTE: route}

    @guarded("websocket close", None)
    def closed(self, code: int | None, reason: str | None, initiator: str | None) -> None:
        """The close code and reason (the first report wins) and who closed: ``client`` or
        ``server``."""
        if self._closed is None and isinstance(code, int) and not isinstance(code, bool):
            self._closed = (int(code), str(reason or "")[:MAX_REASON], initiator)

    @guarded("websocket failure", None)
    def failed(self, exc: BaseException, record: bool = True) -> None:
        """The handler (or a handshake hook) raised ``exc``: an error status on the connection
        span, and an error event when ``record`` (never for a cancellation)."""
        if not self.recording:
            return
        cls = type(exc)
        if record and isinstance(exc, Exception):
            self.span.record_exception(exc, escaped=True)
        name = cls.__qualname__ if cls.__module__ == "builtins" else (
            f"{cls.__module__}.{cls.__qualname__}")
        self.span.set_attribute(Attr.ERROR_TYPE[0], name)
        self.span.set_status(StatusCode.ERROR, cls.__name__)

    @guarded("websocket context", None)
    def enter(self) -> None:
        """The handler starts: the connection's span becomes the current span."""
        self._depth += 1
        if self._token is None and self.own_span:
            self._token = otel_context.attach(self.parent)

    @guarded("websocket context", True)
    def exit(self) -> bool:
        """The handler ended (``enter``'s counterpart, same task or thread); True when it was
        the outermost one."""
        self._depth -= 1
        if self._depth > 0:
            return False
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        return True

    @guarded("websocket finish", None)
    def finish(self) -> None:
        """Counts, close code and measurements on the connection's span; ends it if ours
        (once: two threads closing a sync connection may both get here)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
        if not self.recording:
            if self.own_span:
                self.span.end()
            return
        with self._lock:
            attributes: dict[str, Any] = {
                MESSAGES_RECEIVED: self.received, MESSAGES_SENT: self.sent,
                BYTES_RECEIVED: self.bytes_received, BYTES_SENT: self.bytes_sent,
                SPANS_DROPPED: self.dropped,
            }
            if self._closed is not None:
                code, reason, initiator = self._closed
                attributes[CLOSE_CODE] = code
                if reason:
                    attributes[CLOSE_REASON] = reason
                if initiator:
                    attributes[CLOSE_INITIATOR] = initiator
            if self.role == SERVER:
                measure = Attr.SENTRY_MEASUREMENT_PREFIX
                unit = Attr.SENTRY_MEASUREMENT_UNIT_SUFFIX
                attributes[measure + MEASURE_RECEIVED] = self.received
                attributes[measure + MEASURE_SENT] = self.sent
                if self._handled:
                    attributes[measure + MEASURE_HANDLING_AVG] = (
                        self._handling_total / self._handled / 1e6)
                    attributes[measure + MEASURE_HANDLING_AVG + unit] = "millisecond"
                    attributes[measure + MEASURE_HANDLING_MAX] = self._handling_max / 1e6
                    attributes[measure + MEASURE_HANDLING_MAX + unit] = "millisecond"
        self.span.set_attributes(attributes)
        if self.own_span:
            self.span.end()
