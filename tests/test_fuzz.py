"""Property-based fuzzing: odd spans through the mapping, the trace buffer and the pipeline.

Three properties, each over real OpenTelemetry SDK objects (never mocks):

* A (mapping): any root and children, with hostile attributes, ids, parents, times, events,
  links, scopes and resources, map without raising to an event that orjson serializes and that
  Relay's normalizer and the Insights lint accept (``validate_event(event) == []``).
* B (buffer): random start/end sequences (duplicates, cycles, missing starts, spans that never
  end) through a ``TraceBuffer`` with small caps and a fake clock: every ended span is sent
  exactly once or counted as dropped, and the counters return to zero.
* C (pipeline): spans made through the real API into ``BridgeCapture`` (processor or exporter,
  registered once or twice): every transaction validates and no span id is sent twice.

Hypothesis runs derandomized (reproducible in CI) and without an example database. The number
of spans generated is printed at the end of the module.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from enum import Enum
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from sentry_receiver import validate_event

from otel_sentry_bridge import SentrySpanExporter, SentrySpanProcessor
from otel_sentry_bridge._mapping import MappingContext, SpanMapper, build_transaction
from otel_sentry_bridge._mapping.partial import build_partial_segment, segment_span_id
from otel_sentry_bridge.buffer import OpenRoot, TraceBuffer
from otel_sentry_bridge.conventions import Attr, Res
from otel_sentry_bridge.pipeline import reset_pipeline
from otel_sentry_bridge.testing import BridgeCapture

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
    ],
)

#: Spans start within the last hour (Relay accepts timestamps up to 30 days old, 60 s ahead).
BASE_NS = time.time_ns() - 3_600 * 10**9

#: Spans generated per property (reported at the end of the module).
GENERATED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_generated(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and GENERATED:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(GENERATED.items()))
        with capture.global_and_fixture_disabled():
            total = sum(GENERATED.values())
            reporter.write_line(f"\ntest_fuzz: {total} spans generated ({detail})")
            if PARTIAL_SEGMENTS:
                reporter.write_line("test_fuzz: partial segments made: " + ", ".join(
                    f"{k}: {v}" for k, v in sorted(PARTIAL_SEGMENTS.items())))


# ------------------------------------------------------------------------------------- values


class Opaque:
    """No ``__str__``: the default repr (with an address)."""


class WeirdStr:
    def __str__(self) -> str:
        return "\x00weird \u202e\U0001f4a5\n"


class BadStr:
    """``str()`` raises (only hand-made ReadableSpans can carry one: the SDK calls str())."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        return "BadStr()"


class Color(Enum):
    RED = "red"


class Text(str):
    """A str subclass (``type(v) is str`` is False)."""


WEIRD_STRINGS = [
    "", " ", "\t", "\n", "\r\n", "\x00", "\x00abc", "\x1b[31mred", "\x7f", "\u2028", "\u2029",
    "\ufeff", "\u202eevil", "\u0301", "\U0001f4a5", "\U0001f468\u200d\U0001f469", ".", "..", "/",
    "a/b", "null", "None", "NaN", "-1", "0", "1e400", "undefined", "\\", "'\"", "<script>",
    "%00", "%s%n", "{}", "[]", "GET", "get", "Stra\u00dfe", "\u0130", "\uffff", "\U0010ffff",
    "a" * 201, " x ", "x\ny", "key=value", "http://[::1", "ab\x00cd",
]
HUGE_STRINGS = [
    "x" * 16_385, "\U0001f4a5" * 20_000, ("a\x00\n" * 11_000)[:33_000], "y" * 100_000,
    "SELECT " + "x, " * 30_000,
]
INT_SPECIALS = [
    0, -1, 1, 80, 443, 65535, 65536, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    -(2**63), -(2**63) - 1, 10**30, -(10**30), 10**400,
]
FLOAT_SPECIALS = [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 200.0, 200.5, 1e20]
#: Objects only a hand-made ReadableSpan can carry (the SDK stringifies attribute values).
SDK_OBJECTS: list[Any] = [
    WeirdStr(), HTTPStatus.NOT_FOUND, Color.RED, Text("GET"), Decimal("NaN"), Decimal("1e1000"),
    complex(1, 2), frozenset({1}), range(3), bytearray(b"\xff\x00"), Ellipsis,
]
OBJECTS: list[Any] = [*SDK_OBJECTS, Opaque(), BadStr(), object, memoryview(b"ab"), {1, 2}]
SCALARS: list[Any] = [
    *WEIRD_STRINGS, *HUGE_STRINGS, *INT_SPECIALS, *FLOAT_SPECIALS, True, False, None,
    b"", b"abc", b"\xff\xfe\x00", bytes(range(256)),
]
NESTED: list[Any] = [
    [], (), {}, [1, "a", None, 2.5, b"x", True], ("GET", 200), [[1, [2, [3, [4]]]]],
    {"a": {"b": [1, {"c": math.nan}]}}, [10**30], (math.inf, -math.inf), [None, None],
    list(range(1_500)), ["x" * 20_000] * 3, {"": "", " ": None}, ("a", ("b", ("c",))),
    [b"\xff", bytearray(b"\x00")], {"k": [10**20, {"deep": (1.5, "\U0001f4a5")}]},
]
RAW_NESTED: list[Any] = [
    *NESTED, [BadStr()], {"k": Opaque()}, {1: "int key", None: "none key", (1, 2): "tuple"},
    [object(), Ellipsis], (WeirdStr(),), {"nested": {2: [Opaque()]}},
]
# st.text() never generates surrogates (orjson and Relay cannot take them: not in scope).
weird_text = st.one_of(
    st.sampled_from(WEIRD_STRINGS),
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=0x9F), max_size=12),  # control characters
)
huge_text = st.sampled_from(HUGE_STRINGS)
ints = st.one_of(st.integers(), st.sampled_from(INT_SPECIALS))
small_lists = st.lists(st.sampled_from(SCALARS), max_size=4)
#: What the SDK accepts in ``set_attribute`` (it stringifies other objects itself).
sdk_values = st.one_of(
    st.sampled_from([*SCALARS, *NESTED, *SDK_OBJECTS]),
    weird_text,
    ints,
    st.floats(),
    small_lists,
    small_lists.map(tuple),
    st.dictionaries(st.text(max_size=6), st.sampled_from(SCALARS), max_size=3),
)
#: Anything at all, for ReadableSpans built by hand (no SDK cleaning).
any_values = st.one_of(
    st.sampled_from([*SCALARS, *RAW_NESTED, *OBJECTS]),
    weird_text,
    ints,
    st.floats(),
    st.lists(st.sampled_from([*SCALARS, *OBJECTS]), max_size=4),
    small_lists.map(tuple),
)


