"""The target library of this instrumentation."""

_instruments = ("pymemcache >= 4.0, < 5",)
