"""Distributed tracing end to end: gateway -> orders -> payments, three real processes.

Each service (``tests/apps_distributed/``) is a small Flask app run under
``opentelemetry-instrument`` with its own ``OTEL_SERVICE_NAME``, ``SENTRY_DSN`` (one project per
service, all on one loopback ``SentryReceiver``) and ``SENTRY_TRACES_SAMPLE_RATE=0.5``. Nothing
else sets up tracing: ``OTEL_TRACES_SAMPLER`` and ``OTEL_PROPAGATORS`` are unset, so the
bridge's ``opentelemetry_pre_instrument`` hook must install its sampler and its propagator. The
gateway calls orders with ``requests``, orders calls payments with ``httpx``; orders and
payments echo the raw trace header lines they received (before WSGI merges repeated headers),
so duplicates are seen. A fourth process, a second gateway with ``SENTRY_TRACES_SAMPLE_RATE=0``,
heads the unsampled-trace error case.

The processes are shared by the whole module (started once; ``/flush`` makes each hand what it
finished to the receiver, client reports included); the last test stops them and checks their
output. The receiver validates every envelope (Relay's normalizer for every event).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any
from urllib.parse import unquote

import pytest
from apps import AppProcess
from e2e_support import (
    INTERNAL_ERROR_MARKER,
    assert_clean_output,
    assert_receiver_clean,
    bridge_env,
    envelope_problems,
    free_ports,
    is_bridge_envelope,
    running,
    stop_all,
    summary,
    trace_of,
)
from sentry_receiver import Envelope, SentryReceiver

pytestmark = pytest.mark.e2e

APPS_DIR = Path(__file__).resolve().parent / "apps_distributed"
GATEWAY_TXN = "GET /checkout/<int:cart_id>"
ORDERS_TXN = "GET /orders/<int:cart_id>"
PAYMENTS_TXN = "GET /payments/<int:cart_id>"
TXN_OF = {"gateway": GATEWAY_TXN, "orders": ORDERS_TXN, "payments": PAYMENTS_TXN}
#: One Sentry project per service (tells their envelopes, client reports included, apart).
PROJECTS = {"gateway": 101, "orders": 102, "payments": 103, "gateway-rate0": 104}
SAMPLE_RATE = 0.5
GATEWAY_RELEASE = "gateway@1.4.2"
GATEWAY_ENVIRONMENT = "staging"
ORDERS_RELEASE = "orders@7.0.0"
ORDERS_ENVIRONMENT = "orders-canary"
EXCLUDED_URLS = "health,flush,introspect"
SINGLE_HEADERS = ("traceparent", "sentry-trace", "baggage")
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
TRACES = 200


# --------------------------------------------------------------------------------------------
# The cluster of services
# --------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    receiver: SentryReceiver
    gateway: AppProcess
    orders: AppProcess
    payments: AppProcess
    gateway_rate0: AppProcess
    #: requests that made payments raise (each logs one traceback)
    failures: int = 0

    @property
    def apps(self) -> dict[str, AppProcess]:
        return {"gateway": self.gateway, "orders": self.orders, "payments": self.payments,
                "gateway-rate0": self.gateway_rate0}

    def checkout(
        self, cart_id: int = 1, headers: dict[str, str] | None = None, *,
        gateway: AppProcess | None = None, fail: bool = False, status: int = 200,
        calls: int = 1,
    ) -> dict[str, Any]:
        """``GET /checkout/<cart_id>`` on a gateway; its JSON (downstream bodies nested)."""
        app = gateway or self.gateway
        query = "&".join(([] if calls == 1 else [f"calls={calls}"]) + (["fail=1"] if fail else []))
        got, body, _ = app.get(f"/checkout/{cart_id}" + (f"?{query}" if query else ""),
                               headers=headers)
        if fail:
            self.failures += 1
        assert got == status, f"{got}: {body[:2000]!r}\n{app.output()[-4000:]}"
        result: dict[str, Any] = json.loads(body)
        return result

    def flush(self) -> None:
        """Every service hands what it finished (and its client report) to the receiver."""
        for name, app in self.apps.items():
            got, body, _ = app.post("/flush")
            assert got == 200 and json.loads(body)["flushed"], (name, got, body)

    def settle(self, ready: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Flush until ``ready()`` holds (a root span may end just after its response)."""
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            if self.receiver.wait_for(lambda _: ready(), timeout=0.3):
                return
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out waiting for {what}; received:\n{summary(self.receiver)}")