def _concept_keys() -> list[str]:
    keys = {k for name, v in vars(Attr).items()
            if not name.startswith("_") and isinstance(v, tuple) for k in v}
    keys |= {Attr.REDIS_COMMAND_ARGS, Attr.CACHE_HIT, Attr.CACHE_ITEM_SIZE, Attr.CACHE_KEY}
    keys |= {"asgi.event.type", "celery.delivery_info", "exception.type", "http.host",
             "http.request.header.cookie", "http.request.header.authorization",
             "http.request.header.x_forwarded_for", "http.request.header.user-agent",
             "http.response.header.set-cookie", "url.fragment", "password", "db.password",
             "sentry.tag.color", "sentry.tag.", "sentry.tag. x", "enduser.id.ip"}
    return sorted(keys)


SEMCONV_KEYS = _concept_keys()
ODD_KEYS = [
    "", " ", ".", "\x00", "\U0001f4a5", "k" * 300, "long." * 1_000, "http.", "sentry.tag.\n",
    "http.request.header.", "sentry.tag." + "t" * 250, "sentry.tag.\U0001f4a5",
    "sentry.tag.a b", "http.request.header.x-\U0001f4a5", "http.request.header.\x00",
    "http.response.header.authorization", "user.", "db.", "Authorization", "api_key",
]
odd_keys = st.one_of(
    st.sampled_from(SEMCONV_KEYS),
    st.sampled_from(ODD_KEYS),
    st.text(max_size=20),
    st.builds(lambda p, t: p + t, st.sampled_from(["sentry.tag.", "http.request.header.",
                                                   "http.response.header."]),
              st.text(max_size=12)),
)

# ---------------------------------------------------------------- semantic-convention values

DSN_HOST, DSN_PORT = "o1.ingest.sentry.io", 443
methods = st.sampled_from(["GET", "POST", "get", "_OTHER", "CONNECT", "PATCH", "", " ", "G ET",
                           "1", "GET\n", "\U0001f4a5", "\u00df", "OPTIONS"])
urls = st.sampled_from([
    "https://api.example.com/v1/x?token=s#frag", "https://u:pw@api.example.com:8443/v1/x?q=1",
    "http://[::1]:8080/p", "http://[::1", "http://host:abc/", "http://host:99999/",
    "//no-scheme/path", "/relative?x=1", "", " ", "not a url", "http://", "http://:80/",
    "ftp://files.example.com/a b", f"https://{DSN_HOST}/api/1/envelope/",
    f"https://{DSN_HOST}:443/api/1/envelope/?sentry_key=k", "http://localhost:9000/api/1/envelope/",
    "https://\U0001f4a5.example/\u202e", "http://host/\x00path", "http://h/" + "p" * 5000,
])
paths = st.sampled_from(["/orders/<id>", "/", "", " ", "orders", "/a?b=c", "/\U0001f4a5",
                         "/a b", "/%00", "*", "/x\ny"])
hosts = st.sampled_from(["shop.local", "shop.local:8000", "", "::1", "[::1]", "10.0.0.1",
                         "h:1:2", "\U0001f4a5.example", "a b", "localhost", DSN_HOST])
ports = st.one_of(st.sampled_from([80, 443, 8000, 0, -1, 65536, 10**30, "8000", "abc", 80.0,
                                   8000.5, True, None]), ints)
codes = st.one_of(st.sampled_from([200, 201, 302, 400, 404, 429, 499, 500, 503, 600, 0, -1,
                                   10**30, 2**64, "200", " 404 ", "abc", "-5", 200.0, 404.5,
                                   math.nan, True, (200,), [500]]), ints)
ips = st.sampled_from(["10.1.2.3", "::1", "abc", "", "999.1.1.1", "10.0.0.1, 10.0.0.2",
                       "fe80::1%eth0", "unknown"])
systems = st.sampled_from(["postgresql", "mysql", "sqlite", "redis", "REDIS", "memcached",
                           "mongodb", "", " ", "other_sql", "\U0001f4a5", "clickhouse"])
