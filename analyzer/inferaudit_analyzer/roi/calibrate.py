"""``inferaudit calibrate``: sweep the user's own model over batch sizes x lengths on this device.

Spans from an unbatched server only hold batch size 1, so the batch dimension of the service
curve cannot be fitted from them. This sweep measures it directly: for each (batch, prompt
length, output length) it times ``repeats`` generation calls (after a warm-up; the
repeats are shuffled rounds over the grid) and keeps the median wall time. The ROI model fits
the curve's shape to these points and anchors its level to
the spans (fit.py).

With ``mix`` (the workload's own (prompt, output) token pairs, e.g. from the audited requests),
each grid point is instead a batch of ``b`` rows drawn from that mix: unequal prompts
(left-padded, so the padding and masking a real batch pays are in the timing), the longest
prompt and output of the draw recorded as the point's ``in_tokens`` / ``out_tokens`` (what the
curve is indexed by). A batch of equal-length prompts is the best case of a padded batch and
runs a cheaper attention path; on the example it under-stated real batched calls by ~10 % (b >=
3 by up to 30 %), which the tail latency of a batched server magnifies.

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

import numpy as np

from inferaudit_analyzer.roi.fit import is_ragged

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
        hint = (" — the default is the example's tiny GPT-2, importable from the project's "
                "source checkout only; pass --model module:factory for your model"
                if path == DEFAULT_FACTORY else "")
        raise FactoryError(f"cannot import {module_name!r} ({exc}){hint}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise FactoryError(f"{module_name!r} has no callable {attr!r}")
    return fn()


# One generation call over rows of (prompt tokens, output tokens).
Runner = Callable[[Sequence[tuple[int, int]]], None]


def _generator(obj: Any, vocab: int) -> Runner:
    """A callable running one generation call for rows of (prompt tokens, output tokens);
    unequal prompts are left-padded with an attention mask, as a serving batch is."""
    import torch

    if isinstance(obj, torch.nn.Module) and hasattr(obj, "generate"):
        device = next(obj.parameters()).device
        pad = getattr(getattr(obj, "config", None), "pad_token_id", None) or 0

        def run_hf(rows: Sequence[tuple[int, int]]) -> None:
            width = max(n for n, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (n_in, _) in enumerate(rows):
                ids[r, width - n_in:] = torch.randint(1, max(2, vocab - 1), (n_in,))
                mask[r, width - n_in:] = 1
            n_out = max(o for _, o in rows)
            with torch.inference_mode():
                obj.generate(ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False,
                             pad_token_id=pad)
        return run_hf

    if not hasattr(obj, "generate"):
        raise FactoryError("the factory's object has no generate() method")

    def run_lists(rows: Sequence[tuple[int, int]]) -> None:
        g = torch.Generator().manual_seed(len(rows) * 1000 + max(n for n, _ in rows))
        prompts = [torch.randint(0, max(2, vocab - 1), (n_in,), generator=g).tolist()
                   for n_in, _ in rows]
        obj.generate(prompts, [o for _, o in rows])
    return run_lists


def mix_batches(mix: Sequence[tuple[int, int]], batches: Sequence[int], per_size: int,
                seed: int = 0) -> list[tuple[tuple[int, int], ...]]:
    """``per_size`` batches of each size, rows drawn with replacement from ``mix`` (seeded)."""
    if not mix:
        raise ValueError("mix: need at least one (prompt tokens, output tokens) pair")
    rng = random.Random(seed)
    pairs = [(max(1, int(a)), max(1, int(b))) for a, b in mix]
    return [tuple(rng.choice(pairs) for _ in range(b)) for b in batches
            for _ in range(max(1, per_size))]


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def sweep(factory: str = DEFAULT_FACTORY, *, batches: Sequence[int] = DEFAULT_BATCHES,
          in_tokens: Sequence[int] = DEFAULT_IN_TOKENS,
          out_tokens: Sequence[int] = DEFAULT_OUT_TOKENS, repeats: int = 2,
          torch_threads: int | None = 1, model: Any = None,
          progress: Callable[[str], None] | None = None,
          mix: Sequence[tuple[int, int]] | None = None, per_size: int = 6,
          seed: int = 0, idle_pause_ms: float = 0.0, reference: bool = False
          ) -> dict[str, Any]:
    """Time every (batch, in, out) combination, or with ``mix`` ``per_size`` batches of each
    size drawn from the workload's (prompt, output) pairs; returns the calibration JSON.

    With ``idle_pause_ms`` > 0 each timing becomes a pair: the call after the thread slept that
    long (as a server's model thread does between requests), then the same call right after
    (back-to-back). Both see the same moment of the host, so their ratio
    (``idle_start_factor``) isolates what waking up costs; ``duration_ns`` stays the
    back-to-back median.

    With ``reference``, each timing of a batch comes right after a one-row call of its longest
    row (the pause, if any, goes before that reference call, and the idle pair is taken on it).
    The references trace the host's speed through the sweep: each point's duration is divided
    by its reference's measured / fitted ratio (one-row fit ``fixed + per_in x in + per_out x
    out`` over all references), so a slow spell during the sweep no longer bends the batch
    dimension (``raw_duration_ns`` keeps the untouched median). On the shared example host
    the speed moved by tens of percent within a sweep, which put the swept per-sequence decode
    cost anywhere between 0 and 3x its value.

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
    if mix is not None:
        grid = mix_batches(mix, batches, per_size, seed)
    else:
        grid = [tuple([(n_in, n_out)] * b) for b in batches for n_in in in_tokens
                for n_out in out_tokens]
    for rows in (grid[0][:1], grid[-1]):  # warm-up: first-call allocations, largest shapes
        run(rows)
    times: list[list[int]] = [[] for _ in grid]
    idle_times: list[list[int]] = [[] for _ in grid]
    ref_times: list[list[int]] = [[] for _ in grid]
    # Rounds over the whole grid in a shuffled order, not repeats back to back: a slow spell
    # (a neighbour's burst on a shared host, thermal throttling) then spreads over all points
    # instead of biasing a few, and the median per point drops it.
    rng = random.Random(0)
    for _ in range(max(1, repeats)):
        order = list(range(len(grid)))
        rng.shuffle(order)
        for k in order:
            solo = (_longest(grid[k]),) if reference else grid[k]
            if idle_pause_ms > 0:
                _sync()
                time.sleep(idle_pause_ms / 1e3)
                idle_times[k].append(_timed(run, solo))
            if reference:
                ref_times[k].append(_timed(run, solo))
            times[k].append(_timed(run, grid[k]))
    speed = _speed_track(grid, ref_times) if reference else None
    points = []
    for k, (rows, ts, its) in enumerate(zip(grid, times, idle_times, strict=True)):
        med = statistics.median(ts)
        b, (n_in, n_out) = len(rows), _longest(rows)
        point: dict[str, Any] = {"batch": b, "in_tokens": n_in, "out_tokens": n_out,
                                 "ragged": is_ragged(rows), "duration_ns": int(med),
                                 "repeats_ns": ts}
        if speed is not None:
            point["raw_duration_ns"] = int(med)
            point["reference_ns"] = int(statistics.median(ref_times[k]))
            point["speed_ratio"] = float(speed[k])
            point["duration_ns"] = int(med / speed[k])
            med = point["duration_ns"]
        if its:
            # the idle pair: idle-start vs back-to-back of the same call (the reference one)
            point["idle_duration_ns"] = int(statistics.median(its))
            point["idle_repeats_ns"] = its
            point["idle_base_ns"] = point.get("reference_ns", point["duration_ns"])
        if mix is not None:
            point["rows"] = [list(r) for r in rows]
        points.append(point)
        if progress is not None:
            progress(f"batch {b} in {n_in} out {n_out}: {med / 1e6:.1f} ms")
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
        "grid": ("workload mix: batches drawn from the given (prompt, output) pairs, "
                 "left-padded" if mix is not None else "batch x in x out, equal rows"),
        "reference": ("each batch timed right after a one-row call of its longest row; "
                      "durations divided by that call's measured / fitted ratio"
                      if reference else None),
        "speed_ratio_cv": None if speed is None else float(np.std(speed)),
        "idle_pause_ms": idle_pause_ms if idle_pause_ms > 0 else None,
        "idle_start_factor": idle_factor_of(points),
        "points": points,
    }


