"""The decorator side of custom spans (``custom_spans``): sync and async functions, generators
and async generators.

A generator's span covers its whole iteration (first ``next`` to exhaustion, ``close`` or an
exception) and is the current span only while the generator's own code runs, never while it is
suspended in the consumer's code. The function's result, exceptions and signature are its own:
``functools.wraps`` keeps ``__name__``, ``__doc__``, ``__wrapped__`` (so ``inspect.signature``)
and the kind of function (``inspect.iscoroutinefunction`` and the like still answer the same).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import Token
from typing import Any, Protocol, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, Status, StatusCode

from ._internal_errors import log_internal_error, warn_once

F = TypeVar("F", bound=Callable[..., Any])


class Run:
    """One run of a custom span: the started ``span`` and the context that has it current; or
    no span, under an unsampled but recording ``parent`` (which then records an exception that
    leaves the code, so that its error still reaches Sentry)."""

    __slots__ = ("context", "parent", "span", "token")

    def __init__(self, span: Span | None, parent: Span | None = None) -> None:
        self.span = span
        self.parent = parent
        self.context: otel_context.Context | None = None
        self.token: Token[otel_context.Context] | None = None


class Spec(Protocol):
    """What a decorator needs of a ``CustomSpan``."""

    on_result: Callable[[Span, Any], None] | None

    def open(self, keep: bool = True) -> Run | None: ...

    def for_function(self, func: Callable[..., Any]) -> Spec: ...


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:200]
    except Exception:  # a broken __str__
        return type(exc).__name__


def finish(run: Run, exc: BaseException | None) -> None:
    """End the run: detach its context, record ``exc`` (an ``Exception``: not
    ``KeyboardInterrupt``, ``CancelledError`` or ``GeneratorExit``), end the span."""
    try:
        span = run.span
        if span is None:
            if isinstance(exc, Exception) and run.parent is not None:
                run.parent.record_exception(exc, escaped=True)
            return
        if run.token is not None:
            token, run.token = run.token, None
            otel_context.detach(token)
        if isinstance(exc, Exception):
            span.record_exception(exc, escaped=True)
            span.set_status(Status(StatusCode.ERROR, _describe(exc)))
        span.end()
    except Exception as error:
        log_internal_error("custom_spans.finish", error)


def _result(spec: Spec, run: Run, result: Any) -> None:
    hook = spec.on_result
    if hook is not None and run.span is not None:
        try:
            hook(run.span, result)
        except Exception as exc:
            log_internal_error("custom_spans.result", exc)


def _sync(spec: Spec, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        run = spec.open()
        if run is None:
            return func(*args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            finish(run, exc)
            raise
        _result(spec, run, result)
        finish(run, None)
        return result

    return wrapper


def _async(spec: Spec, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        run = spec.open()
        if run is None:
            return await func(*args, **kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            finish(run, exc)
            raise
        _result(spec, run, result)
        finish(run, None)
        return result

    return wrapper


def _attach(run: Run) -> Token[otel_context.Context] | None:
    return otel_context.attach(run.context) if run.context is not None else None


def _detach(token: Token[otel_context.Context] | None) -> None:
    if token is not None:
        otel_context.detach(token)


def _drive(gen: Generator[Any, Any, Any], run: Run) -> Generator[Any, Any, Any]:
    """``yield from gen``, with the span current while ``gen`` runs, ended when it ends."""
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            token = _attach(run)
            try:
                if thrown is None:
                    item = gen.send(sent)
                else:
                    error, thrown = thrown, None
                    item = gen.throw(error)
            finally:
                _detach(token)
            try:
                sent = yield item
            except GeneratorExit:  # closed by its consumer: close it, in its context
                token = _attach(run)
                try:
                    gen.close()
                finally:
                    _detach(token)
                raise
            except BaseException as exc:  # thrown in by its consumer: pass it on
                thrown = exc
    except StopIteration as stop:
        finish(run, None)
        return stop.value
    except BaseException as exc:
        finish(run, exc)
        raise


def _generator(spec: Spec, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        gen = func(*args, **kwargs)
        run = spec.open(keep=False)
        if run is None:
            return (yield from gen)
        return (yield from _drive(gen, run))

    return wrapper


def _async_generator(spec: Spec, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        agen = func(*args, **kwargs)
        run = spec.open(keep=False)
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = _attach(run) if run is not None else None
                try:
                    if thrown is None:
                        item = await agen.asend(sent)
                    else:
                        error, thrown = thrown, None
                        item = await agen.athrow(error)
                finally:
                    _detach(token)
                try:
                    sent = yield item
                except GeneratorExit:
                    token = _attach(run) if run is not None else None
                    try:
                        await agen.aclose()
                    finally:
                        _detach(token)
                    raise
                except BaseException as exc:
                    thrown = exc
        except StopAsyncIteration:
            if run is not None:
                finish(run, None)
        except BaseException as exc:
            if run is not None:
                finish(run, exc)
            raise

    return wrapper


def decorate(spec: Spec, func: F) -> F:
    """``func`` with a span around each call (or iteration)."""
    if isinstance(func, (staticmethod, classmethod)):
        return cast(F, type(func)(decorate(spec, func.__func__)))
    if inspect.isclass(func) or not callable(func):
        warn_once(f"custom_spans.decorate.{type(func).__name__}",
                  "custom span: %r is not a function; left undecorated", func)
        return func
    bound = spec.for_function(func)
    if inspect.isasyncgenfunction(func):
        return cast(F, _async_generator(bound, func))
    if inspect.iscoroutinefunction(func):
        return cast(F, _async(bound, func))
    if inspect.isgeneratorfunction(func):
        return cast(F, _generator(bound, func))
    return cast(F, _sync(bound, func))