statements = st.one_of(
    st.sampled_from(["SELECT 1", "/* c */ UPDATE t SET a=1", "/* only a comment */", "", " ",
                     "GET ?", "select * from \"t\"", "\x00", "SET k v", "-- c\nSELECT"]),
    weird_text,
)
redis_keys = st.one_of(
    st.lists(st.one_of(st.sampled_from(["product:1", "session:9", ""]), weird_text), max_size=4)
    .map(tuple),
    st.lists(any_values, max_size=3),
)
gen_value = st.one_of(weird_text, ints, st.none())
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "http.request.method": methods, "http.method": methods,
    "http.response.status_code": codes, "http.status_code": codes,
    "http.route": paths, "http.target": paths, "url.path": paths, "url.query": weird_text,
    "url.full": urls, "http.url": urls, "url.scheme": st.sampled_from(["http", "https", "", "x"]),
    "http.scheme": st.sampled_from(["http", "https", "ws"]),
    "server.address": hosts, "net.host.name": hosts, "http.server_name": hosts, "http.host": hosts,
    "net.peer.name": hosts, "server.port": ports, "net.host.port": ports, "net.peer.port": ports,
    "client.address": ips, "net.peer.ip": ips, "http.client_ip": ips,
    "user_agent.original": weird_text, "http.user_agent": weird_text,
    "db.system": systems, "db.system.name": systems, "db.statement": statements,
    "db.query.text": statements, "db.name": weird_text, "db.namespace": weird_text,
    "db.operation": st.sampled_from(["SELECT shop", "", " ", "get", "\U0001f4a5"]),
    "db.operation.name": st.sampled_from(["SELECT", "", "x y"]),
    "db.redis.database_index": st.one_of(ints, weird_text),
    Attr.REDIS_COMMAND_ARGS: redis_keys,
    Attr.CACHE_HIT: st.one_of(st.booleans(), st.sampled_from([1, "true", None])),
    Attr.CACHE_ITEM_SIZE: st.one_of(ints, st.sampled_from([-1, "42", 4.2])),
    "messaging.system": st.sampled_from(["kafka", "rabbitmq", "celery", "", " "]),
    "messaging.operation": st.sampled_from(["publish", "receive", "process", "", " ", "x y",
                                            "\U0001f4a5", "settle", "Deliver"]),
    "messaging.operation.type": st.sampled_from(["publish", "create", "weird"]),
    "messaging.destination.name": weird_text, "messaging.destination": weird_text,
    "messaging.message.id": weird_text, "messaging.message_id": gen_value,
    "messaging.message.body.size": st.one_of(ints, st.just("12")),
    "celery.action": st.sampled_from(["run", "apply_async", "", "other"]),
    "celery.task_name": weird_text, "celery.retries": st.one_of(ints, st.just("2")),
    "celery.state": st.sampled_from(["RETRY", "SUCCESS", ""]),
    "celery.retry.reason": weird_text,
    "celery.delivery_info": st.sampled_from(["{'routing_key': 'celery'}", "{'routing_key': ",
                                             "routing_key"]),
    "rpc.system": st.sampled_from(["grpc", "jsonrpc", "", " "]),
    "rpc.system.name": st.sampled_from(["grpc", "connect_rpc"]),
    "rpc.service": weird_text, "rpc.method": weird_text,
    "rpc.grpc.status_code": st.one_of(ints, st.sampled_from(["UNAVAILABLE", "5", "canceled",
                                                             "nope", ""])),
    "rpc.response.status_code": st.sampled_from(["NOT_FOUND", "internal", 99, -1]),
    "asgi.event.type": st.sampled_from(["http.response.start", "http.request", "ws.send", ""]),
    "faas.trigger": st.sampled_from(["http", "pubsub", "", " ", "a b"]),
    "error.type": st.one_of(st.sampled_from(["TimeoutError", "ConnectionError", "cancelled"]),
                            gen_value),
    "enduser.id": gen_value, "user.id": gen_value, "user.email": weird_text,
    "user.name": weird_text, "enduser.name": weird_text,
    "user.roles": st.one_of(st.sampled_from(["admin, staff", ",", " , "]),
                            st.lists(any_values, max_size=3)),
    "enduser.role": weird_text,
    "sentry.op": st.sampled_from(["db", "http.client", "cache.get", "queue.publish", "", " ",
                                  "custom.op", "a b", "\U0001f4a5"]),
    "sentry.description": weird_text, "sentry.name": weird_text,
    "sentry.origin": st.sampled_from(["manual", "auto.http", "", " ", "a b", "\U0001f4a5"]),
    "sentry.source": st.sampled_from(["route", "url", "task", "bogus", ""]),
    "sentry.tag.color": weird_text,
    "http.request.header.cookie": st.sampled_from([("a=b",), "a=b", ("a", "b")]),
    "http.request.header.user-agent": st.sampled_from([("curl/8",), "x"]),
}
#: Families: keys that usually travel together, so each mapping branch is reached.
FAMILIES = {
    "http_server": ["http.request.method", "http.method", "http.route", "http.target", "url.path",
                    "url.query", "url.full", "url.scheme", "server.address", "server.port",
                    "http.host", "net.host.port", "http.response.status_code",
                    "http.status_code", "user_agent.original", "client.address",
                    "net.peer.ip", "http.request.header.cookie",
                    "http.request.header.user-agent"],
    "http_client": ["http.request.method", "http.method", "url.full", "http.url",
                    "http.response.status_code", "http.status_code", "net.peer.name",
                    "net.peer.port", "server.address", "server.port", "http.target"],
    "db": ["db.system", "db.system.name", "db.statement", "db.query.text", "db.name",
           "db.namespace", "db.operation", "db.operation.name", "net.peer.name", "server.port"],
    "redis": ["db.system", "db.statement", "db.redis.database_index", Attr.REDIS_COMMAND_ARGS,
              Attr.CACHE_HIT, Attr.CACHE_ITEM_SIZE, "net.peer.name", "net.peer.port"],
    "messaging": ["messaging.system", "messaging.operation", "messaging.operation.type",
                  "messaging.destination.name", "messaging.destination", "messaging.message.id",
                  "messaging.message_id", "messaging.message.body.size"],
    "celery": ["celery.action", "celery.task_name", "celery.retries", "celery.state",
               "celery.retry.reason", "celery.delivery_info", "messaging.message.id"],
    "rpc": ["rpc.system", "rpc.system.name", "rpc.service", "rpc.method", "rpc.grpc.status_code",
            "rpc.response.status_code"],
    "misc": ["asgi.event.type", "faas.trigger", "error.type"],
    "user": ["enduser.id", "user.id", "user.email", "user.name", "enduser.name", "user.roles",
             "enduser.role", "client.address"],
    "sentry": ["sentry.op", "sentry.description", "sentry.name", "sentry.origin",
               "sentry.source", "sentry.tag.color"],
}


