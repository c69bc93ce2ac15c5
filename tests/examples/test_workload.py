"""The replayed workload: the real trace loader and the generator fitted to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples.workload import (
    DEFAULT_TRACE_PATH,
    QUANTILE_LEVELS_PCT,
    SPLITWISE_CONV_FIT,
    Workload,
    WorkloadError,
    WorkloadRequest,
    choose_window,
    fit_workload,
    generate_workload,
    load_workload,
    read_trace,
    window_distance,
    window_stats,
)

needs_trace = pytest.mark.skipif(
    not DEFAULT_TRACE_PATH.is_file(),
    reason=f"real workload trace not present at {DEFAULT_TRACE_PATH}",
)


@needs_trace
def test_embedded_constants_match_the_trace() -> None:
    assert fit_workload(read_trace(DEFAULT_TRACE_PATH)) == SPLITWISE_CONV_FIT


@needs_trace
def test_load_prefers_the_trace_and_says_so() -> None:
    w = load_workload(50)
    assert w.from_trace and str(DEFAULT_TRACE_PATH.resolve()) in w.source
    assert len(w) == 50
    full = read_trace(DEFAULT_TRACE_PATH)
    start = w.window["start"]
    assert w.requests == full.requests[start:start + 50]
    assert w.source.endswith(f"[{start}:{start + 50}]")


@needs_trace
def test_trace_window_is_representative_not_the_start_up_ramp() -> None:
    """The trace's first rows are its ramp (slower, burstier, longer outputs); the default
    window is the one whose statistics are closest to the whole trace's."""
    full = read_trace(DEFAULT_TRACE_PATH)
    w = load_workload(245)
    win = w.window
    assert win["start"] > 0 and win["size"] == 245 and win["trace_rows"] == len(full)
    assert w.requests == full.requests[win["start"]:win["start"] + 245]
    whole = window_stats(full.requests)
    head_d = window_distance(window_stats(full.requests[:245]), whole)
    assert win["distance"] < head_d / 2
    assert win["stats"] == window_stats(w.requests) and win["trace_stats"] == whole
    assert load_workload(245) == w  # deterministic


@needs_trace
def test_trace_start_overrides_the_choice() -> None:
    full = read_trace(DEFAULT_TRACE_PATH)
    w = load_workload(40, start=123)
    assert w.requests == full.requests[123:163]
    assert w.window["start"] == 123 and "--trace-start" in w.window["chosen"]
    with pytest.raises(ValueError, match="outside"):
        load_workload(40, start=len(full))


def test_choose_window_skips_a_ramp() -> None:
    """A synthetic trace: a slow, bursty start with long outputs, then a steady stretch."""
    rng = np.random.default_rng(0)
    reqs, t = [], 0.0
    for i in range(1000):
        ramp = i < 80
        t += float(rng.exponential(1.0 if ramp else 0.2)) * (3.0 if ramp and i % 7 == 0 else 1)
        reqs.append(WorkloadRequest(t, int(rng.integers(500, 1500)),
                                    int(rng.integers(300, 400) if ramp else
                                        rng.integers(80, 180))))
    full = Workload(tuple(reqs), "test:ramp")
    start = choose_window(full, 80)
    # on the n/4 stride, and at most a stride's worth of the window inside the ramp
    assert start % 20 == 0 and start >= 80 - 20


def test_load_falls_back_to_the_fitted_generator(tmp_path: Path) -> None:
    w = load_workload(30, path=tmp_path / "absent.csv", seed=3)
    assert not w.from_trace and w.source == "fitted:splitwise_conv(seed=3)"
    assert len(w) == 30
    assert load_workload(30, use_trace=False, seed=3) == w


def test_generator_is_seeded() -> None:
    assert generate_workload(200, seed=1) == generate_workload(200, seed=1)
    assert generate_workload(200, seed=1) != generate_workload(200, seed=2)


def test_generator_reproduces_the_fitted_distributions() -> None:
    """Refitting what the generator produced recovers the parameters it was given."""
    refit = fit_workload(generate_workload(SPLITWISE_CONV_FIT.n_requests, seed=0))
    ref = SPLITWISE_CONV_FIT
    assert refit.mean_interarrival_s == pytest.approx(ref.mean_interarrival_s, rel=0.05)
    assert refit.gap_gamma_shape == pytest.approx(ref.gap_gamma_shape, rel=0.15)
    assert refit.rate_log_sigma == pytest.approx(ref.rate_log_sigma, rel=0.35)
    # Interior quantiles within 10 % up to the 99th percentile; the 99.5th and 99.9th rest on
    # ~100 and ~20 samples, within 30 %; the extremes are single samples.
    for level, got, want in zip(QUANTILE_LEVELS_PCT[1:-1], refit.prompt_quantiles[1:-1],
                                ref.prompt_quantiles[1:-1], strict=True):
        assert got == pytest.approx(want, rel=0.10 if level <= 99 else 0.30), level
    for level, got, want in zip(QUANTILE_LEVELS_PCT[1:-1], refit.output_quantiles[1:-1],
                                ref.output_quantiles[1:-1], strict=True):
        assert got == pytest.approx(want, rel=0.10 if level <= 99 else 0.30), level


def test_the_generated_tail_is_as_long_as_the_traces() -> None:
    # Above its 95 % quantile the trace's prompts average ~4,300 tokens; interpolating from
    # there straight to the maximum (one sample) made the generated tail about twice that.
    path = DEFAULT_TRACE_PATH
    if not path.is_file():
        pytest.skip(f"the real trace is absent: {path}")
    real = np.array([r.prompt_tokens for r in read_trace(path).requests], dtype=float)
    gen = np.array([r.prompt_tokens for r in generate_workload(len(real), seed=0).requests],
                   dtype=float)
    p95 = np.percentile(real, 95)
    assert gen[gen > p95].mean() == pytest.approx(real[real > p95].mean(), rel=0.15)
    assert gen.mean() == pytest.approx(real.mean(), rel=0.05)


def test_generated_arrivals_are_burstier_than_poisson() -> None:
    w = generate_workload(5000, seed=0)
    gaps = np.diff([r.arrived_at_s for r in w.requests])
    assert (gaps >= 0).all()
    assert gaps.std() / gaps.mean() > 1.0  # Poisson would give 1


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("arrived_at,num_prefill_tokens\n0,1\n", ":1: missing column(s) num_decode_tokens"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,2\n0.5,x,2\n", ":3: not a number"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n1,1,2\n0.5,1,2\n", ":3: arrived_at"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,0,2\n", ":2: token counts"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n", ": no requests"),
    ],
)
def test_bad_trace_names_file_and_line(tmp_path: Path, text: str, where: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(WorkloadError) as info:
        read_trace(path)
    assert str(path) + where in str(info.value)


def test_broken_trace_is_not_silently_replaced(tmp_path: Path) -> None:
    path = _write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,x,2\n")
    with pytest.raises(WorkloadError):
        load_workload(5, path=path)
