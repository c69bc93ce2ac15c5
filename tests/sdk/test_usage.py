"""Exact token usage from arguments and return values; record() always wins; no text counting."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, semconv
from inferaudit_sdk._usage import CallTokens, from_result, generated_count

IN = semconv.GEN_AI_USAGE_INPUT_TOKENS
OUT = semconv.GEN_AI_USAGE_OUTPUT_TOKENS
CACHED = semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS


def _attrs(exporter):
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    return spans[0].attributes


def _usage(result, **found):
    u = from_result(result, CallTokens(found) if found else None)
    return u.input_tokens, u.output_tokens


def test_lists_of_ids_counted_exactly():
    assert _usage([5, 6, 7]) == (None, 3)
    assert _usage([[1, 2], [3, 4, 5]]) == (None, 5)  # ragged batch
    assert _usage([]) == (None, 0)
    assert _usage(np.arange(12, dtype=np.int64).reshape(3, 4)) == (None, 12)
    assert _usage([1, 2], prompt_token_ids=[9, 9, 9]) == (3, 2)


def test_text_and_floats_never_counted():
    assert _usage("a long completion with many words") == (None, None)
    assert _usage(["some", "strings"]) == (None, None)
    assert _usage(np.zeros(5, dtype=np.float32)) == (None, None)
    assert _usage(42) == (None, None)  # a bare int return is not a token id list
    assert _usage(None, prompt="how many tokens am I?") == (None, None)


def test_openai_style_usage_object_and_dict():
    resp = SimpleNamespace(
        model="gpt-4o-2024-08-06",
        usage=SimpleNamespace(prompt_tokens=12, completion_tokens=30,
                              prompt_tokens_details=SimpleNamespace(cached_tokens=8)),
        choices=[SimpleNamespace(finish_reason="stop"), SimpleNamespace(finish_reason="length")],
    )
    u = from_result(resp, None)
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (12, 30, 8)
    assert u.response_model == "gpt-4o-2024-08-06"
    assert u.finish_reasons == ["stop", "length"]
    d = {"usage": {"input_tokens": 3, "output_tokens": 4,
                   "input_tokens_details": {"cached_tokens": 1}}}
    u = from_result(d, None)
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (3, 4, 1)


def test_vllm_style_outputs():
    one = SimpleNamespace(prompt_token_ids=[1, 2, 3],
                          outputs=[SimpleNamespace(token_ids=[4, 5]),
                                   SimpleNamespace(token_ids=(6,))])
    two = SimpleNamespace(prompt_token_ids=[7], outputs=[SimpleNamespace(token_ids=[8, 9, 10])])
    assert _usage(one) == (3, 3)
    assert _usage([one, two]) == (4, 6)


def test_generate_prefix_subtraction_eos_and_pad():
    prompt = np.array([[0, 0, 11, 12], [21, 22, 23, 24]])  # left-padded with pad id 0
    mask = (prompt != 0).astype(np.int64)
    # Row 0 generates 3 tokens then EOS(2) then pads; row 1 runs to the length limit.
    seq = np.array([
        [0, 0, 11, 12, 31, 32, 33, 2, 0, 0],
        [21, 22, 23, 24, 41, 42, 43, 44, 45, 46],
    ])
    inp, out = _usage(seq, input_ids=prompt, attention_mask=mask, pad_token_id=0,
                      eos_token_id=2)
    assert inp == 6  # 2 + 4 real prompt tokens
    assert out == (3 + 1) + 6  # EOS is a generated token; pads after it are not
    # pad == eos (GPT-2 style): the first EOS counts, the fill after it does not.
    seq2 = np.array([[5, 6, 7, 50256, 50256, 50256]])
    assert generated_count(seq2, np.array([[5, 6]]), 50256, [50256]) == 2
    # Only a pad id known: trailing pads are dropped.
    assert generated_count(np.array([[5, 6, 7, 8, 0, 0]]), np.array([[5, 6]]), 0, None) == 2
    # Nothing known about the prompt: every token is output.
    assert _usage(seq) == (None, 20)


@pytest.mark.parametrize("known", ["nothing", "pad-and-eos"])
def test_generate_with_several_sequences_per_prompt_counts_only_generated_tokens(known):
    """num_return_sequences / beam outputs: generate expands each prompt row in place
    (repeat_interleave), so each output row's prefix is its own prompt row."""
    kw = {"pad_token_id": 0, "eos_token_id": 2} if known == "pad-and-eos" else {}
    one = np.array([[11, 12, 13]])
    assert _usage(np.array([[11, 12, 13, 5, 6], [11, 12, 13, 7, 8]]), input_ids=one,
                  **kw) == (3, 4)
    two = np.array([[11, 12, 13], [21, 22, 23]])
    out = np.concatenate([np.repeat(two, 2, axis=0), np.array([[5], [6], [7], [8]])], axis=1)
    assert _usage(out, input_ids=two, **kw) == (6, 4)
    # Rows that do not continue their prompt are not taken for continuations.
    shuffled = out[[2, 3, 0, 1]]
    assert _usage(shuffled, input_ids=two, **kw)[1] == shuffled.size