def _family(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    # mostly plausible values (so each branch runs), sometimes anything (wrong types)
    return st.fixed_dictionaries(
        {}, optional={k: st.one_of(PLAUSIBLE[k], PLAUSIBLE[k], values) for k in keys}
    )


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def attribute_dicts(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    families = st.one_of(*[_family(keys, values) for keys in FAMILIES.values()])
    return st.builds(
        _merge,
        st.lists(st.one_of(families, st.dictionaries(odd_keys, values, max_size=4)), max_size=3),
    )


raw_attributes = attribute_dicts(any_values)

# ----------------------------------------------------------------------- SDK objects (direct)

TRACE_A = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACE_B = 0x0AF7651916CD43DD8448EB211C80319C
trace_ids = st.one_of(
    st.sampled_from([TRACE_A, TRACE_A, TRACE_B]),
    st.integers(1, 2**128 - 1),
    st.sampled_from([0, 2**128, -1]),  # invalid
)
span_ids = st.one_of(
    st.integers(1, 2**64 - 1),
    st.sampled_from([1, 2, 0x00F067AA0BA902B7, 2**64 - 1]),
    st.sampled_from([0, 2**64, -1]),  # invalid
)
CONTRIB_SCOPES = [
    "opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.django",
    "opentelemetry.instrumentation.requests", "opentelemetry.instrumentation.sqlalchemy",
    "opentelemetry.instrumentation.redis", "opentelemetry.instrumentation.celery",
    "opentelemetry.instrumentation.grpc._server", "opentelemetry.instrumentation.jinja2",
    "opentelemetry.instrumentation.asgi", "opentelemetry.instrumentation.wsgi",
    "opentelemetry.instrumentation.urllib3", "opentelemetry.instrumentation.httpx",
    "opentelemetry.instrumentation.psycopg2", "opentelemetry.instrumentation.pymemcache",
    "otel_sentry_bridge_instrumentation.redis", "opentelemetry.instrumentation.",
    "opentelemetry.instrumentation.-", "opentelemetry.instrumentation.\U0001f4a5",
    "opentelemetry.instrumentation.a b.c", "otel_sentry_bridge_instrumentation.",
    "opentelemetry.instrumentation.aws-lambda",
]
# Spans are generated as plain specs (readable in Hypothesis' failure report) and turned into
# real SDK objects by make_span(). Times are nanosecond offsets from BASE_NS.
offsets = st.integers(0, 10**12)
statuses = st.tuples(st.sampled_from(StatusCode),
                     st.one_of(st.none(), weird_text, huge_text))
exception_attributes = st.fixed_dictionaries({}, optional={
    "exception.type": st.one_of(
        st.sampled_from(["ValueError", "requests.exceptions.ConnectTimeout",
                         "asyncio.CancelledError", "ConnectionRefusedError", ""]),
        any_values),
    "exception.message": any_values,
    "exception.stacktrace": st.one_of(weird_text, huge_text, any_values),
    "exception.escaped": any_values,
})
events = st.tuples(
    st.one_of(st.just("exception"), weird_text),
    st.one_of(st.none(), exception_attributes, st.dictionaries(odd_keys, any_values, max_size=3)),
    st.one_of(st.none(), offsets),
)
link_contexts = st.one_of(
    st.sampled_from(["INVALID_SPAN_CONTEXT", None]),
    st.tuples(trace_ids, span_ids, st.booleans()),
)
links = st.tuples(
    link_contexts, st.one_of(st.none(), st.dictionaries(odd_keys, any_values, max_size=3)),
)
scopes = st.one_of(
    st.none(),
    st.tuples(st.one_of(st.sampled_from(CONTRIB_SCOPES), weird_text),
              st.one_of(st.none(), st.sampled_from(["0.66b1", ""]), weird_text)),
)
RESOURCE_KEYS = [Res.SERVICE_NAME, Res.SERVICE_VERSION, *Res.ENVIRONMENT, Res.HOST_NAME,
                 Res.RUNTIME_NAME, Res.RUNTIME_VERSION, Res.RUNTIME_DESCRIPTION, Res.OS_TYPE,
                 Res.OS_DESCRIPTION, Res.OS_VERSION]
resource_plausible = st.sampled_from(["1.2.3", "staging", "web-1", "cpython", "linux", "3.11.4",
                                      "shop@1.0+abc"])
resource_attributes = st.builds(
    _merge,
    st.lists(st.one_of(
        st.fixed_dictionaries({}, optional={
            k: st.one_of(resource_plausible, resource_plausible, sdk_values)
            for k in RESOURCE_KEYS}),
        st.dictionaries(st.one_of(st.sampled_from(RESOURCE_KEYS), st.text(max_size=10)),
                        sdk_values, max_size=3),
    ), max_size=2),
)
span_names = st.one_of(
    st.sampled_from(["GET /orders/<id>", "GET", "connect", "SELECT shop", "run/shop.tasks.x",
                     "apply_async/shop.tasks.y", "jinja2.render", "/pkg.Svc/Method", "SET",
                     "http send", "", " "]),
    weird_text,
    huge_text,
)


def _context(trace_id: int, span_id: int, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


def make_span(spec: dict[str, Any], resource: Resource) -> ReadableSpan:
    """A real SDK ReadableSpan from a spec (every field straight into the constructor)."""
    trace_id, span_id, sampled = spec["context"]
    parent = spec.get("parent")
    link_objects = []
    for target, attributes in spec.get("links", ()):
        if target == "INVALID_SPAN_CONTEXT":
            target = INVALID_SPAN_CONTEXT
        elif target is not None:
            target = _context(target[0], target[1], target[2])
        link_objects.append(Link(target, attributes))
    scope = spec.get("scope")
    code, description = spec.get("status", (StatusCode.UNSET, None))
    start = BASE_NS + spec.get("start", 0)
    end = spec.get("end", 0)
    return ReadableSpan(
        name=spec.get("name", "span"),
        context=SpanContext(trace_id, span_id, is_remote=False,
                            trace_flags=TraceFlags(sampled)),
        parent=None if parent is None else _context(*parent),
        resource=resource,
        attributes=spec.get("attributes", {}),
        events=[Event(name, attributes, None if at is None else BASE_NS + at)
                for name, attributes, at in spec.get("events", ())],
        links=link_objects,
        kind=spec.get("kind", SpanKind.INTERNAL),
        status=Status(code, description),
        start_time=start,
        end_time=None if end is None else start + end,
        instrumentation_scope=None if scope is None else InstrumentationScope(*scope),
    )


@st.composite
def forests(draw: st.DrawFn) -> dict[str, Any]:
    """A root and children: duplicate ids, cycles, foreign traces, odd everything.

    Up to 6 spans are drawn in full; up to 40 more are copies of one of them (as services
    repeat the same query or call) with their own ids, parents and times: cheap to draw, and
    what exercises the span cap, the template cache and the parent repair.
    """
    detailed = draw(st.integers(1, 6))
    n = detailed + draw(st.integers(0, 40))
    root_trace = draw(trace_ids)
    ids: list[int] = []
    traces: list[int] = []
    for i in range(n):
        if ids and draw(st.integers(0, 9)) == 0:  # duplicate span id
            ids.append(ids[draw(st.integers(0, len(ids) - 1))])
        else:
            ids.append(draw(span_ids))
        traces.append(root_trace if i == 0 or draw(st.integers(0, 9)) else draw(trace_ids))
    specs: list[dict[str, Any]] = []
    for i in range(n):
        choice = draw(st.sampled_from(
            ["root", "root", "sibling", "sibling", "none", "remote", "unknown", "foreign"]
            if i else ["none", "none", "remote", "unknown", "sibling"]
        ))
        parent: tuple[int, int, bool] | None
        if choice == "root":
            parent = (traces[0], ids[0], draw(st.booleans()))
        elif choice == "sibling":  # any span, itself included: cycles
            j = draw(st.integers(0, n - 1))
            parent = (traces[j], ids[j], draw(st.booleans()))
        elif choice == "none":
            parent = None
        elif choice == "foreign":
            parent = (draw(trace_ids), ids[draw(st.integers(0, n - 1))], False)
        else:
            parent = (traces[i], draw(span_ids), choice == "remote")
        spec: dict[str, Any] = {
            "context": (traces[i], ids[i], 1 if i < detailed else draw(st.sampled_from([1, 0]))),
            "parent": parent,
            "start": draw(offsets),
            # duration; None: never ended; negative: ends before it starts
            "end": draw(st.one_of(st.integers(0, 10**11), st.none(),
                                  st.integers(-(10**10), -1))),
        }
        if i >= detailed:
            spec["like"] = draw(st.integers(0, detailed - 1))
            specs.append(spec)
            continue
        spec.update({
            "name": draw(span_names),
            "kind": draw(st.sampled_from(SpanKind)),
            "attributes": draw(raw_attributes),
            "status": draw(statuses),
            "scope": draw(scopes),
        })
        for key, strategy in (("events", events), ("links", links)):
            items = draw(st.lists(strategy, max_size=2))
            if items:
                spec[key] = items
        specs.append(spec)
    return {"resource": draw(resource_attributes), "root": specs[0], "children": specs[1:]}


def make_forest(forest: dict[str, Any]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    resource = Resource(forest["resource"])
    specs = [forest["root"], *forest["children"]]
    spans = []
    for spec in specs:
        if "like" in spec:
            spec = {**specs[spec["like"]], **spec}
        spans.append(make_span(spec, resource))
    return spans[0], spans[1:]


mapping_contexts = st.builds(
    MappingContext,
    send_pii=st.booleans(),
    tag_attributes=st.lists(odd_keys, max_size=4).map(tuple),
    max_spans=st.integers(1, 50),
    drop_connect_spans=st.booleans(),
    redis_cache_spans=st.booleans(),
    cache_prefixes=st.lists(st.sampled_from(["product:", "session:", "", "p"]), max_size=2)
    .map(tuple),
    release=st.sampled_from([None, "1.0.0", "shop@2.3.4"]),
    environment=st.sampled_from([None, "production", "staging"]),
    server_name=st.sampled_from([None, "web-1"]),
    own_host=st.sampled_from([None, DSN_HOST, "localhost"]),
    own_port=st.sampled_from([DSN_PORT, 9000]),
    sdk_version=st.just("0.1.0"),
)


#: Attributes by which the user names a span's op or description: the user's word.
EXPLICIT = (*Attr.SENTRY_OP, *Attr.SENTRY_DESCRIPTION)


def user_said(problem: str, event: dict[str, Any]) -> bool:
    """An Insights-lint problem (never a Relay error) of a span whose op or description the
    user set explicitly (``sentry.op``/``sentry.description``): their data is theirs to set."""
    if "Relay normalization" in problem:
        return False
    explicit = {s["span_id"] for s in event.get("spans", ())
                if any(k in s.get("data", {}) for k in EXPLICIT)}
    if any(f"span_id='{span_id}'" in problem for span_id in explicit):
        return True
    root = event.get("contexts", {}).get("trace", {})
    return "spans[" not in problem and any(k in root.get("data", {}) for k in EXPLICIT)


def valid_ids(span: ReadableSpan) -> bool:
    """Sentry needs a non-zero 128-bit trace id and a non-zero 64-bit span id."""
    context = span.context
    return (context is not None and 0 < context.trace_id < 2**128
            and 0 < context.span_id < 2**64)


def dsn_bound(span: ReadableSpan, ctx: MappingContext) -> bool:
    """Independent oracle: the span's URL points at the DSN's host and port."""
    if ctx.own_host is None:
        return False
    attrs = span.attributes or {}
    for key in ("url.full", "http.url"):
        url = attrs.get(key)
        if not isinstance(url, str):
            continue
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        if parts.hostname == ctx.own_host and port == ctx.own_port:
            return True
    return False


# ----------------------------------------------------------------------- property A: mapping


@settings(FUZZ, max_examples=600)
@given(forest=forests(), ctx=mapping_contexts)
def test_mapping_accepts_anything(forest: dict[str, Any], ctx: MappingContext) -> None:
    root, children = make_forest(forest)
    GENERATED["mapping"] += 1 + len(children)
    mapped = build_transaction(root, children, ctx)
    if mapped is None:
        # allowed only for the bridge's own requests (feedback loop) and for roots that no
        # valid transaction can be made of (zero or out-of-range ids)
        assert dsn_bound(root, ctx) or not valid_ids(root), "None for a sendable root"
        return
    event = mapped.event
    body = orjson.dumps(event)
    problems = [p for p in validate_event(event) if not user_said(p, event)]
    assert problems == [], problems
    assert len(event["spans"]) <= ctx.max_spans
    for error in mapped.errors:
        orjson.dumps(error)
        assert validate_event(error, kind="event") == []
    # the template cache must not change the result (second call: all cache hits)
    mapper = SpanMapper(ctx)
    build_transaction(root, children, ctx, mapper)
    cached = build_transaction(root, children, ctx, mapper)
    assert cached is not None
    assert orjson.dumps(cached.event) == body


@settings(FUZZ, max_examples=150)
@given(forest=forests(), ctx=mapping_contexts, number=st.integers(1, 10_000))
def test_partial_segment_mapping_accepts_anything(
    forest: dict[str, Any], ctx: MappingContext, number: int,
) -> None:
    """The same hostile input as a partial segment: the root (read as if still running) heads
    a transaction ``<name> (segment N)`` under it, valid for Relay, or there is none."""
    root, children = make_forest(forest)
    mapped = build_partial_segment(root, children, number, ctx)
    if mapped is None:
        assert not children or dsn_bound(root, ctx) or not valid_ids(root)
        return
    PARTIAL_SEGMENTS["mapping"] += 1
    event = mapped.event
    orjson.dumps(event)
    problems = [p for p in validate_event(event) if not user_said(p, event)]
    assert problems == [], problems
    trace_context = event["contexts"]["trace"]
    assert trace_context["parent_span_id"] == f"{root.context.span_id:016x}"
    assert trace_context["span_id"] == f"{segment_span_id(root.context.span_id, number):016x}"
    assert trace_context["status"] == "ok"
    assert event["transaction"].endswith(f" (segment {number})")
    assert event["transaction_info"] == {"source": "custom"}
    assert len(event["spans"]) <= ctx.max_spans
    for error in mapped.errors:
        assert validate_event(error, kind="event") == []


#: Partial segments made by the properties (printed with the spans generated).
PARTIAL_SEGMENTS: Counter[str] = Counter()


# ------------------------------------------------------------------------ property B: buffer


@dataclasses.dataclass
class Scenario:
    spans: list[dict[str, Any]]
    ops: list[tuple[Any, ...]]
    caps: dict[str, Any]


def make_buffer_span(i: int, spec: dict[str, Any]) -> ReadableSpan:
    blob = spec.get("blob", 0)
    start = spec.get("start", 0)
    return ReadableSpan(
        name=f"s{i}",
        context=SpanContext(spec["trace"], spec["id"], is_remote=False),
        parent=None if spec.get("parent") is None else _context(*spec["parent"]),
        attributes={"blob": "x" * blob} if blob else {},
        events=[Event("exception")] * spec.get("events", 0),
        start_time=None if start is None else BASE_NS + start,
        end_time=BASE_NS + 10**12,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 24))
    # A quarter of the scenarios: one well-formed trace whose root (span 0) tends to run long,
    # ending last or never (partial segments); the rest: ids, traces and parents at random.
    job = draw(st.integers(0, 3)) == 0
    if job:
        ids = list(range(1, n + 1))
        traces = [TRACE_A] * n
    else:
        ids = [draw(st.one_of(st.integers(1, 2 * n), st.integers(1, 2**64 - 1), st.just(0)))
               for _ in range(n)]
        traces = [draw(st.sampled_from([TRACE_A, TRACE_A, TRACE_A, TRACE_B, 0]))
                  for _ in range(n)]
    spans = []
    for i in range(n):
        kind = draw(st.sampled_from(["none", "remote", "local", "local", "local", "unknown"]))
        if job:
            kind = "job" if i else "none"
        spec: dict[str, Any] = {"trace": traces[i], "id": ids[i]}
        if kind == "job":  # below the root or a span started before
            spec["parent"] = (TRACE_A, draw(st.integers(1, i)), False)
        elif kind == "remote":
            spec["parent"] = (traces[i], draw(st.integers(1, 2**64 - 1)), True)
        elif kind == "local":  # any span, itself included: cycles
            j = draw(st.integers(0, n - 1))
            spec["parent"] = (traces[j], ids[j], False)
        elif kind == "unknown":
            spec["parent"] = (traces[i], draw(st.integers(1, 2**64 - 1)), False)
        blob = draw(st.sampled_from([0, 0, 0, 100, 5_000, 30_000]))
        if blob:
            spec["blob"] = blob
        events_ = draw(st.integers(0, 2))
        if events_:
            spec["events"] = events_
        spec["start"] = draw(st.one_of(st.none(), offsets))
        spans.append(spec)
    index = st.integers(0, n - 1)
    tick = st.tuples(st.just("collect"), st.floats(0, 2), st.booleans())
    chaotic = st.lists(st.one_of(
        st.tuples(st.just("start"), index),
        st.tuples(st.just("end"), index, st.booleans()),
        tick,
    ), max_size=5 * n + 10)

    @st.composite
    def orderly(draw2: st.DrawFn) -> list[tuple[Any, ...]]:
        # starts before ends, then noise: lost starts, lost or repeated ends, collects
        tokens = draw2(st.permutations([(k, i) for i in range(n) for k in ("start", "end")]))
        if job:  # the root starts first and mostly ends last
            tokens.remove(("start", 0))
            tokens.insert(0, ("start", 0))
            if draw2(st.booleans()):
                tokens.remove(("end", 0))
                tokens.append(("end", 0))
        seen: set[int] = set()
        ops: list[tuple[Any, ...]] = []
        starts_seen = draw2(st.booleans())
        for k, i in tokens:
            if k == "start":
                seen.add(i)
                if draw2(st.integers(0, 9)):
                    ops.append(("start", i))
            else:
                if i not in seen:  # keep the start first
                    ops.append(("start", i))
                    seen.add(i)
                repeat = draw2(st.sampled_from([1, 1, 1, 1, 1, 1, 0, 2]))
                ops.extend([("end", i, starts_seen)] * repeat)
            if draw2(st.integers(0, 2 if job else 5)) == 0:
                ops.append(draw2(tick))
            ended_ = [op[1] for op in ops if op[0] == "end"]
            if job and ended_ and draw2(st.integers(0, 7)) == 0:  # a late second delivery
                ops.append(("end", draw2(st.sampled_from(ended_)), starts_seen))
        return ops

    ops = draw(orderly() if job else st.one_of(chaotic, orderly()))
    caps = draw(st.fixed_dictionaries({
        "grace": st.sampled_from([0.0, 0.5, 1.0, 5.0]),
        "timeout": st.sampled_from([1.0, 3.0, 30.0]),
        "max_spans": st.integers(1, 10),
        "max_buffered_spans": st.integers(1, 30),
        "max_buffered_bytes": st.integers(600, 60_000),
        "partial_segments": st.booleans(),
        "max_root_age": st.sampled_from([2.0, 86_400.0]),
    }))
    if job:  # intervals that the ticks reach, mostly with partial segments on
        caps["timeout"] = draw(st.sampled_from([1.0, 1.0, 3.0]))
        caps["partial_segments"] = draw(st.sampled_from([True, True, True, False]))
    return Scenario(spans, ops, caps)


@settings(FUZZ, max_examples=400)
@given(scenario=scenarios())
def test_buffer_sends_each_span_once_or_counts_it(scenario: Scenario) -> None:
    GENERATED["buffer"] += len(scenario.spans)
    drops: Counter[str] = Counter()

    def on_drop(reason: str, category: str, quantity: int) -> None:
        assert category == "span" and quantity >= 0
        drops[reason] += quantity

    # tombstones outlive the scenario (their expiry is a documented bound, not tested here)
    buffer = TraceBuffer(on_drop=on_drop, tombstone_ttl=3_600.0, **scenario.caps)
    spans = [make_buffer_span(i, spec) for i, spec in enumerate(scenario.spans)]
    now = 0.0
    # A span is its (trace id, span id): the same pair delivered twice is one span.
    ended: set[tuple[int, int]] = set()
    ended_objects: set[int] = set()
    # Spans with an invalid (zero) id cannot be told apart: each delivery is one drop.
    invalid_ends = 0
    started: set[tuple[int, int]] = set()
    sent: list[tuple[ReadableSpan | OpenRoot, list[ReadableSpan]]] = []
    for op in scenario.ops:
        if op[0] == "start":
            started.add(span_key(spans[op[1]]))
            buffer.start(spans[op[1]], now)
        elif op[0] == "end":
            span = spans[op[1]]
            if valid_ids(span):
                ended.add(span_key(span))
            else:
                invalid_ends += 1
            ended_objects.add(id(span))
            buffer.end(span, now, starts_seen=op[2])
        else:
            now += op[1]
            sent.extend(buffer.collect(now, force=op[2]))
    for _ in range(3):  # past the timeout: evicts, expires orphans, releases everything ended
        now += scenario.caps["timeout"] + scenario.caps["grace"] + 1.0
        sent.extend(buffer.collect(now, force=True))

    # A partial segment (its head: an OpenRoot, a snapshot of a root still running) sends
    # its children only; the root goes out with its own transaction, if it ends.
    partial = [(root, children) for root, children in sent if isinstance(root, OpenRoot)]
    whole = [(root, children) for root, children in sent if not isinstance(root, OpenRoot)]
    assert scenario.caps["partial_segments"] or not partial, "partial segments while off"
    for head, children in partial:
        assert children, "an empty partial segment"
        assert len(children) <= scenario.caps["max_spans"]
        assert head.number >= 1 and span_key(head.span) in started
        assert head.span.end_time is None and all(head.span is not s for s in spans)
        assert all(c.context.trace_id == head.span.context.trace_id for c in children)
    sent_spans = [s for root, children in whole for s in (root, *children)]
    sent_spans += [s for _head, children in partial for s in children]
    sent_keys = Counter(span_key(s) for s in sent_spans)
    twice = {f"{t:x}/{i:x}": n for (t, i), n in sent_keys.items() if n > 1}
    assert not twice, f"spans sent more than once: {twice}"
    never_ended = [s.name for s in sent_spans if id(s) not in ended_objects]
    assert not never_ended, f"sent spans that never ended: {never_ended}"
    assert all(valid_ids(s) for s in sent_spans)
    PARTIAL_SEGMENTS["buffer"] += len(partial)
    unaccounted = len(ended - set(sent_keys)) + invalid_ends
    # two assertions, so that Hypothesis reports lost and over-counted spans separately
    assert sum(drops.values()) >= unaccounted, (
        f"ended spans neither sent nor counted: {unaccounted} not sent, drops {dict(drops)}")
    assert sum(drops.values()) <= unaccounted, (
        f"drops over-counted: {unaccounted} ended spans not sent, drops {dict(drops)}")
    assert buffer.span_count == 0 and buffer.byte_count == 0, (
        f"nothing is buffered, yet span_count={buffer.span_count} "
        f"byte_count={buffer.byte_count}")


def span_key(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


# ---------------------------------------------------------------------- property C: pipeline


class CustomError(Exception):
    pass


def _exceptions() -> st.SearchStrategy[BaseException]:
    odd_type = type("W\u00e9ird\U0001f4a5Error", (Exception,), {})
    return st.one_of(
        st.builds(ValueError, weird_text),
        st.builds(KeyError, sdk_values),
        st.builds(CustomError, huge_text),
        st.builds(lambda: TimeoutError("read timed out")),
        st.builds(lambda: ConnectionResetError(104, "Connection reset by peer")),
        st.builds(odd_type, weird_text),
        st.builds(lambda: KeyboardInterrupt()),
        st.builds(lambda a: OSError(*a), st.lists(sdk_values, max_size=3)),
    )


sdk_keys = st.one_of(st.sampled_from(SEMCONV_KEYS), odd_keys)
sdk_attributes = attribute_dicts(sdk_values)


@st.composite
def programs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    n = draw(st.integers(1, 14))
    specs = []
    for i in range(n):
        parent = draw(st.one_of(st.just(-1), st.just(-2), st.integers(0, max(0, i - 1))))
        specs.append({
            "name": draw(span_names),
            "kind": draw(st.sampled_from(SpanKind)),
            "parent": parent if i else draw(st.sampled_from([-1, -2])),  # -2: remote parent
            "attributes": draw(sdk_attributes),
            "scope": draw(st.sampled_from([*CONTRIB_SCOPES[:15], "app", ""])),
        })
    actions = st.one_of(
        st.tuples(st.just("set"), st.integers(0, n - 1), sdk_keys, sdk_values),
        st.tuples(st.just("exception"), st.integers(0, n - 1), _exceptions(),
                  st.one_of(st.none(), st.dictionaries(sdk_keys, sdk_values, max_size=2))),
        st.tuples(st.just("status"), st.integers(0, n - 1), statuses),
        st.tuples(st.just("event"), st.integers(0, n - 1), weird_text,
                  st.dictionaries(sdk_keys, sdk_values, max_size=2)),
        st.tuples(st.just("rename"), st.integers(0, n - 1), span_names),
        st.tuples(st.just("process")),
    )
    ops = draw(st.lists(actions, max_size=2 * n))
    # ends in any order (children after parents, or before); some spans never end
    ending = draw(st.permutations(range(n)))
    keep = draw(st.integers(max(0, n - 2), n))
    for i in ending[:keep]:
        at = draw(st.integers(0, len(ops)))
        ops.insert(at, ("end", i))
    return specs, ops


bridge_settings = st.fixed_dictionaries({
    "max_spans": st.integers(1, 30),
    "send_default_pii": st.booleans(),
    "tag_attributes": st.lists(sdk_keys, max_size=3).map(tuple),
    "drop_connect_spans": st.booleans(),
    "redis_cache_spans": st.booleans(),
    "cache_prefixes": st.sampled_from([(), ("product:",)]),
    "max_buffered_spans": st.sampled_from([5, 100, 50_000]),
    "delivery": st.sampled_from(["processor", "processor x2", "exporter", "exporter x2"]),
})


def run_program(specs: list[dict[str, Any]], ops: list[tuple[Any, ...]],
                bridge: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Make the spans through the real API into a BridgeCapture; what it sent (transactions,
    error events)."""
    capture = BridgeCapture(**{k: v for k, v in bridge.items() if k != "delivery"})
    previous = capture._previous
    own_provider: TracerProvider | None = None
    try:
        pipeline = capture.pipeline
        # Keep the worker thread off: its steps are the "process" actions, run right here,
        # so every example is deterministic and bridge errors surface in this thread.
        pipeline._worker = threading.current_thread()
        provider = capture.tracer_provider
        delivery = bridge.get("delivery", "processor")
        if delivery == "processor x2":  # registered twice: must not report twice
            provider.add_span_processor(SentrySpanProcessor())
        elif delivery.startswith("exporter"):  # exporter mode: no start events
            provider = own_provider = TracerProvider(shutdown_on_exit=False)
            pipeline.processors = 0
            for _ in range(2 if delivery == "exporter x2" else 1):
                provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter()))
        live: list[Any] = []
        for spec in specs:
            if spec["parent"] == -2:
                remote = SpanContext(TRACE_B, 0x00F067AA0BA902B7, is_remote=True,
                                     trace_flags=TraceFlags(TraceFlags.SAMPLED))
                context = trace.set_span_in_context(NonRecordingSpan(remote))
            elif spec["parent"] == -1:
                context = trace.set_span_in_context(trace.INVALID_SPAN)
            else:
                context = trace.set_span_in_context(live[spec["parent"]])
            tracer = provider.get_tracer(spec["scope"], "0.66b1")
            live.append(tracer.start_span(spec["name"], context=context, kind=spec["kind"],
                                          attributes=spec["attributes"]))
        for op in ops:
            if op[0] == "process":
                pipeline.process(force=False)
                continue
            span = live[op[1]]
            if op[0] == "set":
                span.set_attribute(op[2], op[3])
            elif op[0] == "exception":
                span.record_exception(op[2], attributes=op[3])
            elif op[0] == "status":
                span.set_status(Status(*op[2]))
            elif op[0] == "event":
                span.add_event(op[2], op[3])
            elif op[0] == "rename":
                span.update_name(op[2])
            elif op[0] == "end":
                span.end()
        return capture.transactions(), capture.items("event")
    finally:
        try:
            if own_provider is not None:
                own_provider.shutdown()
            capture.close()
        finally:
            reset_pipeline(previous)


@settings(FUZZ, max_examples=200)
@given(program=programs(), bridge=bridge_settings)
def test_pipeline_output_is_valid_and_never_repeats_a_span(
    program: tuple[list[dict[str, Any]], list[tuple[Any, ...]]], bridge: dict[str, Any]
) -> None:
    specs, ops = program
    GENERATED["pipeline"] += len(specs)
    txns, errors = run_program(specs, ops, bridge)
    for error in errors:
        assert validate_event(error, kind="event") == []
    for txn in txns:
        problems = [p for p in validate_event(txn) if not user_said(p, txn)]
        assert problems == [], problems
    ids = Counter(
        span_id
        for txn in txns
        for span_id in (txn["contexts"]["trace"]["span_id"], *(s["span_id"] for s in txn["spans"]))
    )
    twice = {k: v for k, v in ids.items() if v > 1}
    assert not twice, f"span ids in more than one place: {twice}"
