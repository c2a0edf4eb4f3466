"""The library this instrumentation targets (checked by ``opentelemetry-instrument``)."""

# 0.209.5: per-request extension instances with every lifecycle hook (sentry-sdk's minimum).
_instruments = ("strawberry-graphql >= 0.209.5",)
