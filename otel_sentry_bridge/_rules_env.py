"""``SENTRY_BRIDGE_CONTEXT_ENV``: the named environment variables, read once when a pipeline is
built (the pure mapping never reads the environment; it gets the filtered pairs in its
:class:`~otel_sentry_bridge._mapping.MappingContext`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from ._mapping.scrub import FILTERED, is_secret_key, scrub_text
from ._mapping.values import MAX_VALUE_CHARS
from .config import BridgeConfig


def read_env(
    names: Iterable[str], environ: Mapping[str, str], send_pii: bool
) -> tuple[tuple[str, str], ...]:
    """The named environment variables that are set: values of secret-looking names are
    ``[Filtered]``, URL credentials (and query strings unless ``send_pii``) are removed."""
    out: dict[str, str] = {}
    for raw in names:
        name = raw.strip()
        value = environ.get(name) if name else None
        if value is None or name in out:
            continue
        if is_secret_key(name):
            out[name] = FILTERED
        else:
            text = scrub_text(value, send_pii)
            out[name] = text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."
    return tuple(out.items())


def context_env(
    cfg: BridgeConfig, environ: Mapping[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """``read_env`` for the settings: the variables ``cfg.context_env`` names, from ``environ``
    (by default ``os.environ``), filtered by ``cfg.send_default_pii``."""
    if not cfg.context_env:
        return ()
    return read_env(cfg.context_env, os.environ if environ is None else environ,
                    cfg.send_default_pii)
