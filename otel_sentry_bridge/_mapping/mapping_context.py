"""What the pure mapping needs from the settings (a frozen value, computed once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from otel_sentry_bridge.config import BridgeConfig

from .rules import NO_RULES, Rules, compile_rules


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
        cls,
        cfg: BridgeConfig,
        sdk_version: str,
        context_env: tuple[tuple[str, str], ...] = (),
        warn: Callable[[str], None] | None = None,
    ) -> MappingContext:
        """Derive the mapping context (including the DSN's host and port) from settings.

        ``context_env``: the ``(name, value)`` pairs of ``SENTRY_BRIDGE_CONTEXT_ENV``, already
        read and filtered by the caller (``otel_sentry_bridge._rules_env.context_env``): the
        mapping never reads the environment. Bad rule entries are left out; each problem (one
        per setting, naming the bad entries) goes to ``warn``, the caller's sink (the pipeline
        logs them), like ``load_config``'s ``warn``.
        """
        rules, plain_tags, problems = compile_rules(
            cfg.user_attributes, cfg.tag_attributes, cfg.context_attributes, cfg.context_name)
        if warn is not None:
            for problem in problems:
                warn(problem)
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
            context_env=context_env,
            max_tags=cfg.max_tags,
        )
