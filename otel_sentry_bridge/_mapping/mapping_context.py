"""What the pure mapping needs from the settings (a frozen value, computed once)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from otel_sentry_bridge.config import BridgeConfig


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

    @classmethod
    def from_config(cls, cfg: BridgeConfig, sdk_version: str) -> MappingContext:
        """Derive the mapping context (including the DSN's host and port) from settings."""
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
            tag_attributes=cfg.tag_attributes,
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
        )
