"""The NVML sampler through the fake NVML (real pynvml error classes), and the real pynvml's
"no library here" path on this machine."""

from __future__ import annotations

import logging
import time

import numpy as np
import pynvml
import pytest
from _device_models import fake_cuda_call_span

from inferaudit_sdk import _guard, semconv
from inferaudit_sdk.samplers import _nvml_metrics, _ring, nvml
from inferaudit_sdk.samplers._fake_nvml import FakeGpu, FakeLoad, FakeNvml
from inferaudit_sdk.samplers.nvml import NvmlSampler

MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def step_load(t_ns: int) -> FakeLoad:
    """50% / 100 W before 1 s, 100% / 300 W after; PCIe 1000 KB/s out, 500 in."""
    hot = t_ns >= 1000 * MS
    return FakeLoad(
        sm_util_pct=100 if hot else 50, mem_util_pct=40 if hot else 20,
        power_w=300.0 if hot else 100.0, sm_clock_mhz=1980 if hot else 1410,
        pcie_tx_kbps=1000, pcie_rx_kbps=500, throttle_reasons=4 if hot else 0,
        mem_used_bytes=(8 if hot else 2) << 30,
    )


def sampled(gpu=None, until_ms=2000):
    clock = Clock()
    fake = FakeNvml([gpu or FakeGpu(load=step_load)], clock=clock)
    sampler = NvmlSampler(fake, clock=clock)
    assert sampler.open()
    for t in range(0, until_ms + 1, 100):
        clock.t = t * MS
        sampler.sample_once()
    return sampler, fake, clock


def test_aggregate_over_a_window():
    sampler, _, _ = sampled()
    a = sampler.aggregate(0, 500 * MS, 1500 * MS)
    assert a[semconv.GPU_UTILIZATION_RATIO] == pytest.approx(0.8)  # 4 x 50% + 6 x 100%
    assert a[semconv.GPU_MEMORY_UTILIZATION_RATIO] == pytest.approx(0.32)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(200.0)  # 0.5 s x 100 W + 0.5 s x 300 W
    assert a[semconv.GPU_PCIE_TX_BYTES] == 1000 * 1024
    assert a[semconv.GPU_PCIE_RX_BYTES] == 500 * 1024
    assert a[semconv.GPU_THROTTLE_REASONS] == 4
    assert a[semconv.GPU_MEMORY_USED_BYTES] == 8 << 30
    assert a[semconv.GPU_SAMPLES] == 9
    assert a[semconv.GPU_SM_CLOCK_MHZ] == pytest.approx((4 * 1410 + 6 * 1980) / 10)


def test_window_shorter_than_the_sample_period():
    sampler, _, _ = sampled()
    a = sampler.aggregate(0, 1020 * MS, 1040 * MS)
    assert a[semconv.GPU_UTILIZATION_RATIO] == pytest.approx(1.0)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(6.0)  # 20 ms at 300 W
    assert a[semconv.GPU_SAMPLES] == 0


def test_window_past_the_newest_sample_holds_it():
    sampler, _, _ = sampled()
    a = sampler.aggregate(0, 1950 * MS, 2100 * MS)
    assert a[semconv.GPU_UTILIZATION_RATIO] == pytest.approx(1.0)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(45.0)  # 150 ms at 300 W


def test_ring_wraps_and_keeps_the_newest():
    clock = Clock()
    sampler = NvmlSampler(FakeNvml([FakeGpu(load=step_load)], clock=clock), clock=clock,
                          capacity=8)
    assert sampler.open()
    for t in range(0, 2001, 100):
        clock.t = t * MS
        sampler.sample_once()
    ts, _row = sampler.latest(0)
    assert ts == 2000 * MS
    assert sampler.aggregate(0, 1500 * MS, 1900 * MS)[semconv.GPU_SAMPLES] == 3
    # History older than the ring: the oldest kept sample (1300 ms) holds over the window.
    assert sampler.aggregate(0, 100 * MS, 200 * MS)[semconv.GPU_UTILIZATION_RATIO] == 1.0


