"""The pieces of ``otel-sentry-bridge doctor``; the command is :mod:`otel_sentry_bridge.doctor`.

* :mod:`.report`: the output (:class:`~.report.Report`) and how settings are displayed, secrets
  masked;
* :mod:`.requirements`: ``Requires-Dist`` and version parsing (``packaging`` when available);
* :mod:`.entry_points`: OpenTelemetry entry points, which of them load, conflicts, the exporter
  plan and the instrumentors;
* :mod:`.probe`: whether the DSN's host answers.
"""
