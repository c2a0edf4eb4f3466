"""OpenTelemetry's entry points as ``opentelemetry-instrument`` sees them: which distro,
configurator, hooks, exporters, propagators and instrumentors are installed and which of them
would load, the conflicts between them, and the exporter set-ups that make start-up fail."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata

from .report import Report
from .requirements import Req, installed_version, parse_requirement, version_in

DIST_NAME = "otel-sentry-bridge"
GROUPS = (
    "opentelemetry_distro",
    "opentelemetry_configurator",
    "opentelemetry_post_instrument",
    "opentelemetry_traces_exporter",
    "opentelemetry_propagator",
    "opentelemetry_instrumentor",
)
SIGNALS = ("traces", "metrics", "logs")
OTEL_DISTRO_VALUE = "opentelemetry.distro:OpenTelemetryDistro"
BRIDGE_ENTRY_POINT = "sentry_bridge"
DEFAULT_PROPAGATORS = "tracecontext,baggage"
_EXPORTER_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_EXPORTER_PACKAGE = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
}


@dataclass(frozen=True)
class EntryPointInfo:
    """An installed entry point and the distribution providing it."""

    group: str
    name: str
    value: str
    dist: str
    dist_version: str
    requires: tuple[str, ...] = ()


def entry_points_of(group: str) -> list[EntryPointInfo]:
    """Entry points of ``group`` in the order OpenTelemetry iterates them."""
    found: list[EntryPointInfo] = []
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        name = "?"
        version = "?"
        requires: tuple[str, ...] = ()
        if dist is not None:
            name = str(dist.metadata["Name"] or "?")
            version = str(dist.version)
            requires = tuple(dist.requires or ())
        found.append(EntryPointInfo(group, ep.name, ep.value, name, version, requires))
    return found


def _listing(
    report: Report, found: Iterable[EntryPointInfo], marks: Mapping[EntryPointInfo, str]
) -> None:
    rows = list(found)
    if not rows:
        report.line("    (none installed)")
        return
    name_w = max(len(ep.name) for ep in rows)
    for ep in rows:
        mark = marks.get(ep, "")
        report.line(f"    {ep.name:<{name_w}}  {ep.value}  [{ep.dist} {ep.dist_version}]"
                    + (f"  <- {mark}" if mark else ""))


def _choose(
    report: Report,
    environ: Mapping[str, str],
    group: str,
    variable: str,
    what: str,
) -> EntryPointInfo | None:
    found = entry_points_of(group)
    wanted = environ.get(variable)
    # What OpenTelemetry loads: the first entry point, or the first one named by the variable.
    candidates = [ep for ep in found if wanted is None or ep.name == wanted]
    chosen = candidates[0] if candidates else None
    marks: dict[EntryPointInfo, str] = {}
    if chosen is not None:
        why = f"named by {variable}" if wanted is not None else "first found"
        marks[chosen] = f"loads ({why})"
    report.line(f"  {group}:")
    _listing(report, found, marks)
    if wanted is not None and chosen is None:
        fallback = ("OpenTelemetry's DefaultDistro is used" if what == "distro"
                    else "no configurator runs")
        report.problem(f"{variable}={wanted!r} names no installed {what}; {fallback}")
    elif chosen is not None and len(candidates) > 1:
        # Unset variable, or one name provided by several distributions: the first one wins.
        names = ", ".join(f"{ep.name} ({ep.dist})" for ep in candidates)
        if wanted is None:
            how, first = f"{variable} is unset", chosen.name
            fix = f"set {variable}={BRIDGE_ENTRY_POINT} (or the one you mean)"
        else:
            how, first = f"{variable}={wanted!r} names each of them", chosen.dist
            fix = f"uninstall the {what} you do not mean"
        report.problem(
            f"{len(candidates)} {what}s installed ({names}) and {how}: "
            f"OpenTelemetry loads the first one found ({first}), which depends on "
            f"installation order; {fix}"
        )
    return chosen


@dataclass
class ExporterPlan:
    """What OpenTelemetry's SDK configurator would look up, per signal."""

    resolved: dict[str, list[str]] = field(default_factory=dict)
    #: (exporter entry point name, why the variable has its value) -> ["OTEL_X_EXPORTER=v"]
    missing: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def exporter_plan(
    environ: Mapping[str, str],
    distro: EntryPointInfo | None,
    configurator: EntryPointInfo | None,
) -> ExporterPlan:
    """Exporter names per signal after the distro's and the configurator's defaults (the distro
    runs first, then the configurator), and those not installed (OpenTelemetry start-up then
    fails before any hook of the bridge runs)."""
    plan = ExporterPlan(resolved={signal: [] for signal in SIGNALS})
    values: dict[str, str | None] = {
        signal: environ.get(f"OTEL_{signal.upper()}_EXPORTER") for signal in SIGNALS
    }
    origin = {signal: "set" for signal in SIGNALS if values[signal] is not None}
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if distro is not None and distro.value == OTEL_DISTRO_VALUE:
        for signal in SIGNALS:
            if values[signal] is None:
                values[signal], origin[signal] = "otlp", f"defaulted to otlp by {distro.dist}"
        protocol = protocol if protocol is not None else "grpc"
    elif distro is not None and distro.name == BRIDGE_ENTRY_POINT:
        for signal in SIGNALS:
            if values[signal] is None:
                values[signal], origin[signal] = "none", "defaulted by the bridge's distro"
    if configurator is not None and configurator.name == BRIDGE_ENTRY_POINT:
        for signal in SIGNALS:
            if values[signal] is None:
                values[signal], origin[signal] = "none", "defaulted by the bridge's configurator"
    if configurator is None:
        return plan
    for signal in SIGNALS:
        value = (values[signal] or "").strip()
        if not value or value.lower() == "none":
            continue
        available = {ep.name for ep in entry_points_of(f"opentelemetry_{signal}_exporter")}
        variable = f"OTEL_{signal.upper()}_EXPORTER"
        for name in (n.strip() for n in value.split(",") if n.strip()):
            if name == "otlp":
                chosen = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or protocol
                name = _EXPORTER_BY_PROTOCOL.get((chosen or "grpc").strip(), "")
                if not name:
                    plan.errors.append(f"{variable}=otlp with the unsupported OTLP protocol "
                                       f"{chosen!r}: OpenTelemetry start-up fails")
                    continue
            plan.resolved[signal].append(name)
            if name not in available:
                key = (name, origin.get(signal, "set"))
                plan.missing.setdefault(key, []).append(f"{variable}={value}")
    return plan


