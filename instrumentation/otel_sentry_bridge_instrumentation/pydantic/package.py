"""The library this instrumentation patches (checked again when it is applied)."""

_instruments = ("pydantic >= 2.0, < 3",)
