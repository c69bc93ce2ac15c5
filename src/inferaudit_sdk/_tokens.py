"""Recognise containers of token ids and count them exactly, without importing torch.

Token ids arrive as lists of ints, lists of lists (ragged batches), numpy integer arrays or
torch integer tensors (1-D: one sequence; 2-D: a batch). Counts come from shapes and masks,
never from text. torch is only consulted when the caller already imported it
(``sys.modules``), so this module never pulls it in.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _torch_tensor_type() -> Any:
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def is_tensor(obj: Any) -> bool:
    """True for a torch tensor (only if torch is already imported)."""
    tensor = _torch_tensor_type()
    return tensor is not None and isinstance(obj, tensor)


def _is_id(x: Any) -> bool:
    """One token id: an ``int`` or a numpy integer scalar (``list(np_array)`` holds those);
    never a bool (``np.bool_`` is not an ``np.integer``)."""
    return type(x) is int or isinstance(x, np.integer)


def _int_list(obj: Any) -> bool:
    """A list/tuple of token ids. Only the ends are type-checked: a full scan would cost O(n)
    Python steps per request on the hot path, and lists mixing ids with other things do not
    come out of tokenizers or models."""
    if not obj:
        return True
    a, b = obj[0], obj[-1]  # inlined _is_id: the common case is one ``type() is int`` each
    return ((type(a) is int or isinstance(a, np.integer))
            and (type(b) is int or isinstance(b, np.integer)))


def to_array(obj: Any) -> np.ndarray | None:
    """A 1-D or 2-D int64 numpy copy of ``obj`` if it is a container of token ids, else None.

    Ragged lists of lists are returned as a 1-D concatenation (rows are not padded).
    """
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "iu" or obj.ndim not in (1, 2):
            return None
        return obj.astype(np.int64, copy=False)
    if is_tensor(obj):
        if obj.is_floating_point() or obj.is_complex() or obj.dim() not in (1, 2):
            return None
        if str(obj.dtype) == "torch.bool":
            return None
        return obj.detach().to("cpu").numpy().astype(np.int64, copy=False)
    if isinstance(obj, (list, tuple)):
        if not obj:
            return np.zeros(0, dtype=np.int64)
        first = obj[0]
        if _is_id(first):
            if not _int_list(obj):
                return None
            try:
                return np.asarray(obj, dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                return None
        if isinstance(first, (list, tuple)):
            for row in obj:
                if not isinstance(row, (list, tuple)) or not _int_list(row):
                    return None
            width = len(first)
            try:
                if all(len(row) == width for row in obj):
                    return np.asarray(obj, dtype=np.int64).reshape(len(obj), width)
                return np.asarray([x for row in obj for x in row], dtype=np.int64)  # ragged
            except (TypeError, ValueError, OverflowError):
                return None
        if isinstance(first, np.ndarray) or is_tensor(first):
            parts = [to_array(row) for row in obj]
            if any(p is None for p in parts):
                return None
            return np.concatenate([p.reshape(-1) for p in parts])  # type: ignore[union-attr]
    return None


def count(obj: Any) -> int | None:
    """Exact number of token ids in ``obj`` (shape only for arrays: no device sync), or None
    if ``obj`` is not a container of token ids. A bare int or numpy integer counts as one."""
    t = type(obj)
    if t is int:
        return 1
    if t is list or t is tuple or isinstance(obj, (list, tuple)):
        if not obj:
            return 0
        first = obj[0]
        if type(first) is int or isinstance(first, np.integer):
            return len(obj) if _int_list(obj) else None
        total = 0
        for row in obj:  # one level only: rows of ints, or 1-D arrays/tensors
            if isinstance(row, (list, tuple)):
                if not _int_list(row):
                    return None
                total += len(row)
            elif isinstance(row, np.ndarray) or is_tensor(row):
                n = count(row)
                if n is None:
                    return None
                total += n
            else:
                return None
        return total
    if isinstance(obj, np.ndarray):
        return int(obj.size) if obj.dtype.kind in "iu" and obj.ndim in (0, 1, 2) else None
    if is_tensor(obj):
        if obj.is_floating_point() or obj.is_complex() or str(obj.dtype) == "torch.bool":
            return None
        return int(obj.numel()) if obj.dim() in (0, 1, 2) else None
    if isinstance(obj, np.integer):
        return 1  # one token id, as a 0-d integer tensor counts 1
    return None


def mask_count(mask: Any) -> int | None:
    """Number of ones in an attention mask (list, numpy or torch), or None."""
    arr = to_array(mask)
    if arr is None:
        return None
    return int(np.count_nonzero(arr))


def real_tokens(ids: np.ndarray, mask: Any = None, pad_id: int | None = None) -> np.ndarray:
    """The non-padding token ids of ``ids`` in row order, flattened to 1-D. Padding is where
    the attention mask is 0 (preferred) or, without a mask, where the id equals ``pad_id``."""
    if mask is not None:
        m = to_array(mask)
        if m is not None and m.shape == ids.shape:
            return ids[m != 0]
    if pad_id is not None:
        return ids[ids != pad_id]
    return ids.reshape(-1)
