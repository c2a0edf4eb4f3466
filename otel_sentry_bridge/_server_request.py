"""The request side of :mod:`otel_sentry_bridge.middleware`: what a WSGI environ or an ASGI
scope says about a request, as OpenTelemetry HTTP server attributes, with Sentry's privacy
defaults applied before anything reaches a span (pure: no OpenTelemetry calls, no I/O).

* Headers become ``http.request.header.<name>`` (lower case, a list of values). Without
  ``send_default_pii``, the value of a sensitive header (cookies, authorization, forwarding
  addresses, CSRF tokens, ``baggage``, and any name that looks like a secret) is
  ``[Filtered]``, as the mapping's ``request`` interface shows it.
* The query string (``url.query``) and the client address (``client.address``) are recorded
  only with ``send_default_pii``, and even then the values of secret-looking query parameters
  are ``[Filtered]``. Without PII the mapping would drop them anyway
  (``_mapping/scrub.py``); not recording them keeps them out of every other exporter too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus

from opentelemetry.propagators.textmap import Getter
from opentelemetry.semconv.attributes import (
    client_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)

from ._mapping.scrub import FILTERED, SENSITIVE_HEADERS, is_secret_key
from .conventions import Attr

#: Headers recorded per request, values per header, characters per value (a request's
#: headers are bounded by the server already; these bound what one span carries).
MAX_HEADERS = 64
MAX_VALUES = 8
MAX_HEADER_CHARS = 4096

_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT",
                      "TRACE", "QUERY"})
_HEADER = Attr.HTTP_REQUEST_HEADER_PREFIX

Headers = dict[str, list[str]]


class Request:
    """One request, read once from the environ or scope."""

    __slots__ = ("client", "headers", "host", "method", "method_original", "path", "port",
                 "protocol", "query", "route_path", "scheme")

    def __init__(self, method: str, scheme: str, path: str, route_path: str, query: str,
                 headers: Headers, server: tuple[str, int | None], client: str | None,
                 protocol: str) -> None:
        upper = method.upper()
        self.method = upper if upper in _METHODS else "_OTHER"
        self.method_original = method if self.method != method else None
        self.scheme = scheme
        self.path = path  # the whole path (WSGI: SCRIPT_NAME + PATH_INFO)
        self.route_path = route_path  # the part the app routes (WSGI: PATH_INFO)
        self.query = query
        self.headers = headers
        self.host, self.port = _host_port(headers, server)
        self.client = _client(headers, client)
        self.protocol = protocol


#: Header names of environ keys (``HTTP_ACCEPT_LANGUAGE``: ``accept-language``), memoised.
_ENVIRON_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def _wsgi_str(text: Any) -> str:
    """A WSGI "native string" (bytes decoded as latin-1) as the UTF-8 text it carries."""
    if not isinstance(text, str):
        return ""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def from_environ(environ: Mapping[str, Any]) -> Request:
    """The request of a WSGI environ."""
    headers: Headers = {}
    names = _ENVIRON_HEADERS
    for key, value in environ.items():
        name = names.get(key)
        if name is None:
            if key[:5] != "HTTP_":
                continue
            name = key[5:].replace("_", "-").lower()
            if len(names) < 1024:
                names[key] = name
        if type(value) is str and value:
            headers[name] = [value]
    script, info = _wsgi_str(environ.get("SCRIPT_NAME")), _wsgi_str(environ.get("PATH_INFO"))
    remote = environ.get("REMOTE_ADDR")
    return Request(
        str(environ.get("REQUEST_METHOD") or "GET"), str(environ.get("wsgi.url_scheme") or "http"),
        (script + info) or "/", info or "/", _wsgi_str(environ.get("QUERY_STRING")), headers,
        (str(environ.get("SERVER_NAME") or ""), _port(str(environ.get("SERVER_PORT") or ""))),
        remote if isinstance(remote, str) else None,
        _protocol(environ.get("SERVER_PROTOCOL")),
    )


def from_scope(scope: Mapping[str, Any]) -> Request:
    """The request of an ASGI ``http`` scope."""
    headers: Headers = {}
    for pair in scope.get("headers") or ():
        if type(pair) not in (tuple, list) or len(pair) != 2:
            continue
        name, value = pair
        if isinstance(name, (bytes, bytearray)) and isinstance(value, (bytes, bytearray)):
            headers.setdefault(name.decode("latin-1").lower(), []).append(
                value.decode("latin-1"))
    path = scope.get("path")
    path = path if isinstance(path, str) and path else "/"
    root = scope.get("root_path")
    route_path = path[len(root):] if isinstance(root, str) and root and path.startswith(root) \
        else path
    server = scope.get("server")
    host, port = (server[0], server[1]) if isinstance(server, (list, tuple)) and \
        len(server) == 2 else ("", None)
    client = scope.get("client")
    query = scope.get("query_string")
    query = query.decode("latin-1") if isinstance(query, (bytes, bytearray)) else ""
    return Request(
        str(scope.get("method") or "GET"), str(scope.get("scheme") or "http"), path,
        route_path or "/", query, headers,
        (str(host or ""), port if isinstance(port, int) else None),
        str(client[0]) if isinstance(client, (list, tuple)) and client else None,
        str(scope.get("http_version") or ""),
    )


def _port(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


def _protocol(text: Any) -> str:
    """``HTTP/1.1`` -> ``1.1``."""
    return text.split("/", 1)[1] if isinstance(text, str) and "/" in text else ""


def _host_port(headers: Headers, server: tuple[str, int | None]) -> tuple[str, int | None]:
    """``server.address``/``server.port``: the ``Host`` header, else the server's own name."""
    host = (headers.get("host") or [""])[0].strip()
    if not host:
        return server
    if host.startswith("["):  # [::1]:8000
        address, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        address, _, port = host.partition(":")
    else:
        address, port = host, ""
    number = _port(port)
    return address, number if number is not None else server[1]


