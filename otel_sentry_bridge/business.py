"""Business context: who and which tenant a trace is for, on every service it crosses.

``set_business_context(user_id=..., roles=..., tenant=..., project=..., **tags)`` writes
span attributes on the current span (the bridge maps them to Sentry's ``user`` and tags of
the transaction and of its error events) and W3C baggage entries, which OpenTelemetry's
``baggage`` propagator carries to downstream services; there ``SentrySpanProcessor`` copies
them onto the local root span, so their transactions and errors carry the same user and tags.

Only the OpenTelemetry API is used here (no I/O, no sentry-sdk).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage, context, trace

from ._internal_errors import warn_once
from ._mapping.rules import BAGGAGE_PREFIX
from ._mapping.values import tag_key, tag_value
from .conventions import Attr

TENANT = "tenant.id"
PROJECT = "project.id"
#: Baggage entries copied onto a service's local root spans (besides ``sentry.tag.*``).
PROPAGATED = frozenset({Attr.USER_ID[0], Attr.USER_ROLES[1], TENANT, PROJECT})
#: At most this many extra tags per call (tags beyond it are left out, with a warning).
MAX_EXTRA_TAGS = 20

def business_attributes(
    *, user_id: Any = None, roles: Sequence[str] | str | None = None, tenant: Any = None,
    project: Any = None, **tags: Any,
) -> dict[str, str]:
    """The span attributes (and baggage entries) for a business context; empty values skipped,
    values cut to 200 characters, tag keys validated, at most 20 extra tags."""
    if roles is not None and not isinstance(roles, str):
        roles = ",".join(str(r) for r in roles)
    out: dict[str, str] = {}
    for key, value in ((Attr.USER_ID[0], user_id), (Attr.USER_ROLES[1], roles),
                       (TENANT, tenant), (PROJECT, project)):
        text = tag_value(value)  # None when empty; one line, at most 200 characters
        if text is not None:
            out[key] = text
    extra = 0
    for key, value in tags.items():
        name = tag_key(key)
        if name is None:
            warn_once(f"business-key:{key}", f"business tag {key!r} left out: tag keys are "
                      "letters, digits, '_', '.', ':' or '-', at most 200 characters")
            continue
        text = tag_value(value)
        if text is None:
            continue
        if extra >= MAX_EXTRA_TAGS:
            warn_once("business-too-many", f"more than {MAX_EXTRA_TAGS} business tags: the "
                      "rest are left out")
            break
        out[Attr.SENTRY_TAG_PREFIX + name] = text
        extra += 1
    return out


def set_business_context(
    *, user_id: Any = None, roles: Sequence[str] | str | None = None, tenant: Any = None,
    project: Any = None, **tags: Any,
) -> object:
    """Set the business context on the current span and in the baggage of the current context.

    Returns the token of the attached context (``opentelemetry.context.detach(token)`` ends
    it; a framework's request context usually ends it with the request). Prefer the context
    manager :func:`business_context` where a block is at hand.
    """
    attributes = business_attributes(user_id=user_id, roles=roles, tenant=tenant,
                                     project=project, **tags)
    span = trace.get_current_span()
    if attributes and span.is_recording():
        span.set_attributes(attributes)
    ctx = context.get_current()
    for key, value in attributes.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return context.attach(ctx)


@contextmanager
def business_context(
    *, user_id: Any = None, roles: Sequence[str] | str | None = None, tenant: Any = None,
    project: Any = None, **tags: Any,
) -> Iterator[dict[str, str]]:
    """:func:`set_business_context` for a block; yields the attributes it set."""
    token = set_business_context(user_id=user_id, roles=roles, tenant=tenant,
                                 project=project, **tags)
    try:
        yield business_attributes(user_id=user_id, roles=roles, tenant=tenant,
                                  project=project, **tags)
    finally:
        context.detach(token)  # type: ignore[arg-type]


def from_baggage(
    entries: Mapping[str, object], wanted: Set[str] = frozenset()
) -> dict[str, str]:
    """The business attributes among baggage entries (what a local root span takes over).

    ``wanted``: entries named by a ``baggage:`` rule (``SENTRY_BRIDGE_*_ATTRIBUTES``), taken
    over as ``sentry_bridge.baggage.<entry>`` attributes (one line, at most 200 characters).
    """
    out: dict[str, str] = {}
    for name in wanted:
        if name in entries:
            text = tag_value(entries[name])
            if text is not None:
                out[BAGGAGE_PREFIX + name] = text
    prefix = Attr.SENTRY_TAG_PREFIX
    for key, value in entries.items():
        if key.startswith(prefix):
            if tag_key(key[len(prefix):]) is None:
                continue
        elif key not in PROPAGATED:
            continue
        text = tag_value(value)
        if text is not None:
            out[key] = text
    return out
