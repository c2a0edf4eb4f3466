"""Extra OpenTelemetry instrumentations shipped with otel-sentry-bridge.

Each instrumentation lives in its own subpackage and is loaded by ``opentelemetry-instrument``
through an ``opentelemetry_instrumentor`` entry point. This package re-exports nothing, so
importing one instrumentation never imports another one's target library. It uses only the
OpenTelemetry API and ``otel_sentry_bridge.conventions``; the core never imports it.
"""
