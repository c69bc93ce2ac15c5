"""The example server and its tiny model, with the real SDK writing to an in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from examples.tiny_gpt2 import TinyGPT2, TinyGPT2Spec
from inferaudit_sdk import semconv


@pytest.fixture(scope="module")
def model() -> TinyGPT2:
    torch.set_num_threads(1)
    return TinyGPT2()


# --- the model --------------------------------------------------------------------------------


def test_model_is_seeded(model: TinyGPT2) -> None:
    other = TinyGPT2(TinyGPT2Spec())
    for a, b in zip(model.model.parameters(), other.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_prompt_ids_have_the_requested_length_and_no_pad(model: TinyGPT2) -> None:
    ids = model.prompt_ids(300, seed=5)
    assert len(ids) == 300 and ids == model.prompt_ids(300, seed=5)
    assert model.spec.pad_token_id not in ids
    assert ids != model.prompt_ids(300, seed=6)


def test_generate_gives_exactly_n_tokens_per_row(model: TinyGPT2) -> None:
    prompts = [model.prompt_ids(n, seed=n) for n in (3, 17, 40)]
    wanted = [1, 9, 4]
    outs = model.generate(prompts, wanted)
    assert [len(o) for o in outs] == wanted


def test_left_padded_batch_matches_one_at_a_time(model: TinyGPT2) -> None:
    """Padding plus attention mask must not change what each request gets (greedy)."""
    prompts = [model.prompt_ids(n, seed=n) for n in (5, 31, 12)]
    alone = [model.generate([p], [8])[0] for p in prompts]
    assert model.generate(prompts, [8, 8, 8]) == alone


def test_generate_rejects_what_does_not_fit(model: TinyGPT2) -> None:
    with pytest.raises(ValueError, match="n_positions"):
        model.generate([model.prompt_ids(model.spec.n_positions, seed=0)], [1])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate([[1, 2]], [0])


# --- the server, with the SDK -----------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    import inferaudit_sdk as ia

    exp = InMemorySpanExporter()
    # The application's own (non-global) provider; with exporters "none" configure() adds
    # nothing of its own to it.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    ia.configure(tracer_provider=provider, exporters=("none",))
    yield exp
    ia.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter


def _by_role(spans: tuple[ReadableSpan, ...], role: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get(semconv.SPAN_ROLE) == role]


async def _serve(model: TinyGPT2, mode: str, jobs: list[tuple[list[int], int]], **kw: object):
    from examples.server import InferenceServer

    async with InferenceServer(model, mode=mode, **kw) as server:  # type: ignore[arg-type]
        return await asyncio.gather(
            *(server.complete(p, n, request_id=i) for i, (p, n) in enumerate(jobs))
        )


def _jobs(model: TinyGPT2) -> list[tuple[list[int], int]]:
    return [(model.prompt_ids(4 + 7 * i, seed=i), 2 + i) for i in range(6)]


async def test_sequential_request_spans_carry_exact_tokens(
    model: TinyGPT2, spans: InMemorySpanExporter
) -> None:
    jobs = _jobs(model)
    done = await _serve(model, "sequential", jobs)
    assert [len(c.output_ids) for c in done] == [n for _, n in jobs]
    assert all(c.batch_size == 1 for c in done)
    finished = spans.get_finished_spans()
    requests = _by_role(finished, semconv.ROLE_REQUEST)
    batches = _by_role(finished, semconv.ROLE_BATCH)
    assert len(requests) == len(jobs) and len(batches) == len(jobs)
    inp, out = semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS
    got = sorted((s.attributes[inp], s.attributes[out]) for s in requests)
    assert got == sorted((len(p), n) for p, n in jobs)
    for s in requests:
        assert s.name == f"{semconv.OPERATION_TEXT_COMPLETION} gpt2-tiny"
        assert s.attributes[semconv.GEN_AI_REQUEST_MODEL] == "gpt2-tiny"
        assert s.attributes[semconv.REQUEST_QUEUE_TIME_NS] >= 0
    # All six arrived at once and were served one by one: later ones queued.
    assert max(s.attributes[semconv.REQUEST_QUEUE_TIME_NS] for s in requests) > 0
    by_id = {s.context.span_id: s for s in requests}
    for b in batches:
        assert b.attributes[semconv.BATCH_SIZE] == 1
        assert b.parent is not None and b.parent.span_id in by_id  # child of its request
        assert [link.context.span_id for link in b.links] == [b.parent.span_id]
        req = by_id[b.parent.span_id]
        assert b.start_time >= req.start_time and b.end_time <= req.end_time


async def test_batched_burst_forms_batches_linking_all_members(
    model: TinyGPT2, spans: InMemorySpanExporter
) -> None:
    jobs = _jobs(model)
    sequential = [c.output_ids for c in await _serve(model, "sequential", jobs)]
    spans.clear()
    done = await _serve(model, "batched", jobs, max_batch=4, batch_timeout_s=0.05)
    # Batching changes cost, not answers.
    assert [c.output_ids for c in done] == sequential
    assert max(c.batch_size for c in done) > 1
    finished = spans.get_finished_spans()
    requests = _by_role(finished, semconv.ROLE_REQUEST)
    batches = _by_role(finished, semconv.ROLE_BATCH)
    request_ids = {s.context.span_id for s in requests}
    linked = [link.context.span_id for b in batches for link in b.links]
    assert sorted(linked) == sorted(request_ids)  # every request rode in exactly one batch
    assert sum(b.attributes[semconv.BATCH_SIZE] for b in batches) == len(jobs)
    assert max(b.attributes[semconv.BATCH_SIZE] for b in batches) > 1
    tokens = {s.context.span_id: s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in requests}
    outs = {s.context.span_id: s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] for s in requests}
    for b in batches:
        members = [link.context.span_id for link in b.links]
        assert b.attributes[semconv.BATCH_SIZE] == len(members)
        assert b.parent is None  # a model call shared by several requests belongs to none
        assert b.attributes[semconv.BATCH_INPUT_TOKENS] == sum(tokens[m] for m in members)
        assert b.attributes[semconv.BATCH_PADDED_TOKENS] == len(members) * max(
            tokens[m] for m in members
        )
        assert b.attributes[semconv.BATCH_OUTPUT_TOKENS] == sum(outs[m] for m in members)


async def test_model_failure_is_recorded_and_raised_and_server_survives(
    model: TinyGPT2, spans: InMemorySpanExporter
) -> None:
    from examples.server import InferenceServer

    too_long = model.prompt_ids(model.spec.n_positions, seed=0)
    async with InferenceServer(model, mode="sequential") as server:
        with pytest.raises(ValueError, match="n_positions"):
            await server.complete(too_long, 4)
        ok = await server.complete(model.prompt_ids(5, seed=1), 3)
    assert len(ok.output_ids) == 3
    requests = _by_role(spans.get_finished_spans(), semconv.ROLE_REQUEST)
    assert len(requests) == 2
    failed = [s for s in requests if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1
    assert failed[0].attributes[semconv.ERROR_TYPE] == "ValueError"


def test_bad_settings_are_refused(model: TinyGPT2) -> None:
    from examples.server import InferenceServer

    with pytest.raises(ValueError, match="mode"):
        InferenceServer(model, mode="parallel")
    with pytest.raises(ValueError, match="max_batch"):
        InferenceServer(model, mode="batched", max_batch=0)


async def test_batch_spans_carry_the_model_calls_device_time(
    model: TinyGPT2, spans: InMemorySpanExporter
) -> None:
    """With instrument=True the torch instrumentation adds the call's CPU time to the batch."""
    await _serve(model, "batched", _jobs(model)[:3], max_batch=4)
    batches = _by_role(spans.get_finished_spans(), semconv.ROLE_BATCH)
    assert batches
    for b in batches:
        assert b.attributes.get(semconv.DEVICE_TYPE) == "cpu"
        assert b.attributes.get(semconv.DEVICE_CPU_TIME_NS, 0) > 0