def test_unsupported_energy_counter_falls_back_to_power_and_is_not_asked_again():
    gpu = FakeGpu(load=step_load, unsupported=frozenset({"nvmlDeviceGetTotalEnergyConsumption"}))
    sampler, fake, _ = sampled(gpu)
    assert fake.raised["NVMLError_NotSupported"] == 1  # asked once, then dropped
    a = sampler.aggregate(0, 500 * MS, 1500 * MS)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(220.0)  # sampled power x time
    assert _guard.error_counts() == {}


def test_a_sampler_opened_again_after_stop_lists_each_gpu_once():
    sampler, _, _ = sampled(until_ms=200)
    sampler.stop()
    assert sampler.open()
    assert [g.index for g in sampler.gpus] == [0]
    assert len(sampler._rings) == len(sampler._disabled) == len(sampler._energy_j) == 1


def test_lost_gpu_is_counted_and_sampling_goes_on():
    sampler, fake, clock = sampled(until_ms=1000)
    fake.gpus[0].lost = True
    for t in range(1100, 1600, 100):
        clock.t = t * MS
        sampler.sample_once()
    assert fake.raised["NVMLError_GpuIsLost"] > 0
    assert _guard.error_counts()["nvml.read"] == fake.raised["NVMLError_GpuIsLost"]
    assert sampler.ticks == 16
    a = sampler.aggregate(0, 1200 * MS, 1400 * MS)
    assert semconv.GPU_UTILIZATION_RATIO not in a


def test_a_gpu_failing_tick_after_tick_is_asked_less_often_until_it_recovers():
    sampler, fake, clock = sampled(until_ms=1000)  # 11 good ticks
    fake.gpus[0].lost = True
    t = 1100
    while sampler.ticks < 60:
        clock.t = t * MS
        t += 100
        sampler.sample_once()
    groups = 7  # util, memory, clock, power, energy, pcie, throttle
    assert fake.raised["NVMLError_GpuIsLost"] == groups * nvml._FAULTS_BEFORE_BACKOFF
    assert _guard.error_counts()["nvml.read"] == fake.raised["NVMLError_GpuIsLost"]
    fake.gpus[0].lost = False
    while sampler.ticks <= nvml._RETRY_EVERY:  # the retry tick finds it back
        clock.t = t * MS
        t += 100
        sampler.sample_once()
    assert fake.raised["NVMLError_GpuIsLost"] == groups * nvml._FAULTS_BEFORE_BACKOFF
    assert sampler._faults[0] == {g: 0 for g in sampler._faults[0]}
    before = fake.calls
    clock.t = t * MS
    sampler.sample_once()  # asked every tick again
    assert fake.calls - before == groups + 1  # pcie asks twice (tx and rx)
    a = sampler.aggregate(0, clock.t - 50 * MS, clock.t)
    assert a[semconv.GPU_UTILIZATION_RATIO] == 1.0


def test_fake_raises_uninitialized_like_the_real_library():
    fake = FakeNvml()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    try:
        pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError_Uninitialized:
        pass  # the real one without nvmlInit (no library loaded here)
    except pynvml.NVMLError:
        pytest.skip("a real NVML is initialised in this process")


def test_real_pynvml_without_a_library_disables_counters_with_one_line(caplog, config):
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has NVML")
    cfg = config(nvml_enabled=True)
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        assert nvml.start_sampler(cfg) is None
        assert nvml.start_sampler(cfg) is None  # decided once
    lines = [r for r in caplog.records if "NVML" in r.getMessage()]
    assert len(lines) == 1
    assert "NVMLError_LibraryNotFound" in lines[0].getMessage()
    assert nvml.get_sampler() is None
    assert _guard.error_counts() == {}