def _client(headers: Headers, remote: str | None) -> str | None:
    """The client's address as sentry-sdk reads it: ``X-Forwarded-For`` (its first address),
    ``X-Real-IP``, then the peer."""
    for name in ("x-forwarded-for", "x-real-ip"):
        values = headers.get(name)
        if values:
            first = values[0].split(",", 1)[0].strip()
            if first:
                return first
    return remote


def request_attributes(request: Request, send_pii: bool) -> dict[str, Any]:
    """The OpenTelemetry HTTP server attributes of ``request`` (stable semantic conventions)."""
    attrs: dict[str, Any] = {
        http_attributes.HTTP_REQUEST_METHOD: request.method,
        url_attributes.URL_SCHEME: request.scheme,
        url_attributes.URL_PATH: request.path,
    }
    if request.method_original is not None:
        attrs[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] = request.method_original[:256]
    if request.host:
        attrs[server_attributes.SERVER_ADDRESS] = request.host
    if request.port is not None:
        attrs[server_attributes.SERVER_PORT] = request.port
    agent = request.headers.get("user-agent")
    if agent:
        attrs[user_agent_attributes.USER_AGENT_ORIGINAL] = agent[0][:MAX_HEADER_CHARS]
    if request.protocol:
        attrs[network_attributes.NETWORK_PROTOCOL_VERSION] = request.protocol
    if send_pii:
        if request.query:
            attrs[url_attributes.URL_QUERY] = scrub_query(request.query)
        if request.client:
            attrs[client_attributes.CLIENT_ADDRESS] = request.client
    return attrs


def header_attributes(
    headers: Headers, wanted: frozenset[str] | None, send_pii: bool,
    present: Iterable[str] = (),
) -> dict[str, list[str]]:
    """``http.request.header.<name>`` attributes of the ``wanted`` headers (``None``: all),
    sensitive values ``[Filtered]`` without PII; names in ``present`` are skipped (already on
    the span, in either spelling: ``x-key`` or ``x_key``)."""
    skip = {key[len(_HEADER):].replace("_", "-") for key in present if key.startswith(_HEADER)}
    out: dict[str, list[str]] = {}
    for name, values in headers.items():
        if (wanted is not None and name not in wanted) or name in skip:
            continue
        if len(out) >= MAX_HEADERS:
            break
        if not send_pii and (name in SENSITIVE_HEADERS or is_secret_key(name)):
            out[_HEADER + name] = [FILTERED]
        else:
            out[_HEADER + name] = [value[:MAX_HEADER_CHARS] for value in values[:MAX_VALUES]]
    return out


def scrub_query(query: str) -> str:
    """``query`` with the values of secret-looking parameters ``[Filtered]``."""
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, equals, _ = part.partition("=")
        if equals and is_secret_key(unquote_plus(name)):
            parts[i] = f"{name}={FILTERED}"
    return "&".join(parts)


class HeaderGetter(Getter[Headers]):
    """:class:`Getter` of a request's headers (lower-case names) for ``propagate.extract``."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = carrier.get(key.lower())
        if not values:
            return None
        # The baggage propagator reads one value: several baggage header lines are one list.
        return [",".join(values)] if key.lower() == "baggage" and len(values) > 1 else values

    def keys(self, carrier: Headers) -> list[str]:
        return list(carrier)


HEADER_GETTER = HeaderGetter()


# --------------------------------------------------------------------------------------------
# A path without a route: its identifiers replaced by placeholders
# --------------------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HASH = re.compile(r"(?=[a-fA-F]*[0-9])[0-9a-fA-F]{16,}")
_DATE = re.compile(r"[0-9]{4}-[01][0-9]-[0-3][0-9](?:[T ][0-9:.+\-Z]*)?")
_TOKEN = re.compile(r"(?=[^0-9]*[0-9])(?=[^a-z]*[a-z])(?=[^A-Z]*[A-Z])[A-Za-z0-9_\-.~]{16,}")
_DIGITS = re.compile(r"[0-9]{4,}")


def path_template(path: str) -> str:
    """``path`` with what looks like an identifier replaced, segment by segment: digits
    (``{id}``), UUIDs (``{uuid}``), hex strings of 16+ characters with a digit (``{hash}``),
    dates (``{date}``), 16+ character tokens of mixed-case letters and digits (``{token}``),
    and runs of 4+ digits inside a segment (``report-2024.pdf``: ``report-{id}.pdf``)."""
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if not segment:
            continue
        if segment.isascii() and segment.isdigit():
            segments[i] = "{id}"
        elif _HASH.fullmatch(segment):
            segments[i] = "{hash}"
        elif _DATE.fullmatch(segment):
            segments[i] = "{date}"
        elif _UUID.search(segment):
            segments[i] = _DIGITS.sub("{id}", _UUID.sub("{uuid}", segment))
        elif _TOKEN.fullmatch(segment):
            segments[i] = "{token}"
        else:
            segments[i] = _DIGITS.sub("{id}", segment)
    return "/".join(segments)


def same_path(span_path: str, request: Request) -> bool:
    """Whether a server span's ``url.path``/``http.target`` is the path of ``request``
    (percent-encoded or not; a span of an outer app may carry a longer, mounted path)."""
    path = span_path.split("?", 1)[0]
    for candidate in (path, unquote(path)):
        if candidate in (request.path, request.route_path) or \
                candidate.endswith(request.route_path):
            return True
    return False
