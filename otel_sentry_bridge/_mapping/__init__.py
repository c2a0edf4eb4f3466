"""Pure mapping core: finished OpenTelemetry spans + settings -> Sentry payload dicts.

No I/O, no clock, no ``sentry_sdk`` here. The only entry points are re-exported below.
"""

from .mapping_context import MappingContext
from .spans import SpanMapper
from .transactions import MappedTransaction, build_transaction

__all__ = ["MappedTransaction", "MappingContext", "SpanMapper", "build_transaction"]
