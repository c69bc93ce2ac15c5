"""batch(): batch spans linked to their member requests, unbatched and batched serving."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import StatusCode

import inferaudit_sdk as ia
from inferaudit_sdk import _active, _guard, semconv


def _by_role(exporter):
    out = {"request": [], "batch": []}
    for s in exporter.get_finished_spans():
        out[s.attributes[semconv.SPAN_ROLE]].append(s)
    return out


def test_unbatched_batch_is_child_and_single_member(otel):
    exporter, _ = otel

    @ia.audited(model="gpt2", provider="acme")
    def handler():
        with ia.batch() as b:
            assert _active.current().role == semconv.ROLE_BATCH
            assert ia.current_request() is not None
            ia.record(input_tokens=5, padded_tokens=8)
            b.record(output_tokens=3)
        assert _active.current().role == semconv.ROLE_REQUEST
        return None

    handler()
    spans = _by_role(exporter)
    (req,), (bat,) = spans["request"], spans["batch"]
    assert bat.name == "batch gpt2"
    assert bat.parent.span_id == req.context.span_id
    assert [link.context.span_id for link in bat.links] == [req.context.span_id]
    a = bat.attributes
    assert a[semconv.BATCH_SIZE] == 1
    assert a[semconv.BATCH_INPUT_TOKENS] == 5
    assert a[semconv.BATCH_PADDED_TOKENS] == 8
    assert a[semconv.BATCH_OUTPUT_TOKENS] == 3
    assert a[semconv.BATCH_PADDING_RATIO] == pytest.approx(1 - 5 / 8)
    assert a[semconv.BATCH_MODEL] == "gpt2"
    assert a[semconv.BATCH_OPERATION] == req.attributes[semconv.GEN_AI_OPERATION_NAME]
    # no gen_ai.* identity on a batch: a GenAI-aware backend would count it as one more
    # inference request beside the request itself
    assert not [k for k in a if k.startswith("gen_ai.")]
    # Batch tokens do not leak into the request's usage.
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in req.attributes


def test_batch_without_a_model_leaves_the_model_out(otel):
    exporter, _ = otel

    @ia.audited
    def handler():
        with ia.batch():
            pass

    handler()
    spans = _by_role(exporter)
    (req,), (bat,) = spans["request"], spans["batch"]
    assert (req.name, bat.name) == ("text_completion", "batch")
    assert semconv.BATCH_MODEL not in bat.attributes
    assert semconv.GEN_AI_REQUEST_MODEL not in req.attributes


async def test_batcher_task_links_many_requests(otel):
    exporter, _ = otel
    queue: asyncio.Queue = asyncio.Queue()

    @ia.audited(model="m")
    async def handle(i):
        fut = asyncio.get_running_loop().create_future()
        await queue.put((ia.current_request(), i, fut))
        return await fut

    async def batcher():
        items = [await queue.get() for _ in range(3)]
        with ia.batch([h for h, _, _ in items], model="m") as b:
            b.record(input_tokens=30, output_tokens=12)
            for h, i, fut in items:
                h.record(output_tokens=4, batch_size=3)
                fut.set_result(i * 10)
        return b.span_context

    batch_task = asyncio.create_task(batcher())
    results = await asyncio.gather(*(handle(i) for i in range(3)))
    batch_ctx = await batch_task
    assert results == [0, 10, 20]
    spans = _by_role(exporter)
    (bat,) = spans["batch"]
    reqs = spans["request"]
    assert bat.context.span_id == batch_ctx.span_id
    assert bat.parent is None  # standalone in the batcher task
    assert {link.context.span_id for link in bat.links} == {r.context.span_id for r in reqs}
    assert bat.attributes[semconv.BATCH_SIZE] == 3
    assert bat.attributes[semconv.BATCH_INPUT_TOKENS] == 30
    for r in reqs:
        assert r.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
        assert r.attributes[semconv.BATCH_SIZE] == 3
        assert len({r.context.trace_id}) == 1


def test_span_contexts_accepted_and_explicit_batch_size(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")
    with tracer.start_as_current_span("r1") as r1:
        pass
    with ia.batch([r1.get_span_context(), None], batch_size=8, model="x"):
        pass
    bat = next(s for s in exporter.get_finished_spans() if s.name == "batch x")
    assert bat.attributes[semconv.BATCH_SIZE] == 8
    assert [link.context.span_id for link in bat.links] == [r1.get_span_context().span_id]


def test_bad_member_reported_and_skipped(otel):
    exporter, _ = otel
    with ia.batch(["not a handle"], model="x"):
        pass
    (bat,) = exporter.get_finished_spans()
    assert bat.links == ()
    assert bat.attributes[semconv.BATCH_SIZE] == 0
    assert _guard.error_counts().get("batch.members") == 1


def test_exception_recorded_and_reraised(otel):
    exporter, _ = otel
    err = MemoryError("OOM")
    with pytest.raises(MemoryError) as info, ia.batch(model="x"):
        raise err
    assert info.value is err
    (bat,) = exporter.get_finished_spans()
    assert bat.status.status_code == StatusCode.ERROR
    assert bat.attributes[semconv.ERROR_TYPE] == "MemoryError"
    assert _active.current() is None


def test_accumulated_attributes_flushed_and_record_beats_add(otel):
    exporter, _ = otel
    with ia.batch(model="x"):
        active = _active.current()
        active.add(semconv.DEVICE_TIME_NS, 1000)
        active.add(semconv.DEVICE_TIME_NS, 500)
        active.add(semconv.BATCH_PADDED_TOKENS, 99)
        active.defer(lambda: {semconv.COPY_H2D_BYTES: 4096})
        ia.record(padded_tokens=64, input_tokens=48)
    (bat,) = exporter.get_finished_spans()
    assert bat.attributes[semconv.DEVICE_TIME_NS] == 1500
    assert bat.attributes[semconv.COPY_H2D_BYTES] == 4096
    assert bat.attributes[semconv.BATCH_PADDED_TOKENS] == 64
    assert bat.attributes[semconv.BATCH_PADDING_RATIO] == pytest.approx(0.25)


async def test_async_with(otel):
    exporter, _ = otel
    async with ia.batch(model="x") as b:
        b.record(output_tokens=2)
    (bat,) = exporter.get_finished_spans()
    assert bat.attributes[semconv.BATCH_OUTPUT_TOKENS] == 2


def test_nested_batch_inside_stream(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def stream():
        for _ in range(2):
            with ia.batch():
                ia.record(output_tokens=1)
            yield 1

    list(stream())
    spans = _by_role(exporter)
    (req,) = spans["request"]
    assert len(spans["batch"]) == 2
    for bat in spans["batch"]:
        assert bat.parent.span_id == req.context.span_id
        assert bat.links[0].context.span_id == req.context.span_id


def test_stream_closed_inside_a_batch_is_not_an_error(otel):
    """Closing a stream whose consumer stopped while it sat inside ``with ia.batch()`` (the
    yield is in the block) ends both spans cleanly: ``GeneratorExit`` is not a failure."""
    exporter, _ = otel

    @ia.audited(model="m")
    def stream():
        with ia.batch():
            yield 1
            yield 2

    g = stream()
    assert next(g) == 1
    g.close()
    spans = _by_role(exporter)
    (req,), (bat,) = spans["request"], spans["batch"]
    for span in (req, bat):
        assert span.status.status_code != StatusCode.ERROR
        assert semconv.ERROR_TYPE not in span.attributes


def test_members_sampled_out_upstream_still_count_towards_the_size(otel):
    """A gateway sampled one request out (traceparent with the sampled flag 0): under the
    default ParentBased sampler its handle has no valid context to link, but the model ran it
    in the batch, so the size counts it."""
    import threading

    from opentelemetry import context as otel_context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    exporter, _ = otel

    @ia.audited(model="m")
    def admit(ids):
        return ia.current_request()

    handles = [admit([1, 2])]
    unsampled = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        handles += [admit([3]), admit([4])]
    finally:
        otel_context.detach(token)
    assert [h.span_context.is_valid for h in handles] == [True, False, False]

    def batcher():
        with ia.batch(handles, model="m") as b:
            b.record(input_tokens=4, output_tokens=2)

    t = threading.Thread(target=batcher)
    t.start()
    t.join()
    (batch,) = _by_role(exporter)["batch"]
    assert batch.attributes[semconv.BATCH_SIZE] == 3
    assert [link.context for link in batch.links] == [handles[0].span_context]


def test_wrong_batch_arguments_are_reported_and_left_out_not_written(otel):
    # audited() and record() reject these; batch() wrote inferaudit.batch.size="x" as given
    import numpy as np

    exporter, _ = otel
    with ia.batch(model=3, operation=5, batch_size="x"):
        pass
    with ia.batch(model="m", batch_size=np.int64(4)):  # a numpy count is a count
        pass
    with ia.batch(model="m", batch_size=-2):
        pass
    bad, numpy_size, negative = exporter.get_finished_spans()
    assert semconv.BATCH_MODEL not in bad.attributes
    assert bad.attributes[semconv.BATCH_OPERATION] == "text_completion"  # the default
    assert bad.attributes[semconv.BATCH_SIZE] == 0  # no members: none given
    assert numpy_size.attributes[semconv.BATCH_SIZE] == 4
    assert type(numpy_size.attributes[semconv.BATCH_SIZE]) is int
    assert negative.attributes[semconv.BATCH_SIZE] == 0
    assert _guard.error_counts() == {"batch.args": 4}
