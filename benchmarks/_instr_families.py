"""The families of :mod:`bench_instrumentation`: what each contender does for one sample.

Every contender is a function ``run(n) -> seconds`` for ``n`` operations (calls, requests,
queries), with optional ``setup``/``teardown`` run around each sample, outside the timing
(instrument / uninstrument, for libraries patched globally). Recording contenders go through
one real bridge pipeline (``otel_sentry_bridge.testing.BridgeCapture``) and include its
processing: their sample ends with ``capture.flush()`` (mapping, serialization, gzip and the
in-memory "send" of every transaction made), inside the timing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any
from wsgiref.util import setup_testing_defaults

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_sentry_bridge.testing import BridgeCapture

#: Calls per root span in recording samples: below the cache span budget (200 per trace) and
#: ``SENTRY_BRIDGE_MAX_SPANS`` (1000 per transaction), so every call makes a span.
PER_ROOT = 150
_UNSAMPLED = NonRecordingSpan(SpanContext(0x1F2E3D4C5B6A79880123456789ABCDEF, 0x0123456789ABCDEF,
                                          is_remote=False, trace_flags=TraceFlags(0)))


@dataclass
class Contender:
    label: str
    run: Callable[[int], float]
    n: int
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    #: checked after the timing: every operation made at least one span that reached Sentry
    recording: bool = False


@dataclass
class Family:
    name: str
    title: str
    unit: str  # what one operation is ("call", "request", "query")
    contenders: list[Contender]  # the first one is the uninstrumented baseline
    close: Callable[[], None] | None = None


class Env:
    """The process's one bridge pipeline and the contexts contenders run in."""

    def __init__(self) -> None:
        self.cap = BridgeCapture()
        self.provider = self.cap.tracer_provider
        self.tracer = self.provider.get_tracer("bench_instrumentation")
        self.off_provider = TracerProvider(sampler=ALWAYS_OFF)  # "sampled out"

    def flush(self) -> None:
        self.cap.flush()

    def drop_captured(self) -> None:
        """Forget captured envelopes (between samples, untimed): memory stays flat."""
        with self.cap._lock:
            self.cap.raw.clear()

    def close(self) -> None:
        self.cap.close()

    def spans_sent(self) -> int:
        """Spans in the transactions captured since :meth:`drop_captured` (roots included)."""
        return sum(1 + len(tx.get("spans", [])) for tx in self.cap.transactions())

    # -- timing shapes -------------------------------------------------------------------
    @staticmethod
    def loop(fn: Callable[[], Any], n: int) -> float:
        t0 = perf_counter()
        for _ in range(n):
            fn()
        return perf_counter() - t0

    def loop_unsampled(self, fn: Callable[[], Any], n: int) -> float:
        """``n`` calls under an unsampled (non-recording) local parent."""
        with trace.use_span(_UNSAMPLED, end_on_exit=False):
            return self.loop(fn, n)

    def loop_recorded(self, fn: Callable[[], Any], n: int) -> float:
        """``n`` calls (each its own transaction), then the bridge's flush: all timed."""
        t0 = perf_counter()
        for _ in range(n):
            fn()
        self.cap.flush()
        return perf_counter() - t0

    def loop_in_roots(self, fn: Callable[[], Any], n: int) -> float:
        """``n`` calls in sampled roots of ``PER_ROOT`` calls, then the bridge's flush."""
        t0 = perf_counter()
        done = 0
        while done < n:
            k = min(PER_ROOT, n - done)
            with self.tracer.start_as_current_span("bench root"):
                for _ in range(k):
                    fn()
            done += k
        self.cap.flush()
        return perf_counter() - t0

    def loop_past_budget(self, fn: Callable[[], Any], n: int, spend: int) -> float:
        """``n`` calls in one sampled root after ``spend`` untimed calls used its span budget."""
        with self.tracer.start_as_current_span("bench root (budget spent)"):
            for _ in range(spend):
                fn()
            elapsed = self.loop(fn, n)
        self.cap.flush()
        return elapsed