def _missing_text(plan: ExporterPlan) -> list[str]:
    texts = []
    for (name, why), variables in plan.missing.items():
        package = _EXPORTER_PACKAGE.get(name, "the package providing it")
        texts.append(
            f"{', '.join(variables)} ({why}) require(s) the exporter {name!r}, which is not "
            f"installed (install {package}, or set the variable(s) to none, or "
            f"OTEL_PYTHON_DISTRO={BRIDGE_ENTRY_POINT})"
        )
    return texts


def _exporters(
    report: Report,
    environ: Mapping[str, str],
    distros: list[EntryPointInfo],
    distro: EntryPointInfo | None,
    configurator: EntryPointInfo | None,
) -> list[str]:
    """Report exporter set-ups that make OpenTelemetry's start-up fail; return the names of the
    trace exporters that would be used."""
    plan = exporter_plan(environ, distro, configurator)
    for text in plan.errors:
        report.problem(text)
    for text in _missing_text(plan):
        report.problem(f"OpenTelemetry start-up would fail: {text}")
    otel_distro = next((ep for ep in distros if ep.value == OTEL_DISTRO_VALUE), None)
    if (
        otel_distro is not None
        and otel_distro != distro
        and environ.get("OTEL_PYTHON_DISTRO") is None
    ):
        # Installed but not picked today: the pick follows installation order.
        for text in _missing_text(exporter_plan(environ, otel_distro, configurator)):
            report.problem(
                f"{otel_distro.dist} is installed and OTEL_PYTHON_DISTRO is unset: if its "
                f"distro is the one loaded, OpenTelemetry start-up fails: {text}"
            )
    return plan.resolved["traces"]


def _own_instruments(ep: EntryPointInfo) -> tuple[str, ...] | None:
    """The target library requirements of one of the bridge's own instrumentors (its
    ``package.py``: our distribution declares no ``instruments`` extra), without importing the
    library itself."""
    if ep.dist != DIST_NAME or ":" not in ep.value:
        return None
    module = ep.value.split(":", 1)[0].strip() + ".package"
    try:
        found = getattr(importlib.import_module(module), "_instruments", None)
    except Exception:
        return None
    if not isinstance(found, tuple) or not all(isinstance(t, str) for t in found):
        return None
    return tuple(f'{text}; extra == "instruments"' for text in found)


