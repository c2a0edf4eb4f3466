"""``otel-sentry-bridge doctor``: check an environment before blaming the bridge.

It prints, for the environment it is given (normally ``os.environ`` of the shell the app runs
in, same virtualenv):

* the effective settings, each with its origin (``environment``, ``default`` or ``invalid``),
  the DSN key masked;
* the versions of OpenTelemetry, sentry-sdk and this package, checked against the ranges this
  package declares (its installed ``Requires-Dist`` metadata);
* the OpenTelemetry entry points that ``opentelemetry-instrument`` looks at, which of them would
  actually load, and the set-ups known to break start-up (two distros or configurators without
  ``OTEL_PYTHON_DISTRO``/``OTEL_PYTHON_CONFIGURATOR``; exporters defaulted to OTLP with no OTLP
  exporter installed);
* the instrumentors, and whether the library each one instruments is installed;
* whether the DSN's host answers: a TCP connect, then a POST of an empty envelope to the ingest
  URL with the auth header, with a short timeout.

Nothing is instrumented, nothing is sent but that empty envelope, and the DSN key is never
printed. :func:`run_doctor` returns 0 when nothing looks wrong, 1 otherwise.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)

from ._http import HttpTarget
from .config import SETTINGS, BridgeConfig, load_config, mask_dsn
from .transport import USER_AGENT, parse_dsn
from .version import __version__

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - packaging comes with opentelemetry-instrumentation
    HAVE_PACKAGING = False
else:
    HAVE_PACKAGING = True

DIST_NAME = "otel-sentry-bridge"
#: Packages whose versions are shown and checked against this package's declared ranges.
CHECKED_PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-semantic-conventions",
    "sentry-sdk",
)
GROUPS = (
    "opentelemetry_distro",
    "opentelemetry_configurator",
    "opentelemetry_post_instrument",
    "opentelemetry_traces_exporter",
    "opentelemetry_propagator",
    "opentelemetry_instrumentor",
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
SIGNALS = ("traces", "metrics", "logs")
OTEL_DISTRO_VALUE = "opentelemetry.distro:OpenTelemetryDistro"
BRIDGE_ENTRY_POINT = "sentry_bridge"
DEFAULT_PROPAGATORS = "tracecontext,baggage"
_EXPORTER_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_EXPORTER_PACKAGE = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------
# Requirements and versions (packaging when available, else a simple comparison)
# --------------------------------------------------------------------------------------------

_SIMPLE_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?(?P<spec>[^;)]*)\)?"
    r"\s*(?:;(?P<marker>.*))?$"
)
_SIMPLE_SPEC = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)\s*$")
_SIMPLE_VERSION = re.compile(
    r"^\s*v?(?P<release>\d+(?:\.\d+)*)(?:[._-]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)"
    r"[._-]?(?P<pren>\d*))?(?:[._-]?(?:post|rev|r)[._-]?(?P<post>\d*))?"
    r"(?:[._-]?dev[._-]?(?P<dev>\d*))?"
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}


def _simple_version_key(text: str) -> tuple[int, ...] | None:
    match = _SIMPLE_VERSION.match(text)
    if match is None:
        return None
    release = [int(part) for part in match.group("release").split(".")]
    release += [0] * (6 - len(release))
    pre = match.group("pre")
    dev = match.group("dev")
    if pre is not None:
        tail = (0, _PRE_RANK[pre], int(match.group("pren") or 0))
    elif dev is not None:
        tail = (-1, 0, int(dev or 0))
    else:
        tail = (1, 0, int(match.group("post") or 0))
    return (*release[:6], *tail)


def _simple_contains(spec: str, version: str) -> bool | None:
    """``version`` against a comma-separated specifier; None when it cannot be compared."""
    have = _simple_version_key(version)
    if have is None:
        return None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _SIMPLE_SPEC.match(part)
        if match is None:
            return None
        op, wanted = match.groups()
        if op == "===":
            if version != wanted:
                return False
            continue
        prefix = wanted.endswith(".*")
        want = _simple_version_key(wanted[:-2] if prefix else wanted)
        if want is None:
            return None
        if prefix:
            length = len(wanted[:-2].split("."))
            same = have[:length] == want[:length]
            if (op == "==" and not same) or (op == "!=" and same):
                return False
            continue
        if op == "~=":
            release = [int(p) for p in re.findall(r"\d+", wanted.split("a")[0].split("b")[0])]
            upper = [*release[:-2], release[-2] + 1] if len(release) >= 2 else [release[0] + 1]
            upper_key = _simple_version_key(".".join(map(str, upper)) + ".dev0")
            if have < want or (upper_key is not None and have >= upper_key):
                return False
            continue
        if op == "<" and want[6] == 1 and have[:6] == want[:6]:
            return False  # PEP 440: "<1.0" excludes 1.0's pre-releases
        ok = {
            "==": have == want, "!=": have != want, "<": have < want,
            "<=": have <= want, ">": have > want, ">=": have >= want,
        }[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Req:
    """One requirement: canonical name, specifier text, and the extra it belongs to (if any)."""

    name: str
    spec: str
    extra: str | None
    raw: str


def _marker_extra(req: Requirement) -> str | None:
    """``None`` for an unconditional requirement, the extra's name for ``instruments``/
    ``instruments-any``, ``"?"`` for any other condition that does not hold here."""
    marker = req.marker
    if marker is None:
        return None
    try:
        if marker.evaluate({"extra": ""}):
            return None
        for candidate in ("instruments", "instruments-any"):
            if marker.evaluate({"extra": candidate}):
                return candidate
    except Exception:  # an unusual marker: treat it as conditional
        return "?"
    return "?"


def parse_requirement(text: str) -> Req | None:
    """Parse a ``Requires-Dist`` line (``None`` when it cannot be read)."""
    if HAVE_PACKAGING:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            return None
        return Req(_canonical(req.name), str(req.specifier), _marker_extra(req), text)
    match = _SIMPLE_REQUIREMENT.match(text)
    if match is None:
        return None
    marker = match.group("marker") or ""
    extra_match = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    extra = extra_match.group(1) if extra_match else ("?" if marker.strip() else None)
    return Req(_canonical(match.group("name")), match.group("spec").strip(), extra, text)


def version_in(spec: str, version: str) -> bool | None:
    """True/False when ``version`` is/is not in ``spec``; None when it cannot be compared."""
    if not spec:
        return True
    if HAVE_PACKAGING:
        try:
            return Requirement(f"x{spec}").specifier.contains(Version(version), prereleases=True)
        except (InvalidRequirement, InvalidVersion):
            return None
    return _simple_contains(spec, version)


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Output lines plus the problems found (printed where found and again at the end)."""

    out: TextIO
    problems: list[str] = field(default_factory=list)

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def section(self, title: str) -> None:
        self.line()
        self.line(title)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.line(f"  WARNING: {text}")


