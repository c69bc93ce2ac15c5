"""Mapping of span attributes onto the canonical ``spans`` columns, ours and other tools'.

``PRIMARY`` holds the names InferAudit writes (and the current GenAI conventions); they always
win. ``FALLBACK`` holds what other instrumentations write for the same quantity: older GenAI
spellings (``gen_ai.usage.prompt_tokens``), the standard ``gen_ai.response.time_to_first_chunk``
(seconds; ours in ns is primary), OpenLLMetry's ``llm.*``, OpenLIT's
``gen_ai.server.ttft`` (seconds) and vLLM's request span (``gen_ai.latency.*`` in seconds, its
model only as ``gen_ai.response.model``). A fallback fills a column only where no primary name
did, so a span carrying both spellings is read the same as one carrying ours alone.

vLLM reads as follows (its ``llm_request`` span, ``vllm/tracing.py`` ``SpanAttributes``):
``time_to_first_token`` → ``ttft_ns``, ``time_in_queue`` → ``queue_ns``,
``time_in_model_prefill`` / ``_decode`` → ``prefill_ns`` / ``decode_ns``, TPOT derived as
decode / (output tokens per sequence - 1) (below), and ``time_in_model_forward`` (V0 with detailed
traces only) → ``device_time_ns``. ``e2e`` and ``time_in_model_inference`` stay in
``attributes``: the span's own duration already is the end-to-end time.

TPOT is per sequence, as the SDK writes it. vLLM's V0 engine runs the ``n`` (or ``best_of``)
sequences of one request in parallel and reports their output tokens summed, with the decode time
of the whole group: a derived TPOT divides by tokens per sequence, output tokens / sequences. The
sequence count is vLLM's ``gen_ai.usage.num_sequences`` (the sequences whose tokens were summed,
``best_of`` included), else the GenAI ``gen_ai.request.choice.count``, else vLLM's
``gen_ai.request.n`` (its V1 engine splits a request into ``n`` child requests of ``n`` = 1, each
with its own span and tokens, which this leaves alone). Each name has a scratch slot of its own, so
the precedence is the same on every path. Uneven sequences make this a mean: the group's decode
time follows its longest sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from inferaudit_sdk import semconv as sc


def to_str(x: Any) -> str:
    return x if type(x) is str else str(x)


# Every integer column is a signed 64-bit integer in Arrow/Parquet/DuckDB: a value outside this
# range must become an error here, not an OverflowError when the chunk is written.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _in_int64(v: int, x: Any) -> int:
    if INT64_MIN <= v <= INT64_MAX:
        return v
    raise ValueError(f"integer {x!r} is outside the signed 64-bit range")


def to_int(x: Any) -> int:
    t = type(x)
    if t is int:
        return _in_int64(x, x)
    if t is str:
        return _in_int64(int(x), x)
    if t is float:
        if not math.isfinite(x):
            raise ValueError(f"not a finite number: {x!r}")
        return _in_int64(round(x), x)
    if t is bool:
        return int(x)
    raise TypeError(f"expected an integer, got {t.__name__}")


def to_count(x: Any) -> int:
    """A token count, a size, a duration: an integer that cannot be negative (a negative one
    read as -1e9 tokens/s or a negative queue time, with no error)."""
    v = to_int(x)
    if v < 0:
        raise ValueError(f"{x!r} is negative; a count or duration cannot be")
    return v


def to_float(x: Any) -> float:
    t = type(x)
    if t is float:
        return x
    if t is int or t is str:
        try:
            return float(x)
        except OverflowError:  # an int beyond 1e308
            raise ValueError(f"number {x!r} is too large for a float") from None
    raise TypeError(f"expected a number, got {t.__name__}")


def to_bool(x: Any) -> bool:
    if type(x) is bool:
        return x
    if type(x) is str and x.lower() in ("true", "false"):
        return x.lower() == "true"
    if type(x) is int and x in (0, 1):
        return bool(x)
    raise TypeError(f"expected a boolean, got {type(x).__name__}")


def seconds_to_ns(x: Any) -> int:
    """vLLM and OpenLIT report latencies as float seconds; canonical columns are int ns."""
    v = to_float(x)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {x!r}")
    ns = v * 1e9
    if not math.isfinite(ns):  # 1e300 s: finite, but infinite in ns
        raise ValueError(f"{x!r} s is outside the signed 64-bit range in ns")
    if ns < 0:  # every use is a latency or a duration
        raise ValueError(f"{x!r} s is negative; a duration cannot be")
    return _in_int64(round(ns), x)


def operation_of_request_type(x: Any) -> str:
    """OpenLLMetry's ``llm.request.type`` values onto ``gen_ai.operation.name`` values."""
    v = to_str(x)
    return {
        "completion": sc.OPERATION_TEXT_COMPLETION,
        "chat": sc.OPERATION_CHAT,
        "embedding": sc.OPERATION_EMBEDDINGS,
    }.get(v, v)