def _instruments(ep: EntryPointInfo) -> tuple[str, str]:
    """(what the instrumentor needs and found; ``ok``, ``missing`` or ``conflict``)."""
    needs_all: list[Req] = []
    needs_any: list[Req] = []
    for text in _own_instruments(ep) or ep.requires:
        req = parse_requirement(text)
        if req is None:
            continue
        if req.extra == "instruments":
            needs_all.append(req)
        elif req.extra == "instruments-any":
            needs_any.append(req)
    if not needs_all and not needs_any:
        return "no library requirement declared", "ok"
    found: list[str] = []
    for req in needs_all:
        version = installed_version(req.name)
        if version is None:
            return f"{req.name}{req.spec} not installed", "missing"
        if version_in(req.spec, version) is False:
            return f"{req.name} {version} installed, outside {req.name}{req.spec}", "conflict"
        found.append(f"{req.name} {version}")
    if needs_any:
        for req in needs_any:
            version = installed_version(req.name)
            if version is not None and version_in(req.spec, version) is not False:
                found.append(f"{req.name} {version}")
                break
        else:
            wanted = " or ".join(f"{r.name}{r.spec}" for r in needs_any)
            return f"none of {wanted} installed (in range)", "missing"
    return ", ".join(found) + " installed", "ok"


def report_entry_points(report: Report, environ: Mapping[str, str]) -> None:
    """The entry points section: what loads, conflicts, and the start-up traps."""
    report.section("OpenTelemetry entry points (what opentelemetry-instrument looks at):")
    report.line("  OpenTelemetry loads the first distro and the first configurator found, unless "
                "OTEL_PYTHON_DISTRO /")
    report.line("  OTEL_PYTHON_CONFIGURATOR names one; every post_instrument hook runs.")
    distros = entry_points_of("opentelemetry_distro")
    distro = _choose(report, environ, "opentelemetry_distro", "OTEL_PYTHON_DISTRO", "distro")
    configurator = _choose(report, environ, "opentelemetry_configurator",
                           "OTEL_PYTHON_CONFIGURATOR", "configurator")

    hooks = entry_points_of("opentelemetry_post_instrument")
    report.line("  opentelemetry_post_instrument:")
    _listing(report, hooks, {ep: "runs" for ep in hooks})
    if not any(ep.name == BRIDGE_ENTRY_POINT and ep.dist == DIST_NAME for ep in hooks):
        report.problem("the bridge's post_instrument hook is not installed: "
                       "opentelemetry-instrument will not add the bridge")

    wanted = set(_exporters(report, environ, distros, distro, configurator))

    exporters = entry_points_of("opentelemetry_traces_exporter")
    report.line("  opentelemetry_traces_exporter:")
    _listing(report, exporters, {ep: "selected by OTEL_TRACES_EXPORTER"
                                 for ep in exporters if ep.name in wanted})

    propagators = entry_points_of("opentelemetry_propagator")
    names_raw = environ.get("OTEL_PROPAGATORS")
    why = "named by OTEL_PROPAGATORS" if names_raw else "default OTEL_PROPAGATORS"
    names = [n.strip() for n in (names_raw or DEFAULT_PROPAGATORS).split(",") if n.strip()]
    report.line("  opentelemetry_propagator:")
    _listing(report, propagators, {ep: f"used ({why})"
                                   for ep in propagators if ep.name in names})
    available = {ep.name for ep in propagators}
    for name in names:
        if name != "none" and name not in available:
            report.problem(f"OTEL_PROPAGATORS names {name!r}, which is not installed: "
                           "OpenTelemetry fails to start")

    instrumentors = entry_points_of("opentelemetry_instrumentor")
    disabled_raw = environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    disabled = {n.strip() for n in disabled_raw.split(",") if n.strip()}
    report.line("  opentelemetry_instrumentor:")
    if not instrumentors:
        report.line("    (none installed)")
    name_w = max((len(ep.name) for ep in instrumentors), default=0)
    loading = 0
    for ep in instrumentors:
        what, state = _instruments(ep)
        if "*" in disabled or ep.name in disabled:
            status = "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
        elif state == "ok":
            status = f"loads ({what})"
            loading += 1
        else:
            status = f"skipped: library missing ({what})" if state == "missing" else \
                f"skipped: version conflict ({what})"
        report.line(f"    {ep.name:<{name_w}}  [{ep.dist} {ep.dist_version}]  {status}")
        if state == "conflict" and status.startswith("skipped"):
            report.problem(f"instrumentor {ep.name} instruments nothing: {what}")
    if not loading:
        report.problem("no instrumentor would load: no spans are created "
                       "(install e.g. opentelemetry-instrumentation-flask, or run "
                       "opentelemetry-bootstrap -a install)")
