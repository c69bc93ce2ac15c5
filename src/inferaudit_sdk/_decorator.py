"""``@audited``: one decorator for functions, coroutines, (async) generators and methods.

Decoration does the slow work once: it classifies the function, reads its signature (so a call
finds ``input_ids``/``max_new_tokens``/``model``... by dictionary look-up, never ``inspect``),
and precomputes the span's static attributes. A call then either takes the fast path (the
sampler is certain to drop the span, or the SDK is disabled: no span, no attribute work) or
starts a request span with every start-time attribute in one ``start_span`` call.

Wrappers: plain functions (and so instance methods, which bind the wrapper normally) get a
``functools.wraps`` closure (``async def`` for coroutine functions), about 4x cheaper per call
than a ``wrapt`` proxy; ``inspect.signature`` follows ``__wrapped__``. Generator and async
generator functions, and ``classmethod``/``staticmethod`` objects, get a ``wrapt``
``FunctionWrapper``, which keeps ``inspect.isgeneratorfunction``/``isasyncgenfunction`` true
and binds descriptors correctly, so ``@audited`` stacks with ``@classmethod``/
``@staticmethod`` in either order.

Choices (documented in docs/semantic-conventions.md): the default operation is
``text_completion``; the model is the decorator's ``model``, else a ``str`` ``model`` argument
of the call, else none: the attribute is left out and the span is named after the operation
alone (a function name is not a model); the provider defaults to ``"unknown"``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar, overload

import wrapt
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN

from inferaudit_sdk import _active, _tracing, semconv
from inferaudit_sdk._active import ActiveSpan
from inferaudit_sdk._guard import guarded, swallow
from inferaudit_sdk._request import (
    ARG_NAMES,
    DEFAULT_OPERATION,
    DEFAULT_PROVIDER,
    Spec,
    finish,
    mark_streamed,
    start,
)
from inferaudit_sdk._streaming import AuditedAsyncGenerator, AuditedGenerator

_F = TypeVar("_F", bound=Callable[..., Any])

# Pushed on the fast path so record() inside a sampled-out request does not reach an outer one.
NOOP_REQUEST = ActiveSpan(INVALID_SPAN, semconv.ROLE_REQUEST, False)

_attach = _tracing.attach
_detach = _tracing.detach
_push = _active.push
_pop = _active.pop
_set_span = trace.set_span_in_context
_would_drop = _tracing.would_drop


def _sync_core(spec: Spec) -> Callable[..., Any]:
    """The body of a sync call: ``core(wrapped, instance, args, kwargs)``."""

    def core(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            drop = _would_drop()
        except Exception as fault:  # never an error for the caller: take the normal path
            swallow("audited.sampling", fault)
            drop = False
        if drop:
            atoken = _push(NOOP_REQUEST)
            try:
                return wrapped(*args, **kwargs)
            finally:
                _pop(atoken)
        try:
            state = start(spec, instance, args, kwargs)
        except Exception as fault:
            swallow("audited.start", fault)
            state = None
        if state is None:  # outside the except: a user exception must not chain our fault
            return wrapped(*args, **kwargs)
        ctx = _set_span(state.span)
        token = _attach(ctx)
        atoken = _push(state)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            finish(state, exc=exc)
            raise
        _pop(atoken)
        _detach(token)
        rtype = type(result)
        if rtype is types.GeneratorType:
            guarded("audited.stream", mark_streamed, state)
            return AuditedGenerator(result, state, ctx)  # a function that returns a stream
        if rtype is types.CoroutineType:
            return _awaited(result, state, ctx)  # the work happens when it is awaited
        if rtype is types.AsyncGeneratorType:
            guarded("audited.stream", mark_streamed, state)
            return AuditedAsyncGenerator(result, state, ctx)
        finish(state, result)
        return result

    return core


async def _awaited(coro: Any, state: Any, ctx: Any) -> Any:
    """Await a coroutine that a sync callable returned, under its request span. (Never
    awaited, it never runs: Python warns about the user's coroutine, and no span is sent.)"""
    token = _attach(ctx)
    atoken = _push(state)
    try:
        result = await coro
    except BaseException as exc:
        _pop(atoken)
        _detach(token)
        finish(state, exc=exc)
        raise
    _pop(atoken)
    _detach(token)
    finish(state, result)
    return result


def _coroutine_core(spec: Spec) -> Callable[..., Any]:
    """The body of a coroutine call: ``await core(wrapped, instance, args, kwargs)``."""

    async def core(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            drop = _would_drop()
        except Exception as fault:
            swallow("audited.sampling", fault)
            drop = False
        if drop:
            atoken = _push(NOOP_REQUEST)
            try:
                return await wrapped(*args, **kwargs)
            finally:
                _pop(atoken)
        try:
            state = start(spec, instance, args, kwargs)
        except Exception as fault:
            swallow("audited.start", fault)
            state = None
        if state is None:  # outside the except: a user exception must not chain our fault
            return await wrapped(*args, **kwargs)
        ctx = _set_span(state.span)
        token = _attach(ctx)
        atoken = _push(state)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            finish(state, exc=exc)
            raise
        _pop(atoken)
        _detach(token)
        if type(result) is types.AsyncGeneratorType:
            guarded("audited.stream", mark_streamed, state)
            return AuditedAsyncGenerator(result, state, ctx)
        finish(state, result)
        return result

    return core


def _generator_wrapper(spec: Spec, is_async: bool) -> Callable[..., Any]:
    cls = AuditedAsyncGenerator if is_async else AuditedGenerator

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # The sampling fast path ran already: wrapt asked _enabled() and, when it said no,
        # called the generator function directly without coming here.
        try:
            state = start(spec, instance, args, kwargs)
        except Exception as fault:
            swallow("audited.start", fault)
            state = None
        if state is None:  # outside the except: a user exception must not chain our fault
            return wrapped(*args, **kwargs)
        try:
            gen = wrapped(*args, **kwargs)  # runs no user code, but may fail binding args
        except BaseException as exc:
            finish(state, exc=exc)
            raise
        return cls(gen, state, _set_span(state.span))

    return wrapper


def _enabled() -> bool:
    """wrapt's per-call switch for generator functions: False (call the function directly,
    no proxy work at all) when the span would be dropped."""
    try:
        return not _would_drop()
    except Exception as fault:
        swallow("audited.sampling", fault)
        return True


def _positions(func: Any) -> tuple[dict[str, int], bool]:
    """Positional index of each name in ARG_NAMES, and whether kwargs must be searched."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}, True
    positions: dict[str, int] = {}
    search_kwargs = False
    index = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.name in ARG_NAMES:
                positions[p.name] = index
                if p.kind is p.POSITIONAL_OR_KEYWORD:
                    search_kwargs = True
            index += 1
        elif (p.kind is p.KEYWORD_ONLY and p.name in ARG_NAMES) or p.kind is p.VAR_KEYWORD:
            search_kwargs = True
    return positions, search_kwargs


def _check(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"audited({name}=...) must be a str, got {type(value).__name__}")


def _kind_of(target: Any) -> Any:
    """What to classify: the function itself, or for a callable object (a model wrapper
    class, say) its ``__call__`` method."""
    if inspect.isfunction(target) or inspect.ismethod(target) or isinstance(
            target, functools.partial) or inspect.isbuiltin(target) or isinstance(target, type):
        return target
    call = inspect.getattr_static(type(target), "__call__", None)
    return target.__call__ if inspect.isfunction(call) else target


class _BoundAudited(wrapt.BoundFunctionWrapper):
    """A wrapped method, classmethod or staticmethod as bound on access: pickled (and copied)
    as the attribute it was read from, as a bound method is, not as a proxy (wrapt's refuses:
    ``ProcessPoolExecutor().submit(Obj.s, 3)`` failed only because of the decorator)."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        owner = self._self_instance if self._self_instance is not None else self._self_owner
        return getattr, (owner, self.__name__)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


class _Audited(wrapt.FunctionWrapper):
    """``@audited`` where a wrapt proxy is needed (generator functions, classmethod and
    staticmethod objects): pickled by reference and copied as itself, as a function is."""

    __bound_function_wrapper__ = _BoundAudited

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__qualname__

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


def _decorate(func: Any, options: dict[str, Any]) -> Any:
    target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
    if not callable(target):
        raise TypeError(f"@audited needs a function or method, got {type(func).__name__}")
    kind = _kind_of(target)
    is_agen = inspect.isasyncgenfunction(kind)
    is_gen = inspect.isgeneratorfunction(kind)
    is_coro = inspect.iscoroutinefunction(kind)
    stream = options["stream"]
    positions, search_kwargs = _positions(target)
    spec = Spec(
        operation=options["operation"] or DEFAULT_OPERATION,
        provider=options["provider"] or DEFAULT_PROVIDER,
        model=options["model"],
        route=options["route"],
        model_tier=options["model_tier"],
        stream=bool(stream) if stream is not None else (is_gen or is_agen),
        positions=positions,
        var_kw=search_kwargs,
        stream_inferred=stream is None,
    )
    if is_agen or is_gen:
        return _Audited(func, _generator_wrapper(spec, is_async=is_agen), enabled=_enabled)
    core = _coroutine_core(spec) if is_coro else _sync_core(spec)
    if isinstance(func, (classmethod, staticmethod)):
        # Descriptor objects need wrapt's binding; it passes self/cls as ``instance``.
        return _Audited(func, core)
    # A plain function (also one that will become a method): a closure is ~4x cheaper per
    # call than a wrapt proxy; functools.wraps keeps name, doc, __wrapped__ (so
    # inspect.signature) and, being ``async def`` for coroutines, iscoroutinefunction.
    # Methods bind it normally, so self/cls arrive in ``args`` (``instance`` is None).
    if is_coro:

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await core(func, None, args, kwargs)

        return functools.wraps(func)(async_wrapper)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return core(func, None, args, kwargs)

    return functools.wraps(func)(wrapper)


@overload
def audited(func: _F) -> _F: ...
@overload
def audited(
    func: None = None,
    *,
    model: str | None = None,
    operation: str | None = None,
    provider: str | None = None,
    route: str | None = None,
    model_tier: str | None = None,
    stream: bool | None = None,
) -> Callable[[_F], _F]: ...


def audited(
    func: Any = None,
    *,
    model: str | None = None,
    operation: str | None = None,
    provider: str | None = None,
    route: str | None = None,
    model_tier: str | None = None,
    stream: bool | None = None,
) -> Any:
    """Make each call of ``func`` one request span (``inferaudit.span.role="request"``).

    Works bare (``@audited``) or with options, on sync functions, coroutine functions,
    generator and async generator functions (streaming; ``stream`` is inferred) and methods.
    The span is named ``"{operation} {model}"`` and carries the GenAI attributes, usage
    inferred from the arguments and return value (``record()`` inside the call wins), prompt
    fingerprints, TTFT/TPOT for streams, and the ``gen_ai.server.*`` metrics.

    Thread- and asyncio-safe. Never raises into the caller: instrumentation faults are counted
    (``inferaudit.sdk.errors``) and dropped; the function's own exceptions are recorded on the
    span (status ERROR, ``error.type``) and re-raised as the same object. Passing a non-``str``
    option raises ``TypeError`` at decoration time.
    """
    for name, value in (("model", model), ("operation", operation), ("provider", provider),
                        ("route", route), ("model_tier", model_tier)):
        _check(name, value)
    if stream is not None and not isinstance(stream, bool):
        raise TypeError(f"audited(stream=...) must be a bool, got {type(stream).__name__}")
    options = {"model": model or None, "operation": operation, "provider": provider,
               "route": route, "model_tier": model_tier, "stream": stream}
    if func is None:
        return lambda f: _decorate(f, options)
    return _decorate(func, options)
