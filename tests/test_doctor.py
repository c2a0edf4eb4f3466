"""``otel-sentry-bridge doctor``: run in-process with crafted environments.

The entry points are the real ones of this interpreter, plus fake distributions (a
``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``) put first on ``sys.path`` to
build conflicting set-ups whatever is installed in the venv. Nothing is imported from them.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
from e2e_support import free_ports
from sentry_receiver import SentryReceiver

from otel_sentry_bridge import doctor
from otel_sentry_bridge.__main__ import main
from otel_sentry_bridge._doctor import requirements
from otel_sentry_bridge.doctor import run_doctor

DSN_KEY = "supersecretdsnkey"
PINNED = {"OTEL_PYTHON_DISTRO": "sentry_bridge", "OTEL_PYTHON_CONFIGURATOR": "sentry_bridge"}
OTEL_DISTRO_ENTRY_POINTS = """\
[opentelemetry_configurator]
configurator = opentelemetry.distro:OpenTelemetryConfigurator

[opentelemetry_distro]
distro = opentelemetry.distro:OpenTelemetryDistro
"""


def run(environ: dict[str, str], timeout: float = 2.0) -> tuple[int, str, list[str]]:
    """Run the doctor; returns (exit code, output, output lines). The DSN key never shows."""
    out = io.StringIO()
    code = run_doctor(environ, out, timeout=timeout)
    text = out.getvalue()
    assert DSN_KEY not in text, text
    return code, text, text.splitlines()


def lines_with(lines: list[str], *parts: str) -> list[str]:
    return [line for line in lines if all(part in line for part in parts)]


def warnings(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip().startswith("WARNING: ")]


def fake_dist(
    root: Path, name: str, version: str, entry_points: str, requires: tuple[str, ...] = ()
) -> None:
    """A minimal installed distribution (metadata only) under ``root``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {req}" for req in requires]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    (info / "entry_points.txt").write_text(entry_points)


def grpc_exporter_installed() -> bool:
    return any(
        ep.name == "otlp_proto_grpc"
        for ep in doctor.entry_points_of("opentelemetry_traces_exporter")
    )


# --------------------------------------------------------------------------------------------
# The DSN's host
# --------------------------------------------------------------------------------------------


def test_receiver_answers_and_nothing_is_wrong() -> None:
    with SentryReceiver(key=DSN_KEY) as receiver:
        code, text, lines = run({"SENTRY_DSN": receiver.dsn(), **PINNED})
        assert code == 0, text
        assert lines[-1] == "doctor: no problem found", text
        assert warnings(lines) == [], text
        port = receiver.port
        assert lines_with(lines, "SENTRY_DSN", f"http://***@127.0.0.1:{port}/123", "[environment]")
        assert lines_with(lines, "SENTRY_BRIDGE_MAX_SPANS", "1000", "[default]"), text
        assert f"  ingest URL: http://127.0.0.1:{port}/api/123/envelope/" in lines, text
        assert lines_with(lines, f"TCP connect to 127.0.0.1:{port}: ok"), text
        assert "  POST of an empty envelope: HTTP 200 (accepted)" in lines, text
        assert "  active: yes (sending to Sentry)" in lines, text
        # The probe is one authenticated, empty envelope.
        receiver.assert_no_problems()
        assert receiver.auth_failures == []
        [envelope] = receiver.envelopes
        assert envelope.items == []
        assert envelope.request_headers["user-agent"].startswith("sentry.python.otel-bridge/")
    for package in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-instrumentation",
                    "sentry-sdk"):
        assert lines_with(lines, package, "ok (tested: "), (package, text)
    assert lines_with(lines, "sentry_bridge", "SentryBridgeDistro",
                      "<- loads (named by OTEL_PYTHON_DISTRO)"), text
    assert lines_with(lines, "sentry_bridge", "SentryBridgeConfigurator",
                      "<- loads (named by OTEL_PYTHON_CONFIGURATOR)"), text
    assert lines_with(lines, "sentry_bridge", "post_instrument", "<- runs"), text
    assert lines_with(lines, "flask", "opentelemetry-instrumentation-flask", "loads (flask "), text


