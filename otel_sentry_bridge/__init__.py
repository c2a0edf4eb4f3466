"""otel-sentry-bridge: OpenTelemetry spans -> Sentry transactions, zero-code.

Zero-code: install, set ``SENTRY_DSN`` and run ``opentelemetry-instrument python app.py``.
In code::

    from otel_sentry_bridge import SentrySpanProcessor
    provider.add_span_processor(SentrySpanProcessor())
"""

from .business import business_context, set_business_context
from .capture import capture_errors
from .config import SETTINGS, BridgeConfig, load_config
from .exporter import SentrySpanExporter
from .processor import SentrySpanProcessor
from .redis_hooks import redis_request_hook, redis_response_hook
from .version import __version__

__all__ = [
    "SETTINGS",
    "BridgeConfig",
    "SentrySpanExporter",
    "SentrySpanProcessor",
    "__version__",
    "business_context",
    "capture_errors",
    "load_config",
    "redis_request_hook",
    "redis_response_hook",
    "set_business_context",
]
