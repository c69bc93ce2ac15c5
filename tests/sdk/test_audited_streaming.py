"""@audited on generator functions: timing at the source, exact counts, one end per span."""

from __future__ import annotations

import gc
import logging
import threading
import time

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import inferaudit_sdk as ia
from inferaudit_sdk import _active, _guard, semconv


@pytest.fixture(autouse=True)
def _no_context_errors(caplog):
    """No test here may log OpenTelemetry's 'Failed to detach context'."""
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield
    bad = [r for r in caplog.records if "detach" in r.getMessage().lower()]
    assert not bad, bad


def _one(exporter):
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_exhaustion_ends_once_with_ttft_tpot_and_exact_tokens(otel_env):
    exporter = otel_env.exporter

    @ia.audited(model="m")
    def stream(input_ids):
        time.sleep(0.02)  # prefill
        for tok in (11, 12, 13, 14, 15):
            yield tok
            time.sleep(0.005)

    gen = stream([1, 2, 3])
    assert exporter.get_finished_spans() == ()
    assert list(gen) == [11, 12, 13, 14, 15]
    with pytest.raises(StopIteration):
        next(gen)
    span = _one(exporter)
    a = span.attributes
    assert a[semconv.GEN_AI_REQUEST_STREAM] is True
    assert a[semconv.REQUEST_STREAM_CHUNKS] == 5
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert a[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] >= 20_000_000  # lower bound: the sleep
    # the standard spelling (seconds) says the same
    assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == pytest.approx(
        a[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] / 1e9)
    assert a[semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS] >= 5_000_000
    assert span.status.status_code == StatusCode.UNSET
    m = otel_env.metrics()
    assert sum(p.count for p in m[semconv.METRIC_SERVER_TIME_TO_FIRST_TOKEN]) == 1
    assert sum(p.count for p in m[semconv.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN]) == 1
    ttft = m[semconv.METRIC_SERVER_TIME_TO_FIRST_TOKEN][0]
    assert tuple(ttft.explicit_bounds) == semconv.BUCKETS_TIME_TO_FIRST_TOKEN_S
    assert ttft.sum == pytest.approx(a[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] / 1e9)


def test_chunk_token_counting_lists_arrays_and_strings(otel):
    exporter, _ = otel

    @ia.audited
    def ids():
        yield [1, 2, 3]
        yield np.array([4, 5], dtype=np.int32)
        yield 6

    @ia.audited
    def text():
        yield "hello "
        yield "world"

    @ia.audited
    def text_recorded():
        yield "a"
        yield "b"
        yield "c"
        ia.record(output_tokens=7)

    list(ids())
    list(text())
    list(text_recorded())
    s_ids, s_text, s_rec = exporter.get_finished_spans()
    assert s_ids.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 6
    assert s_ids.attributes[semconv.REQUEST_STREAM_CHUNKS] == 3
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS in s_ids.attributes
    # Text chunks are never counted as tokens.
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in s_text.attributes
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS not in s_text.attributes
    assert s_text.attributes[semconv.REQUEST_STREAM_CHUNKS] == 2
    # ...but record() gives the count, and TPOT follows from it.
    assert s_rec.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS in s_rec.attributes


def test_torch_tensor_chunks_counted_exactly(otel):
    torch = pytest.importorskip("torch")
    exporter, _ = otel

    @ia.audited
    def stream():
        for _ in range(4):
            yield torch.tensor([[5], [6]])  # one new token for each of 2 sequences

    list(stream())
    span = _one(exporter)
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 8


def test_early_break_ends_span_and_restores_context(otel):
    exporter, _ = otel
    closed = []

    @ia.audited(model="m")
    def stream():
        try:
            yield from range(100)
        finally:
            closed.append(trace.get_current_span().get_span_context().span_id)

    for chunk in stream():
        if chunk == 2:
            break
    span = _one(exporter)
    assert span.attributes[semconv.REQUEST_STREAM_CHUNKS] == 3
    assert span.status.status_code == StatusCode.UNSET
    assert semconv.ERROR_TYPE not in span.attributes
    # The generator's finally ran with the request span current (closed through the wrapper).
    assert closed == [span.context.span_id]
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert _active.current() is None


def test_close_ends_span(otel):
    exporter, _ = otel

    @ia.audited
    def stream():
        yield 1
        yield 2

    g = stream()
    next(g)
    g.close()
    span = _one(exporter)
    assert span.attributes[semconv.REQUEST_STREAM_CHUNKS] == 1
    g.close()  # closing again is harmless
    assert len(exporter.get_finished_spans()) == 1