def test_closed_port_does_not_answer() -> None:
    [port] = free_ports(1)
    code, text, lines = run({"SENTRY_DSN": f"http://{DSN_KEY}@127.0.0.1:{port}/7", **PINNED})
    assert code == 1, text
    assert lines_with(lines, f"TCP connect to 127.0.0.1:{port}: failed", "Connection refused"), text
    [problem] = warnings(lines)
    assert problem.startswith(f"WARNING: the DSN's host 127.0.0.1:{port} does not answer: "
                              "ConnectionRefusedError"), problem
    assert "POST of an empty envelope" not in text
    assert lines[-2] == "doctor: 1 problem(s) found:", text


def test_host_that_never_answers_times_out() -> None:
    with SentryReceiver(key=DSN_KEY) as receiver:
        receiver.set_mode("blackhole")
        code, text, lines = run({"SENTRY_DSN": receiver.dsn(), **PINNED}, timeout=0.3)
    assert code == 1, text
    assert lines_with(lines, "TCP connect", ": ok"), text
    assert lines_with(lines, "POST of an empty envelope: failed", "timed out"), text
    assert lines_with(lines, "WARNING: the DSN's host accepts connections but the request "
                             "failed"), text


def test_wrong_key_is_reported() -> None:
    with SentryReceiver(key="anotherkey") as receiver:
        code, text, lines = run({"SENTRY_DSN": receiver.dsn(key=DSN_KEY), **PINNED})
        assert len(receiver.auth_failures) == 1
    assert code == 1, text
    assert "  POST of an empty envelope: HTTP 401 (key rejected)" in lines, text
    assert "  WARNING: Sentry rejected the DSN's key (HTTP 401): check SENTRY_DSN" in lines, text


@pytest.mark.parametrize(("status", "meaning", "warning"), [
    (301, "redirected", "WARNING: HTTP 301: the ingest URL redirects to https://127.0.0.1/api/"
                        "123/envelope/; the bridge does not follow redirects"),
    (405, "refused", "WARNING: HTTP 405: the ingest URL does not take envelopes"),
    (400, "answered; the empty envelope was refused, which is harmless", None),
])
def test_answers_the_bridge_cannot_send_to_are_reported(
    status: int, meaning: str, warning: str | None
) -> None:
    """A host that answers, but with a redirect or a refusal, loses every envelope: say so."""
    location = {"Location": "https://user:locationpass@127.0.0.1/api/123/envelope/"}
    with SentryReceiver(key=DSN_KEY) as receiver:
        receiver.set_mode("status", status=status, headers=location if status == 301 else {})
        code, text, lines = run({"SENTRY_DSN": receiver.dsn(), **PINNED})
        assert len(receiver.rejected) == 1
    assert f"  POST of an empty envelope: HTTP {status} ({meaning})" in lines, text
    assert "locationpass" not in text
    if warning is None:
        assert code == 0, text
        assert warnings(lines) == [], text
    else:
        assert code == 1, text
        [problem] = warnings(lines)
        assert problem.startswith(warning), problem


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dsn", [
    f"http://{DSN_KEY}@127.0.0.1:99999/1",
    f"https://{DSN_KEY}@o1.ingest.sentry.io/notaproject",
    f"{DSN_KEY}@o1.ingest.sentry.io/1",
    f"ftp://{DSN_KEY}@o1.ingest.sentry.io/1",
])
def test_malformed_dsn(dsn: str) -> None:
    code, text, lines = run({"SENTRY_DSN": dsn, **PINNED})
    assert code == 1, text
    assert lines_with(lines, "SENTRY_DSN", "(unset)", "[invalid, default used]"), text
    assert lines_with(lines, "WARNING: SENTRY_DSN is malformed (expected a DSN like "), text
    assert "  no valid SENTRY_DSN: nothing to check" in lines, text
    assert lines_with(lines, "WARNING: the bridge is not active"), text


