"""The target library of this instrumentation."""

_instruments = ("cachetools >= 5.0, < 9",)
