"""Filtering and user hooks, applied on the bridge's worker just before an event is queued.

Settings: ``SENTRY_BRIDGE_IGNORE_ERRORS`` (exception type names), ``SENTRY_BRIDGE_IGNORE_
TRANSACTIONS`` (name patterns), ``SENTRY_BRIDGE_IGNORE_STATUS_CODES`` (HTTP status codes of
server transactions), ``SENTRY_BRIDGE_BEFORE_SEND`` and ``SENTRY_BRIDGE_BEFORE_SEND_
TRANSACTION`` (import paths of ``hook(event, hint) -> event | None``, as in sentry-sdk).

A hook that raises, or returns something else than a dict or ``None``, never stops sending:
the event goes out as it was before the hook, and the failure is logged once per hook.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import re
from collections.abc import Callable
from typing import Any

import orjson

from .config import BridgeConfig

logger = logging.getLogger("otel_sentry_bridge")

Hook = Callable[[dict[str, Any], dict[str, Any]], Any]


def resolve_hook(path: str, warn: Callable[[str], None]) -> Hook | None:
    """``package.module:function`` (or ``package.module.function``) -> the callable."""
    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # ImportError, AttributeError, or the module's own error
        warn(f"hook {path!r} cannot be imported ({type(exc).__name__}: {exc}); it is not used")
        return None
    if not callable(hook):
        warn(f"hook {path!r} is not callable; it is not used")
        return None
    return hook  # type: ignore[no-any-return]


class EventFilter:
    """The ignore rules and hooks of one configuration."""

    def __init__(self, cfg: BridgeConfig, warn: Callable[[str], None] | None = None) -> None:
        warn = warn or (lambda message: logger.warning("otel-sentry-bridge: %s", message))
        self.ignore_errors = frozenset(cfg.ignore_errors)
        patterns = [fnmatch.translate(p) for p in cfg.ignore_transactions]
        self.ignore_name = re.compile("|".join(patterns)).fullmatch if patterns else None
        self.ignore_status = cfg.ignore_status_codes
        self.before_send = resolve_hook(cfg.before_send, warn) if cfg.before_send else None
        self.before_send_transaction = (
            resolve_hook(cfg.before_send_transaction, warn)
            if cfg.before_send_transaction else None
        )
        self._failed: set[int] = set()

    @property
    def active(self) -> bool:
        return bool(self.ignore_errors or self.ignore_name or self.ignore_status
                    or self.before_send or self.before_send_transaction)

    def transaction(self, event: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """``(event to send or None, client-report reason when None)``."""
        name = event.get("transaction")
        if self.ignore_name is not None and isinstance(name, str) and self.ignore_name(name):
            return None, "event_processor"
        if self.ignore_status:
            code = event.get("contexts", {}).get("response", {}).get("status_code")
            if isinstance(code, int) and any(lo <= code <= hi for lo, hi in self.ignore_status):
                return None, "event_processor"
        if self.before_send_transaction is not None:
            return self._call(self.before_send_transaction, event), "before_send"
        return event, ""

    def error(self, event: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """``(event to send or None, client-report reason when None)``."""
        if self.ignore_errors:
            values = event.get("exception", {}).get("values") or [{}]
            main = values[-1]
            kind, module = main.get("type"), main.get("module")
            if kind in self.ignore_errors or f"{module}.{kind}" in self.ignore_errors:
                return None, "event_processor"
        if self.before_send is not None:
            return self._call(self.before_send, event), "before_send"
        return event, ""

    def _call(self, hook: Hook, event: dict[str, Any]) -> dict[str, Any] | None:
        copy = orjson.loads(orjson.dumps(event))  # the hook may change it; we keep the original
        try:
            result = hook(copy, {})
        except Exception as exc:
            self._report(hook, f"raised {type(exc).__name__}: {exc}")
            return event
        if result is None or isinstance(result, dict):
            return result
        self._report(hook, f"returned a {type(result).__name__}, not a dict or None")
        return event

    def _report(self, hook: Hook, what: str) -> None:
        if id(hook) in self._failed:
            return
        self._failed.add(id(hook))
        name = getattr(hook, "__qualname__", repr(hook))
        logger.warning("otel-sentry-bridge: hook %s %s; the event is sent unmodified "
                       "(reported once)", name, what)
