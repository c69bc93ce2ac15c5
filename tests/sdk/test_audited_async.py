"""@audited on coroutines and async generators: cancellation, close, tasks, context."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import inferaudit_sdk as ia
from inferaudit_sdk import _active, semconv


@pytest.fixture(autouse=True)
def _no_context_errors(caplog):
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield
    bad = [r for r in caplog.records if "detach" in r.getMessage().lower()]
    assert not bad, bad


def _one(exporter):
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


async def test_coroutine_span_and_usage(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    async def handler(input_ids, max_new_tokens=3):
        await asyncio.sleep(0)
        return [7] * max_new_tokens

    assert inspect.iscoroutinefunction(handler)
    assert await handler([1, 2], max_new_tokens=4) == [7, 7, 7, 7]
    span = _one(exporter)
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 2
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert span.attributes[semconv.GEN_AI_REQUEST_STREAM] is False


async def test_coroutine_exception_and_cancellation(otel):
    exporter, _ = otel
    err = ValueError("bad")

    @ia.audited
    async def failing():
        await asyncio.sleep(0)
        raise err

    @ia.audited
    async def slow():
        await asyncio.sleep(10)

    with pytest.raises(ValueError) as info:
        await failing()
    assert info.value is err
    task = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s_fail, s_cancel = exporter.get_finished_spans()
    assert s_fail.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert s_cancel.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"
    assert s_cancel.status.status_code == StatusCode.ERROR


async def test_async_generator_exhaustion_ttft_tokens(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    async def stream(prompt_token_ids):
        await asyncio.sleep(0.01)
        for tok in (4, 5, 6):
            yield tok
            await asyncio.sleep(0)

    assert inspect.isasyncgenfunction(stream)
    out = [c async for c in stream([1, 2, 3, 4])]
    assert out == [4, 5, 6]
    a = _one(exporter).attributes
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 4
    assert a[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] >= 10_000_000
    assert a[semconv.REQUEST_STREAM_CHUNKS] == 3
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS in a


async def test_async_break_and_gc_end_span(otel):
    exporter, _ = otel

    @ia.audited
    async def stream():
        for i in range(100):
            yield i

    agen = stream()
    async for c in agen:
        if c == 1:
            break
    assert exporter.get_finished_spans() == ()  # still referenced: may be resumed
    del agen
    gc.collect()
    span = _one(exporter)
    assert span.attributes[semconv.REQUEST_STREAM_CHUNKS] == 2
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_aclose_and_athrow(otel):
    exporter, _ = otel
    finally_spans = []

    @ia.audited
    async def stream():
        try:
            yield 1
            try:
                yield 2
            except KeyError:
                yield "caught"
            yield 3
        finally:
            finally_spans.append(trace.get_current_span().get_span_context().span_id)

    a = stream()
    assert await a.__anext__() == 1
    await a.aclose()
    b = stream()
    await b.__anext__()
    await b.__anext__()
    assert await b.athrow(KeyError("k")) == "caught"
    with pytest.raises(ZeroDivisionError):
        await b.athrow(ZeroDivisionError())
    s_a, s_b = exporter.get_finished_spans()
    assert semconv.ERROR_TYPE not in s_a.attributes
    assert s_b.attributes[semconv.ERROR_TYPE] == "ZeroDivisionError"
    assert finally_spans == [s_a.context.span_id, s_b.context.span_id]


async def test_async_generator_cancelled_mid_stream(otel):
    exporter, _ = otel
    started = asyncio.Event()

    @ia.audited
    async def stream():
        yield 0
        started.set()
        await asyncio.sleep(10)
        yield 1

    async def consume():
        async for _ in stream():
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = _one(exporter)
    assert span.attributes[semconv.ERROR_TYPE].endswith("CancelledError")
    assert span.attributes[semconv.REQUEST_STREAM_CHUNKS] == 1


async def test_async_consumer_context_unchanged_and_children_parented(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    async def stream():
        for i in range(3):
            with tracer.start_as_current_span("step"):
                await asyncio.sleep(0)
            yield i

    with tracer.start_as_current_span("consumer") as consumer:
        agen = stream()
        async for _ in agen:
            assert trace.get_current_span() is consumer
            assert _active.current() is None
    spans = exporter.get_finished_spans()
    req = next(s for s in spans if s.name == "text_completion m")
    steps = [s for s in spans if s.name == "step"]
    assert len(steps) == 3 and all(s.parent.span_id == req.context.span_id for s in steps)


async def test_async_generator_consumed_by_other_tasks(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    async def stream():
        for i in range(4):
            with tracer.start_as_current_span("step"):
                await asyncio.sleep(0)
            yield i

    agen = stream()
    got = [await asyncio.create_task(agen.__anext__()) for _ in range(4)]
    with pytest.raises(StopAsyncIteration):
        await asyncio.create_task(agen.__anext__())
    assert got == [0, 1, 2, 3]
    spans = exporter.get_finished_spans()
    req = next(s for s in spans if s.name == "text_completion m")
    steps = [s for s in spans if s.name == "step"]
    assert len(steps) == 4 and all(s.parent.span_id == req.context.span_id for s in steps)


def _requests(exporter):
    return [s for s in exporter.get_finished_spans() if s.name.startswith("text_completion")]


async def test_abandoned_stream_cleanup_runs_in_the_request_and_ends_once(otel, otel_provider):
    """An early ``break`` abandons the stream: the span ends at once (exactly once), and the
    generator's cleanup (``finally``, which may await) still runs inside the request's trace."""
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")
    cleaned = asyncio.Event()

    @ia.audited(model="m")
    async def stream():
        try:
            for i in range(100):
                yield i
        finally:
            await asyncio.sleep(0)
            with tracer.start_as_current_span("cleanup"):
                pass
            cleaned.set()

    async for c in stream():
        if c == 2:
            break
    gc.collect()
    (req,) = _requests(exporter)  # ended as soon as the stream was dropped
    assert req.attributes[semconv.REQUEST_STREAM_CHUNKS] == 3
    await asyncio.wait_for(cleaned.wait(), 5)
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    (cleanup,) = [s for s in exporter.get_finished_spans() if s.name == "cleanup"]
    assert cleanup.parent is not None and cleanup.parent.span_id == req.context.span_id
    assert len(_requests(exporter)) == 1
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_aclose_after_break_then_gc_ends_once(otel):
    exporter, _ = otel
    closes = []

    @ia.audited(model="m")
    async def stream():
        try:
            for i in range(10):
                yield i
        finally:
            closes.append(1)

    agen = stream()
    async for c in agen:
        if c == 1:
            break
    await agen.aclose()
    await agen.aclose()  # a second close is a no-op, like a plain async generator's
    del agen
    gc.collect()
    await asyncio.sleep(0)
    assert len(_requests(exporter)) == 1
    assert closes == [1]


def test_stream_abandoned_until_the_loop_ends_is_ended_once(otel):
    """A stream kept alive by a reference cycle until asyncio.run() finishes: the loop's
    shutdown closes it, and the request span still ends exactly once."""
    exporter, _ = otel
    closes = []

    @ia.audited(model="m")
    async def stream():
        try:
            for i in range(10):
                yield i
        finally:
            closes.append(1)

    class Holder:
        pass

    async def main():
        h = Holder()
        h.agen = stream()
        h.me = h
        await h.agen.__anext__()

    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()
    gc.collect()
    assert len(_requests(exporter)) == 1
    assert closes == [1]


async def test_callables_that_return_awaitables_or_streams_are_timed_when_awaited(otel):
    """Not every async callable is an ``async def`` function: a callable object with an
    ``async def __call__``, or a plain function that returns a coroutine or an async
    generator. The span covers the awaited work (or the stream), not the call that made it."""
    exporter, _ = otel

    class AsyncModel:
        async def __call__(self, input_ids):
            await asyncio.sleep(0.02)
            return [7, 8]

    async def work():
        await asyncio.sleep(0.02)
        return [1, 2, 3]

    async def chunks():
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    by_object = ia.audited(model="a")(AsyncModel())
    assert inspect.iscoroutinefunction(by_object)

    @ia.audited(model="b")
    def returns_coroutine():
        return work()

    @ia.audited(model="c")
    def returns_stream():
        return chunks()

    assert await by_object([1, 2, 3]) == [7, 8]
    assert await returns_coroutine() == [1, 2, 3]
    assert [c async for c in returns_stream()] == [0, 1, 2]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    a, b, c = (spans[f"text_completion {m}"] for m in "abc")
    assert a.end_time - a.start_time >= 15_000_000
    assert a.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert a.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert b.end_time - b.start_time >= 15_000_000
    assert b.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert c.attributes[semconv.REQUEST_STREAM_CHUNKS] == 3