def _service_env(receiver: SentryReceiver, service: str, project: int, **extra: str) -> dict[
        str, str]:
    env = bridge_env(
        receiver, service,
        SENTRY_DSN=receiver.dsn(project_id=project),
        SENTRY_TRACES_SAMPLE_RATE=str(SAMPLE_RATE),
        OTEL_PYTHON_FLASK_EXCLUDED_URLS=EXCLUDED_URLS,
        **extra,
    )
    # Zero-code: the pre_instrument hook has to install the sampler and the propagator.
    assert "OTEL_TRACES_SAMPLER" not in env and "OTEL_PROPAGATORS" not in env, env
    return env


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    gateway_port, orders_port, payments_port, rate0_port = free_ports(4)
    orders_url = f"http://127.0.0.1:{orders_port}"
    gateway_settings = {"SENTRY_RELEASE": GATEWAY_RELEASE,
                        "SENTRY_ENVIRONMENT": GATEWAY_ENVIRONMENT,
                        "GATEWAY_ORDERS_URL": orders_url}
    with SentryReceiver() as receiver:
        specs = [
            (APPS_DIR / "gateway.py",
             _service_env(receiver, "gateway", PROJECTS["gateway"], **gateway_settings),
             gateway_port),
            (APPS_DIR / "orders.py",
             _service_env(receiver, "orders", PROJECTS["orders"],
                          SENTRY_RELEASE=ORDERS_RELEASE, SENTRY_ENVIRONMENT=ORDERS_ENVIRONMENT,
                          ORDERS_PAYMENTS_URL=f"http://127.0.0.1:{payments_port}"),
             orders_port),
            (APPS_DIR / "payments.py",
             _service_env(receiver, "payments", PROJECTS["payments"]), payments_port),
            (APPS_DIR / "gateway.py",
             {**_service_env(receiver, "gateway", PROJECTS["gateway-rate0"],
                             **gateway_settings), "SENTRY_TRACES_SAMPLE_RATE": "0"},
             rate0_port),
        ]
        with running(*specs) as (gateway, orders, payments, gateway_rate0):
            yield Cluster(receiver, gateway, orders, payments, gateway_rate0)


# --------------------------------------------------------------------------------------------
# Queries and checks
# --------------------------------------------------------------------------------------------


def head_rand(trace_id: str) -> str:
    """``sample_rand`` at the head of a trace: the trace id's low 64 bits as a fraction of
    2**64, cut (never rounded) to six decimals."""
    low = int(trace_id, 16) & 0xFFFF_FFFF_FFFF_FFFF
    return f"{math.floor(low / 2**64 * 1_000_000) / 1_000_000:.6f}"


def backfilled_rand(trace_id: str, lower: float, upper: float) -> str:
    """sentry-sdk's ``_generate_sample_rand``: seeded by the trace id, in [lower, upper)."""
    scaled = Random(trace_id).randrange(int(lower * 1_000_000), int(upper * 1_000_000))
    return f"{scaled / 1_000_000:.6f}"


def new_ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


