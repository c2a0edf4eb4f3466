"""What the pure mapping needs from the settings (a frozen value, computed once)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from otel_sentry_bridge.config import BridgeConfig

from .rules import NO_RULES, Rules, compile_rules, read_env


@dataclass(frozen=True)
class MappingContext:
    """What the pure mapping needs from the settings, computed once."""

    send_pii: bool = False
    tag_attributes: tuple[str, ...] = ()
    max_spans: int = 1000
    drop_connect_spans: bool = False
    redis_cache_spans: bool = True
    cache_prefixes: tuple[str, ...] = ()
    release: str | None = None
    environment: str | None = None
    server_name: str | None = None
    own_host: str | None = None
    own_port: int | None = None
    sdk_version: str = "0"
    #: Compiled user/tag/context rules (docs/business-context.md#rules).
    rules: Rules = NO_RULES
    #: ``SENTRY_BRIDGE_CONTEXT_ENV``: ``(name, value)`` read once, already filtered.
    context_env: tuple[tuple[str, str], ...] = ()
    max_tags: int = 200

    @classmethod
    def from_config(
        cls, cfg: BridgeConfig, sdk_version: str, environ: Mapping[str, str] | None = None
    ) -> MappingContext:
        """Derive the mapping context (including the DSN's host and port) from settings.

        Bad rule entries are logged (one warning per setting) and left out. The variables named
        by ``context_env`` are read here, once (from ``environ``, by default ``os.environ``):
        the mapping itself never reads the environment.
        """
        warn = logging.getLogger("otel_sentry_bridge").warning
        rules, plain_tags = compile_rules(cfg.user_attributes, cfg.tag_attributes,
                                          cfg.context_attributes, cfg.context_name, warn)
        env = read_env(cfg.context_env, os.environ if environ is None else environ,
                       cfg.send_default_pii) if cfg.context_env else ()
        host: str | None = None
        port: int | None = None
        if cfg.dsn:
            try:
                parts = urlsplit(cfg.dsn)
                host = parts.hostname
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                host = None
        return cls(
            send_pii=cfg.send_default_pii,
            tag_attributes=plain_tags,
            max_spans=cfg.max_spans,
            drop_connect_spans=cfg.drop_connect_spans,
            redis_cache_spans=cfg.redis_cache_spans,
            cache_prefixes=cfg.cache_prefixes,
            release=cfg.release,
            environment=cfg.environment,
            server_name=cfg.server_name,
            own_host=host,
            own_port=port,
            sdk_version=sdk_version,
            rules=rules,
            context_env=env,
            max_tags=cfg.max_tags,
        )
