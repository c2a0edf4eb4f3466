"""Privacy: URLs, headers and secret-looking keys (pure).

Defaults follow sentry-sdk's ``send_default_pii=False``: no query strings, no credentials in
URLs, no cookies or authorization headers, no client IP; values of keys that look like secrets
are replaced by ``[Filtered]`` always (as Relay's default scrubber does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .validation_text import filter_validation_inputs
from .values import INT_MAX, INT_MIN, MAX_VALUE_CHARS, clean_value

FILTERED = "[Filtered]"

_SECRET_KEY = re.compile(
    r"(passw(or)?d|passwd|secret|token(?!s)|api[-_.]?key|apikey|auth(orization)?\b|"
    r"authorization|cookie|session[-_.]?id|csrf|xsrf|credential|private[-_.]?key|"
    r"access[-_.]?key|signature|set-cookie)",
    re.IGNORECASE,
)
# Attribute keys that are known to be harmless although they match the pattern above.
_SAFE_KEYS = frozenset({"http.request.header.authorization.present"})

SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
    "x-forwarded-for", "x-real-ip", "forwarded", "x-csrftoken", "x-csrf-token", "x-xsrf-token",
    "true-client-ip", "cf-connecting-ip", "x-client-ip", "x-cluster-client-ip",
    "fastly-client-ip", "baggage",
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


_URL_QUERY_IN_TEXT = re.compile(r"(\?)[^\s'\"<>)\]]+")
_URL_CREDENTIALS_IN_TEXT = re.compile(r"(//)[^/\s@'\"]+@")


def scrub_text(text: str, send_pii: bool) -> str:
    """Free text (an error message, a status description): URL credentials always; unless PII,
    query strings and the input values a pydantic / FastAPI validation error quotes."""
    text = _URL_CREDENTIALS_IN_TEXT.sub(r"\1[Filtered]@", text)
    if not send_pii:
        if "?" in text:
            text = _URL_QUERY_IN_TEXT.sub(r"\1[Filtered]", text)
        text = filter_validation_inputs(text)
    return text


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


_COPY, _URL, _TARGET, _PII, _HEADER, _SECRET = range(6)
_key_actions: dict[str, int] = {}


def _action(key: str) -> int:
    if key in _URL_KEYS:
        return _URL
    if key in _TARGET_KEYS:
        return _TARGET
    if key in _PII_KEYS:
        return _PII
    if key.startswith(("http.request.header.", "http.response.header.")):
        name = key.split(".", 3)[3] if key.count(".") >= 3 else key
        if name.replace("_", "-") in SENSITIVE_HEADERS or is_secret_key(name):
            return _HEADER
        return _COPY
    return _SECRET if is_secret_key(key) else _COPY


def scrubbed_data(attrs: Mapping[str, Any], send_pii: bool) -> dict[str, Any]:
    """JSON-safe, privacy-scrubbed copy of span attributes (one pass, per-key decisions memoised).

    URL query strings and credentials, PII keys and sensitive headers go unless ``send_pii``;
    values of secret-looking keys are always ``[Filtered]``.
    """
    out: dict[str, Any] = {}
    actions = _key_actions
    for key, value in attrs.items():
        if type(key) is not str:
            key = str(key)
        action = actions.get(key)
        if action is None:
            if len(actions) > 20_000:
                actions.clear()
            action = actions[key] = _action(key)
        if action == _COPY:
            kind = type(value)
            if (kind is str and len(value) <= MAX_VALUE_CHARS) or kind is bool or (
                kind is int and INT_MIN <= value <= INT_MAX
            ):
                out[key] = value
            else:
                out[key] = clean_value(value)
        elif action == _URL:
            out[key] = scrub_url(value, send_pii) if isinstance(value, str) else clean_value(value)
        elif action == _TARGET:
            out[key] = (
                scrub_target(value, send_pii) if isinstance(value, str) else clean_value(value)
            )
        elif action == _PII:
            if send_pii:
                out[key] = clean_value(value)
        elif action == _HEADER:
            out[key] = clean_value(value) if send_pii else FILTERED
        else:
            out[key] = FILTERED
    return out


def filter_headers(headers: dict[str, str], send_pii: bool) -> dict[str, str]:
    """Request headers for the ``request`` interface."""
    if send_pii:
        return headers
    return {
        name: (FILTERED if name.lower() in SENSITIVE_HEADERS or is_secret_key(name) else value)
        for name, value in headers.items()
    }
