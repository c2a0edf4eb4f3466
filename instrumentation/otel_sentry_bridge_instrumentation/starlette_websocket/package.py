"""The library this instrumentation targets (checked by ``opentelemetry-instrument``)."""

# 0.33: scope["root_path"] / ["app_root_path"] as read for mounted routes' templates.
_instruments = ("starlette >= 0.33",)
