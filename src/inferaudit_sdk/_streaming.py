"""Streaming request spans: wrappers around a (sync or async) generator of chunks.

The request span's context (and the :mod:`~inferaudit_sdk._active` state) is made current
only while the generator's own code runs, i.e. around each ``next``/``send``/``throw``/
``close`` (``__anext__``/``asend``/``athrow``/``aclose``), and attach and detach happen in the
same call frame. So the consumer's context is unchanged between chunks, the consumer may iterate
from any thread or asyncio task, and a ``break`` can never leave a context attached. What the
generator's body made current before it yielded (a ``with ia.batch()`` block, a span of its
own) is current again when it resumes: the context and active span are taken at each yield and
attached at the next step, as a plain generator keeps them across its yields (resuming with the
request's again lost the batch after the first chunk, and parented the body's later spans to
the request). A server may run each step in a fresh ``copy_context()`` (Starlette's thread
pool): a ``with ia.batch()`` block held across yields then exits in another Context than it
entered, and puts back by value what it replaced (``_active.put_back``).

TTFT and chunk times are taken right where the chunk leaves the user's generator
(``perf_counter_ns``). The span ends exactly once: on exhaustion, on an exception (raised or
thrown in), on ``close``/``aclose``, on task cancellation (``CancelledError`` is an exception
of the generator's frame), or when an unfinished wrapper is garbage collected (an early
``break``: CPython frees the wrapper right away). A ``close``/``aclose`` that Python refuses
because a step is running in another thread or task changes nothing: the stream goes on.

An abandoned async stream cannot be closed from ``__del__`` (closing needs the event loop),
so there the span ends at once and the wrapped generator's ``aclose()`` is scheduled on the
loop that iterated it, with the request's context and active span: its cleanup (``finally``)
runs like asyncio's own finaliser would run it, but its child spans stay in the request's trace
and its batches link to the request (not to whichever request dropped the stream).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from inferaudit_sdk import _active, _tracing
from inferaudit_sdk._guard import swallow
from inferaudit_sdk._request import RequestSpan, finish

_attach = _tracing.attach
_detach = _tracing.detach
_get_context = _tracing.get_context
_current = _active.current


def _alive(gen: Any) -> bool:
    """Whether a (sync or async) generator that just raised can still run: a step refused
    before its frame ran (a non-None ``send`` to a fresh generator, one already running)
    leaves it as it was, and a plain generator stays usable; one whose own code raised is
    finished. Not a generator (an iterator a function returned): taken as finished."""
    frame = getattr(gen, "gi_frame", None)
    if frame is None:
        frame = getattr(gen, "ag_frame", None)
    return frame is not None
_push = _active.push
_pop = _active.pop


class AuditedGenerator:
    """A generator that times and counts the chunks of the generator it wraps."""

    __slots__ = ("__weakref__", "_ctx", "_cur", "_gen", "_state")

    def __init__(self, gen: Any, state: RequestSpan, ctx: Any) -> None:
        self._gen = gen
        self._state = state
        self._ctx = ctx  # the context the body resumes in: the request's, then its own
        self._cur: Any = state  # the active span it resumes with

    def __iter__(self) -> AuditedGenerator:
        return self

    def __next__(self) -> Any:
        # _resume(self._gen.__next__) written out: one Python frame less per chunk.
        state = self._state
        if state.done:
            return self._gen.__next__()
        token = _attach(self._ctx)
        atoken = _push(self._cur)
        try:
            chunk = self._gen.__next__()
        except StopIteration:
            _pop(atoken)
            _detach(token)
            finish(state, has_result=False)
            raise
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            if _alive(self._gen):  # refused before it ran (a send to a fresh one): usable
                raise
            finish(state, exc=exc)
            raise
        self._ctx = _get_context()  # what the body made current: its again at the next step
        self._cur = _current()
        _pop(atoken)
        _detach(token)
        try:
            state.on_chunk(chunk)
        except Exception as fault:
            swallow("stream.chunk", fault)
        return chunk

    def send(self, value: Any) -> Any:
        return self._resume(self._gen.send, value)

    def throw(self, *args: Any) -> Any:
        return self._resume(self._gen.throw, *args)

    def _resume(self, step: Any, *args: Any) -> Any:
        """Run one step of the wrapped generator inside the request (what ``__next__`` does)."""
        state = self._state
        if state.done:
            return step(*args)
        token = _attach(self._ctx)
        atoken = _push(self._cur)
        try:
            chunk = step(*args)
        except StopIteration:
            _pop(atoken)
            _detach(token)
            finish(state, has_result=False)
            raise
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            if _alive(self._gen):  # refused before it ran (a send to a fresh one): usable
                raise
            finish(state, exc=exc)
            raise
        self._ctx = _get_context()  # what the body made current: its again at the next step
        self._cur = _current()
        _pop(atoken)
        _detach(token)
        try:
            state.on_chunk(chunk)
        except Exception as fault:
            swallow("stream.chunk", fault)
        return chunk

    def close(self) -> None:
        state = self._state
        if state.done or getattr(self._gen, "gi_running", False):
            # running in another thread: Python refuses the close and the stream goes on
            self._gen.close()
            return
        token = _attach(self._ctx)
        atoken = _push(self._cur)
        try:
            self._gen.close()
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            finish(state, exc=exc)
            raise
        _pop(atoken)
        _detach(token)
        finish(state, has_result=False)

    def __getattr__(self, name: str) -> Any:
        # gi_frame, gi_running, gi_code, ... of the wrapped generator.
        return getattr(self._gen, name)

    def __del__(self) -> None:
        try:
            if not self._state.done:
                self.close()  # the generator's cleanup runs inside the request
        except Exception as fault:
            if not self._state.done:
                swallow("stream.gc", fault)  # ours: close() failed before ending the span
                return
            # The user's cleanup raised (close() recorded it on the span): Python reports it
            # through sys.unraisablehook, as for a plain generator collected mid-stream.
            raise


# aclose() tasks scheduled for abandoned streams (the loop keeps only weak references).
_closing: set[Any] = set()


def _running_loop() -> Any:
    asyncio = sys.modules.get("asyncio")  # an async generator is running: asyncio or not
    return asyncio.events._get_running_loop() if asyncio is not None else None


async def _aclose_in(agen: Any, ctx: Any, cur: Any) -> None:
    token = _attach(ctx)
    atoken = _push(cur)
    try:
        await agen.aclose()
    finally:
        _pop(atoken)
        _detach(token)


def _close_later(loop: Any, agen: Any, ctx: Any, cur: Any) -> None:
    """Schedule ``agen.aclose()`` on ``loop`` (from any thread) with ``ctx`` attached and
    ``cur`` the active span, as at the stream's next step (the task would otherwise copy the
    context of whatever request happened to drop the stream)."""

    def start() -> None:
        task = loop.create_task(_aclose_in(agen, ctx, cur))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    if not loop.is_closed():
        # Closed meanwhile: asyncio's own finaliser hook closes the generator instead.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(start)


class AuditedAsyncGenerator:
    """An async generator that times and counts the chunks of the one it wraps."""

    __slots__ = ("__weakref__", "_agen", "_ctx", "_cur", "_loop", "_state")

    def __init__(self, agen: Any, state: RequestSpan, ctx: Any) -> None:
        self._agen = agen
        self._state = state
        self._ctx = ctx  # the context the body resumes in: the request's, then its own
        self._cur: Any = state  # the active span it resumes with
        self._loop: Any = None  # the loop that first ran the generator (to close it later)

    def __aiter__(self) -> AuditedAsyncGenerator:
        return self

    def __anext__(self) -> Any:
        return self._resume(self._agen.asend, None)

    async def asend(self, value: Any) -> Any:
        return await self._resume(self._agen.asend, value)

    async def athrow(self, *args: Any) -> Any:
        return await self._resume(self._agen.athrow, *args)

    async def _resume(self, step: Any, *args: Any) -> Any:
        """Await one step of the wrapped async generator inside the request."""
        state = self._state
        if state.done:
            return await step(*args)
        if self._loop is None:
            self._loop = _running_loop()
        token = _attach(self._ctx)
        atoken = _push(self._cur)
        try:
            chunk = await step(*args)
        except StopAsyncIteration:
            _pop(atoken)
            _detach(token)
            finish(state, has_result=False)
            raise
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            if _alive(self._agen):  # refused before it ran: usable
                raise
            finish(state, exc=exc)
            raise
        self._ctx = _get_context()  # what the body made current: its again at the next step
        self._cur = _current()
        _pop(atoken)
        _detach(token)
        try:
            state.on_chunk(chunk)
        except Exception as fault:
            swallow("stream.chunk", fault)
        return chunk

    async def aclose(self) -> None:
        state = self._state
        if state.done or getattr(self._agen, "ag_running", False):
            # a step is running in another task: Python refuses the close, the stream goes on
            await self._agen.aclose()
            return
        token = _attach(self._ctx)
        atoken = _push(self._cur)
        try:
            await self._agen.aclose()
        except BaseException as exc:
            _pop(atoken)
            _detach(token)
            finish(state, exc=exc)
            raise
        _pop(atoken)
        _detach(token)
        finish(state, has_result=False)

    def __getattr__(self, name: str) -> Any:
        # ag_frame, ag_running, ag_code, ... of the wrapped async generator.
        return getattr(self._agen, name)

    def __del__(self) -> None:
        # Cannot await aclose() here: the span ends now, the cleanup runs soon on the loop.
        try:
            state = self._state
            if not state.done:
                finish(state, has_result=False)
                if self._loop is not None:
                    _close_later(self._loop, self._agen, self._ctx, self._cur)
        except Exception as fault:
            swallow("stream.gc", fault)
