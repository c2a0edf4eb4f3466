"""otel-sentry-bridge: OpenTelemetry spans -> Sentry transactions, zero-code.

Zero-code: install, set ``SENTRY_DSN`` and run ``opentelemetry-instrument python app.py``.
In code::

    from otel_sentry_bridge import SentrySpanProcessor
    provider.add_span_processor(SentrySpanProcessor())
"""

from .breadcrumbs import add_breadcrumb
from .browser import SentryMetaTagsASGIMiddleware, SentryMetaTagsMiddleware, meta_tags
from .business import business_context, set_business_context
from .caching import cached
from .capture import capture_errors
from .config import SETTINGS, BridgeConfig, load_config
from .crons import monitor
from .custom_spans import cache_span, deserialize_span, http_client_span, serialize_span, span
from .exporter import SentrySpanExporter
from .measurements import set_measurement
from .middleware import SentryBridgeASGIMiddleware, SentryBridgeWSGIMiddleware
from .processor import SentrySpanProcessor
from .redis_hooks import redis_request_hook, redis_response_hook
from .version import __version__

__all__ = [
    "SETTINGS",
    "BridgeConfig",
    "SentryBridgeASGIMiddleware",
    "SentryBridgeWSGIMiddleware",
    "SentryMetaTagsASGIMiddleware",
    "SentryMetaTagsMiddleware",
    "SentrySpanExporter",
    "SentrySpanProcessor",
    "__version__",
    "add_breadcrumb",
    "business_context",
    "cache_span",
    "cached",
    "capture_errors",
    "deserialize_span",
    "http_client_span",
    "load_config",
    "meta_tags",
    "monitor",
    "redis_request_hook",
    "redis_response_hook",
    "serialize_span",
    "set_business_context",
    "set_measurement",
    "span",
]