def chain(gateway_body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The gateway's, orders' and payments' JSON bodies of one request."""
    orders = gateway_body["downstream"]["body"]
    assert orders is not None, gateway_body
    payments = orders["downstream"]["body"]
    assert payments is not None, orders
    return gateway_body, orders, payments


def single_headers(received: list[list[str]], who: str) -> dict[str, str]:
    """The trace headers one service received: each exactly once, none merged or repeated."""
    counts = Counter(name for name, _ in received)
    for name in SINGLE_HEADERS:
        assert counts[name] == 1, f"{who} received {counts[name]} {name} headers: {received}"
    assert counts["tracestate"] <= 1, f"{who}: {received}"
    headers = dict((name, value) for name, value in received)
    # A proxy or WSGI would merge repeated headers with commas: none of ours holds one.
    assert "," not in headers["sentry-trace"], f"{who}: {headers}"
    assert "," not in headers["traceparent"], f"{who}: {headers}"
    keys = [member.split("=", 1)[0].strip() for member in headers["baggage"].split(",")]
    assert len(keys) == len(set(keys)), f"{who}: repeated baggage members {headers['baggage']}"
    return headers


def baggage_parts(value: str) -> tuple[dict[str, str], list[str]]:
    """(decoded ``sentry-*`` members = the DSC, the other members as they came)."""
    dsc: dict[str, str] = {}
    others: list[str] = []
    for member in value.split(","):
        key, _, raw = member.strip().partition("=")
        if key.startswith("sentry-"):
            dsc[unquote(key[len("sentry-"):])] = unquote(raw)
        else:
            others.append(member.strip())
    return dsc, others


def check_sentry_trace(value: str, trace_id: str, sampled: bool) -> str:
    """``sentry-trace`` of ``trace_id`` with the decision flag; returns its span id."""
    match = re.fullmatch(rf"({trace_id})-([0-9a-f]{{16}})-([01])", value)
    assert match is not None, (value, trace_id)
    assert match.group(3) == ("1" if sampled else "0"), (value, sampled)
    return match.group(2)


def check_traceparent(value: str, trace_id: str, span_id: str, sampled: bool) -> None:
    match = re.fullmatch(rf"00-{trace_id}-{span_id}-([0-9a-f]{{2}})", value)
    assert match is not None, (value, trace_id, span_id)
    assert bool(int(match.group(1), 16) & 1) is sampled, (value, sampled)


def trace_envelopes(receiver: SentryReceiver, trace_id: str, item_type: str) -> list[
        tuple[Envelope, dict[str, Any]]]:
    """(envelope, payload) of every ``item_type`` item of one trace."""
    found = []
    for envelope in receiver.envelopes:
        for item in envelope.items:
            payload = item.json
            if item.type == item_type and isinstance(payload, dict) and trace_of(
                    payload).get("trace_id") == trace_id:
                found.append((envelope, payload))
    return found


def service_of(envelope: Envelope) -> str:
    return {project: name for name, project in PROJECTS.items()}[envelope.project_id]


def transactions_by_service(receiver: SentryReceiver, trace_id: str) -> dict[
        str, list[tuple[Envelope, dict[str, Any]]]]:
    found: dict[str, list[tuple[Envelope, dict[str, Any]]]] = {}
    for envelope, txn in trace_envelopes(receiver, trace_id, "transaction"):
        found.setdefault(service_of(envelope), []).append((envelope, txn))
    return found


def has_transactions(receiver: SentryReceiver, trace_id: str, services: int = 3) -> bool:
    return len(trace_envelopes(receiver, trace_id, "transaction")) >= services


def three_transactions(receiver: SentryReceiver, trace_id: str) -> dict[
        str, tuple[Envelope, dict[str, Any]]]:
    """The one transaction of each service in a trace, checked against its service."""
    by_service = transactions_by_service(receiver, trace_id)
    assert sorted(by_service) == ["gateway", "orders", "payments"], summary(receiver)
    found = {}
    for service, sent in by_service.items():
        assert len(sent) == 1, f"{service}: {len(sent)} transactions\n{summary(receiver)}"
        txn = sent[0][1]
        assert txn["transaction"] == TXN_OF[service], txn["transaction"]
        assert trace_of(txn)["op"] == "http.server"
        assert trace_of(txn)["status"] == "ok"
        found[service] = sent[0]
    return found


def client_spans(txn: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in txn["spans"] if span["op"] == "http.client"]


def assert_one_dsc(sent: dict[str, tuple[Envelope, dict[str, Any]]]) -> dict[str, str]:
    """Every envelope of the trace carries the same ``trace`` header; returns it."""
    dscs = {service: envelope.headers.get("trace") for service, (envelope, _) in sent.items()}
    first = next(iter(dscs.values()))
    assert isinstance(first, dict), dscs
    assert all(dsc == first for dsc in dscs.values()), dscs
    return first


def report_totals(receiver: SentryReceiver) -> Counter[tuple[str, str, str]]:
    """Client-report quantities by (service, reason, category)."""
    totals: Counter[tuple[str, str, str]] = Counter()
    for envelope in receiver.envelopes:
        for item in envelope.items:
            if item.type == "client_report" and isinstance(item.json, dict):
                for entry in item.json.get("discarded_events", ()):
                    key = (service_of(envelope), entry["reason"], entry["category"])
                    totals[key] += entry["quantity"]
    return totals


def unsampled_delta(
    receiver: SentryReceiver, before: Counter[tuple[str, str, str]], service: str
) -> int:
    key = (service, "sample_rate", "transaction")
    return report_totals(receiver)[key] - before[key]


def assert_no_internal_errors(cluster: Cluster) -> None:
    for name, app in cluster.apps.items():
        output = app.output()
        assert INTERNAL_ERROR_MARKER not in output, f"{name}:\n{output}"


# --------------------------------------------------------------------------------------------
# 0. Zero-code set-up
# --------------------------------------------------------------------------------------------


def test_pre_instrument_installs_sampler_and_propagator(cluster: Cluster) -> None:
    for name, app in cluster.apps.items():
        got, body, _ = app.get("/introspect")
        assert got == 200, body
        assert json.loads(body) == {
            "propagator": "SentryBridgePropagator", "sampler": "SentryBridgeSampler"}, name


# --------------------------------------------------------------------------------------------
# 1. One request through the three services
# --------------------------------------------------------------------------------------------


def test_one_request_three_transactions_one_trace(cluster: Cluster) -> None:
    receiver = cluster.receiver
    for attempt in range(30):  # the gateway samples half of the traces it starts
        gateway, orders, payments = chain(cluster.checkout(cart_id=100 + attempt))
        if gateway["trace"]["sampled"]:
            break
    else:
        pytest.fail("30 traces started by the gateway, none sampled")
    trace_id = gateway["trace"]["trace_id"]
    assert gateway["received"] == []  # the gateway is the head: no trace headers came in
    assert orders["trace"]["trace_id"] == payments["trace"]["trace_id"] == trace_id
    assert orders["trace"]["sampled"] is payments["trace"]["sampled"] is True

    cluster.settle(lambda: has_transactions(receiver, trace_id), f"trace {trace_id}")
    sent = three_transactions(receiver, trace_id)
    gateway_txn, orders_txn, payments_txn = (sent[s][1] for s in ("gateway", "orders",
                                                                  "payments"))
    listing = summary(receiver)

    # The tree: gateway (head) > its http.client span > orders > http.client > payments.
    assert "parent_span_id" not in trace_of(gateway_txn), listing
    assert trace_of(gateway_txn)["span_id"] == gateway["trace"]["span_id"]
    assert trace_of(orders_txn)["span_id"] == orders["trace"]["span_id"]
    assert trace_of(payments_txn)["span_id"] == payments["trace"]["span_id"]
    (gateway_client,) = client_spans(gateway_txn)
    (orders_client,) = client_spans(orders_txn)
    assert client_spans(payments_txn) == []
    assert gateway_client["description"].startswith(f"GET {cluster.orders.base_url}/orders/")
    assert orders_client["description"].startswith(
        f"GET {cluster.payments.base_url}/payments/")
    assert trace_of(orders_txn)["parent_span_id"] == gateway_client["span_id"], listing
    assert trace_of(payments_txn)["parent_span_id"] == orders_client["span_id"], listing
    # Each service reports its own release and environment in its own events...
    assert (gateway_txn["release"], gateway_txn["environment"]) == (
        GATEWAY_RELEASE, GATEWAY_ENVIRONMENT)
    assert (orders_txn["release"], orders_txn["environment"]) == (
        ORDERS_RELEASE, ORDERS_ENVIRONMENT)

    # ... but the DSC is the head's, identical in every envelope of the trace.
    dsc = assert_one_dsc(sent)
    assert dsc == {
        "trace_id": trace_id,
        "public_key": receiver.key,
        "sample_rate": "0.5",
        "sample_rand": head_rand(trace_id),
        "sampled": "true",
        "release": GATEWAY_RELEASE,
        "environment": GATEWAY_ENVIRONMENT,
        "transaction": GATEWAY_TXN,
    }, dsc
    assert float(dsc["sample_rand"]) < SAMPLE_RATE

    # What orders and payments received: one set of headers, naming their parent span.
    for who, body, parent in (("orders", orders, gateway_client),
                              ("payments", payments, orders_client)):
        headers = single_headers(body["received"], who)
        assert check_sentry_trace(headers["sentry-trace"], trace_id, True) == parent["span_id"]
        check_traceparent(headers["traceparent"], trace_id, parent["span_id"], True)
        assert baggage_parts(headers["baggage"]) == (dsc, []), (who, headers["baggage"])
    receiver.assert_no_problems()


def test_repeated_calls_in_one_trace_share_the_dsc(cluster: Cluster) -> None:
    """The gateway calls orders three times in a row in one trace: orders and payments each
    have three local roots of that trace (the next one starting before the previous one's
    transaction is sent); every envelope still carries the head's DSC."""
    receiver = cluster.receiver
    for attempt in range(30):
        gateway = cluster.checkout(cart_id=200 + attempt, calls=3)
        if gateway["trace"]["sampled"]:
            break
    else:
        pytest.fail("30 traces started by the gateway, none sampled")
    trace_id = gateway["trace"]["trace_id"]
    cluster.settle(lambda: has_transactions(receiver, trace_id, 7), f"7 transactions of "
                   f"trace {trace_id}")
    by_service = transactions_by_service(receiver, trace_id)
    assert {s: len(sent) for s, sent in by_service.items()} == {
        "gateway": 1, "orders": 3, "payments": 3}, summary(receiver)
    ((_, gateway_txn),) = by_service["gateway"]
    parents = sorted(trace_of(txn)["parent_span_id"] for _, txn in by_service["orders"])
    assert parents == sorted(s["span_id"] for s in client_spans(gateway_txn)), summary(receiver)
    dscs = [envelope.headers.get("trace") for sent in by_service.values() for envelope, _ in sent]
    expected = {
        "trace_id": trace_id,
        "public_key": receiver.key,
        "sample_rate": "0.5",
        "sample_rand": head_rand(trace_id),
        "sampled": "true",
        "release": GATEWAY_RELEASE,
        "environment": GATEWAY_ENVIRONMENT,
        "transaction": GATEWAY_TXN,
    }
    assert dscs == [expected] * 7, dscs
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# 2. What an outside caller sends the gateway
# --------------------------------------------------------------------------------------------


def test_incoming_unsampled_sentry_trace(cluster: Cluster) -> None:
    """``sentry-trace ...-0``: no transaction anywhere; downstream sees ``-0``."""
    receiver = cluster.receiver
    cluster.flush()
    before = report_totals(receiver)
    trace_id, span_id = new_ids()
    gateway, orders, payments = chain(
        cluster.checkout(cart_id=2, headers={"sentry-trace": f"{trace_id}-{span_id}-0"}))
    for body in (gateway, orders, payments):
        assert body["trace"]["trace_id"] == trace_id, body
        assert body["trace"]["sampled"] is False, body
    dscs = []
    for who, body in (("orders", orders), ("payments", payments)):
        headers = single_headers(body["received"], who)
        parent = check_sentry_trace(headers["sentry-trace"], trace_id, False)
        check_traceparent(headers["traceparent"], trace_id, parent, False)
        dsc, others = baggage_parts(headers["baggage"])
        assert others == [], headers
        dscs.append(dsc)
    assert dscs[0] == dscs[1], dscs
    assert dscs[0]["trace_id"] == trace_id
    assert dscs[0]["sampled"] == "false"
    assert dscs[0]["transaction"] == GATEWAY_TXN  # no upstream DSC: the gateway made it

    services = ("gateway", "orders", "payments")
    cluster.settle(lambda: all(unsampled_delta(receiver, before, s) >= 1 for s in services),
                   "client reports of the unsampled trace")
    assert {s: unsampled_delta(receiver, before, s) for s in services} == dict.fromkeys(
        services, 1)
    assert trace_envelopes(receiver, trace_id, "transaction") == [], summary(receiver)
    assert trace_envelopes(receiver, trace_id, "event") == []
    receiver.assert_no_problems()


def test_incoming_frozen_baggage_passes_through(cluster: Cluster) -> None:
    """``sentry-trace ...-1`` with an upstream DSC (``sample_rate=0.25``, no ``sample_rand``):
    every DSC and downstream baggage carries it unchanged, ``sample_rand`` backfilled."""
    receiver = cluster.receiver
    trace_id, span_id = new_ids()
    upstream = {
        "trace_id": trace_id,
        "public_key": receiver.key,
        "sample_rate": "0.25",
        "sampled": "true",
        "release": "frontend@3.0.0",
        "environment": "edge",
        "transaction": "/checkout/:id",
    }
    baggage = "vendor-key=abc," + ",".join(
        f"sentry-{key}={value.replace('/', '%2F').replace(':', '%3A').replace('@', '%40')}"
        for key, value in upstream.items())
    gateway, orders, payments = chain(cluster.checkout(cart_id=3, headers={
        "sentry-trace": f"{trace_id}-{span_id}-1", "baggage": baggage}))
    for body in (gateway, orders, payments):
        assert body["trace"] | {"span_id": ""} == {
            "trace_id": trace_id, "span_id": "", "sampled": True}, body

    expected = {**upstream, "sample_rand": backfilled_rand(trace_id, 0.0, 0.25)}
    for who, body in (("orders", orders), ("payments", payments)):
        headers = single_headers(body["received"], who)
        check_sentry_trace(headers["sentry-trace"], trace_id, True)
        dsc, others = baggage_parts(headers["baggage"])
        assert dsc == expected, (who, headers["baggage"])
        assert others == ["vendor-key=abc"], (who, headers["baggage"])

    cluster.settle(lambda: has_transactions(receiver, trace_id), f"trace {trace_id}")
    sent = three_transactions(receiver, trace_id)
    assert trace_of(sent["gateway"][1])["parent_span_id"] == span_id
    assert assert_one_dsc(sent) == expected
    receiver.assert_no_problems()


def test_incoming_traceparent_alone_continues_the_trace(cluster: Cluster) -> None:
    receiver = cluster.receiver
    trace_id, span_id = new_ids()
    gateway, orders, payments = chain(cluster.checkout(
        cart_id=4, headers={"traceparent": f"00-{trace_id}-{span_id}-01"}))
    for body in (gateway, orders, payments):
        assert body["trace"]["trace_id"] == trace_id, body
        assert body["trace"]["sampled"] is True, body

    cluster.settle(lambda: has_transactions(receiver, trace_id), f"trace {trace_id}")
    sent = three_transactions(receiver, trace_id)
    assert trace_of(sent["gateway"][1])["parent_span_id"] == span_id
    dsc = assert_one_dsc(sent)
    # No upstream DSC: the gateway starts one for the trace it continues.
    assert dsc["trace_id"] == trace_id
    assert dsc["sampled"] == "true"
    assert dsc["transaction"] == GATEWAY_TXN
    assert dsc["public_key"] == receiver.key
    for who, body in (("orders", orders), ("payments", payments)):
        headers = single_headers(body["received"], who)
        check_sentry_trace(headers["sentry-trace"], trace_id, True)
        assert baggage_parts(headers["baggage"]) == (dsc, []), (who, headers["baggage"])
    receiver.assert_no_problems()


_T, _S = new_ids()
#: (headers, the trace id continued or None for a new trace)
MALFORMED = [
    pytest.param({"sentry-trace": "not-a-trace-header"}, None, id="sentry-trace-garbage"),
    pytest.param({"sentry-trace": f"{'0' * 32}-{'0' * 16}-1"}, None,
                 id="sentry-trace-zero-ids"),
    pytest.param({"sentry-trace": f"{_T[:20]}-{_S}-1"}, None, id="sentry-trace-short-id"),
    pytest.param({"traceparent": "00-xyz-abc-01"}, None, id="traceparent-garbage"),
    pytest.param({"traceparent": f"ff-{_T}-{_S}-01"}, None, id="traceparent-version-ff"),
    pytest.param({"traceparent": f"00-{_T}-{'0' * 16}-01"}, None, id="traceparent-zero-span"),
    pytest.param({"baggage": "sentry-trace_id=nothex,sentry-sample_rate=2.5,=,,;;,bad key=x"}, None,
                 id="baggage-garbage"),
    pytest.param({"sentry-trace": "zzz", "traceparent": "00-1-2-3",
                  "baggage": "sentry-sampled=maybe,sentry-sample_rand=1.7"}, None,
                 id="all-garbage"),
    # A valid sentry-trace with a DSC that cannot be this trace's: the trace goes on, the
    # DSC is the gateway's own.
    pytest.param({"sentry-trace": f"{_T}-{_S}-1",
                  "baggage": "sentry-trace_id=nothex,sentry-sample_rate=2.5,sentry-sampled=1"},
                 _T, id="valid-sentry-trace-garbage-dsc"),
]


@pytest.mark.parametrize(("headers", "continued"), MALFORMED)
def test_malformed_incoming_headers_are_ignored(
    cluster: Cluster, headers: dict[str, str], continued: str | None
) -> None:
    """Malformed headers are ignored (a new trace starts unless a valid one remains), no
    request fails and nothing malformed is passed on."""
    receiver = cluster.receiver
    gateway, orders, payments = chain(cluster.checkout(cart_id=5, headers=headers))
    trace_id = gateway["trace"]["trace_id"]
    sampled = gateway["trace"]["sampled"]
    assert HEX32.fullmatch(trace_id) and int(trace_id, 16), trace_id
    if continued:
        assert (trace_id, sampled) == (continued, True)
    else:
        assert trace_id != _T  # a new trace
    for body in (orders, payments):
        assert body["trace"]["trace_id"] == trace_id, body
        assert body["trace"]["sampled"] is sampled, body
    dscs = []
    for who, body in (("orders", orders), ("payments", payments)):
        received = single_headers(body["received"], who)
        parent = check_sentry_trace(received["sentry-trace"], trace_id, sampled)
        check_traceparent(received["traceparent"], trace_id, parent, sampled)
        dsc, others = baggage_parts(received["baggage"])
        assert others == [], received  # no garbage passed on
        dscs.append(dsc)
    assert dscs[0] == dscs[1], dscs
    assert dscs[0]["trace_id"] == trace_id, dscs
    assert dscs[0]["sampled"] == ("true" if sampled else "false"), dscs
    assert dscs[0]["transaction"] == GATEWAY_TXN, dscs  # the gateway made the DSC
    if sampled:
        cluster.settle(lambda: has_transactions(receiver, trace_id), f"trace {trace_id}")
        sent = three_transactions(receiver, trace_id)
        assert assert_one_dsc(sent) == dscs[0]
        gateway_trace = trace_of(sent["gateway"][1])
        assert gateway_trace.get("parent_span_id") == (_S if continued else None)
    else:
        cluster.flush()
    assert_no_internal_errors(cluster)
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# 3. SENTRY_TRACES_SAMPLE_RATE=0.5 everywhere: one decision per trace
# --------------------------------------------------------------------------------------------


def test_sampling_decision_is_consistent_across_services(cluster: Cluster) -> None:
    receiver = cluster.receiver
    cluster.flush()
    before = report_totals(receiver)
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda i: chain(cluster.checkout(cart_id=1000 + i)),
                               range(TRACES)))
    decisions: dict[str, bool] = {}
    for gateway, orders, payments in bodies:
        trace_id = gateway["trace"]["trace_id"]
        sampled = gateway["trace"]["sampled"]
        assert trace_id not in decisions, "trace id reused"
        decisions[trace_id] = sampled
        # The head decides by sample_rand (from the trace id) < rate; everyone follows it.
        assert sampled is (float(head_rand(trace_id)) < SAMPLE_RATE), (trace_id, sampled)
        assert orders["trace"]["trace_id"] == payments["trace"]["trace_id"] == trace_id
        assert orders["trace"]["sampled"] is payments["trace"]["sampled"] is sampled
        dsc, _ = baggage_parts(single_headers(payments["received"], "payments")["baggage"])
        assert dsc["sampled"] == ("true" if sampled else "false"), dsc
        assert dsc["sample_rand"] == head_rand(trace_id), dsc

    sampled_ids = [t for t, s in decisions.items() if s]
    unsampled = TRACES - len(sampled_ids)
    services = ("gateway", "orders", "payments")

    def arrived() -> bool:
        counts = Counter(trace_of(t)["trace_id"] for t in receiver.transactions())
        return all(counts[t] >= 3 for t in sampled_ids) and all(
            unsampled_delta(receiver, before, s) >= unsampled for s in services)

    cluster.settle(arrived, f"{len(sampled_ids)} sampled traces and the client reports")
    cluster.flush()  # anything late would show up now

    per_trace: dict[str, Counter[str]] = {t: Counter() for t in decisions}
    for envelope in receiver.envelopes:
        for item in envelope.items:
            payload = item.json
            if item.type == "transaction" and isinstance(payload, dict):
                trace_id = trace_of(payload)["trace_id"]
                if trace_id in per_trace:
                    per_trace[trace_id][service_of(envelope)] += 1
                    assert envelope.headers["trace"]["sampled"] == "true"
    for trace_id, counts in per_trace.items():
        expected = 1 if decisions[trace_id] else 0
        assert [counts[s] for s in services] == [expected] * 3, (trace_id, counts)

    share = len(sampled_ids) / TRACES
    assert 0.35 <= share <= 0.65, f"sampled share {share} for rate {SAMPLE_RATE}"
    # Every unsampled trace is counted once per service in client reports.
    assert {s: unsampled_delta(receiver, before, s) for s in services} == dict.fromkeys(
        services, unsampled)
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# 4. An error in an unsampled trace
# --------------------------------------------------------------------------------------------


