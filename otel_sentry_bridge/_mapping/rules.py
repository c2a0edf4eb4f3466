"""Declarative business-context rules: span attributes, baggage entries and resource attributes
-> Sentry ``user`` fields, tags and a named context (pure).

The settings (``SENTRY_BRIDGE_USER_ATTRIBUTES``, ``SENTRY_BRIDGE_TAG_ATTRIBUTES``,
``SENTRY_BRIDGE_CONTEXT_ATTRIBUTES``, ``SENTRY_BRIDGE_CONTEXT_NAME``) are compiled once, by
:meth:`MappingContext.from_config`, into a frozen :class:`Rules`; a bad entry is left out (the
good entries apply) and named in the problems :func:`compile_rules` returns (one message per
setting), which the caller logs: the mapping itself never logs.

A source is ``attr:<span attribute>`` (or a bare attribute name), ``baggage:<entry>`` or
``resource:<resource attribute>``. Baggage never reaches the mapping: ``SentrySpanProcessor``
copies the entries named by a rule onto each local root span as ``sentry_bridge.baggage.<entry>``
attributes (see :data:`BAGGAGE_PREFIX`), which a baggage source reads.

Values are read from the scrubbed span data and resource (so a rule never sends what the span
data would not: PII keys without ``send_default_pii``, ``[Filtered]`` values are skipped).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .scrub import FILTERED, is_secret_key
from .values import safe_str, tag_key, tag_value

#: Attribute prefix under which the processor puts baggage entries named by a rule.
BAGGAGE_PREFIX = "sentry_bridge.baggage."
#: Context holding the environment variables named by ``SENTRY_BRIDGE_CONTEXT_ENV``.
ENV_CONTEXT = "environment_variables"
DEFAULT_CONTEXT_NAME = "business"
USER_FIELDS = ("id", "email", "username", "roles")
ATTR, BAGGAGE, RESOURCE = "attr", "baggage", "resource"
_KINDS = (ATTR, BAGGAGE, RESOURCE)
#: Contexts the bridge writes itself or Relay types (a rule's context may not take their name).
RESERVED_CONTEXTS = frozenset({
    "trace", "otel", "runtime", "os", "response", "device", "app", "browser", "gpu", "culture",
    "cloud_resource", "profile", "replay", "monitor", "state", "flags", "feedback", "user",
    "request", "reprocessing", "spring", "nel", "ota_updates", "performance_score",
    "chromium_stability_report", ENV_CONTEXT,
})
_CONTEXT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SOURCE_KEY = re.compile(r"[^\s\x00-\x1f\x7f]{1,255}")
_MAX_USER_CHARS = 512
_SOURCES = "attr:<attribute>, baggage:<entry> or resource:<attribute>"


@dataclass(frozen=True)
class Rule:
    """One rule: ``target`` (user field, tag key or context key) from a source."""

    target: str
    #: ``attr`` or ``resource`` (a baggage source reads its ``sentry_bridge.baggage.`` attribute)
    kind: str
    key: str


@dataclass(frozen=True)
class Rules:
    """Compiled rules (empty: no rule set; the mapping then does nothing extra)."""

    user: tuple[Rule, ...] = ()
    tags: tuple[Rule, ...] = ()
    context: tuple[Rule, ...] = ()
    context_name: str = DEFAULT_CONTEXT_NAME
    #: Baggage entries the processor copies onto local root spans.
    baggage: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.user or self.tags or self.context)


NO_RULES = Rules()



def _source(text: str) -> tuple[str, str]:
    """``(kind, key)`` of a source; raises ValueError with the reason."""
    prefix, sep, rest = text.partition(":")
    if sep and prefix.strip().lower() in _KINDS:
        kind, key = prefix.strip().lower(), rest.strip()
    else:  # a bare attribute name (it may contain ':')
        kind, key = ATTR, text.strip()
    if not _SOURCE_KEY.fullmatch(key):
        raise ValueError(f"expected {_SOURCES}")
    if is_secret_key(key):
        raise ValueError("a secret-looking key: its value is never sent")
    return kind, key


def _rule(target: str, kind: str, key: str) -> Rule:
    if kind == BAGGAGE:
        return Rule(target, ATTR, BAGGAGE_PREFIX + key)
    return Rule(target, kind, key)


def _user_rule(entry: str) -> Rule:
    field, sep, source = entry.partition("=")
    field = field.strip().lower()
    if not sep or field not in USER_FIELDS:
        raise ValueError("expected <field>=<source>, field one of id, email, username, roles")
    return _rule(field, *_source(source))


def _keyed_rule(entry: str, what: str) -> Rule:
    """``target=source`` or a bare source (the target is the source's key)."""
    target, sep, source = entry.partition("=")
    kind, key = _source(source if sep else entry)
    name = tag_key(target if sep else key)
    if name is None:
        raise ValueError(f"{what} keys are letters, digits, '_', '.', ':' or '-', "
                         "at most 200 characters")
    if is_secret_key(name):
        raise ValueError(f"a secret-looking {what} key")
    return _rule(name, kind, key)


def _is_plain_tag(entry: str) -> bool:
    """A bare span attribute name (``attr:`` optional): the historical tag_attributes form."""
    if "=" in entry:
        return False
    prefix, sep, _ = entry.partition(":")
    return not sep or prefix.strip().lower() not in (BAGGAGE, RESOURCE)


def _plain_key(entry: str) -> str:
    prefix, sep, rest = entry.partition(":")
    return rest.strip() if sep and prefix.strip().lower() == ATTR else entry.strip()


def compile_rules(
    user: Sequence[str], tags: Sequence[str], context: Sequence[str], context_name: str | None,
) -> tuple[Rules, tuple[str, ...], tuple[str, ...]]:
    """Compile the rule settings: ``(rules, plain tag attribute names, problems)``.

    ``problems``: one message per setting with bad entries (naming them; they are left out)
    and one for a bad context name (the default is used), for the caller to log.

    Plain names (``tenant.plan`` or ``attr:tenant.plan``) keep the historical
    ``SENTRY_BRIDGE_TAG_ATTRIBUTES`` path (any span, the tag keeps the attribute's name).
    """
    plain: list[str] = []
    problems: list[str] = []
    compiled: dict[str, list[Rule]] = {"user": [], "tags": [], "context": []}
    for env, entries, kind in (
        ("SENTRY_BRIDGE_USER_ATTRIBUTES", user, "user"),
        ("SENTRY_BRIDGE_TAG_ATTRIBUTES", tags, "tags"),
        ("SENTRY_BRIDGE_CONTEXT_ATTRIBUTES", context, "context"),
    ):
        bad: list[str] = []
        for entry in entries:
            if not entry.strip():
                continue
            try:
                if kind == "tags" and _is_plain_tag(entry):
                    key = _plain_key(entry)
                    if not key:
                        raise ValueError(f"expected {_SOURCES}")
                    plain.append(key)
                elif kind == "user":
                    compiled[kind].append(_user_rule(entry))
                else:
                    compiled[kind].append(_keyed_rule(entry, "tag" if kind == "tags" else
                                                      "context"))
            except ValueError as exc:
                bad.append(f"{entry[:80]!r} ({exc})")
        if bad:
            problems.append(f"{env}: left out {'; '.join(bad)}. The other entries apply.")
    name = (context_name or "").strip() or DEFAULT_CONTEXT_NAME
    if not _CONTEXT_NAME.fullmatch(name) or name.lower() in RESERVED_CONTEXTS:
        problems.append(f"SENTRY_BRIDGE_CONTEXT_NAME={name[:80]!r} is invalid; expected "
                        "letters, digits, '_', '.' or '-' (at most 64) and not a context Sentry "
                        f"or the bridge uses. Using the default ({DEFAULT_CONTEXT_NAME!r}).")
        name = DEFAULT_CONTEXT_NAME
    every = [*compiled["user"], *compiled["tags"], *compiled["context"]]
    baggage = frozenset(
        r.key[len(BAGGAGE_PREFIX):] for r in every if r.key.startswith(BAGGAGE_PREFIX)
    )
    rules = Rules(tuple(compiled["user"]), tuple(compiled["tags"]), tuple(compiled["context"]),
                  name, baggage)
    return rules, tuple(dict.fromkeys(plain)), tuple(problems)


def _lookup(rule: Rule, datas: Sequence[Mapping[str, Any]], resource: Mapping[str, Any]) -> Any:
    if rule.kind == RESOURCE:
        value = resource.get(rule.key)
        return None if value == FILTERED else value
    for data in datas:  # the root first: the root's value wins
        value = data.get(rule.key)
        if value is not None and value != FILTERED:
            return value
    return None


def _user_value(field: str, value: Any) -> Any:
    if field == "roles":
        if isinstance(value, (list, tuple)):
            roles = [safe_str(r).strip() for r in value]
        else:
            roles = safe_str(value).split(",")
        return [r.strip()[:_MAX_USER_CHARS] for r in roles if r.strip()] or None
    text = tag_value(value) if isinstance(value, (list, tuple)) else safe_str(value).strip()
    return text[:_MAX_USER_CHARS] if text else None


def apply_rules(
    rules: Rules, datas: Sequence[Mapping[str, Any]], resource: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[tuple[str, str], ...], dict[str, Any]]:
    """``(user fields, tags, context)`` from the rules, for one transaction.

    ``datas``: the scrubbed data of its spans, the root's first; ``resource``: its scrubbed
    resource. For one target the first rule with a value wins (later rules are fallbacks).
    """
    user: dict[str, Any] = {}
    for rule in rules.user:
        if rule.target not in user:
            found = _lookup(rule, datas, resource)
            value = _user_value(rule.target, found) if found is not None else None
            if value:
                user[rule.target] = value
    tags: dict[str, str] = {}
    for rule in rules.tags:
        if rule.target not in tags:
            text = tag_value(_lookup(rule, datas, resource))
            if text is not None:
                tags[rule.target] = text
    context: dict[str, Any] = {}
    for rule in rules.context:
        if rule.target not in context:
            found = _lookup(rule, datas, resource)
            if found is not None and found != "":
                context[rule.target] = found
    return user, tuple(tags.items()), context