def test_generate_output_object_with_sequences_and_torch():
    torch = pytest.importorskip("torch")
    input_ids = torch.tensor([[101, 102, 103]])
    sequences = torch.tensor([[101, 102, 103, 7, 8, 9, 10]])
    out = SimpleNamespace(sequences=sequences, scores=None)
    assert _usage(out, input_ids=input_ids) == (3, 4)
    assert _usage(sequences, input_ids=input_ids) == (3, 4)
    gen_cfg = SimpleNamespace(pad_token_id=0, eos_token_id=[1, 2])
    seqs = torch.tensor([[101, 102, 103, 7, 2, 0, 0]])
    assert _usage(seqs, input_ids=input_ids, generation_config=gen_cfg) == (3, 2)
    assert _usage(torch.zeros(4, 4)) == (None, None)  # float tensor: not ids


def test_encoder_decoder_sequences_drop_decoder_start_token():
    prompt = np.array([[100, 101, 102, 103, 1]])
    seq = np.array([[0, 55, 56, 57, 1]])  # T5: decoder start = pad = 0, EOS = 1
    assert _usage(seq, input_ids=prompt, pad_token_id=0, eos_token_id=1) == (5, 4)


def test_audited_infers_from_hf_style_call(otel):
    torch = pytest.importorskip("torch")
    exporter, _ = otel

    class FakeLM:
        @ia.audited(model="tiny")
        def generate(self, input_ids, attention_mask=None, max_new_tokens=4, pad_token_id=None):
            new = torch.full((input_ids.shape[0], max_new_tokens), 9)
            return torch.cat([input_ids, new], dim=1)

    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    FakeLM().generate(ids, attention_mask=mask, max_new_tokens=3, pad_token_id=0)
    a = _attrs(exporter)
    assert a[IN] == 5
    assert a[OUT] == 6
    assert a[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 3
    assert a[semconv.PROMPT_FINGERPRINT_BASIS] == "token_ids"


def test_record_wins_over_inference(otel):
    exporter, _ = otel

    @ia.audited
    def handler(prompt_token_ids):
        ia.record(input_tokens=100, output_tokens=1, cache_read_tokens=64, cache_hit=True,
                  queue_time_s=0.25, finish_reasons="stop", batch_size=4)
        return [1, 2, 3, 4, 5]

    handler([1, 2, 3])
    a = _attrs(exporter)
    assert (a[IN], a[OUT], a[CACHED]) == (100, 1, 64)
    assert a[semconv.CACHE_HIT] is True
    assert a[semconv.REQUEST_QUEUE_TIME_NS] == 250_000_000
    assert tuple(a[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert a[semconv.BATCH_SIZE] == 4


def test_record_token_ids_give_exact_counts(otel):
    exporter, _ = otel

    @ia.audited
    def handler():
        ia.record(prompt_token_ids=[[1, 2, 3], [4, 5]], output_token_ids=np.arange(7),
                  prompt_text="ignored for counting")
        return "text"

    handler()
    a = _attrs(exporter)
    assert (a[IN], a[OUT]) == (5, 7)
    assert a[semconv.PROMPT_FINGERPRINT_BASIS] == "token_ids"


def test_record_bad_values_reported_others_kept(otel):
    exporter, _ = otel

    @ia.audited
    def handler():
        ia.record(input_tokens="lots", output_tokens=-3, route="/r", prompt_token_ids="abc")
        return None

    handler()
    a = _attrs(exporter)
    assert IN not in a and OUT not in a
    assert a[semconv.ROUTE] == "/r"
    assert _guard.error_counts().get("record") == 3


def test_record_outside_audited_is_a_noop():
    ia.record(input_tokens=3)  # no span, no error
    assert _guard.error_counts() == {}


class _RaisingUsage:
    @property
    def usage(self):
        raise RuntimeError("usage exploded")


class _Circular(dict):
    pass


def test_broken_usage_objects_never_reach_the_caller(otel):
    exporter, _ = otel
    circ = _Circular()
    circ["usage"] = circ  # usage refers to itself
    looped: list = []
    looped.append(looped)
    results = [_RaisingUsage(), circ, looped]

    @ia.audited
    def handler(i, input_ids):
        return results[i]

    for i in range(3):
        assert handler(i, [1, 2, 3]) is results[i]
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    # Input tokens from the argument survive a broken return value.
    assert all(s.attributes[IN] == 3 for s in spans)
    assert _guard.error_counts().get("usage.result", 0) >= 1


def test_counts_beyond_int64_are_not_token_counts(otel):
    """OTLP integers are int64: a reported or recorded count past that is invalid data, left
    out (and a record() of it reported) instead of an attribute no exporter can encode."""
    exporter, _ = otel
    huge = 2**70
    assert _usage({"usage": {"prompt_tokens": huge, "completion_tokens": 2}}) == (None, 2)

    @ia.audited
    def handler():
        ia.record(input_tokens=huge, output_tokens=3)
        return None

    handler()
    a = _attrs(exporter)
    assert IN not in a and a[OUT] == 3
    assert _guard.error_counts().get("record") == 1


def test_an_unreadable_argument_does_not_lose_the_result_usage(otel):
    """An ``eos_token_id`` tensor whose values cannot be read (here on torch's ``meta``
    device) is one argument lost, not the usage the return value gives."""
    torch = pytest.importorskip("torch")
    exporter, _ = otel

    @ia.audited
    def handler(input_ids, eos_token_id):
        return [5, 6, 7]

    handler([1, 2], torch.tensor([0], device="meta"))
    a = _attrs(exporter)
    assert (a[IN], a[OUT]) == (2, 3)
    assert _guard.error_counts().get("request.usage") is None
