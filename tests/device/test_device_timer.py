"""Device timing backends: the CUDA event path through the fake CUDA runtime (which keeps the
real one's semantics and errors), and the CPU fallback's accounting."""

from __future__ import annotations

import threading
import time

import pytest

from inferaudit_sdk import semconv
from inferaudit_sdk.instrumentation._device_timer import CpuBackend, CudaBackend, _CpuAccountant
from inferaudit_sdk.instrumentation._fake_cuda import FakeCuda, FakeCudaBackend

MS = 1_000_000


# --- the fake behaves like torch.cuda ---------------------------------------------------------
def test_fake_event_query_is_false_until_the_device_reaches_it():
    cuda = FakeCuda()
    ev = cuda.Event(enable_timing=True)
    assert ev.query()  # never recorded: torch says True
    cuda.launch(3 * MS)
    ev.record()
    assert not ev.query()
    cuda.advance(2 * MS)
    assert not ev.query()
    cuda.advance(1 * MS)
    assert ev.query()


def test_fake_elapsed_time_raises_like_torch():
    cuda = FakeCuda()
    a, b = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
    with pytest.raises(ValueError, match="must be recorded"):
        a.elapsed_time(b)
    a.record()
    cuda.launch(MS)
    b.record()
    with pytest.raises(RuntimeError, match="must be completed"):
        a.elapsed_time(b)
    b.synchronize()
    assert a.elapsed_time(b) == pytest.approx(1.0)
    c, d = cuda.Event(), cuda.Event()
    c.record()
    d.record()
    with pytest.raises(ValueError, match="enable_timing=True"):
        c.elapsed_time(d)


def test_fake_event_refuses_another_devices_stream():
    cuda = FakeCuda(device_count=2)
    ev = cuda.Event(enable_timing=True)
    ev.record(cuda.current_stream(0))
    with pytest.raises(RuntimeError, match="does not match"):
        ev.record(cuda.current_stream(1))


# --- CUDA backend -------------------------------------------------------------------------------
def test_another_devices_default_stream_is_a_stream_of_its_own():
    """Default streams all have handle 0 (real and fake): work a call sends to device 1's
    default stream is a second stream, not the call's own device-0 stream."""
    backend = FakeCudaBackend(device_count=2)
    cuda = backend.cuda
    assert cuda.default_stream(0).cuda_stream == cuda.default_stream(1).cuda_stream == 0
    t = backend.begin(0)
    cuda.launch(2 * MS)
    other = cuda.default_stream(1)
    with cuda.stream(other):
        t.stream_enter(other)
        cuda.launch(3 * MS, other)
        t.stream_exit(other)
    t.stop()
    cuda.advance(10 * MS)
    assert t.streams == 2
    # Events on two devices cannot be compared: each device's own time is added.
    assert t.resolve()[semconv.DEVICE_TIME_NS] == 5 * MS


def test_completed_call_is_resolved_without_waiting():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    t = backend.begin(None)
    cuda.launch(4 * MS)
    t.stop()
    cuda.advance(10 * MS)  # the device finished long before the span ends
    attrs = t.resolve()
    assert attrs[semconv.DEVICE_TIME_NS] == 4 * MS
    assert semconv.DEVICE_RESOLVE_WAIT_NS not in attrs
    assert cuda.host_waits == 0
    assert attrs[semconv.DEVICE_WALL_TIME_NS] > 0


def test_unfinished_call_waits_only_at_resolve():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    t = backend.begin(None)
    cuda.launch(7 * MS)
    t.stop()  # the hot path never waited
    assert cuda.host_waits == 0
    attrs = t.resolve()
    assert cuda.host_waits == 1
    assert attrs[semconv.DEVICE_TIME_NS] == 7 * MS
    assert semconv.DEVICE_RESOLVE_WAIT_NS in attrs


def test_work_queued_before_the_call_is_not_counted():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    cuda.launch(50 * MS)  # an earlier call still running
    t = backend.begin(None)
    cuda.launch(2 * MS)
    t.stop()
    cuda.advance(100 * MS)
    assert t.resolve()[semconv.DEVICE_TIME_NS] == 2 * MS


