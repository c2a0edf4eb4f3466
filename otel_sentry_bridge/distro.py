"""``OTEL_PYTHON_DISTRO=sentry_bridge``: environment defaults only (no SDK objects here).

OpenTelemetry's own distro defaults every exporter to OTLP, and without an OTLP exporter
package OpenTelemetry's start-up fails before any hook of ours runs. This distro defaults the
exporters to ``none`` instead (the bridge is a span processor, not an exporter) and leaves every
variable the user set alone.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from ._internal_errors import handle_internal_errors

DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


class SentryBridgeDistro(BaseDistro):  # type: ignore[misc]
    """Sets exporter defaults; the post-instrument hook adds the bridge."""

    def _configure(self, **kwargs: Any) -> None:
        with handle_internal_errors("SentryBridgeDistro._configure"):
            for key, value in DEFAULTS.items():
                os.environ.setdefault(key, value)