def toggles(instrumentor: Any, **kwargs: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """(setup, teardown) that instrument and uninstrument around one sample."""
    return (lambda: instrumentor.instrument(**kwargs)), instrumentor.uninstrument


# -- 1. cachetools-cached hit and otel_sentry_bridge.cached -----------------------------------
def cache_family(env: Env, scale: float) -> Family:
    import cachetools
    from otel_sentry_bridge_instrumentation.cachetools import CachetoolsInstrumentor

    from otel_sentry_bridge import cached

    @cachetools.cached(cachetools.LRUCache(128))
    def plain(x: int) -> int:
        return x

    # Instrumented for the whole family (uninstrumenting switches existing wrappers off);
    # ``plain`` was decorated before, so it stays a bare cachetools function.
    instrumentor = CachetoolsInstrumentor()
    instrumentor.instrument(tracer_provider=env.provider)

    @cachetools.cached(cachetools.LRUCache(128))
    def inst(x: int) -> int:
        return x

    @cached(tracer_provider=env.provider)
    def mine(x: int) -> int:
        return x

    for fn in (plain, inst, mine):
        fn(1)  # every timed call is a hit
    fast, slow = int(20_000 * scale), int(1_500 * scale)
    return Family("cache", "Cache hit: cachetools.cached vs instrumented vs bridge cached()",
                  "call", [
        Contender("cachetools, not instrumented", lambda n: env.loop(lambda: plain(1), n), fast),
        Contender("instrumented, no trace", lambda n: env.loop(lambda: inst(1), n), fast),
        Contender("instrumented, unsampled trace",
                  lambda n: env.loop_unsampled(lambda: inst(1), n), fast),
        Contender("instrumented, sampled, past 200-span budget",
                  lambda n: env.loop_past_budget(lambda: inst(1), n, 200), fast),
        Contender("instrumented, recording (1 span/hit)",
                  lambda n: env.loop_in_roots(lambda: inst(1), n), slow, recording=True),
        Contender("bridge cached(), no trace", lambda n: env.loop(lambda: mine(1), n), fast),
        Contender("bridge cached(), recording (1 span/hit)",
                  lambda n: env.loop_in_roots(lambda: mine(1), n), slow, recording=True),
    ], close=instrumentor.uninstrument)


# -- 2. pydantic model_validate / __init__ ------------------------------------------------------
def pydantic_family(env: Env, scale: float, method: str) -> Family:
    from opentelemetry.instrumentation.utils import suppress_instrumentation
    from otel_sentry_bridge_instrumentation.pydantic import _INSIDE, PydanticInstrumentor
    from pydantic import BaseModel

    class User(BaseModel):
        name: str
        age: int

    data = {"name": "a", "age": 3}
    if method == "model_validate":
        def call() -> Any:
            return User.model_validate(data)
    else:
        def call() -> Any:
            return User(**data)

    def suppressed(n: int) -> float:
        with env.tracer.start_as_current_span("root"), suppress_instrumentation():
            return env.loop(call, n)

    def inside(n: int) -> float:
        with env.tracer.start_as_current_span("root"):
            token = _INSIDE.set(True)
            try:
                return env.loop(call, n)
            finally:
                _INSIDE.reset(token)

    on, off = toggles(PydanticInstrumentor(), tracer_provider=env.provider)
    fast, slow = int(20_000 * scale), int(1_500 * scale)
    return Family(f"pydantic_{method.strip('_')}", f"pydantic User.{method} (two fields)", "call", [
        Contender("not instrumented", lambda n: env.loop(call, n), fast),
        Contender("instrumented, no trace", lambda n: env.loop(call, n), fast, on, off),
        Contender("instrumented, unsampled trace",
                  lambda n: env.loop_unsampled(call, n), fast, on, off),
        Contender("instrumented, inside another validation", inside, fast, on, off),
        Contender("instrumented, suppress_instrumentation", suppressed, fast, on, off),
        Contender("instrumented, recording (1 span/call)",
                  lambda n: env.loop_in_roots(call, n), slow, on, off, recording=True),
    ])


# -- 3. otel_sentry_bridge.span vs OTel's start_as_current_span --------------------------------
def span_family(env: Env, scale: float) -> Family:
    from opentelemetry.trace import NoOpTracerProvider

    from otel_sentry_bridge import span

    noop = NoOpTracerProvider()

    def plain(x: int) -> int:
        return x

    contenders = [Contender("plain function", lambda n: env.loop(lambda: plain(1), n),
                            int(20_000 * scale))]
    shapes: list[tuple[str, Callable[[Callable[[], Any], int], float], int]] = [
        ("tracing off (no-op provider)", env.loop, int(20_000 * scale)),
        ("unsampled parent", env.loop_unsampled, int(20_000 * scale)),
        ("recording", env.loop_in_roots, int(1_500 * scale)),
    ]
    for where, shape, n in shapes:
        provider: Any = noop if shape is env.loop else env.provider
        tracer = provider.get_tracer("bench")

        @span(tracer_provider=provider)
        def deco(x: int) -> int:
            return x

        def cm(x: int, provider: Any = provider) -> int:
            with span("cm", tracer_provider=provider):
                return x

        def otel(x: int, tracer: Any = tracer) -> int:
            with tracer.start_as_current_span("otel"):
                return x

        for label, fn in (("@span", deco), ("with span()", cm),
                          ("OTel start_as_current_span", otel)):
            contenders.append(Contender(f"{label}, {where}",
                                        lambda n, fn=fn, shape=shape: shape(lambda: fn(1), n), n,
                                        recording=shape == env.loop_in_roots))
    return Family("span", "Custom spans: otel_sentry_bridge.span vs OTel's start_as_current_span",
                  "call", contenders)


# -- 4. WSGI middleware per request ------------------------------------------------------------
def wsgi_family(env: Env, scale: float) -> Family:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.trace import NoOpTracerProvider

    from otel_sentry_bridge import SentryBridgeWSGIMiddleware

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    template: dict[str, Any] = {
        "PATH_INFO": "/orders/42", "QUERY_STRING": "a=1", "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*", "HTTP_COOKIE": "s=1", "HTTP_ACCEPT_LANGUAGE": "en"}
    setup_testing_defaults(template)

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[..., None]:
        return lambda data: None

    def request(wsgi: Callable[..., Any]) -> Callable[[], None]:
        def one() -> None:
            result = wsgi(dict(template), start_response)
            for _ in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return one

    bridge_off = request(SentryBridgeWSGIMiddleware(app, tracer_provider=NoOpTracerProvider()))
    bridge_out = request(SentryBridgeWSGIMiddleware(app, tracer_provider=env.off_provider))
    bridge_rec = request(SentryBridgeWSGIMiddleware(app, tracer_provider=env.provider))
    otel_rec = request(OpenTelemetryMiddleware(app, tracer_provider=env.provider))
    fast, slow = int(10_000 * scale), int(1_500 * scale)
    return Family("wsgi", "WSGI middleware, one text/plain request", "request", [
        Contender("bare app", lambda n: env.loop(request(app), n), fast),
        Contender("bridge middleware, tracing off", lambda n: env.loop(bridge_off, n), fast),
        Contender("bridge middleware, sampled out", lambda n: env.loop(bridge_out, n), fast),
        Contender("bridge middleware, recording", lambda n: env.loop_recorded(bridge_rec, n), slow,
                  recording=True),
        Contender("OTel OpenTelemetryMiddleware, recording",
                  lambda n: env.loop_recorded(otel_rec, n), slow, recording=True),
    ])


# -- 5. strawberry query -----------------------------------------------------------------------
def strawberry_family(env: Env, scale: float, items: int) -> Family:
    from _instr_gql import make_schema
    from otel_sentry_bridge_instrumentation.strawberry import StrawberryInstrumentor

    schema = make_schema()
    query = f"query Items {{ items(n: {items}) {{ id a b c d label }} }}"

    def execute() -> None:
        result = schema.execute_sync(query)
        if result.errors:
            raise RuntimeError(str(result.errors))

    bare = TracerProvider()  # OTel SDK with no processor: the instrumentation without the bridge
    on, off = toggles(StrawberryInstrumentor(), tracer_provider=env.provider)
    on_bare, off_bare = toggles(StrawberryInstrumentor(), tracer_provider=bare)
    n = max(2, int(200 * scale))
    return Family("strawberry",
                  f"strawberry query: {items} items x 6 fields (resolver depth 2, the default)",
                  "query", [
        Contender("not instrumented", lambda n: env.loop(execute, n), n),
        Contender("instrumented, unsampled trace",
                  lambda n: env.loop_unsampled(execute, n), n, on, off),
        Contender("instrumented, recording, SDK without bridge",
                  lambda n: env.loop(execute, n), n, on_bare, off_bare),
        Contender("instrumented, recording, through the bridge",
                  lambda n: env.loop_recorded(execute, n), n, on, off, recording=True),
    ], close=bare.shutdown)