def test_fake_missing_library_takes_the_same_path(caplog, config):
    cfg = config(nvml_enabled=True)
    fake = FakeNvml(library_missing=True)
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        assert nvml.start_sampler(cfg, backend=fake) is None
    assert fake.raised["NVMLError_LibraryNotFound"] == 1
    assert len([r for r in caplog.records if "NVML not available" in r.getMessage()]) == 1


def test_metrics_use_the_hardware_conventions(metric_reader):
    reader, provider = metric_reader
    sampler, _, _ = sampled()
    _nvml_metrics.register(sampler, provider)
    data = reader.get_metrics_data()
    points = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points[m.name] = list(m.data.data_points)
    for name in (semconv.METRIC_HW_GPU_UTILIZATION, semconv.METRIC_HW_GPU_MEMORY_USAGE,
                 semconv.METRIC_HW_POWER, semconv.METRIC_HW_ENERGY, semconv.METRIC_HW_GPU_IO,
                 semconv.METRIC_GPU_SM_CLOCK, semconv.METRIC_GPU_THROTTLE_REASONS,
                 semconv.METRIC_HW_GPU_MEMORY_UTILIZATION, semconv.METRIC_HW_GPU_MEMORY_LIMIT,
                 semconv.METRIC_GPU_MEMORY_CONTROLLER_UTILIZATION):
        assert name in points, name
    (util,) = points[semconv.METRIC_HW_GPU_UTILIZATION]
    assert util.value == 1.0
    assert util.attributes[semconv.HW_ID] == FakeGpu().uuid
    # the product name is hw.model; hw.name is meant for a short label such as "eth0"
    assert util.attributes[semconv.HW_MODEL] == FakeGpu().name
    assert "hw.name" not in util.attributes
    # hw.gpu.memory.utilization is the fraction of memory in use (the conventions' meaning);
    # NVML's memory-controller busy time has its own name
    (used,) = points[semconv.METRIC_HW_GPU_MEMORY_UTILIZATION]
    assert used.value == pytest.approx((8 << 30) / (80 << 30))
    (controller,) = points[semconv.METRIC_GPU_MEMORY_CONTROLLER_UTILIZATION]
    assert controller.value == pytest.approx(0.4)
    assert util.attributes[semconv.HW_GPU_TASK] == "general"
    assert util.attributes[semconv.HW_TYPE] == "gpu"
    io = {p.attributes[semconv.NETWORK_IO_DIRECTION]: p.value
          for p in points[semconv.METRIC_HW_GPU_IO]}
    assert io == {"transmit": 2 * 1000 * 1024, "receive": 2 * 500 * 1024}  # over 2 s
    (power,) = points[semconv.METRIC_HW_POWER]
    assert power.value == 300.0
    (energy,) = points[semconv.METRIC_HW_ENERGY]
    assert energy.value > 0


def test_a_sampler_started_again_on_the_same_meter_keeps_being_exported(metric_reader, config):
    reader, provider = metric_reader
    cfg = config(nvml_enabled=True)

    def gpu_limits():
        return [p for rm in reader.get_metrics_data().resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics
                if m.name == semconv.METRIC_HW_GPU_MEMORY_LIMIT for p in m.data.data_points]

    try:
        assert nvml.start_sampler(cfg, meter_provider=provider, backend=FakeNvml(), force=True)
        time.sleep(0.3)
        assert len(gpu_limits()) == 1
        nvml.stop_sampler()
        assert nvml.start_sampler(cfg, meter_provider=provider, backend=FakeNvml(), force=True)
        time.sleep(0.3)
        assert len(gpu_limits()) == 1  # the new sampler, once: not silent, not doubled
    finally:
        nvml.stop_sampler()


def test_sampler_thread_cpu_cost_at_10_hz():
    sampler = NvmlSampler(FakeNvml([FakeGpu(load=step_load), FakeGpu(uuid="GPU-1")]), hz=10)
    assert sampler.start()
    time.sleep(2.0)
    sampler.stop()
    assert 15 <= sampler.ticks <= 25
    # Sanity bound only, 10x the 0.5%-of-a-core target so a loaded machine cannot fail it
    # (the real figure is in bench/ and scripts/gpu_check.py output).
    assert sampler.cost_ratio() < 0.05, sampler.cost_ratio()


