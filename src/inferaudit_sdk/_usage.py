"""Token usage inferred from a call's arguments and return value, exactly or not at all.

Recognised (first match wins), all counted from token ids or reported usage, never from text:

* an OpenAI-style ``usage`` (attribute or dict key): ``prompt_tokens``/``completion_tokens`` or
  ``input_tokens``/``output_tokens``, cached tokens from ``prompt_tokens_details.cached_tokens``
  (or ``input_tokens_details``); ``model`` becomes the response model;
* vLLM-style outputs (an object, or a list of them, with ``prompt_token_ids`` and
  ``outputs[*].token_ids``);
* Hugging Face ``generate`` output: a tensor/array, or an object with ``.sequences``. When the
  prompt ``input_ids`` are known and are the prefix of every row (decoder-only models) they are
  subtracted; per row the output ends at the first EOS (inclusive) when ``eos_token_id`` is
  known, else trailing ``pad_token_id`` tokens are dropped. Without a matching prefix, a first
  column that is the same pad/EOS id in every row is the encoder-decoder start token and is
  not counted;
* plain token ids: a list of ints, a list of lists, a 1-D/2-D integer array or tensor.

Prompt tokens come from an ``input_ids`` (non-padding per ``attention_mask``, else
``pad_token_id``) or ``prompt_token_ids`` argument of the call.

Counting by shape never touches device memory. Reading values (fingerprints, masks, prefix
subtraction) copies the ids to the host at the end of the call; for ``generate`` outputs the
device work is already finished by then, so this adds no wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from inferaudit_sdk import _tokens
from inferaudit_sdk._guard import swallow


class Usage:
    """What could be inferred; every field is ``None`` when unknown."""

    __slots__ = (
        "cache_read_tokens",
        "finish_reasons",
        "input_tokens",
        "output_by_shape",
        "output_tokens",
        "prompt_ids",
        "response_model",
    )

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens: int | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] | None = None
        self.prompt_ids: np.ndarray | None = None  # 1-D real (non-pad) prompt token ids
        # output_tokens counted by the result's shape (no pad or EOS id known): padding after
        # EOS included, an upper bound an exact count from the model's own call replaces
        self.output_by_shape = False


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


# OTLP integers are int64: a larger "count" is bad data, not a count.
INT64_MAX = 2**63 - 1


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, np.integer)):
        v = int(v)
        return v if 0 <= v <= INT64_MAX else None
    return None


def _id_set(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    arr = _tokens.to_array(value) if not isinstance(value, (set, frozenset)) else None
    if arr is not None:
        return [int(x) for x in arr.reshape(-1)]
    if isinstance(value, (set, frozenset)) and all(isinstance(x, int) for x in value):
        return sorted(value)
    return None


class CallTokens:
    """Token-related arguments picked from one call (references only; read at finish)."""

    __slots__ = ("attention_mask", "eos_ids", "input_ids", "pad_id", "prompt_token_ids")

    def __init__(self, found: Mapping[str, Any]) -> None:
        self.input_ids = found.get("input_ids")
        self.prompt_token_ids = found.get("prompt_token_ids")
        self.attention_mask = found.get("attention_mask")
        gen_cfg = found.get("generation_config")
        pad = found.get("pad_token_id")
        eos = found.get("eos_token_id")
        if gen_cfg is not None:
            if pad is None:
                pad = getattr(gen_cfg, "pad_token_id", None)
            if eos is None:
                eos = getattr(gen_cfg, "eos_token_id", None)
        self.pad_id = _int(pad)
        try:
            self.eos_ids = _id_set(eos)
        except Exception as exc:  # e.g. a tensor that cannot be read: only this one is lost
            swallow("usage.arguments", exc)
            self.eos_ids = None


def prompt_from_call(call: CallTokens, usage: Usage) -> np.ndarray | None:
    """Fill ``usage.input_tokens``/``prompt_ids`` from the call; return the raw (padded) ids
    array used, for prefix subtraction."""
    if call.prompt_token_ids is not None:
        arr = _tokens.to_array(call.prompt_token_ids)
        n = _tokens.count(call.prompt_token_ids)
        if arr is not None and n is not None:
            usage.input_tokens = n
            usage.prompt_ids = arr.reshape(-1)
            return arr
    if call.input_ids is not None:
        arr = _tokens.to_array(call.input_ids)
        if arr is not None:
            real = _tokens.real_tokens(arr, call.attention_mask, call.pad_id)
            usage.input_tokens = int(real.size)
            usage.prompt_ids = real
            return arr
    return None


def _from_openai(result: Any, usage: Usage) -> bool:
    u = _get(result, "usage")
    if u is None or isinstance(u, (str, bytes, int, float)):
        return False
    inp = _int(_get(u, "prompt_tokens"))
    if inp is None:
        inp = _int(_get(u, "input_tokens"))
    out = _int(_get(u, "completion_tokens"))
    if out is None:
        out = _int(_get(u, "output_tokens"))
    if inp is None and out is None:
        return False
    usage.input_tokens = inp
    usage.output_tokens = out
    details = _get(u, "prompt_tokens_details") or _get(u, "input_tokens_details")
    if details is not None:
        usage.cache_read_tokens = _int(_get(details, "cached_tokens"))
    model = _get(result, "model")
    if isinstance(model, str) and model:
        usage.response_model = model
    choices = _get(result, "choices")
    if isinstance(choices, (list, tuple)):
        reasons = [r for r in (_get(c, "finish_reason") for c in choices) if isinstance(r, str)]
        if reasons:
            usage.finish_reasons = reasons
    return True


def _vllm_one(obj: Any) -> tuple[int, int] | None:
    prompt = getattr(obj, "prompt_token_ids", None)
    outputs = getattr(obj, "outputs", None)
    if prompt is None or not isinstance(outputs, (list, tuple)):
        return None
    n_in = _tokens.count(prompt)
    if n_in is None:
        return None
    n_out = 0
    for o in outputs:
        n = _tokens.count(getattr(o, "token_ids", None))
        if n is None:
            return None
        n_out += n
    return n_in, n_out


def _from_vllm(result: Any, usage: Usage) -> bool:
    items = result if isinstance(result, (list, tuple)) else (result,)
    if not items:
        return False
    n_in = n_out = 0
    for item in items:
        one = _vllm_one(item)
        if one is None:
            return False
        n_in += one[0]
        n_out += one[1]
    usage.input_tokens = n_in
    usage.output_tokens = n_out
    if len(items) == 1:
        arr = _tokens.to_array(items[0].prompt_token_ids)
        if arr is not None:
            usage.prompt_ids = arr.reshape(-1)
    return True


def generated_count(
    sequences: np.ndarray,
    prompt: np.ndarray | None,
    pad_id: int | None,
    eos_ids: list[int] | None,
) -> int:
    """Exact output tokens in ``generate`` sequences (see the module docstring)."""
    seq = sequences.reshape(1, -1) if sequences.ndim == 1 else sequences
    gen = seq
    if prompt is not None and seq.shape[1] > 0:
        p = prompt.reshape(1, -1) if prompt.ndim == 1 else prompt
        lp = p.shape[1]
        if p.shape[0] and p.shape[0] != seq.shape[0] and seq.shape[0] % p.shape[0] == 0:
            # num_return_sequences / beams: generate expands each prompt row in place
            # (repeat_interleave), so row r of the output continues prompt row r // k.
            p = np.repeat(p, seq.shape[0] // p.shape[0], axis=0)
        if p.shape[0] == seq.shape[0] and seq.shape[1] >= lp and np.array_equal(seq[:, :lp], p):
            gen = seq[:, lp:]
        else:
            # Encoder-decoder models start every row with the decoder start token, which is
            # the pad token (T5, Marian) or EOS (BART); it is not generated, so drop it.
            starts = {pad_id} if pad_id is not None else set()
            starts.update(eos_ids or ())
            first = seq[:, 0]
            if starts and bool(np.all(first == first[0])) and int(first[0]) in starts:
                gen = seq[:, 1:]
    rows, width = gen.shape
    if width == 0:
        return 0
    n = np.full(rows, width, dtype=np.int64)
    if pad_id is not None:
        nonpad = gen != pad_id
        last = width - 1 - np.argmax(nonpad[:, ::-1], axis=1)
        n = np.where(nonpad.any(axis=1), last + 1, 0)
    if eos_ids:
        is_eos = np.isin(gen, np.asarray(eos_ids, dtype=np.int64))
        has = is_eos.any(axis=1)
        n = np.where(has, np.argmax(is_eos, axis=1) + 1, n)
    return int(n.sum())


def from_result(result: Any, call: CallTokens | None) -> Usage:
    """Everything that can be inferred exactly from ``result`` and the call's arguments.

    The arguments and the return value are inspected separately: a fault in one (a ``usage``
    property that raises, say) is counted and does not lose what the other gave.
    """
    usage = Usage()
    if call is None and type(result) is list and result and type(result[0]) is int:
        usage.output_tokens = _tokens.count(result)  # the common case: generated token ids
        return usage
    prompt = None
    if call is not None:
        try:
            prompt = prompt_from_call(call, usage)
        except Exception as exc:
            swallow("usage.arguments", exc)
    if result is None or isinstance(result, (str, bytes, bool, int, float)):
        return usage
    in_from_call, ids_from_call = usage.input_tokens, usage.prompt_ids
    try:
        _from_return(result, call, prompt, usage)
    except Exception as exc:
        swallow("usage.result", exc)
        fresh = Usage()  # drop whatever the broken result half-gave
        fresh.input_tokens, fresh.prompt_ids = in_from_call, ids_from_call
        return fresh
    return usage


def _from_return(result: Any, call: CallTokens | None, prompt: np.ndarray | None,
                 usage: Usage) -> None:
    if isinstance(result, (list, tuple)):
        first = result[0] if result else None
        if first is not None and not isinstance(first, (int, np.integer, list, tuple, np.ndarray)) \
                and not _tokens.is_tensor(first):
            _from_vllm(result, usage)  # a list of vLLM-style request outputs
            return
        target = result
    elif isinstance(result, np.ndarray) or _tokens.is_tensor(result):
        target = result
    elif isinstance(result, Mapping):
        _from_openai_keep_prompt(result, usage)
        return
    else:
        if _from_openai_keep_prompt(result, usage) or _from_vllm(result, usage):
            return
        target = getattr(result, "sequences", None)  # Hugging Face GenerateOutput
        if target is None:
            return
    pad = call.pad_id if call is not None else None
    eos = call.eos_ids if call is not None else None
    if pad is None and not eos:
        # Without pad/EOS ids only the prompt prefix could be subtracted, and only from rows at
        # least as wide as the prompt: anything else is counted by shape (no device sync).
        width = _width(target)
        if prompt is None or (width is not None and width < prompt.shape[-1]):
            usage.output_tokens = _tokens.count(target)
            usage.output_by_shape = True
            return
    arr = _tokens.to_array(target)
    if arr is None:
        return
    if arr.ndim == 1 and isinstance(target, (list, tuple)) and target \
            and not isinstance(target[0], int):
        usage.output_tokens = int(arr.size)  # ragged rows: count as given
        return
    usage.output_tokens = generated_count(arr, prompt, pad, eos)
    usage.output_by_shape = pad is None and not eos  # the prompt taken off, padding kept


def _width(target: Any) -> int | None:
    """Row width of 1-D/2-D token ids without reading their values, or None if ragged."""
    shape = getattr(target, "shape", None)
    if shape is not None:
        return int(shape[-1]) if len(shape) else 0
    if isinstance(target, (list, tuple)) and (not target or type(target[0]) is int):
        return len(target)
    return None


def _from_openai_keep_prompt(result: Any, usage: Usage) -> bool:
    """OpenAI-style usage; the prompt ids from the call stay for fingerprints, and the call's
    count is used only when the response reports no input count."""
    in_from_call, ids_from_call = usage.input_tokens, usage.prompt_ids
    if not _from_openai(result, usage):
        return False
    if usage.input_tokens is None:
        usage.input_tokens = in_from_call
    usage.prompt_ids = ids_from_call
    return True
