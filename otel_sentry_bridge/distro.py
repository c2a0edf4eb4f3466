"""``OTEL_PYTHON_DISTRO=sentry_bridge``: environment defaults only (no SDK objects here).

OpenTelemetry's own distro defaults every exporter to OTLP, and without an OTLP exporter
package OpenTelemetry's start-up fails before any hook of ours runs. This distro defaults the
exporters to ``none`` instead (the bridge is a span processor, not an exporter) and leaves every
variable the user set alone.

It also loads each instrumentor on its own: OpenTelemetry's loader re-raises any exception of an
instrumentor other than an import error or a dependency conflict, which stops every instrumentor
after the broken one (and the app's start). Here such an exception is logged and the next one
loads.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.dependencies import DependencyConflictError
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from ._internal_errors import handle_internal_errors, logger

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

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Load and apply one instrumentor; its failure never stops the others."""
        try:
            super().load_instrumentor(entry_point, **kwargs)
        except (ImportError, DependencyConflictError):
            raise  # the loader's own quiet paths (a missing library, a version conflict)
        except Exception:
            logger.exception(
                "otel-sentry-bridge: instrumentation %r failed and is skipped; the other "
                "instrumentations still load", getattr(entry_point, "name", entry_point))