def test_dsn_with_a_trailing_slash_is_rejected_up_front(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """sentry-sdk's parser rejects ``/42/``; the settings check does too, so doctor says so."""
    caplog.set_level(logging.DEBUG)
    [port] = free_ports(1)
    code, text, lines = run({"SENTRY_DSN": f"http://{DSN_KEY}@127.0.0.1:{port}/42/", **PINNED})
    assert code == 1, text
    assert lines_with(lines, "SENTRY_DSN", "[invalid, default used]"), text
    assert lines_with(lines, "WARNING: SENTRY_DSN is malformed"), text
    assert DSN_KEY not in text
    assert DSN_KEY not in caplog.text


def test_invalid_and_empty_values() -> None:
    environ = {
        **PINNED,
        "SENTRY_BRIDGE_ENVELOPE_DIR": "/tmp/doctor-envelopes",
        "SENTRY_BRIDGE_MAX_SPANS": "lots",
        "SENTRY_DEBUG": "",
        "SENTRY_SPOTLIGHT": "http://user:spotlightpass@127.0.0.1:8969/stream",
    }
    code, text, lines = run(environ)
    assert code == 1, text
    assert lines_with(lines, "SENTRY_BRIDGE_MAX_SPANS", "1000", "[invalid, default used]"), text
    assert lines_with(lines, "WARNING: SENTRY_BRIDGE_MAX_SPANS is invalid (expected an integer "
                             "1..100000); the default is used"), text
    assert lines_with(lines, "SENTRY_DEBUG", "false", "[default]"), text  # empty means unset
    assert lines_with(lines, "SENTRY_SPOTLIGHT", "http://127.0.0.1:8969/stream", "[environment]")
    assert "spotlightpass" not in text
    assert "  active: yes (sending to Spotlight, envelope folder)" in lines, text
    assert len(warnings(lines)) == 1, warnings(lines)


def test_bridge_switched_off() -> None:
    code, text, lines = run({"SENTRY_BRIDGE_ENABLED": "false", "SENTRY_BRIDGE_ENVELOPE_DIR": "/x",
                             **PINNED})
    assert code == 1, text
    assert lines_with(lines, "WARNING: the bridge is switched off"), text


# --------------------------------------------------------------------------------------------
# OpenTelemetry set-up
# --------------------------------------------------------------------------------------------


def test_conflicting_distros_and_configurators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist(tmp_path, "acme-distro", "1.0", """\
[opentelemetry_configurator]
acme = acme_distro:AcmeConfigurator

[opentelemetry_distro]
acme = acme_distro:AcmeDistro
""")
    monkeypatch.syspath_prepend(str(tmp_path))
    environ = {"SENTRY_BRIDGE_ENVELOPE_DIR": str(tmp_path / "envelopes"),
               "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
               "OTEL_LOGS_EXPORTER": "none"}
    code, text, lines = run(environ)
    assert code == 1, text
    assert lines_with(lines, "acme", "acme_distro:AcmeDistro", "[acme-distro 1.0]",
                      "<- loads (first found)"), text
    assert lines_with(lines, "acme", "acme_distro:AcmeConfigurator", "<- loads (first found)")
    [distros] = lines_with(lines, "WARNING: ", "distros installed")
    assert "acme (acme-distro)" in distros and "sentry_bridge (otel-sentry-bridge)" in distros
    assert "OTEL_PYTHON_DISTRO is unset: OpenTelemetry loads the first one found (acme)" in distros
    [configurators] = lines_with(lines, "WARNING: ", "configurators installed")
    assert "OTEL_PYTHON_CONFIGURATOR is unset" in configurators
    assert lines_with(lines, "sentry_bridge", "SentryBridgeDistro")[0].endswith("]"), text

    # Naming the bridge's distro and configurator resolves both conflicts.
    code, text, lines = run({**environ, **PINNED})
    assert code == 0, text
    assert not lines_with(lines, "installed and OTEL_PYTHON"), text
    assert lines_with(lines, "acme", "acme_distro:AcmeDistro")[0].endswith("]"), text


def test_unknown_distro_configurator_and_propagator() -> None:
    environ = {"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", "OTEL_PYTHON_DISTRO": "nope",
               "OTEL_PYTHON_CONFIGURATOR": "sentry_bridge", "OTEL_PROPAGATORS": "tracecontext,b3"}
    code, text, lines = run(environ)
    assert code == 1, text
    assert lines_with(lines, "WARNING: OTEL_PYTHON_DISTRO='nope' names no installed distro; "
                             "OpenTelemetry's DefaultDistro is used"), text
    assert lines_with(lines, "WARNING: OTEL_PROPAGATORS names 'b3', which is not installed"), text
    assert lines_with(lines, "tracecontext", "<- used (named by OTEL_PROPAGATORS)"), text


@pytest.mark.parametrize(("what", "variable"), [
    ("distro", "OTEL_PYTHON_DISTRO"), ("configurator", "OTEL_PYTHON_CONFIGURATOR"),
])
def test_one_name_provided_by_two_distributions(
    what: str, variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming the entry point does not settle it when two distributions provide that name."""
    first, second = tmp_path / "first", tmp_path / "second"
    fake_dist(first, "acme-distro", "1.0", f"[opentelemetry_{what}]\nacme = acme:Thing\n")
    fake_dist(second, "acme-fork", "2.0", f"[opentelemetry_{what}]\nacme = acme_fork:Thing\n")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED, variable: "acme"})
    assert code == 1, text
    assert lines_with(lines, "acme", "[acme-distro 1.0]", f"<- loads (named by {variable})"), text
    [fork] = lines_with(lines, "acme", "[acme-fork 2.0]")
    assert fork.endswith("]"), text  # not marked as loading
    [problem] = warnings(lines)
    assert problem == (
        f"WARNING: 2 {what}s installed (acme (acme-distro), acme (acme-fork)) and "
        f"{variable}='acme' names each of them: OpenTelemetry loads the first one found "
        f"(acme-distro), which depends on installation order; uninstall the {what} you do "
        "not mean"
    ), problem

    # Only one of them installed: no conflict.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(second)])
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED, variable: "acme"})
    assert code == 0, text


def test_opentelemetry_distro_defaults_to_missing_otlp_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if grpc_exporter_installed():
        pytest.skip("an OTLP gRPC exporter is installed: the start-up trap does not apply")
    fake_dist(tmp_path, "opentelemetry-distro", "0.66b1", OTEL_DISTRO_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with SentryReceiver(key=DSN_KEY) as receiver:
        base = {"SENTRY_DSN": receiver.dsn()}
        code, text, lines = run(base)
        assert code == 1, text
        assert lines_with(lines, "distro", "opentelemetry.distro:OpenTelemetryDistro",
                          "<- loads (first found)"), text
        [trap] = lines_with(lines, "WARNING: OpenTelemetry start-up would fail:")
        assert "OTEL_TRACES_EXPORTER=otlp" in trap and "OTEL_LOGS_EXPORTER=otlp" in trap, trap
        assert "defaulted to otlp by opentelemetry-distro" in trap, trap
        assert "'otlp_proto_grpc'" in trap and "opentelemetry-exporter-otlp-proto-grpc" in trap

        # Exporters off: no trap (the two-distros warning remains until one is named).
        off = {f"OTEL_{s}_EXPORTER": "none" for s in ("TRACES", "METRICS", "LOGS")}
        code, text, lines = run({**base, **off})
        assert not lines_with(lines, "start-up would fail"), text
        assert lines_with(lines, "WARNING: ", "distros installed"), text

        # OTLP over HTTP is installed with the pinned requirements: then only that one is used.
        code, text, lines = run({**base, **PINNED, "OTEL_PYTHON_DISTRO": "distro",
                                 "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        if any(ep.name == "otlp_proto_http"
               for ep in doctor.entry_points_of("opentelemetry_traces_exporter")):
            assert code == 0, text
            assert lines_with(lines, "otlp_proto_http", "<- selected by OTEL_TRACES_EXPORTER")


def test_opentelemetry_distro_installed_but_not_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if grpc_exporter_installed():
        pytest.skip("an OTLP gRPC exporter is installed: the start-up trap does not apply")
    first, second = tmp_path / "first", tmp_path / "second"
    fake_dist(first, "acme-distro", "1.0", "[opentelemetry_distro]\nacme = acme:Distro\n")
    fake_dist(second, "opentelemetry-distro", "0.66b1", OTEL_DISTRO_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x",
                             "OTEL_PYTHON_CONFIGURATOR": "sentry_bridge"})
    assert code == 1, text
    assert lines_with(lines, "acme", "<- loads (first found)"), text
    assert lines_with(lines, "WARNING: opentelemetry-distro is installed and OTEL_PYTHON_DISTRO "
                             "is unset: if its distro is the one loaded, OpenTelemetry start-up "
                             "fails"), text


def test_instrumentors_missing_library_and_version_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist(tmp_path, "opentelemetry-instrumentation-nosuchlib", "0.66b1",
              "[opentelemetry_instrumentor]\nnosuchlib = nosuchlib_instr:Instrumentor\n",
              ("opentelemetry-api~=1.12", "nosuchlib>=1.0; extra == 'instruments'"))
    fake_dist(tmp_path, "opentelemetry-instrumentation-oldflask", "0.66b1",
              "[opentelemetry_instrumentor]\noldflask = oldflask_instr:Instrumentor\n",
              ("flask<1.0; extra == \"instruments\"",))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED})
    assert code == 1, text
    assert lines_with(lines, "nosuchlib", "skipped: library missing (nosuchlib>=1.0 not "
                                          "installed)"), text
    assert lines_with(lines, "oldflask", "skipped: version conflict (flask ",
                      "outside flask<1.0)"), text
    [problem] = warnings(lines)
    assert problem.startswith("WARNING: instrumentor oldflask instruments nothing"), problem

    # Disabled instrumentors are neither loaded nor a problem.
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED,
                             "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "oldflask"})
    assert code == 0, text
    assert lines_with(lines, "oldflask", "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")


def test_the_bridges_own_instrumentors_show_their_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our distribution declares no ``instruments`` extra (one missing library would make
    opentelemetry-instrument skip all of them): the doctor reads each one's ``package.py``."""
    from otel_sentry_bridge_instrumentation.cachetools import package

    _, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED})
    assert lines_with(lines, "sentry_bridge_cachetools", "loads (cachetools ", " installed)"), text
    assert lines_with(lines, "sentry_bridge_pydantic", "loads (pydantic "), text
    monkeypatch.setattr(package, "_instruments", ("cachetools >= 99",))
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED})
    assert lines_with(lines, "sentry_bridge_cachetools", "skipped: version conflict (cachetools ",
                      "outside cachetools>=99)"), text
    assert code == 1, text


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def test_version_outside_the_tested_range(monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor.installed_version

    def fake(name: str) -> str | None:
        return "2.80.0" if name == "sentry-sdk" else real(name)

    monkeypatch.setattr(doctor, "installed_version", fake)
    code, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED})
    assert code == 1, text
    assert lines_with(lines, "sentry-sdk", "2.80.0", "OUTSIDE the tested range"), text
    assert lines_with(lines, "WARNING: sentry-sdk 2.80.0 is outside the tested range"), text


