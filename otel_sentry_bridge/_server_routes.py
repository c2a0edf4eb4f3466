"""What :mod:`otel_sentry_bridge.middleware` learns from the frameworks, duck-typed and cheap (a
few attribute reads; nothing imported): whether OpenTelemetry instruments the wrapped app
itself, whether a span is the server span of the request, and the route the app matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import Span, SpanKind

from ._server_request import Request, same_path
from .conventions import Attr

#: Where Flask's OpenTelemetry instrumentation keeps the request's span in the environ.
FLASK_SPAN_KEY = "opentelemetry-flask.span_key"
#: Instrumentation scope of OpenTelemetry's ASGI middleware (its ``http send`` spans).
OTEL_ASGI_SCOPE = "opentelemetry.instrumentation.asgi"
_OTEL_MODULES = "opentelemetry.instrumentation."
_MAX_DEPTH = 6


def instrumented_inside(app: object) -> bool:
    """Whether OpenTelemetry's server instrumentation runs inside ``app``, so the request's
    span starts there: a Flask/Starlette/FastAPI app instrumented by OpenTelemetry (they
    mark themselves ``_is_instrumented_by_opentelemetry``), one of OpenTelemetry's
    middlewares, or what Flask's instrumentation puts in ``app.wsgi_app``. Follows bound
    methods and wrappers (``__self__``, ``__wrapped__``, ``.app``) a few levels down."""
    obj: Any = app
    for _ in range(_MAX_DEPTH):
        if obj is None:
            return False
        if getattr(obj, "_is_instrumented_by_opentelemetry", False) is True:
            return True
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith(_OTEL_MODULES):
            return True
        nxt = getattr(obj, "__self__", None)
        if nxt is None:
            nxt = getattr(obj, "__wrapped__", None)
        if nxt is None:
            nxt = getattr(obj, "app", None)
        obj = nxt
    return False


def _first_str(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def is_server_span_of(span: Span, request: Request) -> bool:
    """Whether ``span`` (recording) is an unfinished server span of ``request``: kind
    ``SERVER``, and its method and path, when it has them, are the request's."""
    if getattr(span, "kind", None) is not SpanKind.SERVER:
        return False
    if getattr(span, "end_time", None) is not None:
        return False
    attrs = getattr(span, "attributes", None)
    if not isinstance(attrs, Mapping):
        return True
    method = _first_str(attrs, Attr.HTTP_METHOD)
    if method is not None and method.upper() not in (request.method, "_OTHER"):
        return False
    path = _first_str(attrs, Attr.URL_PATH + Attr.HTTP_TARGET)
    if path is None:
        url = _first_str(attrs, Attr.URL_FULL)
        try:
            path = urlsplit(url).path if url else None
        except ValueError:
            path = None
    return path is None or same_path(path, request)


def span_route(span: Span) -> str | None:
    """The ``http.route`` a span already has (``None`` when its attributes cannot be read)."""
    attrs = getattr(span, "attributes", None)
    return _first_str(attrs, Attr.HTTP_ROUTE) if isinstance(attrs, Mapping) else None


def span_attribute_keys(span: Span) -> tuple[str, ...]:
    attrs = getattr(span, "attributes", None)
    return tuple(k for k in attrs if isinstance(k, str)) if isinstance(attrs, Mapping) else ()


def werkzeug_route(environ: Mapping[str, Any]) -> str | None:
    """Flask's matched URL rule (``/orders/<int:order_id>``): the request object Werkzeug
    keeps in the environ, while the app handles the request."""
    request = environ.get("werkzeug.request")
    rule = getattr(getattr(request, "url_rule", None), "rule", None)
    return rule if isinstance(rule, str) and rule else None


def starlette_route(scope: Mapping[str, Any], root_path: str, route_path: str) -> str | None:
    """Starlette's (and FastAPI's) matched route (``scope["route"]``), with the templates of
    the mounts the request went through (``/api/{version}`` + ``/items/{item_id}``); a route
    in a mount reached otherwise (a ``Host``) gives ``None``. ``root_path``/``route_path``:
    the scope's root path and the path under it when the middleware got the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    mounted = hasattr(route, "routes")  # a Mount (of an app, or of routes) is the last route
    now = scope.get("root_path")
    concrete = len(now) - len(root_path) if isinstance(now, str) and now.startswith(root_path) \
        else -1
    if concrete < 0:
        return None
    if concrete == 0:
        return path + "/{path}" if mounted else path or "/"
    prefix = _mount_templates(scope.get("router"), route_path, concrete)
    if prefix is None:
        return None
    return prefix + "/{path}" if mounted else prefix + path


def starlette_mount_matched(scope: Mapping[str, Any]) -> bool:
    """Whether Starlette's last matched route is a ``Mount`` (an app without routes, or no
    route matched inside it), not a route inside it."""
    return hasattr(scope.get("route"), "routes")


def _mount_templates(router: object, path: str, concrete: int) -> str | None:
    """The path templates of the mounts that took the first ``concrete`` characters of
    ``path`` (what Starlette's router does, for mounts only), or ``None``."""
    routes: Any = getattr(router, "routes", None)
    consumed = 0
    templates = ""
    for _ in range(_MAX_DEPTH):
        if consumed >= concrete:
            break
        for route in routes or ():
            regex, template = getattr(route, "path_regex", None), getattr(route, "path", None)
            if not hasattr(route, "routes") or regex is None or not isinstance(template, str):
                continue
            match = regex.match(path[consumed:])
            rest = match.groupdict().get("path") if match is not None else None
            if not isinstance(rest, str):
                continue
            consumed += len(path) - consumed - len(rest) - 1
            templates += template
            routes = getattr(route, "routes", None)
            break
        else:
            return None
    return templates if consumed == concrete else None