async def _stream_all(server: object, prompt: list[int], n: int, rid: int) -> list[int]:
    return [t async for t in server.complete_stream(prompt, n, request_id=rid)]  # type: ignore[attr-defined]


async def test_streaming_yields_the_same_tokens_and_times_them(
    model: TinyGPT2, spans: InMemorySpanExporter
) -> None:
    from examples.server import InferenceServer

    jobs = _jobs(model)[:4]
    whole = [model.generate([p], [n])[0] for p, n in jobs]
    async with InferenceServer(model, mode="batched", max_batch=4, batch_timeout_s=0.05) as srv:
        streamed = await asyncio.gather(
            *(_stream_all(srv, p, n, i) for i, (p, n) in enumerate(jobs))
        )
    assert streamed == whole
    requests = _by_role(spans.get_finished_spans(), semconv.ROLE_REQUEST)
    assert len(requests) == len(jobs)
    for s in requests:
        a = s.attributes
        assert a[semconv.GEN_AI_REQUEST_STREAM] is True
        assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == a[semconv.GEN_AI_REQUEST_MAX_TOKENS]
        ttft = a[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS]
        assert 0 < ttft <= s.end_time - s.start_time
        assert a[semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS] > 0  # every job has >= 2 tokens


async def test_streaming_failure_is_raised_from_the_iteration(
    model: TinyGPT2, spans: InMemorySpanExporter
) -> None:
    from examples.server import InferenceServer

    too_long = model.prompt_ids(model.spec.n_positions, seed=0)
    async with InferenceServer(model, mode="sequential") as srv:
        with pytest.raises(ValueError, match="n_positions"):
            await _stream_all(srv, too_long, 3, 0)
    (req,) = _by_role(spans.get_finished_spans(), semconv.ROLE_REQUEST)
    assert req.status.status_code is StatusCode.ERROR