def _mask_url(url: str) -> str:
    """``url`` without credentials."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[1] if "@" in parts.netloc else parts.netloc
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unreadable URL>"


def format_setting(name: str, value: Any) -> str:
    """A setting's value for display (DSN key and URL credentials masked)."""
    if name == "dsn":
        value = mask_dsn(value)
    elif name == "spotlight" and isinstance(value, str):
        value = _mask_url(value)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "(empty)"
    return str(value)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


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
    if not HAVE_PACKAGING:  # pragma: no cover
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


def _selected(found: list[EntryPointInfo], wanted: str | None) -> EntryPointInfo | None:
    """What OpenTelemetry loads: the first entry point, or the one named by the variable."""
    for ep in found:
        if wanted is None or ep.name == wanted:
            return ep
    return None


def _listing(report: Report, found: Iterable[EntryPointInfo], marks: Mapping[str, str]) -> None:
    rows = list(found)
    if not rows:
        report.line("    (none installed)")
        return
    name_w = max(len(ep.name) for ep in rows)
    for ep in rows:
        mark = marks.get(ep.name, "")
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
    chosen = _selected(found, wanted)
    marks: dict[str, str] = {}
    if chosen is not None:
        why = f"named by {variable}" if wanted is not None else "first found"
        marks[chosen.name] = f"loads ({why})"
    report.line(f"  {group}:")
    _listing(report, found, marks)
    if wanted is not None and chosen is None:
        fallback = ("OpenTelemetry's DefaultDistro is used" if what == "distro"
                    else "no configurator runs")
        report.problem(f"{variable}={wanted!r} names no installed {what}; {fallback}")
    elif wanted is None and len(found) > 1:
        names = ", ".join(f"{ep.name} ({ep.dist})" for ep in found)
        assert chosen is not None
        report.problem(
            f"{len(found)} {what}s installed ({names}) and {variable} is unset: "
            f"OpenTelemetry loads the first one found ({chosen.name}), which depends on "
            f"installation order; set {variable}={BRIDGE_ENTRY_POINT} (or the one you mean)"
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


def _instruments(ep: EntryPointInfo) -> tuple[str, str]:
    """(what the instrumentor needs and found; ``ok``, ``missing`` or ``conflict``)."""
    needs_all: list[Req] = []
    needs_any: list[Req] = []
    for text in ep.requires:
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


def _entry_points(report: Report, environ: Mapping[str, str]) -> None:
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
    _listing(report, hooks, {ep.name: "runs" for ep in hooks})
    if not any(ep.name == BRIDGE_ENTRY_POINT and ep.dist == DIST_NAME for ep in hooks):
        report.problem("the bridge's post_instrument hook is not installed: "
                       "opentelemetry-instrument will not add the bridge")

    wanted = set(_exporters(report, environ, distros, distro, configurator))

    exporters = entry_points_of("opentelemetry_traces_exporter")
    report.line("  opentelemetry_traces_exporter:")
    _listing(report, exporters, {ep.name: "selected by OTEL_TRACES_EXPORTER"
                                 for ep in exporters if ep.name in wanted})

    propagators = entry_points_of("opentelemetry_propagator")
    names_raw = environ.get("OTEL_PROPAGATORS")
    why = "named by OTEL_PROPAGATORS" if names_raw else "default OTEL_PROPAGATORS"
    names = [n.strip() for n in (names_raw or DEFAULT_PROPAGATORS).split(",") if n.strip()]
    report.line("  opentelemetry_propagator:")
    _listing(report, propagators, {ep.name: f"used ({why})"
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


def _probe(report: Report, cfg: BridgeConfig, timeout: float) -> None:
    report.section("Sentry (the DSN's host):")
    if not cfg.dsn:
        report.line("  no valid SENTRY_DSN: nothing to check")
        return
    dsn = parse_dsn(cfg.dsn)
    if dsn is None:
        report.problem(f"SENTRY_DSN {mask_dsn(cfg.dsn)} is rejected by sentry-sdk's parser; "
                       "sending to Sentry is disabled")
        return
    auth = dsn.to_auth(USER_AGENT)
    url = str(auth.get_api_url())
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    report.line(f"  ingest URL: {url}")
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        report.line(f"  TCP connect to {host}:{port}: failed ({_describe(exc)})")
        report.problem(f"the DSN's host {host}:{port} does not answer: {_describe(exc)}")
        return
    elapsed = (time.monotonic() - started) * 1000
    report.line(f"  TCP connect to {host}:{port}: ok ({elapsed:.1f} ms)")
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": str(auth.to_header()),
        "User-Agent": USER_AGENT,
    }
    target = HttpTarget(url, headers, 0, timeout)
    sent_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = b'{"sent_at":"' + sent_at.encode() + b'"}\n'
    try:
        with suppress_instrumentation(), suppress_http_instrumentation():
            status, _ = target.post(body)
    except OSError as exc:
        report.line(f"  POST of an empty envelope: failed ({_describe(exc)})")
        report.problem(f"the DSN's host accepts connections but the request failed: "
                       f"{_describe(exc)}")
        return
    finally:
        target.close()
    report.line(f"  POST of an empty envelope: HTTP {status} ({_status_meaning(status)})")
    if status in (401, 403):
        report.problem(f"Sentry rejected the DSN's key (HTTP {status}): check SENTRY_DSN")
    elif status == 404:
        report.problem("HTTP 404: no ingest endpoint at this URL (wrong host or path in the DSN?)")
    elif status == 429:
        report.problem("HTTP 429: Sentry is rate limiting this project")
    elif status >= 500:
        report.problem(f"HTTP {status}: the server failed; events may be lost")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _status_meaning(status: int) -> str:
    if 200 <= status < 300:
        return "accepted"
    return {
        400: "answered; the empty envelope was refused, which is harmless",
        401: "key rejected", 403: "key rejected", 404: "not found", 413: "too large",
        429: "rate limited",
    }.get(status, "server error" if status >= 500 else "answered")


def run_doctor(environ: Mapping[str, str], out: TextIO, *, timeout: float = 3.0) -> int:
    """Print the diagnosis of ``environ`` to ``out``; 0 when nothing is wrong, else 1."""
    report = Report(out)
    report.line(f"otel-sentry-bridge {__version__} doctor")
    cfg = _settings(report, environ)
    _versions(report)
    _entry_points(report, environ)
    _probe(report, cfg, timeout)
    report.line()
    if report.problems:
        report.line(f"doctor: {len(report.problems)} problem(s) found:")
        for text in report.problems:
            report.line(f"  - {text}")
        return 1
    report.line("doctor: no problem found")
    return 0
