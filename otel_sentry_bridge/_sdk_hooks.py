"""sentry-sdk coexistence: what the bridge changes in a ``sentry_sdk.init()`` client of the app.

Errors sentry-sdk captures are linked to the active OTel span, its own transactions are dropped
(the bridge sends the trace), and inside OTel spans its HTTP integrations leave the trace
headers to the OTel propagator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sentry_sdk
from sentry_sdk.scope import register_external_propagation_context

from ._internal_errors import handle_internal_errors
from ._sdk_events import capture_done, sdk_event_processor

_SDK_HOOK_INSTALLED = False


def install_sentry_sdk_hooks(current_span_context: Callable[[], dict[str, str] | None]) -> None:
    """When the app also calls ``sentry_sdk.init()``: link its errors to the active OTel span,
    drop the transactions sentry-sdk would build itself (the bridge already sends them), and
    leave outgoing trace headers inside OTel spans to the OTel propagator, so that a request
    never carries a second ``sentry-trace``."""
    global _SDK_HOOK_INSTALLED
    if _SDK_HOOK_INSTALLED:
        return
    _SDK_HOOK_INSTALLED = True
    _route_sdk_propagation(current_span_context)
    processor = sdk_event_processor(current_span_context)
    sentry_sdk.get_global_scope().add_event_processor(processor)  # type: ignore[arg-type]
    _confirm_sent_events()

    def otel_ids() -> tuple[str, str] | None:
        ids = current_span_context()
        return (ids["trace_id"], ids["span_id"]) if ids else None

    # sentry-sdk then leaves outgoing trace headers to the OTel propagator (one sentry-trace
    # per request) and tags its own errors, logs and check-ins with the OTel trace.
    register_external_propagation_context(otel_ids)


def _route_sdk_propagation(current_span_context: Callable[[], dict[str, str] | None]) -> None:
    """Inside an OTel span, sentry-sdk's HTTP integrations add no trace headers: the OTel
    instrumentations inject the bridge's (sentry-sdk's http.client integration writes its
    headers right after ``putrequest``, before the caller's own, so both would be sent).
    Outside an OTel span sentry-sdk behaves as it always does."""
    original = sentry_sdk.Scope.iter_trace_propagation_headers

    def iter_trace_propagation_headers(
        self: sentry_sdk.Scope, *args: Any, **kwargs: Any
    ) -> Iterator[tuple[str, str]]:
        inside = False
        with handle_internal_errors("sentry_sdk_propagation"):
            inside = current_span_context() is not None
        if not inside:
            yield from original(self, *args, **kwargs)

    patched: Any = iter_trace_propagation_headers
    sentry_sdk.Scope.iter_trace_propagation_headers = patched  # type: ignore[method-assign]


def _confirm_sent_events() -> None:
    """``Client.capture_event`` returns the event id only when the event goes to the transport
    (not dropped by ``before_send``, the sample rate or an event processor): only then is an
    exception sentry-sdk captured one the bridge leaves out."""
    client_class = sentry_sdk.client._Client
    original = client_class.capture_event

    def capture_event(self: Any, event: Any, *args: Any, **kwargs: Any) -> str | None:
        event_id: str | None = original(self, event, *args, **kwargs)
        with handle_internal_errors("sentry_sdk_capture_event"):
            capture_done(event.get("event_id") if isinstance(event, dict) else None,
                         event_id is not None)
        return event_id

    patched: Any = capture_event
    client_class.capture_event = patched  # type: ignore[method-assign]
