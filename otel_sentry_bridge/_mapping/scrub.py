"""Privacy: URLs, headers and secret-looking keys (pure).

Defaults follow sentry-sdk's ``send_default_pii=False``: no query strings, no credentials in
URLs, no cookies or authorization headers, no client IP; values of keys that look like secrets
are replaced by ``[Filtered]`` always (as Relay's default scrubber does).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

FILTERED = "[Filtered]"

_SECRET_KEY = re.compile(
    r"(passw(or)?d|passwd|secret|token|api[-_.]?key|apikey|auth(orization)?\b|"
    r"authorization|cookie|session[-_.]?id|csrf|xsrf|credential|private[-_.]?key|"
    r"access[-_.]?key|signature|set-cookie)",
    re.IGNORECASE,
)
# Attribute keys that are known to be harmless although they match the pattern above.
_SAFE_KEYS = frozenset({"http.request.header.authorization.present"})

SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
    "x-forwarded-for", "x-real-ip", "forwarded", "x-csrftoken", "x-csrf-token", "x-xsrf-token",
})

_secret_memo: dict[str, bool] = {}


def is_secret_key(key: str) -> bool:
    """True when an attribute or header name looks like it holds a secret (memoised)."""
    hit = _secret_memo.get(key)
    if hit is None:
        if len(_secret_memo) > 20_000:
            _secret_memo.clear()
        hit = key not in _SAFE_KEYS and _SECRET_KEY.search(key) is not None
        _secret_memo[key] = hit
    return hit


def split_url(url: str) -> tuple[str, str, str]:
    """``(url without credentials, query and fragment; query; fragment)``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = netloc.rsplit("@", 1)[1]
        base = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return base, parts.query, parts.fragment
    except ValueError:
        cut = url.split("?", 1)[0].split("#", 1)[0]
        return cut, "", ""


def scrub_url(url: str, send_pii: bool) -> str:
    """A URL safe to send: never credentials; query and fragment only with PII."""
    base, query, fragment = split_url(url)
    if not send_pii:
        return base
    out = base
    if query:
        out += "?" + query
    if fragment:
        out += "#" + fragment
    return out


def scrub_target(target: str, send_pii: bool) -> str:
    """An ``http.target`` (path?query) with the query only under PII."""
    if send_pii:
        return target
    return target.split("?", 1)[0]


_URL_KEYS = frozenset({"url.full", "http.url", "url"})
_TARGET_KEYS = frozenset({"http.target"})
_PII_KEYS = frozenset({
    "url.query", "http.query", "http.fragment", "url.fragment", "client.address",
    "net.peer.ip", "http.client_ip", "client.port", "enduser.id.ip",
})


def scrub_data(data: dict[str, Any], send_pii: bool) -> dict[str, Any]:
    """Scrub span data in place (URL query strings, PII keys, secret-looking keys)."""
    for key in list(data):
        value = data[key]
        if key in _URL_KEYS and isinstance(value, str):
            data[key] = scrub_url(value, send_pii)
        elif key in _TARGET_KEYS and isinstance(value, str):
            data[key] = scrub_target(value, send_pii)
        elif key in _PII_KEYS:
            if not send_pii:
                del data[key]
        elif key.startswith("http.request.header.") or key.startswith("http.response.header."):
            name = key.split(".", 3)[3] if key.count(".") >= 3 else key
            header = name.replace("_", "-")
            if not send_pii and (header in SENSITIVE_HEADERS or is_secret_key(name)):
                data[key] = FILTERED
        elif is_secret_key(key):
            data[key] = FILTERED
    return data


def filter_headers(headers: dict[str, str], send_pii: bool) -> dict[str, str]:
    """Request headers for the ``request`` interface."""
    if send_pii:
        return headers
    return {
        name: (FILTERED if name.lower() in SENSITIVE_HEADERS or is_secret_key(name) else value)
        for name, value in headers.items()
    }
