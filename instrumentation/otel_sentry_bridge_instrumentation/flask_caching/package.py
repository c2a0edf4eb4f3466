"""The target library of this instrumentation."""

_instruments = ("Flask-Caching >= 2.0, < 3",)