Conv = Callable[[Any], Any]

# Scratch slots after the table's columns: inputs combined into one column at the end of a span.
SCRATCH_H2D_TIME = "_h2d_time_ns"
SCRATCH_D2H_TIME = "_d2h_time_ns"
SCRATCH_NUM_SEQUENCES = "_num_sequences"
SCRATCH_CHOICE_COUNT = "_choice_count"
SCRATCH_REQUEST_N = "_request_n"
SCRATCH = (SCRATCH_H2D_TIME, SCRATCH_D2H_TIME, SCRATCH_NUM_SEQUENCES, SCRATCH_CHOICE_COUNT,
           SCRATCH_REQUEST_N)
# The sequence counts of a request, most exact first (module docstring: TPOT per sequence).
SEQUENCE_COUNT_SLOTS = (SCRATCH_NUM_SEQUENCES, SCRATCH_CHOICE_COUNT, SCRATCH_REQUEST_N)


PRIMARY: dict[str, tuple[str, Conv]] = {
    sc.SPAN_ROLE: ("role", to_str),
    sc.GEN_AI_OPERATION_NAME: ("operation", to_str),
    sc.GEN_AI_PROVIDER_NAME: ("provider", to_str),
    sc.GEN_AI_REQUEST_MODEL: ("request_model", to_str),
    sc.GEN_AI_RESPONSE_MODEL: ("response_model", to_str),
    sc.GEN_AI_USAGE_INPUT_TOKENS: ("input_tokens", to_count),
    sc.GEN_AI_USAGE_OUTPUT_TOKENS: ("output_tokens", to_count),
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: ("cache_read_tokens", to_count),
    sc.GEN_AI_REQUEST_MAX_TOKENS: ("max_tokens", to_count),
    sc.GEN_AI_REQUEST_STREAM: ("stream", to_bool),
    sc.REQUEST_TIME_TO_FIRST_TOKEN_NS: ("ttft_ns", to_count),
    sc.REQUEST_TIME_PER_OUTPUT_TOKEN_NS: ("tpot_ns", to_count),
    sc.REQUEST_QUEUE_TIME_NS: ("queue_ns", to_count),
    sc.BATCH_SIZE: ("batch_size", to_count),
    sc.BATCH_MODEL: ("request_model", to_str),  # a batch span's model (schema "2" on)
    sc.BATCH_OPERATION: ("operation", to_str),
    sc.BATCH_INPUT_TOKENS: ("batch_input_tokens", to_count),
    sc.BATCH_PADDED_TOKENS: ("padded_tokens", to_count),
    sc.BATCH_OUTPUT_TOKENS: ("batch_output_tokens", to_count),
    sc.DEVICE_TYPE: ("device_type", to_str),
    sc.DEVICE_TIME_NS: ("device_time_ns", to_count),
    sc.DEVICE_CPU_TIME_NS: ("cpu_time_ns", to_count),
    sc.COPY_H2D_BYTES: ("h2d_bytes", to_count),
    sc.COPY_D2H_BYTES: ("d2h_bytes", to_count),
    sc.COPY_PAGEABLE_BYTES: ("pageable_bytes", to_count),
    sc.COPY_H2D_TIME_NS: (SCRATCH_H2D_TIME, to_count),
    sc.COPY_D2H_TIME_NS: (SCRATCH_D2H_TIME, to_count),
    sc.GPU_UTILIZATION_RATIO: ("gpu_util", to_float),
    sc.GPU_ENERGY_J: ("gpu_energy_j", to_float),
    sc.PROMPT_FINGERPRINT: ("prompt_fp", to_str),
    sc.PROMPT_SIMHASH: ("prompt_simhash", to_str),
    sc.PROMPT_FINGERPRINT_KEY_ID: ("fp_key_id", to_str),
    sc.CACHE_HIT: ("cache_hit", to_bool),
    sc.ROUTE: ("route", to_str),
    sc.MODEL_TIER: ("model_tier", to_str),
    sc.ERROR_TYPE: ("error_type", to_str),
    sc.PROFILE_TRACE_PATH: ("profile_path", to_str),
}

