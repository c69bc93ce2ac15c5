"""Many threads and asyncio tasks at once: each request span keeps its own attributes and
children, with no cross-talk."""

from __future__ import annotations

import asyncio
import threading

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, semconv

N = 24


def _check(exporter, n_children):
    spans = exporter.get_finished_spans()
    reqs = {s.context.span_id: s for s in spans if s.attributes.get(semconv.SPAN_ROLE)
            == semconv.ROLE_REQUEST}
    assert len(reqs) == N
    seen = set()
    for r in reqs.values():
        i = r.attributes["test.i"]
        assert r.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == i + 1
        assert r.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2 * i + 1
        assert r.attributes[semconv.ROUTE] == f"/r{i}"
        seen.add(i)
    assert seen == set(range(N))
    children = [s for s in spans if s.name.startswith("child")]
    assert len(children) == N * n_children
    for c in children:
        parent = reqs[c.parent.span_id]
        assert c.name == f"child{parent.attributes['test.i']}"
    assert _guard.error_counts() == {}


def test_threads_do_not_cross_talk(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")
    barrier = threading.Barrier(N)

    @ia.audited(model="m")
    def handler(i, input_ids):
        barrier.wait()  # everyone is inside a request span at the same time
        for _ in range(3):
            with tracer.start_as_current_span(f"child{i}"):
                ia.record(route=f"/r{i}")
        ia.record(**{"test.i": i})
        return [0] * (2 * i + 1)

    threads = [threading.Thread(target=handler, args=(i, [7] * (i + 1))) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check(exporter, 3)


def test_threads_streaming_interleaved(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")
    barrier = threading.Barrier(N)

    @ia.audited(model="m")
    def stream(i, input_ids):
        ia.record(route=f"/r{i}", **{"test.i": i})
        for _ in range(2 * i + 1):
            with tracer.start_as_current_span(f"child{i}"):
                pass
            yield 1

    def consume(i):
        g = stream(i, [1] * (i + 1))
        barrier.wait()
        for _ in g:
            pass

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = exporter.get_finished_spans()
    children = [s for s in spans if s.name.startswith("child")]
    assert len(children) == sum(2 * i + 1 for i in range(N))
    reqs = {s.context.span_id: s for s in spans if s.name == "text_completion m"}
    for c in children:
        assert c.name == f"child{reqs[c.parent.span_id].attributes['test.i']}"
    for r in reqs.values():
        i = r.attributes["test.i"]
        assert r.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2 * i + 1


async def test_asyncio_tasks_do_not_cross_talk(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    async def handler(i, input_ids):
        for _ in range(3):
            await asyncio.sleep(0)
            with tracer.start_as_current_span(f"child{i}"):
                await asyncio.sleep(0)
                ia.record(route=f"/r{i}")
        ia.record(**{"test.i": i})
        return [0] * (2 * i + 1)

    await asyncio.gather(*(handler(i, [5] * (i + 1)) for i in range(N)))
    _check(exporter, 3)


async def test_async_streams_interleaved_in_one_task(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    async def stream(i, input_ids):
        ia.record(route=f"/r{i}", **{"test.i": i})
        for _ in range(2 * i + 1):
            with tracer.start_as_current_span(f"child{i}"):
                await asyncio.sleep(0)
            yield 1

    gens = [stream(i, [1] * (i + 1)) for i in range(N)]
    live = list(gens)
    while live:  # round-robin one chunk from each stream, all from this one task
        for g in list(live):
            try:
                await g.__anext__()
            except StopAsyncIteration:
                live.remove(g)
    spans = exporter.get_finished_spans()
    reqs = {s.context.span_id: s for s in spans if s.name == "text_completion m"}
    assert len(reqs) == N
    for c in (s for s in spans if s.name.startswith("child")):
        assert c.name == f"child{reqs[c.parent.span_id].attributes['test.i']}"
        assert c.parent.span_id in reqs
    for r in reqs.values():
        i = r.attributes["test.i"]
        assert r.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2 * i + 1
        assert r.parent is None  # streams made side by side are siblings, not nested
