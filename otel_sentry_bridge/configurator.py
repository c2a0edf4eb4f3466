"""``OTEL_PYTHON_CONFIGURATOR=sentry_bridge``: OpenTelemetry's SDK set-up plus the bridge.

It runs OpenTelemetry's own SDK configurator (provider, resource, sampler and any exporters
named in ``OTEL_*_EXPORTER``; exporters default to ``none`` here, not OTLP), then adds the
bridge's span processor to the provider it built.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.sdk._configuration import _OTelSDKConfigurator  # tested private import

from ._internal_errors import handle_internal_errors
from .autoinstall import install
from .distro import DEFAULTS


class SentryBridgeConfigurator(_OTelSDKConfigurator):
    """OpenTelemetry SDK configuration with the bridge's processor."""

    def _configure(self, **kwargs: Any) -> None:
        with handle_internal_errors("SentryBridgeConfigurator._configure"):
            for key, value in DEFAULTS.items():
                os.environ.setdefault(key, value)
            super()._configure(**kwargs)  # type: ignore[no-untyped-call]
            install()
