"""The event processor the bridge adds to sentry-sdk when the app also calls
``sentry_sdk.init()`` (installed by ``transport.install_sentry_sdk_hooks``; no sentry-sdk
import here)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._internal_errors import handle_internal_errors
from .conventions import SDK_NAME

SdkEventProcessor = Callable[[dict[str, Any], dict[str, Any]], "dict[str, Any] | None"]


def sdk_event_processor(
    current_span_context: Callable[[], dict[str, str] | None],
) -> SdkEventProcessor:
    """Link sentry-sdk's errors to the active OTel span; drop the transactions sentry-sdk
    would build itself (the bridge already sends them)."""

    def processor(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        del hint
        with handle_internal_errors("sentry_sdk_event_processor"):
            if event.get("type") == "transaction":
                if not event.get("sdk", {}).get("name", "").startswith(SDK_NAME):
                    logging.getLogger("otel_sentry_bridge").debug(
                        "otel-sentry-bridge: dropping sentry-sdk's own transaction %r "
                        "(the bridge reports this trace)", event.get("transaction"))
                    return None
                return event
            trace = current_span_context()
            if trace is not None:
                contexts = event.setdefault("contexts", {})
                linked = {**contexts.get("trace", {}), **trace}
                dsc = linked.get("dynamic_sampling_context")
                if isinstance(dsc, dict):
                    # sentry-sdk turns this into the envelope's trace header: it must describe
                    # the OTel trace, not sentry-sdk's own propagation context.
                    linked["dynamic_sampling_context"] = {
                        **{k: v for k, v in dsc.items()
                           if k in ("public_key", "release", "environment", "org_id")},
                        "trace_id": trace["trace_id"],
                    }
                contexts["trace"] = linked
        return event

    return processor
