"""The replay simulator against cases whose answer is known by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inferaudit_analyzer.roi.simulate import ServiceCurve, Workload, correlation_block, simulate

FLAT = ServiceCurve(fixed_ns=100.0, prefill_ns_per_token=0.0, step_ns=0.0, step_ns_per_seq=0.0)


def test_sequential_queue_builds_up_exactly() -> None:
    work = Workload.of([0, 0, 0, 250], [1, 1, 1, 1], [1, 1, 1, 1])
    res = simulate(work, FLAT, policy="sequential")
    assert res.start_ns.tolist() == [0, 100, 200, 300]
    assert res.latency_ns.tolist() == [100, 200, 300, 150]
    assert res.busy_ns == 400
    assert res.batch_sizes.tolist() == [1, 1, 1, 1]


def test_dynamic_batching_takes_everything_waiting() -> None:
    work = Workload.of([0, 10, 20, 30, 40], [1] * 5, [1] * 5)
    res = simulate(work, FLAT, policy="dynamic", max_batch=8)
    # First call starts alone at 0; the four that arrive meanwhile ride the second call.
    assert res.batch_sizes.tolist() == [1, 4]
    assert res.finish_ns.tolist() == [100, 200, 200, 200, 200]


def test_dynamic_respects_max_batch_and_max_wait() -> None:
    work = Workload.of([0, 10, 20, 30], [1] * 4, [1] * 4)
    res = simulate(work, FLAT, policy="dynamic", max_batch=2, max_wait_ns=15)
    assert res.batch_sizes.tolist() == [2, 2]
    assert res.start_ns.tolist() == [10, 10, 110, 110]


def test_padded_call_lasts_for_longest_request() -> None:
    curve = ServiceCurve(fixed_ns=0, prefill_ns_per_token=1.0, step_ns=10.0, step_ns_per_seq=1.0)
    work = Workload.of([0, 0], [5, 3], [4, 2])
    res = simulate(work, curve, policy="dynamic", max_batch=2)
    assert res.finish_ns.tolist() == [2 * 5 + 4 * (10 + 2)] * 2


def test_continuous_lets_short_requests_leave_early() -> None:
    curve = ServiceCurve(fixed_ns=0, prefill_ns_per_token=0, step_ns=10.0, step_ns_per_seq=0.0)
    work = Workload.of([0, 0], [1, 1], [1, 5])
    res = simulate(work, curve, policy="continuous", max_batch=4)
    assert res.finish_ns.tolist() == [10, 50]


def test_more_replicas_never_raise_latency() -> None:
    rng = np.random.default_rng(0)
    arr = np.cumsum(rng.exponential(80, 500))
    work = Workload.of(arr, np.ones(500), np.ones(500))
    one = simulate(work, FLAT, replicas=1)
    two = simulate(work, FLAT, replicas=2)
    assert two.p(0.95) <= one.p(0.95)
    assert two.utilization < one.utilization


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown batching policy"):
        simulate(Workload.of([0], [1], [1]), FLAT, policy="magic")


def test_service_noise_keeps_the_work_and_widens_the_tail() -> None:
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(120, 2000))
    work = Workload.of(arr, np.ones(2000), np.ones(2000))
    measured = rng.lognormal(0.0, 0.5, 500) * 100.0
    noisy = FLAT.with_noise(measured, np.full(500, 100.0))
    assert np.mean(noisy.noise) == pytest.approx(1.0)
    plain = simulate(work, FLAT, policy="sequential")
    a = simulate(work, noisy, policy="sequential", seed=3)
    b = simulate(work, noisy, policy="sequential", seed=3)
    assert a.latency_ns.tolist() == b.latency_ns.tolist()  # seeded: reproducible
    assert a.busy_ns == pytest.approx(plain.busy_ns, rel=0.05)  # same work on average
    assert a.p(0.95) > plain.p(0.95)  # variance is what queueing turns into tail latency


def test_idle_factor_applies_only_to_calls_that_start_on_an_idle_replica() -> None:
    curve = replace(FLAT, idle_factor=1.5)
    # 0: idle server -> 150; 10 arrives while busy -> back to back, 100; 400: idle again
    work = Workload.of([0, 10, 400], [1] * 3, [1] * 3)
    res = simulate(work, curve, policy="sequential")
    assert res.finish_ns.tolist() == [150, 250, 550]
    assert res.busy_ns == 400


def test_noise_draws_come_in_blocks_of_consecutive_factors() -> None:
    factors = tuple(float(x) for x in np.linspace(0.5, 1.5, 40))
    curve = replace(FLAT, noise=factors, noise_block=5)
    draws = curve.noise_draws(23, seed=4)
    assert draws is not None and draws.size == 23
    idx = np.searchsorted(np.asarray(factors), draws)
    for start in range(0, 20, 5):  # each block of 5 is a run of consecutive source factors
        assert np.all(np.diff(idx[start:start + 5]) == 1)
    assert curve.noise_draws(23, seed=4).tolist() == draws.tolist()  # seeded
    assert FLAT.noise_draws(5, seed=0) is None


def test_correlation_block_reads_the_autocorrelation() -> None:
    rng = np.random.default_rng(0)
    white = rng.standard_normal(400)
    assert correlation_block(white) <= 2
    ar = np.zeros(400)
    for t in range(1, 400):  # AR(1), phi 0.8: correlation lasts ~5-10 lags
        ar[t] = 0.8 * ar[t - 1] + rng.standard_normal()
    assert correlation_block(ar) >= 4
    assert correlation_block(ar[:5]) == 1  # too short to tell


def test_slow_spells_make_a_longer_tail_than_scattered_slow_calls() -> None:
    rng = np.random.default_rng(2)
    arr = np.cumsum(rng.exponential(140, 3000))
    work = Workload.of(arr, np.ones(3000), np.ones(3000))
    spell = np.ones(400)
    spell[100:140] = 2.0  # one spell of 40 consecutive slow calls
    scattered = FLAT.with_noise(spell * 100.0, np.full(400, 100.0))
    assert scattered.noise_block == 1  # the fit's default: independent draws
    noisy = replace(scattered, noise_block=correlation_block(np.log(np.asarray(scattered.noise))))
    assert noisy.noise_block > 1
    p_spell = np.mean([simulate(work, noisy, seed=s).p(0.95) for s in range(6)])
    p_scat = np.mean([simulate(work, scattered, seed=s).p(0.95) for s in range(6)])
    assert p_spell > p_scat


def test_only_a_batch_of_unequal_prompts_pays_the_padded_step() -> None:
    curve = ServiceCurve(fixed_ns=0, prefill_ns_per_token=0, step_ns=10.0, step_ns_per_seq=0.0,
                         ragged_step_ns=3.0)
    unequal = simulate(Workload.of([0, 0], [5, 3], [4, 4]), curve, policy="dynamic",
                       max_batch=2)
    equal = simulate(Workload.of([0, 0], [5, 5], [4, 4]), curve, policy="dynamic", max_batch=2)
    single = simulate(Workload.of([0], [5], [4]), curve, policy="dynamic", max_batch=2)
    assert unequal.finish_ns.tolist() == [4 * 13] * 2
    assert equal.finish_ns.tolist() == [4 * 10] * 2
    assert single.finish_ns.tolist() == [4 * 10]
    # rows in flight under continuous batching sit at different positions: padded steps
    cont = simulate(Workload.of([0, 0], [5, 5], [1, 2]), curve, policy="continuous",
                    max_batch=2)
    assert cont.finish_ns.tolist() == [13, 23]