def _timed(run: Runner, rows: Sequence[tuple[int, int]]) -> int:
    _sync()
    t0 = time.perf_counter_ns()
    run(rows)
    _sync()
    return time.perf_counter_ns() - t0


def _longest(rows: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The one row a batch is indexed by: its longest prompt and its longest output."""
    return max(r[0] for r in rows), max(r[1] for r in rows)


def _speed_track(grid: Sequence[tuple[tuple[int, int], ...]], ref_times: list[list[int]]
                 ) -> np.ndarray:
    """Per point: its reference calls' median over what a one-row fit of all references
    predicts for them (1.0: the host ran at the sweep's average speed), clipped to 0.5-2."""
    from inferaudit_analyzer.roi.fit import nnls

    longest = [_longest(rows) for rows in grid]
    a = np.array([[1.0, n_in, n_out] for n_in, n_out in longest])
    y = np.array([statistics.median(t) for t in ref_times], dtype=np.float64)
    pred = a @ nnls(a, y)
    ok = pred > 0
    ratio = np.ones(len(grid))
    ratio[ok] = y[ok] / pred[ok]
    return np.clip(ratio, 0.5, 2.0)


def idle_factor_of(points: Sequence[dict[str, Any]]) -> float | None:
    """Summed idle-start medians over summed back-to-back medians of the same calls (None: not
    measured)."""
    pairs = [(p["idle_duration_ns"], p.get("idle_base_ns", p["duration_ns"])) for p in points
             if p.get("idle_duration_ns") and p.get("duration_ns")]
    if not pairs:
        return None
    return float(sum(a for a, _ in pairs) / sum(b for _, b in pairs))