def test_error_in_unsampled_trace_reaches_sentry(cluster: Cluster) -> None:
    """Sample rate 0 at the head: no transaction, but payments' error arrives, with the trace
    id and the head's DSC (``sampled: "false"``)."""
    receiver = cluster.receiver
    cluster.flush()
    before = report_totals(receiver)
    gateway = cluster.checkout(cart_id=9, gateway=cluster.gateway_rate0, fail=True, status=502)
    trace_id = gateway["trace"]["trace_id"]
    assert gateway["trace"]["sampled"] is False
    orders = gateway["downstream"]["body"]
    assert (orders["trace"]["trace_id"], orders["trace"]["sampled"]) == (trace_id, False)
    assert orders["downstream"]["status"] == 500
    headers = single_headers(orders["received"], "orders")
    check_sentry_trace(headers["sentry-trace"], trace_id, False)

    cluster.settle(lambda: bool(trace_envelopes(receiver, trace_id, "event")),
                   f"the error event of trace {trace_id}")
    ((envelope, error),) = trace_envelopes(receiver, trace_id, "event")
    assert service_of(envelope) == "payments"
    (value,) = error["exception"]["values"]
    assert (value["type"], value["value"]) == ("PaymentDeclined", "card declined for cart 9")
    assert value["mechanism"]["handled"] is False
    assert error["transaction"] == PAYMENTS_TXN
    trace = trace_of(error)
    assert trace["trace_id"] == trace_id
    assert HEX16.fullmatch(trace["span_id"]), trace
    dsc = envelope.headers["trace"]
    assert dsc == {
        "trace_id": trace_id,
        "public_key": receiver.key,
        "sample_rate": "0.0",
        "sample_rand": head_rand(trace_id),
        "sampled": "false",
        "release": GATEWAY_RELEASE,
        "environment": GATEWAY_ENVIRONMENT,
        "transaction": GATEWAY_TXN,
    }, dsc
    assert baggage_parts(headers["baggage"]) == (dsc, [])
    assert trace_envelopes(receiver, trace_id, "transaction") == []

    services = ("gateway-rate0", "orders", "payments")
    cluster.settle(lambda: all(unsampled_delta(receiver, before, s) >= 1 for s in services),
                   "client reports of the unsampled trace")
    assert {s: unsampled_delta(receiver, before, s) for s in services} == dict.fromkeys(
        services, 1)
    receiver.assert_no_problems()


# --------------------------------------------------------------------------------------------
# Last: the services stop cleanly
# --------------------------------------------------------------------------------------------


def test_services_stop_cleanly(cluster: Cluster) -> None:
    apps = cluster.apps
    outputs = dict(zip(apps, stop_all(*apps.values()), strict=True))
    for name, output in outputs.items():
        assert_clean_output(output, tracebacks=cluster.failures if name == "payments" else 0)
    if cluster.failures:
        assert "PaymentDeclined: card declined" in outputs["payments"]
    receiver = cluster.receiver
    assert_receiver_clean(receiver)
    assert all(is_bridge_envelope(e) for e in receiver.envelopes)
    assert envelope_problems(receiver, bridge=True) == []