def test_model_span_gets_gpu_aggregates(spans, config):
    cfg = config(nvml_enabled=True)
    load = FakeLoad(sm_util_pct=37, power_w=250.0, pcie_tx_kbps=2048)
    sampler = nvml.start_sampler(cfg, backend=FakeNvml([FakeGpu(load=load)]))
    assert sampler is not None
    a = fake_cuda_call_span(sampler, spans).attributes
    assert a[semconv.GPU_UTILIZATION_RATIO] == pytest.approx(0.37)
    # Energy over the window: the counter is read a moment before its row is stamped, on a
    # real clock, so not to the last digit.
    assert a[semconv.GPU_POWER_W] == pytest.approx(250.0, rel=0.05)
    assert a[semconv.GPU_ENERGY_J] > 0
    assert a[semconv.GPU_PCIE_TX_BYTES] >= 0


# --------------------------------------------------------------------------------------------
# A span's power: its energy over its window where the counter exists
# --------------------------------------------------------------------------------------------
def rows(power_w, energy_w, until_ms=1000):
    """Ring rows every 100 ms: power readings ``power_w``, the energy counter climbing at
    ``energy_w`` (None: no counter)."""
    ts = np.arange(0, until_ms + 1, 100, dtype=np.int64) * MS
    data = np.full((len(ts), len(_ring.FIELDS)), np.nan)
    data[:, _ring.F["power_w"]] = power_w
    if energy_w is not None:
        data[:, _ring.F["energy_mj"]] = 5e6 + energy_w * ts / 1e6
    return ts, data


def window(ts, data, start, end):
    inside = int(((ts > start) & (ts < end)).sum())
    return _ring.aggregate(ts, data, inside, start, end)


def test_span_power_is_energy_over_the_window_when_readings_lag():
    ts, data = rows(power_w=100.0, energy_w=300.0)
    a = window(ts, data, 250 * MS, 650 * MS)
    assert a[semconv.GPU_POWER_W] == pytest.approx(300.0)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(120.0)  # 0.4 s at 300 W
    between = window(ts, data, 420 * MS, 440 * MS)  # inside one sample period
    assert between[semconv.GPU_POWER_W] == pytest.approx(300.0)
    # A span that ends before the next sample: the counter's slope carries on past the newest.
    past = window(ts, data, 1020 * MS, 1050 * MS)
    assert past[semconv.GPU_POWER_W] == pytest.approx(300.0)
    assert past[semconv.GPU_ENERGY_J] == pytest.approx(9.0)


def test_one_counter_reading_extrapolates_with_the_power_reading():
    ts, data = rows(power_w=100.0, energy_w=300.0, until_ms=0)  # one sample so far
    a = window(ts, data, 10 * MS, 30 * MS)
    assert a[semconv.GPU_POWER_W] == pytest.approx(100.0)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(2.0)


@pytest.mark.parametrize(("what", "start_ms", "end_ms"), [
    ("a flat interval inside the window", 110, 190),
    ("a flat last interval, the span past the newest sample", 1010, 1040),
    ("a reset inside the window", 450, 650),
])
def test_a_counter_that_did_not_advance_gives_way_to_the_readings(what, start_ms, end_ms):
    """A counter the driver refreshes more slowly than the sampler ticks (or one reset) must
    not give 0 J for a span drawing 300 W: where an interval the window uses did not advance,
    the power readings are used."""
    ts, data = rows(power_w=300.0, energy_w=300.0)
    e = _ring.F["energy_mj"]
    if what.startswith("a flat interval"):
        data[2, e] = data[1, e]  # 100 -> 200 ms: the counter did not move
    elif what.startswith("a flat last"):
        data[-1, e] = data[-2, e]
    else:
        data[ts >= 500 * MS, e] -= 5e6  # the counter went back to near zero at 500 ms
    a = window(ts, data, start_ms * MS, end_ms * MS)
    assert a[semconv.GPU_POWER_W] == pytest.approx(300.0), what
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(300.0 * (end_ms - start_ms) / 1000), what


