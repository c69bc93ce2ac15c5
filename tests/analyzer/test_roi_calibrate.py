"""The calibration sweep's workload-mix mode and its side-by-side idle-start timing, on a model
stand-in whose calls are recorded (the real torch sweep is exercised by test_report_cli)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

pytest.importorskip("torch")

from inferaudit_analyzer.roi.calibrate import idle_factor_of, mix_batches, sweep


class _Recorder:
    """Has the ``generate(prompts, max_new_tokens)`` the sweep calls; remembers each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[int]]] = []

    def generate(self, prompts, max_new_tokens):
        self.calls.append(([len(p) for p in prompts], list(max_new_tokens)))
        return [[0] * n for n in max_new_tokens]


MIX = [(5, 2), (40, 9), (17, 30), (3, 3)]


def test_mix_batches_draw_rows_from_the_mix_per_size() -> None:
    grid = mix_batches(MIX, [1, 3, 8], per_size=4, seed=1)
    assert Counter(len(rows) for rows in grid) == {1: 4, 3: 4, 8: 4}
    assert all(row in MIX for rows in grid for row in rows)
    assert grid == mix_batches(MIX, [1, 3, 8], per_size=4, seed=1)  # seeded
    assert grid != mix_batches(MIX, [1, 3, 8], per_size=4, seed=2)
    with pytest.raises(ValueError, match="mix"):
        mix_batches([], [1], per_size=1)


def test_mix_sweep_times_unequal_rows_and_records_the_longest() -> None:
    model = _Recorder()
    doc = sweep(batches=[2, 4], repeats=2, model=model, mix=MIX, per_size=3, torch_threads=None)
    pts = doc["points"]
    assert len(pts) == 6 and doc["grid"].startswith("workload mix")
    for p in pts:
        assert p["in_tokens"] == max(r[0] for r in p["rows"])
        assert p["out_tokens"] == max(r[1] for r in p["rows"])
        assert len(p["repeats_ns"]) == 2 and "idle_duration_ns" not in p
    # the model saw the rows' own lengths, not a batch of equal prompts
    timed = [c for c in model.calls if len(c[0]) > 1]
    assert any(len(set(lens)) > 1 for lens, _ in timed)
    assert doc["idle_start_factor"] is None


def test_idle_pairs_time_each_point_after_a_pause_and_back_to_back() -> None:
    model = _Recorder()
    doc = sweep(batches=[1, 2], repeats=1, model=model, mix=MIX, per_size=2, torch_threads=None,
                idle_pause_ms=1.0)
    pts = doc["points"]
    assert all(p["idle_duration_ns"] > 0 and len(p["idle_repeats_ns"]) == 1 for p in pts)
    assert doc["idle_pause_ms"] == 1.0
    expected = sum(p["idle_duration_ns"] for p in pts) / sum(p["duration_ns"] for p in pts)
    assert doc["idle_start_factor"] == pytest.approx(expected)
    # each timed point ran twice in a row: after the pause, then back to back
    assert len(model.calls) == 2 + 2 * len(pts)  # two warm-up calls


def test_idle_factor_of_points() -> None:
    assert idle_factor_of([{"duration_ns": 100}]) is None
    assert idle_factor_of([{"duration_ns": 100, "idle_duration_ns": 130},
                           {"duration_ns": 300, "idle_duration_ns": 310}]) == pytest.approx(1.1)


class _Drifting(_Recorder):
    """Every call takes (rows + longest prompt) ms, times a speed that halves mid-sweep."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def generate(self, prompts, max_new_tokens):
        self.n += 1
        slow = 2.0 if self.n > 12 else 1.0
        time.sleep(slow * (len(prompts) + max(len(p) for p in prompts)) / 1000)
        return super().generate(prompts, max_new_tokens)


def test_reference_calls_take_the_hosts_drift_out_of_the_points() -> None:
    mix = [(3, 1), (6, 1), (9, 1)]
    doc = sweep(batches=[1, 4], repeats=1, model=_Drifting(), mix=mix, per_size=4,
                torch_threads=None, reference=True)
    pts = doc["points"]
    assert all({"raw_duration_ns", "reference_ns", "speed_ratio"} <= p.keys() for p in pts)
    raw = [p["raw_duration_ns"] / (p["batch"] + p["in_tokens"]) for p in pts]
    fixed = [p["duration_ns"] / (p["batch"] + p["in_tokens"]) for p in pts]
    # raw per-unit times split in two speeds; corrected ones sit together
    assert max(raw) / min(raw) > 1.6
    assert max(fixed) / min(fixed) < max(raw) / min(raw)
    assert doc["speed_ratio_cv"] > 0.1
