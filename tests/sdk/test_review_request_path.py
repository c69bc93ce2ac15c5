"""Review fixes on the request path: inferred streaming, TTFT/TPOT edge chunks, numpy ids,
and usage inference that survives a fault in a later step.

Timings are never compared with constants: each bound comes from perf_counter_ns stamps the
stream itself takes around its yields (the SDK's clock), so it holds on any machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

import inferaudit_sdk as ia
from inferaudit_sdk import _fingerprint, _guard, _tokens, semconv


def _one(exporter: Any) -> dict[str, Any]:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return dict(spans[0].attributes)


class Stamps:
    """perf_counter_ns just before each yield and just after the consumer resumed the
    stream: the SDK stamps a chunk between the two."""

    def __init__(self) -> None:
        self.before: list[int] = []
        self.after: list[int] = []

    def run(self, chunks: list[Any], gap_s: float = 0.0, gap_before: int | None = None):
        for i, chunk in enumerate(chunks):
            if gap_s and (gap_before is None or i == gap_before):
                time.sleep(gap_s)
            self.before.append(time.perf_counter_ns())
            yield chunk
            self.after.append(time.perf_counter_ns())


# 1. gen_ai.request.stream for functions that return a stream


def test_sync_function_returning_a_generator_is_a_stream(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def returns_gen(n):
        return (i for i in range(n))

    assert list(returns_gen(3)) == [0, 1, 2]
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is True
    assert attrs[semconv.REQUEST_STREAM_CHUNKS] == 3
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


async def test_async_def_returning_an_async_generator_is_a_stream(otel):
    exporter, _ = otel

    async def agen(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @ia.audited(model="m")
    async def returns_agen(n):
        return agen(n)

    @ia.audited(model="m")
    def sync_returns_agen(n):
        return agen(n)

    assert [i async for i in await returns_agen(2)] == [0, 1]
    assert _one(exporter)[semconv.GEN_AI_REQUEST_STREAM] is True
    exporter.clear()
    assert [i async for i in sync_returns_agen(2)] == [0, 1]
    assert _one(exporter)[semconv.GEN_AI_REQUEST_STREAM] is True


def test_explicit_stream_false_wins_and_plain_results_are_not_streams(otel):
    exporter, _ = otel

    @ia.audited(model="m", stream=False)
    def declared(n):
        return (i for i in range(n))

    @ia.audited(model="m")
    def plain(n):
        return list(range(n))

    list(declared(2))
    assert _one(exporter)[semconv.GEN_AI_REQUEST_STREAM] is False
    exporter.clear()
    plain(2)
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is False
    assert semconv.REQUEST_STREAM_CHUNKS not in attrs


# 2. an empty chunk is not the first token


def test_empty_first_chunk_is_not_the_first_token(otel):
    exporter, _ = otel
    stamps = Stamps()
    entered: list[int] = []

    @ia.audited(model="m")
    def st():
        entered.append(time.perf_counter_ns())  # after the span started
        yield from stamps.run([[], [1], [2], [3]], gap_s=0.02, gap_before=1)

    assert list(st()) == [[], [1], [2], [3]]
    attrs = _one(exporter)
    assert attrs[semconv.REQUEST_STREAM_CHUNKS] == 4
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    # The first token left the stream after stamps.before[1]; the span began before entered.
    assert attrs[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] > stamps.before[1] - entered[0]
    # TPOT spans [1] .. [3] only: 2 gaps between token-carrying chunks.
    tpot = attrs[semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS]
    assert tpot * 2 <= stamps.after[3] - stamps.before[1]


def test_trailing_empty_chunk_does_not_stretch_tpot(otel):
    exporter, _ = otel
    stamps = Stamps()

    @ia.audited(model="m")
    def st():
        yield from stamps.run([[1], [2], []], gap_s=0.02, gap_before=2)

    list(st())
    attrs = _one(exporter)
    assert attrs[semconv.REQUEST_STREAM_CHUNKS] == 3
    # First token after before[0], last token before after[1] (the sleep comes later).
    assert attrs[semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS] <= stamps.after[1] - stamps.before[0]


def test_all_tokens_in_one_chunk_after_a_heartbeat_has_no_tpot(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def st():
        yield []
        yield [1, 2, 3]

    list(st())
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS in attrs
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS not in attrs


def test_only_empty_chunks_keep_the_chunk_count_without_ttft(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def st():
        yield []
        yield np.zeros(0, dtype=np.int64)

    list(st())
    attrs = _one(exporter)
    assert attrs[semconv.REQUEST_STREAM_CHUNKS] == 2
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 0
    assert semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS not in attrs


def test_uncountable_first_chunk_is_still_the_first_token(otel):
    exporter, _ = otel
    stamps = Stamps()

    @ia.audited(model="m")
    def st():
        yield from stamps.run(["", "a", "b"], gap_s=0.02, gap_before=1)

    called = time.perf_counter_ns()  # before the span starts
    list(st())
    attrs = _one(exporter)
    # Text cannot be counted: the first chunk ("") is timed, before the sleep.
    assert attrs[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] < stamps.after[0] - called
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in attrs


# 3. TPOT per sequence for a batch streamed as Python lists


@pytest.mark.parametrize("make", [lambda i: [[i], [i]], lambda i: np.array([[i], [i]]),
                                  lambda i: [np.array([i]), np.array([i])], lambda i: ([i], [i])],
                         ids=["list-of-lists", "2d-array", "list-of-arrays", "tuple-of-lists"])
def test_batched_chunks_divide_tpot_per_sequence(otel, make):
    exporter, _ = otel
    stamps = Stamps()

    @ia.audited(model="m")
    def st():
        yield from stamps.run([make(i) for i in range(5)], gap_s=0.01)

    list(st())
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 10
    tpot = attrs[semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS]
    # 5 tokens per sequence: 4 gaps between the first and the last chunk.
    assert stamps.before[4] - stamps.after[0] <= 4 * tpot + 4
    assert 4 * tpot <= stamps.after[4] - stamps.before[0]


# 4. numpy integer scalars are token ids


def test_count_numpy_integer_scalars_and_lists_of_them():
    assert _tokens.count(np.int64(7)) == 1
    assert _tokens.count(np.uint16(7)) == 1
    assert _tokens.count(np.bool_(True)) is None
    assert _tokens.count(True) is None
    assert _tokens.count(list(np.array([1, 2, 3]))) == 3
    assert _tokens.count([list(np.array([1, 2])), [3]]) == 3
    arr = _tokens.to_array(list(np.array([4, 5], dtype=np.int32)))
    assert arr is not None and arr.tolist() == [4, 5]


def test_stream_of_numpy_integers_counts_output_tokens(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def st():
        for i in range(4):
            yield np.int64(i)

    list(st())
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS in attrs


def test_record_of_a_list_of_numpy_ids_counts(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def r():
        ia.record(output_token_ids=list(np.array([1, 2, 3])))

    r()
    assert _one(exporter)[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


# 5. one fault in inference loses nothing else


def test_numpy_array_of_messages_keeps_usage_and_fingerprint(otel, audit_config):
    exporter, _ = otel
    audit_config(capture_content=True)

    @ia.audited(model="m")
    def chat(messages, prompt_token_ids):
        return [7, 8, 9]

    msgs = np.array([{"role": "user", "content": "hi"}, {"role": "user", "content": "yo"}])
    assert chat(msgs, [1, 2, 3]) == [7, 8, 9]
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert semconv.PROMPT_FINGERPRINT in attrs
    assert _guard.error_counts() == {}


def test_content_fault_keeps_usage_and_fingerprint(otel, audit_config):
    exporter, _ = otel
    audit_config(capture_content=True)

    @ia.audited(model="m")
    def chat(messages, prompt_token_ids):
        return [7, 8]

    # A content part whose "text" has no truth value: the content step fails.
    bad = [{"role": "user", "content": [{"text": np.array([1, 2])}]}]
    assert chat(bad, [1, 2, 3]) == [7, 8]
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert semconv.PROMPT_FINGERPRINT in attrs
    assert _guard.error_counts() == {"request.content": 1}


def test_fingerprint_fault_keeps_usage_and_content(otel, audit_config, monkeypatch):
    exporter, _ = otel
    audit_config(capture_content=True)

    def broken(ids):
        raise RuntimeError("fingerprint broke")

    monkeypatch.setattr(_fingerprint, "attributes_for_ids", broken)

    @ia.audited(model="m")
    def chat(messages, prompt_token_ids):
        return [7, 8]

    chat([{"role": "user", "content": "hi"}], [1, 2, 3])
    attrs = _one(exporter)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert semconv.PROMPT_FINGERPRINT not in attrs
    assert semconv.GEN_AI_INPUT_MESSAGES in attrs
    assert _guard.error_counts() == {"request.fingerprint": 1}


def test_return_value_list_of_numpy_ids_counts(otel):
    exporter, _ = otel

    @ia.audited(model="m")
    def r():
        return list(np.array([1, 2, 3]))

    r()
    assert _one(exporter).get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS) == 3