def test_side_streams_are_unioned_not_summed():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    side = cuda.Stream()
    t = backend.begin(None)
    cuda.launch(5 * MS)  # main stream 0..5 ms
    with cuda.stream(side):
        t.stream_enter(side)
        cuda.launch(3 * MS)  # side stream 0..3 ms, overlapping
        t.stream_exit(side)
    t.stop()
    assert t.streams == 2
    cuda.advance(20 * MS)
    assert t.resolve()[semconv.DEVICE_TIME_NS] == 5 * MS

    t2 = backend.begin(None)
    cuda.launch(2 * MS)
    t2.stream_enter(side)
    cuda.launch(4 * MS, side)  # side: 20..24, main: 20..22
    t2.stop()  # an open side stream is closed at stop
    cuda.advance(50 * MS)
    assert t2.resolve()[semconv.DEVICE_TIME_NS] == 4 * MS


def test_side_stream_after_main_work_extends_the_union():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    side = cuda.Stream()
    t = backend.begin(None)
    cuda.launch(2 * MS)
    cuda.advance(2 * MS)  # main done
    t.stream_enter(side)
    cuda.launch(3 * MS, side)
    t.stream_exit(side)
    t.stop()
    cuda.advance(10 * MS)
    assert t.resolve()[semconv.DEVICE_TIME_NS] == 5 * MS


def test_events_are_pooled():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    for _ in range(50):
        t = backend.begin(None)
        cuda.launch(MS)
        t.stop()
        t.resolve()
    assert cuda.events_created == 2


def test_copy_interval_is_resolved_later():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    h = backend.interval_begin()
    cuda.launch(MS // 2)
    iv = backend.interval_end(h)
    assert not iv.ready
    assert iv.ns() == MS // 2


def test_real_cuda_backend_needs_no_gpu_to_construct():
    backend = CudaBackend(FakeCuda())
    assert backend.device_type == "cuda"


# --- CPU fallback ---------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def test_cpu_accountant_splits_overlapping_calls_fairly():
    clock = Clock()
    acc = _CpuAccountant(clock)
    a = acc.begin()
    clock.t += 100  # only a runs
    b = acc.begin()
    clock.t += 60  # both run: 30 each
    a_ns = acc.end(a)
    clock.t += 40  # only b
    b_ns = acc.end(b)
    assert (a_ns, b_ns) == (130, 70)
    assert a_ns + b_ns == clock.t  # nothing lost, nothing double counted


def test_cpu_backend_reports_cpu_wall_and_device_time():
    backend = CpuBackend(threads=lambda: 2)
    t = backend.begin()
    deadline = time.perf_counter() + 0.05
    x = 0
    while time.perf_counter() < deadline:
        x += 1
    t.stop()
    attrs = t.resolve()
    cpu, wall, dev = (attrs[semconv.DEVICE_CPU_TIME_NS], attrs[semconv.DEVICE_WALL_TIME_NS],
                      attrs[semconv.DEVICE_TIME_NS])
    assert cpu > 0 and wall > 0
    assert dev == min(cpu // 2, wall)
    assert dev <= wall


def test_cpu_backend_concurrent_calls_do_not_double_count():
    backend = CpuBackend(threads=lambda: 1)
    results = []

    def spin():
        t = backend.begin()
        deadline = time.perf_counter() + 0.1
        while time.perf_counter() < deadline:
            pass
        t.stop()
        results.append(t.resolve()[semconv.DEVICE_CPU_TIME_NS])

    cpu0 = time.process_time_ns()
    threads = [threading.Thread(target=spin) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = time.process_time_ns() - cpu0
    # Shares add up to (at most) what the process burned, not twice it.
    assert sum(results) <= total


def test_nothing_is_recorded_while_a_cuda_graph_is_being_captured():
    backend = FakeCudaBackend()
    cuda = backend.cuda
    cuda.capturing = True
    t = backend.begin(None)
    cuda.launch(MS)
    t.stream_enter(cuda.Stream())
    t.stop()
    assert t.resolve() == {}
    assert backend.interval_begin() is None
    assert cuda.events_created == 0
