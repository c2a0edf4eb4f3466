"""What the head of a trace puts in its DSC, read from its live local root span (pure)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from .context import resource_fields
from .mapping_context import MappingContext
from .spans import make_template, raw_attributes
from .transactions import transaction_name
from .values import concept_view


def describe_root(
    span: ReadableSpan, ctx: MappingContext
) -> tuple[str | None, str | None, str, str]:
    """``(release, environment, transaction name, source)`` of a local root, as its
    transaction will say (the name as it is now: a later rename does not change a DSC that
    was already sent)."""
    raw = raw_attributes(span)
    template = make_template(span, raw, concept_view(raw), ctx)
    name, source = transaction_name(span, template.view, template.op, template.description)
    resource: Any = getattr(span.resource, "attributes", None) or {}
    fields = resource_fields(resource, ctx)
    return fields.get("release"), fields.get("environment"), name, source