SOURCE_INFERAUDIT = "inferaudit"
SOURCE_VLLM = "vllm"
SOURCE_OPENLIT = "openlit"
SOURCE_OPENLLMETRY = "openllmetry"
SOURCE_GENAI = "genai"  # some GenAI-convention instrumentation we do not recognise

# key -> (column, converter, the instrumentation that spelling identifies or None)
FALLBACK: dict[str, tuple[str, Conv, str | None]] = {
    sc.LEGACY_GEN_AI_SYSTEM: ("provider", to_str, None),
    sc.LEGACY_USAGE_PROMPT_TOKENS: ("input_tokens", to_count, None),
    sc.LEGACY_USAGE_COMPLETION_TOKENS: ("output_tokens", to_count, None),
    sc.LEGACY_LLM_USAGE_PROMPT_TOKENS: ("input_tokens", to_count, SOURCE_OPENLLMETRY),
    sc.LEGACY_LLM_USAGE_COMPLETION_TOKENS: ("output_tokens", to_count, SOURCE_OPENLLMETRY),
    sc.LEGACY_USAGE_CACHE_READ_INPUT_TOKENS: ("cache_read_tokens", to_count, SOURCE_OPENLLMETRY),
    sc.LEGACY_LLM_REQUEST_TYPE: ("operation", operation_of_request_type, SOURCE_OPENLLMETRY),
    sc.LEGACY_LLM_IS_STREAMING: ("stream", to_bool, SOURCE_OPENLLMETRY),
    sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: ("ttft_ns", seconds_to_ns, None),
    sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN: ("ttft_ns", seconds_to_ns, SOURCE_VLLM),
    sc.VLLM_LATENCY_TIME_IN_QUEUE: ("queue_ns", seconds_to_ns, SOURCE_VLLM),
    sc.VLLM_LATENCY_TIME_IN_MODEL_PREFILL: ("prefill_ns", seconds_to_ns, SOURCE_VLLM),
    sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE: ("decode_ns", seconds_to_ns, SOURCE_VLLM),
    sc.VLLM_LATENCY_TIME_IN_MODEL_FORWARD: ("device_time_ns", seconds_to_ns, SOURCE_VLLM),
    sc.VLLM_LATENCY_E2E: ("", to_float, SOURCE_VLLM),  # marks the source only
    # sequence counts, only to derive TPOT per sequence; they stay in `attributes` as well
    sc.VLLM_USAGE_NUM_SEQUENCES: (SCRATCH_NUM_SEQUENCES, to_count, None),
    sc.GEN_AI_REQUEST_CHOICE_COUNT: (SCRATCH_CHOICE_COUNT, to_count, None),
    sc.VLLM_REQUEST_N: (SCRATCH_REQUEST_N, to_count, None),
    sc.OPENLIT_SERVER_TTFT: ("ttft_ns", seconds_to_ns, SOURCE_OPENLIT),
    sc.OPENLIT_SERVER_TBT: ("tpot_ns", seconds_to_ns, SOURCE_OPENLIT),
    sc.OPENLIT_SERVER_TIME_TO_FIRST_TOKEN: ("ttft_ns", seconds_to_ns, SOURCE_OPENLIT),
    sc.OPENLIT_SERVER_TIME_PER_OUTPUT_TOKEN: ("tpot_ns", seconds_to_ns, SOURCE_OPENLIT),
    sc.OPENLIT_REQUEST_IS_STREAM: ("stream", to_bool, SOURCE_OPENLIT),
}


def source_of(scope_name: str | None, has_role: bool, dialect: str | None,
              has_genai: bool) -> str | None:
    """Which instrumentation wrote a span, for coverage messages and the requests view."""
    if has_role or scope_name == sc.INSTRUMENTATION_NAME:
        return SOURCE_INFERAUDIT
    if dialect is not None:
        return dialect
    if scope_name:
        low = scope_name.lower()
        if low.startswith("openlit"):
            return SOURCE_OPENLIT
        if low.startswith("vllm"):
            return SOURCE_VLLM
        if low.startswith("traceloop"):
            return SOURCE_OPENLLMETRY
    return SOURCE_GENAI if has_genai else None
