"""Event-level context: resource, user, tags, request (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from otel_sentry_bridge.conventions import (
    BUSINESS_TAGS,
    Attr,
    Res,
    valid_environment,
    valid_release,
)

from .mapping_context import MappingContext
from .ops import http_method
from .scrub import filter_headers, scrub_target, scrubbed_data, split_url
from .values import (
    Attrs,
    first,
    first_int,
    first_str,
    pick_str,
    safe_str,
    tag_key,
    tag_value,
)

MAX_TAGS = 200


def resource_fields(resource: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """release, environment, server_name (settings win) and runtime/os/otel contexts."""
    out: dict[str, Any] = {}
    for release in (ctx.release, pick_str(resource, (Res.SERVICE_VERSION,))):
        if release and valid_release(release):
            out["release"] = release
            break
    for environment in (ctx.environment, pick_str(resource, Res.ENVIRONMENT), "production"):
        if environment and valid_environment(environment):
            out["environment"] = environment
            break
    server = ctx.server_name or pick_str(resource, (Res.HOST_NAME,))
    if server:
        out["server_name"] = server
    contexts: dict[str, Any] = {}
    if resource:
        contexts["otel"] = {"resource": scrubbed_data(resource, ctx.send_pii)}
    runtime_name = pick_str(resource, (Res.RUNTIME_NAME,))
    if runtime_name:
        runtime: dict[str, Any] = {"name": runtime_name}
        version = pick_str(resource, (Res.RUNTIME_VERSION,))
        if version:
            runtime["version"] = version
        raw = pick_str(resource, (Res.RUNTIME_DESCRIPTION,))
        if raw:
            runtime["raw_description"] = raw
        contexts["runtime"] = runtime
    os_type = pick_str(resource, (Res.OS_TYPE,))
    if os_type:
        os_ctx: dict[str, Any] = {"name": os_type}
        version = pick_str(resource, (Res.OS_VERSION,))
        if version:
            os_ctx["version"] = version
        raw = pick_str(resource, (Res.OS_DESCRIPTION,))
        if raw:
            os_ctx["raw_description"] = raw
        contexts["os"] = os_ctx
    out["contexts"] = contexts
    return out


def ip_address(text: str | None) -> str | None:
    """An IP address Relay accepts (the first of a forwarded list, no zone), or None."""
    if not text:
        return None
    candidate = text.split(",", 1)[0].strip().split("%", 1)[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def span_user(attrs: Attrs, ctx: MappingContext) -> dict[str, Any]:
    """User fields (``enduser.*``/``user.*``) found on one span."""
    user: dict[str, Any] = {}
    for field, keys in (
        ("id", Attr.USER_ID),
        ("email", Attr.USER_EMAIL),
        ("username", Attr.USER_NAME),
    ):
        value = first_str(attrs, keys)
        if value:
            user[field] = value[:512]
    roles = first(attrs, Attr.USER_ROLES)
    if isinstance(roles, str) and roles:
        user["roles"] = [r.strip() for r in roles.split(",") if r.strip()]
    elif isinstance(roles, (list, tuple)) and roles:
        user["roles"] = [safe_str(r) for r in roles]
    if ctx.send_pii:
        ip = ip_address(first_str(attrs, Attr.CLIENT_ADDRESS))
        if ip:
            user["ip_address"] = ip
    return user


def merge_user(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Sentry ``user`` from per-span fields; the first part (the root) wins per field."""
    user: dict[str, Any] = {}
    for part in parts:
        for field, value in part.items():
            user.setdefault(field, value)
    if not user:
        return None
    roles = user.pop("roles", None)
    if roles:
        user["data"] = {"roles": list(roles)}
    return user


def span_tags(data: Attrs, ctx: MappingContext) -> tuple[tuple[str, str], ...]:
    """Tags from one span's scrubbed data: ``sentry.tag.*`` and ``SENTRY_BRIDGE_TAG_ATTRIBUTES``.

    Read from the scrubbed span data, so tags never carry what the data would not (query
    strings, PII, values of secret-looking keys).
    """
    attrs = data
    found: list[tuple[str, str]] = []
    prefix = Attr.SENTRY_TAG_PREFIX
    wanted = ctx.tag_attributes
    for key, value in attrs.items():
        if type(key) is not str:
            continue
        if key.startswith(prefix):
            name = tag_key(key[len(prefix):])
        elif key in wanted:  # named in SENTRY_BRIDGE_TAG_ATTRIBUTES: the tag keeps its name
            name = tag_key(key)
        elif key in BUSINESS_TAGS:
            name = BUSINESS_TAGS[key]
        else:
            continue
        text = tag_value(value)
        if name is not None and text is not None:
            found.append((name, text))
    return tuple(found)


def merge_tags(
    parts: Iterable[tuple[tuple[str, str], ...]], limit: int = MAX_TAGS
) -> tuple[dict[str, str], int]:
    """``(event tags, how many were left out)`` from per-span tags; the first part (the root)
    wins, at most ``limit`` tags (``SENTRY_BRIDGE_MAX_TAGS``; the worker logs the first time
    tags are left out)."""
    tags: dict[str, str] = {}
    dropped = 0
    for part in parts:
        for name, text in part:
            if name not in tags:
                if len(tags) < limit:
                    tags[name] = text
                else:
                    dropped += 1
    return tags, dropped


def request_interface(attrs: Attrs, ctx: MappingContext) -> dict[str, Any] | None:
    """The ``request`` interface of an http.server root, with secrets removed."""
    method = http_method(attrs)
    if method is None:
        return None
    request: dict[str, Any] = {"method": method}
    scheme = first_str(attrs, Attr.URL_SCHEME) or "http"
    host = first_str(attrs, Attr.SERVER_ADDRESS)
    port = first_int(attrs, Attr.SERVER_PORT)
    target = first_str(attrs, Attr.HTTP_TARGET)
    path = first_str(attrs, Attr.URL_PATH)
    query = first_str(attrs, Attr.URL_QUERY)
    full = first_str(attrs, Attr.URL_FULL)
    if target and not path:
        path, _, query_from_target = target.partition("?")
        query = query or query_from_target or None
    url: str | None = None
    if full:
        url, full_query, _ = split_url(full)
        query = query or full_query or None
    elif host and path is not None:
        netloc = host
        if ":" not in host and port and (scheme, port) not in (("http", 80), ("https", 443)):
            netloc = f"{host}:{port}"
        url = f"{scheme}://{netloc}{path}"
    elif path:
        url = path
    if url:
        request["url"] = scrub_target(url, False)
    if query and ctx.send_pii:
        request["query_string"] = query
    headers: dict[str, str] = {}
    prefix = Attr.HTTP_REQUEST_HEADER_PREFIX
    for key, value in attrs.items():
        if type(key) is str and key.startswith(prefix):
            name = "-".join(p.capitalize() for p in key[len(prefix):].replace("_", "-").split("-"))
            text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            headers[name] = text
    agent = first_str(attrs, Attr.USER_AGENT)
    if agent and "User-Agent" not in headers:
        headers["User-Agent"] = agent
    if host and "Host" not in headers:
        headers["Host"] = host if not port or ":" in host else f"{host}:{port}"
    if headers:
        request["headers"] = filter_headers(headers, ctx.send_pii)
    env: dict[str, str] = {}
    if host:
        env["SERVER_NAME"] = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if port:
        env["SERVER_PORT"] = str(port)
    if ctx.send_pii:
        ip = first_str(attrs, Attr.CLIENT_ADDRESS)
        if ip:
            env["REMOTE_ADDR"] = ip
    if env:
        request["env"] = env
    return request
