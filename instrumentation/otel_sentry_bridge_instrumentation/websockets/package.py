"""The library this instrumentation targets (checked by ``opentelemetry-instrument``)."""

# 14.0: the new asyncio implementation (websockets.asyncio) with the sync one's API.
_instruments = ("websockets >= 14",)
