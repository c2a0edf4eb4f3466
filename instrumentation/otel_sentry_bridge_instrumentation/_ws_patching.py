"""Patching helpers of the WebSocket instrumentations: a wrapped call's arguments, and wrapt
wrappers on classes that ``restore`` undoes exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from otel_sentry_bridge._internal_errors import handle_internal_errors

__all__ = ["ClassPatches", "arg", "with_arg"]


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """A wrapped call's argument, given by position or by name (None when absent)."""
    return args[index] if len(args) > index else kwargs.get(name)


def with_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str,
             value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with one replaced (where it was given; else by name)."""
    if len(args) > index:
        return (*args[:index], value, *args[index + 1:]), kwargs
    return args, {**kwargs, name: value}


class ClassPatches:
    """wrapt wrappers on classes, undone exactly: a method a class inherits gets its wrapper
    on that class, which ``restore`` deletes again (instead of leaving a copy behind)."""

    def __init__(self) -> None:
        self._done: list[tuple[type, str, bool]] = []
        self._generation = 0

    def wrap(self, cls: type, name: str, wrapper: Any) -> None:
        owned = name in vars(cls)
        wrapt.wrap_function_wrapper(cls, name, wrapper)
        self._done.append((cls, name, owned))

    def when_imported(self, module: str, patch: Callable[[Any], None], where: str) -> None:
        """``patch(module)`` once ``module`` is imported (now if it is), unless ``restore``
        ran in between: a module that is costly to import is patched only if the app uses it."""
        generation = self._generation

        def hook(imported: Any) -> None:
            with handle_internal_errors(where):
                if generation == self._generation:
                    patch(imported)

        wrapt.register_post_import_hook(hook, module)

    def restore(self) -> None:
        self._generation += 1
        while self._done:
            cls, name, owned = self._done.pop()
            if owned:
                unwrap(cls, name)
            elif name in vars(cls):
                delattr(cls, name)