def test_gc_of_unstarted_and_partial_generators_ends_spans(otel):
    exporter, _ = otel

    @ia.audited
    def stream():
        yield 1
        yield 2

    g = stream()
    del g
    g2 = stream()
    next(g2)
    g2 = None
    gc.collect()
    assert len(exporter.get_finished_spans()) == 2


def test_exception_in_generator_recorded_and_reraised(otel):
    exporter, _ = otel
    err = RuntimeError("decode failed")

    @ia.audited
    def stream():
        yield 1
        raise err

    g = stream()
    assert next(g) == 1
    with pytest.raises(RuntimeError) as info:
        next(g)
    assert info.value is err
    span = _one(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "RuntimeError"


def test_throw_caught_continues_and_uncaught_ends_with_error(otel):
    exporter, _ = otel

    @ia.audited
    def stream():
        try:
            yield 1
        except KeyError:
            yield "recovered"
        yield 3

    g = stream()
    next(g)
    assert g.throw(KeyError("k")) == "recovered"
    assert exporter.get_finished_spans() == ()
    with pytest.raises(ValueError):
        g.throw(ValueError("v"))
    span = _one(exporter)
    assert span.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_send_passes_values(otel):
    exporter, _ = otel

    @ia.audited
    def echo():
        got = yield 0
        while got is not None:
            got = yield got * 2

    g = echo()
    assert next(g) == 0
    assert g.send(5) == 10
    with pytest.raises(StopIteration):
        g.send(None)
    assert _one(exporter).attributes[semconv.REQUEST_STREAM_CHUNKS] == 2


def test_consumer_context_unchanged_after_each_next_and_child_parenting(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    def stream():
        for i in range(3):
            with tracer.start_as_current_span(f"step{i}"):
                ia.record(extra_step=i)
            yield i

    with tracer.start_as_current_span("consumer") as consumer:
        g = stream()
        for _ in g:
            assert trace.get_current_span() is consumer
            assert _active.current() is None
    spans = {s.name: s for s in exporter.get_finished_spans()}
    req = spans["text_completion m"]
    assert req.parent.span_id == spans["consumer"].context.span_id
    for i in range(3):
        assert spans[f"step{i}"].parent.span_id == req.context.span_id
    assert req.attributes["extra_step"] == 2


def test_consumed_from_another_thread(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    def stream():
        for i in range(4):
            with tracer.start_as_current_span("inner"):
                pass
            yield i

    g = stream()
    first = next(g)  # first chunk here, the rest in another thread
    out = [first]
    errors = []

    def consume():
        try:
            out.extend(g)
            assert trace.get_current_span() is trace.INVALID_SPAN
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    t.join()
    assert not errors and out == [0, 1, 2, 3]
    spans = exporter.get_finished_spans()
    req = next(s for s in spans if s.name == "text_completion m")
    assert all(s.parent.span_id == req.context.span_id for s in spans if s.name == "inner")
    assert len([s for s in spans if s.name == "inner"]) == 4


def test_function_returning_a_generator_is_a_stream(otel):
    exporter, _ = otel

    def gen():
        yield from (1, 2, 3)

    @ia.audited(stream=True)
    def handler():
        return gen()

    assert list(handler()) == [1, 2, 3]
    span = _one(exporter)
    assert span.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[semconv.REQUEST_STREAM_CHUNKS] == 3


def test_broken_chunk_bookkeeping_never_reaches_consumer(otel):
    exporter, _ = otel

    class Weird(list):
        def __len__(self):
            raise RuntimeError("len exploded")

    @ia.audited
    def stream():
        yield Weird([1, 2])
        yield 3

    assert len(list(stream())) == 2
    assert len(exporter.get_finished_spans()) == 1
    assert _guard.error_counts()  # counted, not raised


class Streamer:
    @ia.audited(model="s")
    def stream(self, input_ids, max_new_tokens=2):
        yield from range(max_new_tokens)

    @ia.audited(model="s")
    async def astream(self, input_ids, max_new_tokens=2):
        for i in range(max_new_tokens):
            yield i

    @ia.audited(model="s")
    @staticmethod
    def sstream(input_ids, max_new_tokens=2):
        yield from range(max_new_tokens)


async def test_generator_methods_read_arguments_at_the_right_positions(otel):
    exporter, _ = otel
    s = Streamer()
    assert list(s.stream([1, 2, 3], 4)) == [0, 1, 2, 3]
    assert [c async for c in s.astream([1], 3)] == [0, 1, 2]
    assert list(Streamer.sstream([1, 2], 1)) == [0]
    got = [(sp.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS],
            sp.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
            sp.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS])
           for sp in exporter.get_finished_spans()]
    assert got == [(3, 4, 4), (1, 3, 3), (2, 1, 1)]


def test_single_chunk_stream_has_ttft_but_no_tpot(otel):
    exporter, _ = otel

    @ia.audited
    def stream():
        yield [1, 2, 3, 4]

    list(stream())
    a = _one(exporter).attributes
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS in a
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS not in a


def test_failing_cleanup_of_an_abandoned_stream_is_the_users_error_not_ours(otel, monkeypatch):
    """A stream dropped early whose ``finally`` raises: recorded on the span, and reported
    the way Python reports it for a plain generator (the unraisable hook), not counted as an
    instrumentation fault."""
    import sys

    exporter, _ = otel
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    @ia.audited(model="m")
    def stream():
        try:
            yield 1
            yield 2
        finally:
            raise OSError("cleanup failed")

    g = stream()
    next(g)
    del g
    gc.collect()
    span = _one(exporter)
    assert span.attributes[semconv.ERROR_TYPE] == "OSError"
    assert "stream.gc" not in _guard.error_counts()
    assert [type(u.exc_value) for u in unraisable] == [OSError]


def test_a_failed_stream_records_its_duration_with_error_type_and_no_ttft_or_tpot(otel_env):
    # GenAI conventions: TTFT and TPOT describe successful responses; of the request metrics
    # only the duration carries error.type (token usage has no such attribute).
    @ia.audited(model="m")
    def stream(input_ids):
        yield 1
        yield 2
        yield 3
        raise RuntimeError("decode failed")

    g = stream([7, 8])
    with pytest.raises(RuntimeError):
        list(g)
    span = _one(otel_env.exporter)
    assert semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS in span.attributes  # the span keeps its own
    m = otel_env.metrics()
    assert semconv.METRIC_SERVER_TIME_TO_FIRST_TOKEN not in m
    assert semconv.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN not in m
    (duration,) = m[semconv.METRIC_SERVER_REQUEST_DURATION]
    assert duration.attributes[semconv.ERROR_TYPE] == "RuntimeError"
    tokens = m[semconv.METRIC_CLIENT_TOKEN_USAGE]
    assert tokens and all(semconv.ERROR_TYPE not in p.attributes for p in tokens)


def test_what_the_body_made_current_is_current_again_after_each_yield(otel, otel_provider):
    # One with-block over the stream gave one batch span per chunk, and record() after the
    # first yield landed on the request; a span the body opened around a yield lost its
    # children to the request.
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    def stream(n):
        with ia.batch(batch_size=1) as b:
            for i in range(n):
                b.record(padded_tokens=10 + i)
                with tracer.start_as_current_span(f"step{i}"):
                    yield i
                    with tracer.start_as_current_span(f"after{i}"):
                        pass

    with tracer.start_as_current_span("consumer") as consumer:
        for _ in stream(3):
            assert trace.get_current_span() is consumer  # the consumer's context, untouched
            assert _active.current() is None
    spans = {s.name: s for s in exporter.get_finished_spans()}
    batches = [s for s in spans.values() if s.attributes.get(semconv.SPAN_ROLE) == "batch"]
    assert len(batches) == 1
    assert batches[0].attributes[semconv.BATCH_PADDED_TOKENS] == 12  # the last record()
    for i in range(3):
        assert spans[f"after{i}"].parent.span_id == spans[f"step{i}"].context.span_id
        assert spans[f"step{i}"].parent.span_id == batches[0].context.span_id


async def test_an_async_body_keeps_its_context_across_yields_too(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    async def astream(n):
        with tracer.start_as_current_span("body"):
            for i in range(n):
                yield i
                with tracer.start_as_current_span(f"after{i}"):
                    pass

    assert [c async for c in astream(2)] == [0, 1]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    for i in range(2):
        assert spans[f"after{i}"].parent.span_id == spans["body"].context.span_id


def test_closing_mid_block_ends_the_bodys_spans_inside_it(otel, otel_provider):
    exporter, _ = otel

    @ia.audited(model="m")
    def stream():
        with ia.batch(batch_size=1):
            yield 1
            yield 2

    g = stream()
    assert next(g) == 1
    g.close()
    names = sorted(s.attributes.get(semconv.SPAN_ROLE) for s in exporter.get_finished_spans())
    assert names == ["batch", "request"]
    assert _active.current() is None and trace.get_current_span() is trace.INVALID_SPAN


def test_a_step_refused_before_the_generator_ran_leaves_the_stream_going(otel):
    # A non-None send() to a fresh generator raises TypeError and leaves a plain generator
    # usable; the span had ended as ERROR, and the chunks that followed were not counted.
    exporter, _ = otel

    @ia.audited(model="m")
    def stream():
        yield 1
        yield 2
        yield 3

    g = stream()
    with pytest.raises(TypeError):
        g.send("x")
    assert exporter.get_finished_spans() == ()
    assert list(g) == [1, 2, 3]
    span = _one(exporter)
    assert span.status.status_code != StatusCode.ERROR
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


async def test_an_async_step_refused_before_it_ran_leaves_the_stream_going(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    async def astream():
        yield 1
        yield 2

    g = astream()
    with pytest.raises(TypeError):
        await g.asend("x")
    assert [c async for c in g] == [1, 2]
    span = _one(exporter)
    assert span.status.status_code != StatusCode.ERROR


def test_a_block_held_across_yields_closes_when_each_step_runs_in_a_fresh_context(
        otel, otel_provider):
    # Starlette's iterate_in_threadpool runs each next() in a worker thread under a fresh
    # copy_context(): the batch block's tokens were made in step 1's Context and reset in
    # step 3's, the resets raised, and the ended batch stayed current (record() after it was
    # lost, later spans parented to it, two batch.exit faults).
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")
    after: list[object] = []

    @ia.audited(model="m")
    def stream():
        with ia.batch(batch_size=1):
            yield 1
            yield 2
        after.append(_active.current())
        with tracer.start_as_current_span("after_batch"):
            pass
        yield 3

    gen = stream()
    chunks = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        while True:
            ctx = contextvars.copy_context()
            try:
                chunks.append(pool.submit(ctx.run, next, gen).result())
            except StopIteration:
                break
    assert chunks == [1, 2, 3]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request = spans["text_completion m"]
    assert spans["after_batch"].parent.span_id == request.context.span_id
    assert spans["batch m"].parent.span_id == request.context.span_id
    assert after[0] is not None and after[0].span.get_span_context() == request.context
    assert _guard.error_counts() == {}


async def test_an_abandoned_async_streams_cleanup_runs_as_its_own_request(otel):
    # The cleanup scheduled for an async stream dropped mid-way ran with the request's OTel
    # context but the active span of whichever request dropped it: its record() and batch
    # went to that other request.
    import asyncio

    exporter, _ = otel
    seen = []

    @ia.audited(model="inner")
    async def astream():
        try:
            yield 1
            yield 2
        finally:
            seen.append(_active.current())
            with ia.batch(batch_size=1):
                pass

    @ia.audited(model="handler")
    async def handler():
        async for _ in astream():
            break  # the wrapper is freed here and its aclose() scheduled
        await asyncio.sleep(0.02)

    await handler()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    inner = spans["text_completion inner"]
    assert seen[0] is not None and seen[0].span.get_span_context() == inner.context
    assert [link.context.span_id for link in spans["batch inner"].links] == [
        inner.context.span_id]


def test_a_close_refused_while_another_thread_runs_the_stream_leaves_it_going(otel):
    # close() from another thread while a step runs is refused by Python (ValueError) and the
    # stream goes on; the span had already ended as an error with the first chunk only.
    exporter, _ = otel
    running = threading.Event()

    @ia.audited(model="m")
    def stream():
        yield 1
        running.set()
        time.sleep(0.05)
        yield 2
        yield 3

    g = stream()
    assert next(g) == 1
    got = []
    t = threading.Thread(target=lambda: got.append(next(g)))
    t.start()
    running.wait()
    with pytest.raises(ValueError):
        g.close()
    t.join()
    assert got + list(g) == [1, 2, 3][1:]
    span = _one(exporter)
    assert span.status.status_code != StatusCode.ERROR
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


async def test_an_aclose_refused_while_another_task_runs_the_stream_leaves_it_going(otel):
    import asyncio

    exporter, _ = otel

    @ia.audited(model="m")
    async def astream():
        yield 1
        await asyncio.sleep(0.03)
        yield 2
        yield 3

    g = astream()
    assert await g.__anext__() == 1
    step = asyncio.ensure_future(g.__anext__())
    await asyncio.sleep(0.005)
    with pytest.raises(RuntimeError):
        await g.aclose()
    assert [await step] + [c async for c in g] == [2, 3]
    span = _one(exporter)
    assert span.status.status_code != StatusCode.ERROR
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
