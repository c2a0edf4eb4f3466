"""Whether the DSN's host answers: a TCP connect, then a POST of an empty envelope to the ingest
URL with the auth header, with a short timeout. Nothing else is sent; the key is never printed."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)

from otel_sentry_bridge._http import HttpTarget
from otel_sentry_bridge.config import BridgeConfig, mask_dsn
from otel_sentry_bridge.transport import USER_AGENT, parse_dsn

from .report import Report, mask_url


def probe_dsn_host(report: Report, cfg: BridgeConfig, timeout: float) -> None:
    """The Sentry section: does the DSN's host answer an authenticated, empty envelope?"""
    report.section("Sentry (the DSN's host):")
    if not cfg.dsn:
        report.line("  no valid SENTRY_DSN: nothing to check")
        return
    dsn = parse_dsn(cfg.dsn)
    if dsn is None:
        report.problem(f"SENTRY_DSN {mask_dsn(cfg.dsn)} is rejected by sentry-sdk's parser; "
                       "sending to Sentry is disabled")
        return
    auth = dsn.to_auth(USER_AGENT)
    url = str(auth.get_api_url())
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    report.line(f"  ingest URL: {url}")
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        report.line(f"  TCP connect to {host}:{port}: failed ({_describe(exc)})")
        report.problem(f"the DSN's host {host}:{port} does not answer: {_describe(exc)}")
        return
    elapsed = (time.monotonic() - started) * 1000
    report.line(f"  TCP connect to {host}:{port}: ok ({elapsed:.1f} ms)")
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": str(auth.to_header()),
        "User-Agent": USER_AGENT,
    }
    target = HttpTarget(url, headers, 0, timeout)
    sent_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = b'{"sent_at":"' + sent_at.encode() + b'"}\n'
    try:
        with suppress_instrumentation(), suppress_http_instrumentation():
            status, answer_headers = target.post(body)
    except OSError as exc:
        report.line(f"  POST of an empty envelope: failed ({_describe(exc)})")
        report.problem(f"the DSN's host accepts connections but the request failed: "
                       f"{_describe(exc)}")
        return
    finally:
        target.close()
    report.line(f"  POST of an empty envelope: HTTP {status} ({_status_meaning(status)})")
    if status in (401, 403):
        report.problem(f"Sentry rejected the DSN's key (HTTP {status}): check SENTRY_DSN")
    elif status == 404:
        report.problem("HTTP 404: no ingest endpoint at this URL (wrong host or path in the DSN?)")
    elif status == 429:
        report.problem("HTTP 429: Sentry is rate limiting this project")
    elif status >= 500:
        report.problem(f"HTTP {status}: the server failed; events may be lost")
    elif 300 <= status < 400:
        location = answer_headers.get("location")
        to = f" to {mask_url(location)}" if location else ""
        report.problem(f"HTTP {status}: the ingest URL redirects{to}; the bridge does not follow "
                       "redirects, so everything it sends is lost (check the DSN's scheme, host "
                       "and port)")
    elif status != 400 and not 200 <= status < 300:
        report.problem(f"HTTP {status}: the ingest URL does not take envelopes, so everything the "
                       "bridge sends is lost (is the DSN's host a Sentry server?)")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _status_meaning(status: int) -> str:
    if 200 <= status < 300:
        return "accepted"
    if 300 <= status < 400:
        return "redirected"
    return {
        400: "answered; the empty envelope was refused, which is harmless",
        401: "key rejected", 403: "key rejected", 404: "not found", 413: "too large",
        429: "rate limited",
    }.get(status, "server error" if status >= 500 else "refused")