def test_no_power_is_reported_where_neither_the_counter_nor_a_reading_says():
    ts, data = rows(power_w=np.nan, energy_w=300.0, until_ms=0)  # one counter reading
    a = window(ts, data, 10 * MS, 30 * MS)
    assert semconv.GPU_POWER_W not in a and semconv.GPU_ENERGY_J not in a


def test_span_power_without_the_counter_is_the_mean_of_readings():
    ts, data = rows(power_w=100.0, energy_w=None)
    data[ts > 500 * MS, _ring.F["power_w"]] = 200.0
    a = window(ts, data, 300 * MS, 700 * MS)  # half the window at each reading
    assert a[semconv.GPU_POWER_W] == pytest.approx(150.0)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(60.0)


def test_zero_length_window_takes_the_covering_reading():
    ts, data = rows(power_w=100.0, energy_w=300.0)
    a = window(ts, data, 450 * MS, 450 * MS)
    assert a[semconv.GPU_POWER_W] == pytest.approx(100.0)
    assert semconv.GPU_ENERGY_J not in a


def test_sampler_span_power_follows_the_counter_not_the_moving_average():
    """Power readings averaged over 1 s (Ampere and newer): 300 ms after a 100 -> 300 W step the
    readings are still near 100 W; the counter has the step."""
    gpu = FakeGpu(load=step_load, power_avg_ns=1000 * MS)
    sampler, _, _ = sampled(gpu, until_ms=1500)
    _ts, data, _ = sampler._rings[0].window(1000 * MS, 1300 * MS)
    assert np.nanmax(data[:, _ring.F["power_w"]]) < 200.0
    a = sampler.aggregate(0, 1000 * MS, 1300 * MS)
    assert a[semconv.GPU_POWER_W] == pytest.approx(300.0, rel=1e-3)
    assert a[semconv.GPU_ENERGY_J] == pytest.approx(90.0, rel=1e-3)
    # Short spans the next sample has not reached yet: the counter's last slope, not 160 W.
    sampler, _, _ = sampled(FakeGpu(load=step_load, power_avg_ns=1000 * MS), until_ms=1300)
    assert sampler.latest(0)[1][_ring.F["power_w"]] == pytest.approx(160.0, rel=1e-2)
    short = sampler.aggregate(0, 1320 * MS, 1350 * MS)
    assert short[semconv.GPU_POWER_W] == pytest.approx(300.0, rel=1e-3)


def test_a_driver_without_the_new_throttle_call_is_asked_the_old_one():
    # pynvml defines nvmlDeviceGetCurrentClocksEventReasons whatever the driver; an older
    # driver's library lacks the symbol and pynvml raises FunctionNotFound when it is called.
    # Read as "unsupported", that turned throttle reasons off where the old call works.
    gpu = FakeGpu(load=step_load,
                  missing=frozenset({"nvmlDeviceGetCurrentClocksEventReasons"}))
    sampler, fake, _ = sampled(gpu)
    assert fake.raised["NVMLError_FunctionNotFound"] == 1  # once: the old name from then on
    assert "throttle" not in sampler._disabled[0]
    assert sampler.aggregate(0, 1500 * MS, 1900 * MS)[semconv.GPU_THROTTLE_REASONS] == 4
    assert _guard.error_counts() == {}


def test_a_driver_with_neither_throttle_call_turns_the_group_off():
    gpu = FakeGpu(load=step_load, missing=frozenset({
        "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"}))
    sampler, fake, _ = sampled(gpu)
    assert fake.raised["NVMLError_FunctionNotFound"] == 2
    assert "throttle" in sampler._disabled[0]
    assert _guard.error_counts() == {}
