"""Batch shape and token counts of a model call, from its own tensors (never from text).

On the hot path only shapes are read (no device access). Anything that needs tensor values,
the attention-mask sum (real tokens) and the generated-token count, is computed when the span
ends, so a CUDA tensor is never read on the request path.
"""

from __future__ import annotations

from typing import Any

from inferaudit_sdk import semconv

_tensor_type: Any = None
# dtype -> "holds token ids" (integer, wider than one byte: not bool / int8), filled lazily.
_id_dtypes: dict[Any, bool] = {}


def _is_tensor(x: Any) -> bool:
    global _tensor_type
    if _tensor_type is None:
        import torch

        _tensor_type = torch.Tensor
    return isinstance(x, _tensor_type)


def _holds_ids(dt: Any) -> bool:
    return not (dt.is_floating_point or dt.is_complex) and dt.itemsize > 1  # not bool / int8


class CallInputs:
    """What a call's arguments say about the batch. ``ids`` and ``mask`` are kept (not
    copied) until the span ends."""

    __slots__ = ("batch_size", "ids", "input_len", "mask", "padded")

    def __init__(self, batch_size: int | None, ids: Any, mask: Any,
                 input_len: int | None = None) -> None:
        self.batch_size = batch_size
        self.ids = ids
        self.mask = mask
        if input_len is None and ids is not None:
            input_len = int(ids.shape[-1])
        self.input_len = input_len
        # Padded tokens = batch × sequence length (ids are 2-D), from the shape alone.
        self.padded = batch_size * input_len if ids is not None and batch_size is not None \
            and input_len is not None else None

    def shape_attributes(self) -> dict[str, int]:
        """Token counts: padded = batch × sequence length; real = attention-mask sum."""
        if self.ids is None:
            return {}
        padded = int(self.ids.numel())
        out = {semconv.BATCH_PADDED_TOKENS: padded}
        mask = self.mask
        if mask is not None and _is_tensor(mask) and tuple(mask.shape) == tuple(self.ids.shape):
            out[semconv.BATCH_INPUT_TOKENS] = int(mask.sum())
        else:
            out[semconv.BATCH_INPUT_TOKENS] = padded
        return out


def inspect_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallInputs:
    """Find token ids (``input_ids`` / ``inputs`` / first positional tensor) and the attention
    mask; without integer ids, the batch size is the leading dimension of the first tensor."""
    lead = None
    if kwargs:
        lead = kwargs.get("input_ids")
        if lead is None:
            lead = kwargs.get("inputs")
        if lead is None:
            for key in ("inputs_embeds", "x", "input"):
                lead = kwargs.get(key)
                if lead is not None:
                    break
    if lead is None and args:
        lead = args[0]
    tensor = _tensor_type
    if tensor is None:
        _is_tensor(lead)
        tensor = _tensor_type
    if lead is None or not isinstance(lead, tensor):
        return CallInputs(None, None, None)
    shape = lead.shape
    ndim = len(shape)
    if ndim < 1:
        return CallInputs(None, None, None)
    if ndim == 2:
        dt = lead.dtype
        ids = _id_dtypes.get(dt)
        if ids is None:
            ids = _id_dtypes[dt] = _holds_ids(dt)
        if ids:
            return CallInputs(int(shape[0]), lead,
                              kwargs.get("attention_mask") if kwargs else None, int(shape[1]))
    return CallInputs(int(shape[0]), None, None)


def generated_tokens(result: Any, inputs: CallInputs, eos: Any, encoder_decoder: bool
                     ) -> int | None:
    """Exact new tokens of a ``generate`` result: per row, everything after the prompt up to
    and including the first EOS (rows that finished early are padded after it)."""
    seq = getattr(result, "sequences", result)
    if not _is_tensor(seq) or seq.dim() != 2:
        return None
    import torch

    if encoder_decoder:
        new = seq[:, 1:]  # the decoder starts from one start token
    else:
        if inputs.input_len is None:
            return None
        new = seq[:, inputs.input_len:]
    rows, width = int(new.shape[0]), int(new.shape[1])
    if width == 0:
        return 0
    eos_ids = [eos] if isinstance(eos, int) else list(eos or ())
    if not eos_ids:
        return rows * width
    is_eos = torch.isin(new, torch.tensor(eos_ids, device=new.device))
    has = is_eos.any(dim=1)
    first = is_eos.int().argmax(dim=1)
    counts = torch.where(has, first + 1, torch.full_like(first, width))
    return int(counts.sum())


def eos_of(instance: Any, kwargs: dict[str, Any]) -> Any:
    """EOS id(s) the generate call stops at: explicit argument, else generation config."""
    if kwargs.get("eos_token_id") is not None:
        return kwargs["eos_token_id"]
    cfg = kwargs.get("generation_config") or getattr(instance, "generation_config", None)
    return getattr(cfg, "eos_token_id", None)
