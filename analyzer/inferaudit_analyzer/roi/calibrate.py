"""``inferaudit calibrate``: sweep the user's own model over batch sizes x lengths on this device.

Spans from an unbatched server only hold batch size 1, so the batch dimension of the service
curve cannot be fitted from them. This sweep measures it directly: for each (batch, prompt
length, output length) it times ``repeats`` generation calls (after a warm-up; the
repeats are shuffled rounds over the grid) and keeps the median wall time. The ROI model fits
the curve's shape to these points and anchors its level to
the spans (fit.py).

The model comes from an import path ``module:factory`` (called with no arguments). The object it
returns is used in one of two ways:

- it has ``generate(prompts: list[list[int]], max_new_tokens: list[int])`` (like the example's
  ``TinyGPT2``): called as is;
- it is a Hugging Face ``PreTrainedModel``: left-padded ``input_ids`` + ``attention_mask`` and
  ``generate(max_new_tokens=n, min_new_tokens=n)``.

Works on CPU and on CUDA (the clock is read after ``torch.cuda.synchronize``). torch is imported
lazily: the analyzer does not need it otherwise.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_FACTORY = "examples.tiny_gpt2:TinyGPT2"
DEFAULT_BATCHES = (1, 2, 4, 8)
DEFAULT_IN_TOKENS = (16, 96)
DEFAULT_OUT_TOKENS = (8, 32)
CALIBRATION_SCHEMA = "inferaudit.calibration/1"


class FactoryError(ValueError):
    """The ``module:factory`` path cannot be loaded; the message says which part failed."""


def load_factory(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise FactoryError(f"model factory must look like 'module:factory', got {path!r}")
    # like `uvicorn app:app`, a module in the current directory is importable without
    # installing it (the console script's sys.path does not hold the cwd)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FactoryError(f"cannot import {module_name!r} ({exc})") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise FactoryError(f"{module_name!r} has no callable {attr!r}")
    return fn()


def _generator(obj: Any, vocab: int) -> Callable[[int, int, int], None]:
    """A callable (batch, in_tokens, out_tokens) -> None running one generation call."""
    import torch

    if isinstance(obj, torch.nn.Module) and hasattr(obj, "generate"):
        device = next(obj.parameters()).device
        pad = getattr(getattr(obj, "config", None), "pad_token_id", None) or 0

        def run_hf(b: int, n_in: int, n_out: int) -> None:
            ids = torch.randint(1, max(2, vocab - 1), (b, n_in), device=device)
            mask = torch.ones_like(ids)
            with torch.inference_mode():
                obj.generate(ids, attention_mask=mask, max_new_tokens=n_out,
                             min_new_tokens=n_out, do_sample=False, pad_token_id=pad)
        return run_hf

    if not hasattr(obj, "generate"):
        raise FactoryError("the factory's object has no generate() method")

    def run_lists(b: int, n_in: int, n_out: int) -> None:
        g = torch.Generator().manual_seed(b * 1000 + n_in)
        prompts = [torch.randint(0, max(2, vocab - 1), (n_in,), generator=g).tolist()
                   for _ in range(b)]
        obj.generate(prompts, [n_out] * b)
    return run_lists


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def sweep(factory: str = DEFAULT_FACTORY, *, batches: Sequence[int] = DEFAULT_BATCHES,
          in_tokens: Sequence[int] = DEFAULT_IN_TOKENS,
          out_tokens: Sequence[int] = DEFAULT_OUT_TOKENS, repeats: int = 2,
          torch_threads: int | None = 1, model: Any = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every (batch, in, out) combination; returns the calibration JSON document.

    Raises:
        FactoryError: the model cannot be loaded or has no generate().
    """
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    obj = model if model is not None else load_factory(factory)
    spec = getattr(obj, "spec", None)
    vocab = int(getattr(spec, "vocab_size", 0) or getattr(
        getattr(obj, "config", None), "vocab_size", 0) or 1000)
    run = _generator(obj, vocab)
    run(1, min(in_tokens), min(out_tokens))  # warm-up: first-call allocations and caches
    grid = [(b, n_in, n_out) for b in batches for n_in in in_tokens for n_out in out_tokens]
    times: dict[tuple[int, int, int], list[int]] = {g: [] for g in grid}
    # Rounds over the whole grid in a shuffled order, not repeats back to back: a slow spell
    # (a neighbour's burst on a shared host, thermal throttling) then spreads over all points
    # instead of biasing a few, and the median per point drops it.
    rng = random.Random(0)
    for _ in range(max(1, repeats)):
        order = list(grid)
        rng.shuffle(order)
        for b, n_in, n_out in order:
            _sync()
            t0 = time.perf_counter_ns()
            run(b, n_in, n_out)
            _sync()
            times[(b, n_in, n_out)].append(time.perf_counter_ns() - t0)
    points = []
    for g in grid:
        med = statistics.median(times[g])
        points.append({"batch": g[0], "in_tokens": g[1], "out_tokens": g[2],
                       "duration_ns": int(med), "repeats_ns": times[g]})
        if progress is not None:
            progress(f"batch {g[0]} in {g[1]} out {g[2]}: {med / 1e6:.1f} ms")
    dev = "cpu"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        dev = torch.cuda.get_device_name(0)
    return {
        "schema": CALIBRATION_SCHEMA,
        "model": factory if model is None else type(obj).__name__,
        "device": dev,
        "torch_threads": torch.get_num_threads(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "repeats": repeats,
        "statistic": "median wall ns per generation call (warm)",
        "points": points,
    }