@pytest.mark.parametrize("packaging", [True, False], ids=["packaging", "simple"])
def test_requirement_checks(packaging: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requirements, "HAVE_PACKAGING", packaging)
    cases = [
        (">=1.45,<1.46", "1.45.1", True),
        (">=1.45,<1.46", "1.46.0", False),
        (">=1.45,<1.46", "1.44.9", False),
        (">=0.66b0,<0.67", "0.66b1", True),
        (">=0.66b0,<0.67", "0.65b0", False),
        (">=0.66b0,<0.67", "0.67b0", False),
        ("==2.75.*", "2.75.3", True),
        ("~=1.12", "1.45.1", True),
        ("~=1.12", "2.0", False),
        ("!=1.0", "1.0", False),
        ("", "9", True),
    ]
    for spec, version, expected in cases:
        assert doctor.version_in(spec, version) is expected, (packaging, spec, version)
    req = doctor.parse_requirement("flask<4,>=3.0; extra == 'demo'")
    assert req is not None and req.name == "flask" and req.extra is not None
    req = doctor.parse_requirement("redis>=2.6; extra == \"instruments\"")
    assert req is not None and req.extra == "instruments" and doctor.version_in(req.spec, "5.0")
    req = doctor.parse_requirement("opentelemetry_api<1.46,>=1.45")
    assert req is not None and req.name == "opentelemetry-api" and req.extra is None
    _, text, lines = run({"SENTRY_BRIDGE_ENVELOPE_DIR": "/x", **PINNED})
    assert lines_with(lines, "opentelemetry-sdk", "ok (tested: "), text


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with SentryReceiver(key=DSN_KEY) as receiver:
        monkeypatch.setenv("SENTRY_DSN", receiver.dsn())
        for name, value in PINNED.items():
            monkeypatch.setenv(name, value)
        code = main(["doctor", "--timeout", "2"])
    out = capsys.readouterr()
    assert code == 0, out.out
    assert DSN_KEY not in out.out + out.err
    assert out.out.splitlines()[-1] == "doctor: no problem found"
