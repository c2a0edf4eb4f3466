"""Version of the otel-sentry-bridge package."""

__version__ = "0.1.0"
