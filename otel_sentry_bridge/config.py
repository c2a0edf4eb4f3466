"""Settings: one table, one pure loader.

Every user-facing setting has exactly one row in :data:`SETTINGS` (name, environment variable,
type, default, one-line doc); ``docs/configuration.md`` is generated from it. The loader is pure:
the environment and the warning sink are passed in. Precedence: code > environment > default.
A bad value logs one warning naming the variable and the accepted values; the default applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._parsers import (
    BOOL_VALUES,
    DEFAULT_SPOTLIGHT_URL,
    BadValue,
    parse_bool,
    parse_choice,
    parse_compression,
    parse_dsn,
    parse_environment,
    parse_float,
    parse_import_path,
    parse_int,
    parse_level_or_off,
    parse_list,
    parse_log_level,
    parse_org_id,
    parse_profile_lifecycle,
    parse_regex_list,
    parse_release,
    parse_spotlight,
    parse_status_codes,
    parse_str,
)

#: The parsers, importable from here as before they moved to ``_parsers.py``.
__all__ = [
    "BOOL_VALUES", "DEFAULT_SPOTLIGHT_URL", "SETTINGS", "SETTINGS_BY_NAME", "BadValue",
    "BridgeConfig", "Setting", "load_config", "mask_dsn", "parse_bool", "parse_choice",
    "parse_compression",
    "parse_dsn", "parse_environment", "parse_float", "parse_import_path", "parse_int",
    "parse_level_or_off", "parse_list", "parse_log_level", "parse_org_id",
    "parse_profile_lifecycle", "parse_regex_list",
    "parse_release", "parse_spotlight", "parse_status_codes", "parse_str",
]


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    env: str
    type: str
    default: Any
    doc: str
    parse: Callable[[str], Any]


SETTINGS: tuple[Setting, ...] = (
    Setting("dsn", "SENTRY_DSN", "DSN", None,
            "Where to send. Unset: the bridge stays off (unless an envelope folder is set).",
            parse_dsn),
    Setting("environment", "SENTRY_ENVIRONMENT", "string", None,
            "Sentry environment. Unset: resource `deployment.environment[.name]`, "
            "else `production`.", parse_environment),
    Setting("release", "SENTRY_RELEASE", "string", None,
            "Sentry release. Unset: resource `service.version`.", parse_release),
    Setting("server_name", "SENTRY_BRIDGE_SERVER_NAME", "string", None,
            "Server name. Unset: resource `host.name`.", parse_str),
    Setting("debug", "SENTRY_DEBUG", "bool", False,
            "Log what the bridge does (logger `otel_sentry_bridge`, DEBUG).", parse_bool),
    Setting("spotlight", "SENTRY_SPOTLIGHT", "bool or URL", None,
            f"Also send every envelope to Spotlight (`true` = {DEFAULT_SPOTLIGHT_URL}).",
            parse_spotlight),
    Setting("traces_sample_rate", "SENTRY_TRACES_SAMPLE_RATE", "float 0..1", None,
            "Share of new traces sent, decided at the head of each trace by the bridge's "
            "sampler (unset: 1.0, every trace). See docs/sampling.md.", parse_float(0.0, 1.0)),
    Setting("traces_sampler", "SENTRY_BRIDGE_TRACES_SAMPLER", "import path", None,
            "`traces_sampler(context) -> float | bool` for each local root: gets the root's "
            "OTel attributes and the parent's decision and rate; wins over the rate.",
            parse_import_path),
    Setting("unsampled_errors", "SENTRY_BRIDGE_UNSAMPLED_ERRORS", "bool", True,
            "Keep unsampled traces recording (not exported) so that their errors still reach "
            "Sentry; `false` drops them at the sampler (cheapest).", parse_bool),
    Setting("skip_options_head", "SENTRY_BRIDGE_SKIP_OPTIONS_HEAD", "bool", False,
            "Never sample HTTP server roots of OPTIONS and HEAD requests.", parse_bool),
    Setting("trace_propagation_targets", "SENTRY_BRIDGE_TRACE_PROPAGATION_TARGETS",
            "comma list of regexes", (),
            "Outgoing requests whose URL matches one of these (search) get trace headers "
            "(empty: all). With targets set, a request whose URL is unknown gets none. Commas "
            "separate patterns, so a pattern cannot contain one.", parse_regex_list),
    Setting("strict_trace_continuation", "SENTRY_BRIDGE_STRICT_TRACE_CONTINUATION", "bool",
            False, "Continue an incoming trace only when its `org_id` equals ours (a missing "
            "one on either side starts a new trace).", parse_bool),
    Setting("org_id", "SENTRY_BRIDGE_ORG_ID", "digits", None,
            "Sentry organization id for the DSC and trace continuation (unset: from the DSN "
            "host `o<id>.ingest...`).", parse_org_id),
    Setting("enabled", "SENTRY_BRIDGE_ENABLED", "bool", True,
            "Master switch: `false` turns the bridge off even with a DSN.", parse_bool),
    Setting("tag_attributes", "SENTRY_BRIDGE_TAG_ATTRIBUTES", "comma list of rules", (),
            "Searchable tags: span attribute keys (the tag keeps the key; root span wins), or "
            "`tag=source` / bare `baggage:<entry>`, `resource:<key>` rules "
            "([Business context](business-context.md#rules)).", parse_list),
    Setting("user_attributes", "SENTRY_BRIDGE_USER_ATTRIBUTES", "comma list of rules", (),
            "Sentry user fields from `field=source` rules: field `id`, `email`, `username` or "
            "`roles`; source `attr:<key>` (or a bare key), `baggage:<entry>`, "
            "`resource:<key>`. They win over `enduser.id` and the like.", parse_list),
    Setting("context_attributes", "SENTRY_BRIDGE_CONTEXT_ATTRIBUTES", "comma list of rules", (),
            "Values copied into the context named by `SENTRY_BRIDGE_CONTEXT_NAME`: "
            "`key=source` or a bare source (the key is the source's).", parse_list),
    Setting("context_name", "SENTRY_BRIDGE_CONTEXT_NAME", "string", "business",
            "Name of the Sentry context `SENTRY_BRIDGE_CONTEXT_ATTRIBUTES` fills.", parse_str),
    Setting("context_env", "SENTRY_BRIDGE_CONTEXT_ENV", "comma list", (),
            "Environment variables (read once at startup) sent in the `environment_variables` "
            "context; values of secret-looking names are sent as `[Filtered]`.", parse_list),
    Setting("max_tags", "SENTRY_BRIDGE_MAX_TAGS", "int", 200,
            "Tags per event (besides `http.status_code`); the rest are left out, with one "
            "warning.", parse_int(1, 1000)),
    Setting("max_spans", "SENTRY_BRIDGE_MAX_SPANS", "int", 1000,
            "Child spans per transaction; the earliest are kept, the rest dropped and counted.",
            parse_int(1, 100_000)),
    Setting("send_default_pii", "SENTRY_BRIDGE_SEND_DEFAULT_PII", "bool", False,
            "Send personal data: client IP, cookies, auth headers, query strings. (User fields "
            "the app sets on spans are always sent.) Never passed to sentry-sdk.", parse_bool),
    Setting("late_span_grace", "SENTRY_BRIDGE_LATE_SPAN_GRACE", "seconds", 1.0,
            "How long a root's transaction waits after the root ends for children still "
            "finishing.", parse_float(0.0, 600.0)),
    Setting("buffer_timeout", "SENTRY_BRIDGE_BUFFER_TIMEOUT", "seconds", 600.0,
            "How long finished spans of a root that has not ended are kept: then they are sent "
            "as a partial segment (and again each time this long), or, with partial segments "
            "off, evicted (counted). Also how long a span waits for a parent never seen.",
            parse_float(1.0)),
    Setting("partial_segments", "SENTRY_BRIDGE_PARTIAL_SEGMENTS", "bool", True,
            "Send the finished spans of a root still running after "
            "`SENTRY_BRIDGE_BUFFER_TIMEOUT` (a long job) as transactions "
            "`<root name> (segment N)` under it, instead of dropping them (span processor "
            "only; [Long-running work](reliability.md#long-running-work)).", parse_bool),
    Setting("max_buffered_spans", "SENTRY_BRIDGE_MAX_BUFFERED_SPANS", "int", 50_000,
            "Cap on spans held in memory, per stage (intake queue, trace buffer); over it "
            "spans are dropped and counted. While Sentry is unreachable the intake holds a "
            "tenth of it.", parse_int(100)),
    Setting("max_buffered_bytes", "SENTRY_BRIDGE_MAX_BUFFERED_BYTES", "int (bytes)", 64 << 20,
            "Global cap on the estimated size of buffered spans and queued envelopes.",
            parse_int(1 << 20)),
    Setting("orphan_client_spans", "SENTRY_BRIDGE_ORPHAN_CLIENT_SPANS", "bool", False,
            "Send database, cache and HTTP client spans that have no parent (a query outside "
            "any traced request or job, a worker's broker polling) as transactions of their "
            "own. Off: dropped and counted (`event_processor`), as Sentry's SDKs do.",
            parse_bool),
    Setting("drop_connect_spans", "SENTRY_BRIDGE_DROP_CONNECT_SPANS", "bool", False,
            "Drop database connection spans (`db.connect`) entirely.", parse_bool),
    Setting("redis_cache_spans", "SENTRY_BRIDGE_REDIS_CACHE_SPANS", "bool", True,
            "Add `cache.get`/`cache.put`/`cache.remove` parents to redis get/set/delete "
            "commands (Caches page).", parse_bool),
    Setting("cache_prefixes", "SENTRY_BRIDGE_CACHE_PREFIXES", "comma list", (),
            "Only redis and memcached keys with one of these prefixes count as cache "
            "operations (empty: all). In-process caches are not filtered.",
            parse_list),
    Setting("monitor_spans", "SENTRY_BRIDGE_MONITOR_SPANS", "comma list of rules", (),
            "Local root spans reported as Sentry Crons check-ins: `name` or `name=slug`, "
            "matched against the span name, its `celery.task_name`, or its name after the "
            "first `/` (`run/app.tasks.report`). See [Crons](crons.md).", parse_list),
    Setting("ignore_errors", "SENTRY_BRIDGE_IGNORE_ERRORS", "comma list", (),
            "Exception types whose error events are not sent (`ValueError` or "
            "`requests.exceptions.ConnectTimeout`; counted as `event_processor`).", parse_list),
    Setting("ignore_transactions", "SENTRY_BRIDGE_IGNORE_TRANSACTIONS", "comma list", (),
            "Transaction names not sent, as patterns (`GET /health*`; counted as "
            "`event_processor`).", parse_list),
    Setting("ignore_status_codes", "SENTRY_BRIDGE_IGNORE_STATUS_CODES", "codes", (),
            "HTTP server transactions with these response codes are not sent (`404,500-599`).",
            parse_status_codes),
    Setting("before_send", "SENTRY_BRIDGE_BEFORE_SEND", "import path", None,
            "`hook(event, hint)` called with each error event; returns it (changed or not) or "
            "None to drop it (counted as `before_send`). A hook that raises is ignored.",
            parse_import_path),
    Setting("before_send_transaction", "SENTRY_BRIDGE_BEFORE_SEND_TRANSACTION", "import path",
            None, "The same for transactions.", parse_import_path),
    Setting("logs", "SENTRY_BRIDGE_LOGS", "bool", False,
            "Send Python `logging` records as Sentry logs (a handler on the root logger, "
            "added by `opentelemetry-instrument`).", parse_bool),
    Setting("log_level", "SENTRY_BRIDGE_LOG_LEVEL", "level", 20,
            "Lowest level of the records sent as logs (`debug`, `info`, `warning`, `error`).",
            parse_log_level),
    Setting("breadcrumb_log_level", "SENTRY_BRIDGE_BREADCRUMB_LOG_LEVEL", "level or off", 20,
            "Lowest level of the `logging` records made inside a span that become breadcrumbs "
            "of that transaction's error events (`20` is `info`); `off`: none.",
            parse_level_or_off),
    Setting("envelope_dir", "SENTRY_BRIDGE_ENVELOPE_DIR", "path", None,
            "Also write every envelope to this folder (one `.envelope` file each).", parse_str),
    Setting("compression_level", "SENTRY_BRIDGE_COMPRESSION_LEVEL", "int 0..9", 1,
            "Gzip level of request bodies (0: off).", parse_compression),
    Setting("sender_threads", "SENTRY_BRIDGE_SENDER_THREADS", "int", 4,
            "Concurrent HTTP connections used to send envelopes.", parse_int(1, 32)),
    Setting("shutdown_timeout", "SENTRY_BRIDGE_SHUTDOWN_TIMEOUT", "seconds", 5.0,
            "Upper bound on flushing at exit or shutdown.", parse_float(0.0, 300.0)),
    Setting("http_timeout", "SENTRY_BRIDGE_HTTP_TIMEOUT", "seconds", 10.0,
            "Socket timeout of one request to Sentry.", parse_float(0.1, 300.0)),
    Setting("profiling", "SENTRY_BRIDGE_PROFILING", "bool", False,
            "Run sentry-sdk's continuous profiler and link its profile chunks to the "
            "transactions (flame graphs; [Profiling](profiling.md)).", parse_bool),
    Setting("profile_session_sample_rate", "SENTRY_PROFILE_SESSION_SAMPLE_RATE", "float 0..1",
            None, "With profiling on: share of processes profiled, decided once per process "
            "(unset: 1.0). An app's own `sentry_sdk.init()` options win.",
            parse_float(0.0, 1.0)),
    Setting("profile_lifecycle", "SENTRY_PROFILE_LIFECYCLE", "manual or trace", "manual",
            "`manual`: the profiler samples for the whole life of the process; `trace`: only "
            "while a sampled local root span (a request, a job) runs.", parse_profile_lifecycle),
    # The extra instrumentations (otel_sentry_bridge_instrumentation; docs/instrumentation/).
    Setting("validation_errors", "SENTRY_BRIDGE_VALIDATION_ERRORS", "event, breadcrumb or off",
            "breadcrumb",
            "What a failed pydantic validation becomes: an error `event`, a `breadcrumb` on "
            "the trace's later error events, or nothing (`off`; the span still says it "
            "failed). See [Validation](instrumentation/pydantic.md).",
            parse_choice("event", "breadcrumb", "off")),
    Setting("graphql_resolver_depth", "SENTRY_BRIDGE_GRAPHQL_RESOLVER_DEPTH", "int", 2,
            "GraphQL resolvers get a span down to this depth of the query (1: top-level "
            "fields only; 0: no resolver spans). See [GraphQL](instrumentation/graphql.md).",
            parse_int(0, 100)),
    Setting("websocket_message_spans", "SENTRY_BRIDGE_WEBSOCKET_MESSAGE_SPANS", "int", 100,
            "At most this many message spans (received and sent) per WebSocket connection; "
            "later messages are only counted and timed on the connection's span. See "
            "[WebSockets](instrumentation/websockets.md).", parse_int(0, 100_000)),
    Setting("cache_span_limit", "SENTRY_BRIDGE_CACHE_SPAN_LIMIT", "int", 200,
            "At most this many spans of `cached`, cachetools and Flask-Caching per trace in "
            "a process; later lookups in that trace are not traced (a memoized function "
            "called in a loop). 0: no limit. See [Caches](instrumentation/caches.md).",
            parse_int(0, 1_000_000)),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class BridgeConfig:
    """Effective settings. Build with :func:`load_config`."""

    dsn: str | None = None
    environment: str | None = None
    release: str | None = None
    server_name: str | None = None
    debug: bool = False
    spotlight: str | None = None
    traces_sample_rate: float | None = None
    traces_sampler: str | None = None
    unsampled_errors: bool = True
    skip_options_head: bool = False
    trace_propagation_targets: tuple[str, ...] = ()
    strict_trace_continuation: bool = False
    org_id: str | None = None
    enabled: bool = True
    tag_attributes: tuple[str, ...] = ()
    user_attributes: tuple[str, ...] = ()
    context_attributes: tuple[str, ...] = ()
    context_name: str = "business"
    context_env: tuple[str, ...] = ()
    max_tags: int = 200
    max_spans: int = 1000
    send_default_pii: bool = False
    late_span_grace: float = 1.0
    buffer_timeout: float = 600.0
    partial_segments: bool = True
    max_buffered_spans: int = 50_000
    max_buffered_bytes: int = 64 << 20
    orphan_client_spans: bool = False
    drop_connect_spans: bool = False
    redis_cache_spans: bool = True
    cache_prefixes: tuple[str, ...] = ()
    monitor_spans: tuple[str, ...] = ()
    ignore_errors: tuple[str, ...] = ()
    ignore_transactions: tuple[str, ...] = ()
    ignore_status_codes: tuple[tuple[int, int], ...] = ()
    before_send: str | None = None
    before_send_transaction: str | None = None
    logs: bool = False
    log_level: int = 20
    breadcrumb_log_level: int | None = 20
    envelope_dir: str | None = None
    compression_level: int = 1
    sender_threads: int = 4
    shutdown_timeout: float = 5.0
    http_timeout: float = 10.0
    profiling: bool = False
    profile_session_sample_rate: float | None = None
    profile_lifecycle: str = "manual"
    validation_errors: str = "breadcrumb"
    graphql_resolver_depth: int = 2
    websocket_message_spans: int = 100
    cache_span_limit: int = 200
    #: Settings whose value was bad (name -> accepted values); for ``doctor`` and tests.
    invalid: tuple[tuple[str, str], ...] = ()

    @property
    def active(self) -> bool:
        """True when the bridge has somewhere to send."""
        return self.enabled and bool(self.dsn or self.spotlight or self.envelope_dir)

    def replace(self, **changes: Any) -> BridgeConfig:
        """Return a copy with ``changes`` applied (code-level overrides, already typed)."""
        return dataclasses.replace(self, **changes)


def load_config(
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> BridgeConfig:
    """Build the effective configuration: code ``overrides`` > ``environ`` > default."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(SETTINGS_BY_NAME)
    if unknown:
        raise TypeError(f"unknown otel-sentry-bridge setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    invalid: list[tuple[str, str]] = []
    for setting in SETTINGS:
        if setting.name in overrides:
            values[setting.name] = overrides[setting.name]
            continue
        raw = environ.get(setting.env)
        if raw is None or not raw.strip():
            continue  # empty means unset
        try:
            values[setting.name] = setting.parse(raw)
        except BadValue as exc:
            invalid.append((setting.env, str(exc)))
            if warn is not None:
                shown = "<redacted>" if setting.name == "dsn" else repr(raw[:80])
                if setting.name == "dsn":
                    warn(f"{setting.env} is malformed ({shown}); expected {exc}. "
                         "Sending to Sentry is disabled; the application runs untouched.")
                else:
                    warn(f"{setting.env}={shown} is invalid; expected {exc}. "
                         f"Using the default ({setting.default!r}).")
    return BridgeConfig(**values, invalid=tuple(invalid))


def mask_dsn(dsn: str | None) -> str | None:
    """The DSN with its key masked, safe for logs."""
    if not dsn:
        return dsn
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://***@{host}{port}{parts.path}"
