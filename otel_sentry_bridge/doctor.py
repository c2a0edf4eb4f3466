"""``otel-sentry-bridge doctor``: check an environment before blaming the bridge.

It prints, for the environment it is given (normally ``os.environ`` of the shell the app runs
in, same virtualenv):

* the effective settings, each with its origin (``environment``, ``default`` or ``invalid``),
  the DSN key masked;
* the versions of OpenTelemetry, sentry-sdk and this package, checked against the ranges this
  package declares (its installed ``Requires-Dist`` metadata);
* the OpenTelemetry entry points that ``opentelemetry-instrument`` looks at, which of them would
  actually load, and the set-ups known to break start-up (two distros or configurators without
  ``OTEL_PYTHON_DISTRO``/``OTEL_PYTHON_CONFIGURATOR``, or with one that names an entry point two
  distributions provide; exporters defaulted to OTLP with no OTLP exporter installed);
* the instrumentors, and whether the library each one instruments is installed;
* whether the DSN's host answers: a TCP connect, then a POST of an empty envelope to the ingest
  URL with the auth header, with a short timeout (a rejected key, a redirect or any other answer
  the bridge cannot send to is a problem).

The sections live in :mod:`otel_sentry_bridge._doctor`; this module runs them and keeps the
names other code imports from here.

Nothing is instrumented, nothing is sent but that empty envelope, and the DSN key is never
printed. :func:`run_doctor` returns 0 when nothing looks wrong, 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import TextIO

from ._doctor import requirements as _requirements
from ._doctor.entry_points import (
    BRIDGE_ENTRY_POINT,
    DEFAULT_PROPAGATORS,
    DIST_NAME,
    GROUPS,
    OTEL_DISTRO_VALUE,
    SIGNALS,
    EntryPointInfo,
    ExporterPlan,
    entry_points_of,
    exporter_plan,
    report_entry_points,
)
from ._doctor.probe import probe_dsn_host
from ._doctor.report import Report, format_setting
from ._doctor.requirements import (
    HAVE_PACKAGING,
    Req,
    _canonical,
    installed_version,
    parse_requirement,
    version_in,
)
from .config import SETTINGS, BridgeConfig, load_config
from .version import __version__

__all__ = [
    "BRIDGE_ENTRY_POINT",
    "CHECKED_PACKAGES",
    "DEFAULT_PROPAGATORS",
    "DIST_NAME",
    "GROUPS",
    "HAVE_PACKAGING",
    "OTEL_DISTRO_VALUE",
    "OTEL_VARIABLES",
    "SIGNALS",
    "EntryPointInfo",
    "ExporterPlan",
    "Report",
    "Req",
    "entry_points_of",
    "exporter_plan",
    "format_setting",
    "installed_version",
    "parse_requirement",
    "run_doctor",
    "version_in",
]

#: Packages whose versions are shown and checked against this package's declared ranges.
CHECKED_PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-semantic-conventions",
    "sentry-sdk",
)
#: OpenTelemetry variables shown as they are (none of them holds a secret).
OTEL_VARIABLES = (
    "OTEL_PYTHON_DISTRO",
    "OTEL_PYTHON_CONFIGURATOR",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_PROPAGATORS",
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
)


def _settings(report: Report, environ: Mapping[str, str]) -> BridgeConfig:
    cfg = load_config(environ)
    invalid = dict(cfg.invalid)
    rows: list[tuple[str, str, str]] = []
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if setting.env in invalid:
            origin = "invalid, default used"
        elif raw is not None and raw.strip():
            origin = "environment"
        else:
            origin = "default"
        rows.append((setting.env, format_setting(setting.name, getattr(cfg, setting.name)), origin))
    report.section("Settings (as the bridge reads them; code overrides not included):")
    env_w = max(len(r[0]) for r in rows)
    value_w = min(50, max(len(r[1]) for r in rows))
    for env, value, origin in rows:
        report.line(f"  {env:<{env_w}}  {value:<{value_w}}  [{origin}]")
    for env, accepted in cfg.invalid:
        if env == "SENTRY_DSN":
            report.problem(f"SENTRY_DSN is malformed (expected {accepted}); sending to Sentry "
                           "is disabled")
        else:
            report.problem(f"{env} is invalid (expected {accepted}); the default is used")
    if cfg.active:
        where = [name for name, on in (
            ("Sentry", bool(cfg.dsn)), ("Spotlight", bool(cfg.spotlight)),
            ("envelope folder", bool(cfg.envelope_dir)),
        ) if on]
        report.line(f"  active: yes (sending to {', '.join(where)})")
    elif not cfg.enabled:
        report.line("  active: no")
        report.problem("the bridge is switched off (SENTRY_BRIDGE_ENABLED is false or empty)")
    else:
        report.line("  active: no")
        report.problem("the bridge is not active: set SENTRY_DSN (or SENTRY_SPOTLIGHT or "
                       "SENTRY_BRIDGE_ENVELOPE_DIR)")
    shown = [(name, environ[name]) for name in OTEL_VARIABLES if name in environ]
    report.line("  OpenTelemetry variables: " + (
        ", ".join(f"{name}={value!r}" for name, value in shown) if shown else "(none set)"))
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        report.problem("OTEL_SDK_DISABLED=true: OpenTelemetry creates no spans")
    return cfg


def _versions(report: Report) -> None:
    report.section("Versions (checked against the ranges otel-sentry-bridge declares):")
    own = installed_version(DIST_NAME)
    ranges: dict[str, str] = {}
    requires: list[str] | None = None
    if own is None:
        report.line(f"  {DIST_NAME:<36} (not installed: no package metadata)")
        report.problem(f"{DIST_NAME} is not installed (no package metadata): its entry points "
                       "are missing, so opentelemetry-instrument cannot load it")
    else:
        report.line(f"  {DIST_NAME:<36} {own}")
        try:
            requires = metadata.distribution(DIST_NAME).requires
        except metadata.PackageNotFoundError:  # pragma: no cover - raced with an uninstall
            requires = None
    for text in requires or ():
        req = parse_requirement(text)
        if req is not None and req.extra is None:
            ranges[req.name] = req.spec
    if not _requirements.HAVE_PACKAGING:  # pragma: no cover
        report.line("  (packaging is not installed: versions compared with a simple parser)")
    for name in CHECKED_PACKAGES:
        version = installed_version(name)
        spec = ranges.get(_canonical(name))
        if version is None:
            report.line(f"  {name:<36} not installed")
            report.problem(f"{name} is not installed")
            continue
        if spec is None:
            report.line(f"  {name:<36} {version:<12} (no declared range)")
            continue
        inside = version_in(spec, version)
        if inside is None:
            report.line(f"  {name:<36} {version:<12} cannot compare with {spec}")
        elif inside:
            report.line(f"  {name:<36} {version:<12} ok (tested: {spec})")
        else:
            report.line(f"  {name:<36} {version:<12} OUTSIDE the tested range {spec}")
            report.problem(f"{name} {version} is outside the tested range {spec}")


def run_doctor(environ: Mapping[str, str], out: TextIO, *, timeout: float = 3.0) -> int:
    """Print the diagnosis of ``environ`` to ``out``; 0 when nothing is wrong, else 1."""
    report = Report(out)
    report.line(f"otel-sentry-bridge {__version__} doctor")
    cfg = _settings(report, environ)
    _versions(report)
    report_entry_points(report, environ)
    probe_dsn_host(report, cfg, timeout)
    report.line()
    if report.problems:
        report.line(f"doctor: {len(report.problems)} problem(s) found:")
        for text in report.problems:
            report.line(f"  - {text}")
        return 1
    report.line("doctor: no problem found")
    return 0
