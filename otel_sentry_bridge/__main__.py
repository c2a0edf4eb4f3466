"""Command line: ``python -m otel_sentry_bridge`` (console script ``otel-sentry-bridge``).

``show <folder-or-file>...``
    Print every transaction found in envelope files (e.g. a ``SENTRY_BRIDGE_ENVELOPE_DIR``
    folder) as a waterfall, oldest first.
``settings``
    Print the effective settings as the bridge sees them in this environment (DSN key masked).
``doctor``
    Check this environment: settings, versions, OpenTelemetry entry points, instrumentors and
    whether the DSN's host answers (exit status 1 when something looks wrong).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

from . import console
from .config import SETTINGS, BridgeConfig, load_config
from .doctor import format_setting, run_doctor
from .version import __version__


def _width(requested: int | None) -> int:
    if requested is not None:
        return max(60, requested)
    columns = shutil.get_terminal_size((100, 24)).columns
    return max(60, min(columns, 160))


def _show(paths: list[str], width: int | None) -> int:
    out = sys.stdout
    color = console.use_color(out)
    files = console.envelope_files(paths)
    missing = [str(p) for p in files if not p.exists()]
    for name in missing:
        print(f"otel-sentry-bridge: {name}: no such file or folder", file=sys.stderr)
    found: list[tuple[float, str, dict[str, Any]]] = []
    others: Counter[str] = Counter()
    bad = 0
    for path in files:
        if str(path) in missing:
            continue
        try:
            for item_type, payload in console.read_items(path):
                if item_type in ("transaction", "event"):
                    ts = console.timestamp(payload.get("start_timestamp", payload.get("timestamp")))
                    found.append((ts if ts is not None else 0.0, item_type, payload))
                else:
                    others[item_type or "unknown"] += 1
        except (OSError, ValueError) as exc:
            bad += 1
            print(f"otel-sentry-bridge: skipping {path}: {exc}", file=sys.stderr)
    transactions = sum(1 for _, kind, _ in found if kind == "transaction")
    if not transactions:
        print(f"otel-sentry-bridge: no transactions found in {len(files) - len(missing)} "
              f"envelope file(s) under {', '.join(paths)}", file=sys.stderr)
        return 1
    cols = _width(width)
    found.sort(key=lambda entry: entry[0])
    for index, (_, kind, payload) in enumerate(found):
        if index:
            out.write("\n")
        out.write(console.render_event(kind, payload, cols, color=color) + "\n")
    summary = f"{transactions} transaction(s) from {len(files) - len(missing) - bad} file(s)"
    if others:
        summary += "; also " + ", ".join(f"{n} {kind}" for kind, n in sorted(others.items()))
    out.write("\n" + summary + "\n")
    return 1 if missing or bad else 0


def _settings(environ: Mapping[str, str]) -> int:
    warnings: list[str] = []
    cfg: BridgeConfig = load_config(environ, warn=warnings.append)
    invalid = dict(cfg.invalid)
    rows: list[tuple[str, str, str]] = []
    for setting in SETTINGS:
        value = format_setting(setting.name, getattr(cfg, setting.name))
        if setting.env in invalid:
            source = "invalid, default used"
        elif setting.env in environ:
            source = "environment"
        else:
            source = "default"
        rows.append((setting.env, value, source))
    env_w = max(len(r[0]) for r in rows)
    value_w = min(60, max(len(r[1]) for r in rows))
    print(f"otel-sentry-bridge {__version__}: effective settings (code overrides not included)")
    print()
    for env, value, source in rows:
        print(f"  {env:<{env_w}}  {value:<{value_w}}  [{source}]")
    print()
    if cfg.active:
        where = [name for name, on in (
            ("Sentry", bool(cfg.dsn)), ("Spotlight", bool(cfg.spotlight)),
            ("envelope folder", bool(cfg.envelope_dir)),
        ) if on]
        print(f"active: yes (sending to {', '.join(where)})")
    elif not cfg.enabled:
        print("active: no (SENTRY_BRIDGE_ENABLED is false)")
    else:
        print("active: no (no SENTRY_DSN, SENTRY_SPOTLIGHT or SENTRY_BRIDGE_ENVELOPE_DIR)")
    print("Unset release/environment/server name fall back per span to the OTel resource "
          "(service.version,\ndeployment.environment[.name], host.name); environment then "
          "defaults to production.")
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 2 if invalid else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="otel-sentry-bridge",
        description="otel-sentry-bridge utilities: render saved envelopes, show settings.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    show = commands.add_parser(
        "show", help="print the transactions in envelope files or folders",
        description="Print every transaction found in envelope files (folders are searched "
                    "recursively for *.envelope), oldest first.",
    )
    show.add_argument("paths", nargs="+", metavar="FOLDER_OR_FILE")
    show.add_argument("--width", type=int, default=None,
                      help="line width (default: the terminal's, at most 160)")
    commands.add_parser(
        "settings", help="print the effective settings from the environment",
        description="Print the settings as load_config(os.environ) sees them; the DSN key is "
                    "masked. Exit status 2 when a value is invalid.",
    )
    doctor = commands.add_parser(
        "doctor", help="check settings, versions, entry points and the DSN's host",
        description="Print the effective settings, package versions against the tested ranges, "
                    "the OpenTelemetry entry points that would load, the instrumentors, and "
                    "whether the DSN's host answers (TCP connect, then an empty envelope). "
                    "The DSN key is never printed. Exit status 1 when a problem is found.",
    )
    doctor.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for the DSN's host (default 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m otel_sentry_bridge`` and the ``otel-sentry-bridge`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            return _show(list(args.paths), args.width)
        if args.command == "settings":
            return _settings(os.environ)
        if args.command == "doctor":
            return run_doctor(os.environ, sys.stdout, timeout=args.timeout)
    except BrokenPipeError:  # e.g. `... show folder | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
