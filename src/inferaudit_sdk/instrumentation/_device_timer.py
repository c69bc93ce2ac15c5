"""How long the device worked on one model call, measured without stalling the caller.

Two backends behind one small protocol:

- :class:`CudaBackend` records ``torch.cuda.Event`` pairs (from a reusable pool, per device) on
  the stream that ran the work: the current stream at call boundaries, plus every side stream
  the call entered through ``torch.cuda.stream(...)``. Nothing synchronises on the hot path;
  events are read when the span ends (:meth:`CallTiming.resolve`). Device time is the union of
  the per-stream intervals, so overlapping streams are not double counted.
- :class:`CpuBackend` is the fallback on a host without CUDA: process CPU time (shared fairly
  among instrumented calls that overlap in time) and wall time; the "device" is the CPU cores
  torch's intra-op pool may use. See docs/device-instrumentation.md for the definitions.

The CUDA backend takes the ``torch.cuda`` module (or :mod:`._fake_cuda`'s stand-in, which keeps
the real one's semantics) as a parameter, so the same code runs in tests without a GPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from inferaudit_sdk import semconv
from inferaudit_sdk._guard import swallow
from inferaudit_sdk.instrumentation._intervals import interval_union

# Events kept per device for reuse; beyond this a released event is simply dropped.
_POOL_MAX_PER_DEVICE = 1024
_perf_ns = time.perf_counter_ns
_UNREAD = object()  # CudaBackend.hw_ids: this device's UUID not read yet


class Interval(Protocol):
    """A host<->device copy (or any short piece of work) that was timed."""

    ready: bool  # True when ns() needs no device access

    def ns(self) -> int:
        """Duration in ns (may wait for the device if not ``ready``)."""
        ...


class CallTiming(Protocol):
    """Timing of one model call. ``stop`` runs on the hot path; ``resolve`` at span end."""

    device_type: str
    device_index: int | None
    # The device's host-wide identity (``hw.id``: a GPU's UUID), None where there is none (the
    # CPU: the host's cores) or it could not be read. Optional: backends without it have none.
    hw_id: str | None
    streams: int
    # True when resolve() reads only host clocks (no device events): the wrappers then take
    # its numbers at once instead of keeping the timing until the span ends.
    ready: bool

    def stream_enter(self, stream: Any) -> None: ...

    def stream_exit(self, stream: Any) -> None: ...

    def stop(self) -> None: ...

    def resolve(self) -> dict[str, int]:
        """The ``inferaudit.device.*`` attributes of this call (numbers, summed per span)."""
        ...


class DeviceBackend(Protocol):
    """Where model-call timings come from. Implementations never raise on the hot path
    for normal use; callers still guard them."""

    device_type: str

    def begin(self, device_index: int | None) -> CallTiming: ...

    def interval_begin(self, device_index: int | None = None) -> Any:
        """Start timing a copy on ``device_index``'s current stream (``None``: the current
        device)."""
        ...

    def interval_end(self, handle: Any) -> Interval: ...


# ---------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------


class _CpuAccountant:
    """Splits process CPU time evenly among the instrumented calls running at each moment.

    Process CPU time is right for torch on CPU (the work runs on the intra-op pool's threads,
    not only on the calling thread), but it also counts what concurrent calls burn. At every
    call boundary the CPU time consumed since the previous boundary is shared equally among the
    calls that were in flight, so two overlapping calls do not both claim all of it.

    O(1) per boundary: a "virtual CPU clock" advances by (CPU used / calls in flight); a call's
    share is the virtual clock's advance between its begin and its end.
    """

    __slots__ = ("_clock", "_last", "_lock", "_n", "_v")

    def __init__(self, clock: Callable[[], int] = time.process_time_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._n = 0  # calls in flight
        self._v = 0.0  # virtual clock, ns of CPU per in-flight call
        self._last = 0

    def begin(self) -> float:
        with self._lock:
            now = self._clock()
            if self._n:
                self._v += (now - self._last) / self._n
            self._last = now
            self._n += 1
            return self._v

    def end(self, started: float) -> int:
        with self._lock:
            now = self._clock()
            if self._n:
                self._v += (now - self._last) / self._n
                self._n -= 1
            self._last = now
            return int(self._v - started)


class _CpuTiming:
    __slots__ = ("_acc", "_accountant", "_cpu_ns", "_t0", "_wall_ns", "device_index", "threads")

    device_type = "cpu"
    hw_id = None  # the host's cores: the host is the device
    streams = 0
    ready = True

    def __init__(self, accountant: _CpuAccountant, threads: int) -> None:
        self._accountant = accountant
        self.device_index = None
        self.threads = threads
        self._wall_ns = 0
        self._cpu_ns = 0
        self._acc = accountant.begin()
        self._t0 = _perf_ns()

    def stream_enter(self, stream: Any) -> None:
        return None

    def stream_exit(self, stream: Any) -> None:
        return None

    def stop(self) -> None:
        self._wall_ns = _perf_ns() - self._t0
        self._cpu_ns = self._accountant.end(self._acc)

    def resolve(self) -> dict[str, int]:
        wall = self._wall_ns
        cpu = self._cpu_ns
        # The device is `threads` cores: busy time = CPU time spread over them, never more
        # than the call's own wall time (other threads' CPU can leak into the process total).
        device = min(cpu // max(self.threads, 1), wall)
        return {
            semconv.DEVICE_TIME_NS: device,
            semconv.DEVICE_CPU_TIME_NS: cpu,
            semconv.DEVICE_WALL_TIME_NS: wall,
        }


class _HostInterval:
    __slots__ = ("_ns",)
    ready = True

    def __init__(self, ns: int) -> None:
        self._ns = ns

    def ns(self) -> int:
        return self._ns


class CpuBackend:
    """Process CPU time + wall time per call. ``threads`` returns the intra-op thread count
    (default: ``torch.get_num_threads``, read per call because users change it at run time)."""

    device_type = "cpu"

    def __init__(
        self,
        threads: Callable[[], int] | None = None,
        clock: Callable[[], int] = time.process_time_ns,
    ) -> None:
        if threads is None:
            import torch

            threads = torch.get_num_threads
        self._threads = threads
        self.accountant = _CpuAccountant(clock)

    def begin(self, device_index: int | None = None) -> _CpuTiming:
        return _CpuTiming(self.accountant, self._threads())

    def interval_begin(self, device_index: int | None = None) -> int:
        return time.perf_counter_ns()

    def interval_end(self, handle: int) -> _HostInterval:
        return _HostInterval(time.perf_counter_ns() - handle)


# ---------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------


class _EventPool:
    """Timing events per device index, reused: creating one costs a driver call."""

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda
        self._free: dict[int, list[Any]] = {}

    def get(self, device: int) -> Any:
        free = self._free.get(device)
        if free:
            try:
                return free.pop()
            except IndexError:  # another thread emptied it meanwhile
                pass
        return self._cuda.Event(enable_timing=True)

    def put(self, device: int, events: list[Any]) -> None:
        free = self._free.setdefault(device, [])
        if len(free) < _POOL_MAX_PER_DEVICE:
            free.extend(events)

    def size(self, device: int) -> int:
        return len(self._free.get(device, ()))


def _stream_key(stream: Any) -> Any:
    """The stream's identity: its device and CUDA handle. The handle alone is not enough, as
    every device's default stream has handle 0."""
    handle = getattr(stream, "cuda_stream", None)
    if handle is None:
        return id(stream)
    return (getattr(stream, "device_index", None), handle)


class _CudaTiming:
    __slots__ = (
        "_backend", "_closed", "_end", "_main_key", "_open", "_seen", "_start", "_t0",
        "_wall_ns", "device_index", "hw_id",
    )

    device_type = "cuda"
    ready = False

    def __init__(self, backend: CudaBackend, device_index: int | None) -> None:
        self._backend = backend
        self._t0 = time.perf_counter_ns()
        self._wall_ns = 0
        stream = backend.cuda.current_stream(device_index)
        self.device_index = int(stream.device_index)
        hw = backend.hw_ids.get(self.device_index, _UNREAD)  # a dict lookup after the first
        self.hw_id = backend.read_hw_id(self.device_index) if hw is _UNREAD else hw
        self._main_key = _stream_key(stream)
        self._start = backend.pool.get(self.device_index)
        self._start.record(stream)
        self._end: Any = None
        # side stream key -> (stream, start event); closed: (start, end, device index)
        self._open: dict[Any, tuple[Any, Any]] = {}
        self._closed: list[tuple[Any, Any, int]] = []
        self._seen = {self._main_key}

    @property
    def streams(self) -> int:
        """Distinct streams this call ran work on (the current one plus side streams)."""
        return len(self._seen)

    def stream_enter(self, stream: Any) -> None:
        key = _stream_key(stream)
        if key == self._main_key or key in self._open or self._backend.capturing():
            return
        ev = self._backend.pool.get(int(stream.device_index))
        ev.record(stream)
        self._open[key] = (stream, ev)
        self._seen.add(key)

    def stream_exit(self, stream: Any) -> None:
        entry = self._open.pop(_stream_key(stream), None)
        if entry is not None and not self._backend.capturing():
            self._close(*entry)

    def _close(self, stream: Any, start: Any) -> None:
        device = int(stream.device_index)
        end = self._backend.pool.get(device)
        end.record(stream)
        self._closed.append((start, end, device))

    def stop(self) -> None:
        if self._backend.capturing():  # a capture began inside the call: record nothing more
            self._open.clear()
            return
        for stream, start in list(self._open.values()):
            self._close(stream, start)
        self._open.clear()
        cuda = self._backend.cuda
        self._end = self._backend.pool.get(self.device_index)
        self._end.record(cuda.current_stream(self.device_index))
        self._wall_ns = time.perf_counter_ns() - self._t0

    def resolve(self) -> dict[str, int]:
        if self._end is None:  # never stopped: nothing to read
            return {}
        ends = [self._end] + [e for _, e, _ in self._closed]
        waited = 0
        pending = [e for e in ends if not e.query()]
        if pending:
            # The span is ending and the device has not finished this call's work yet: wait
            # for exactly these events (not the whole device). See the docs for the trade-off.
            t0 = time.perf_counter_ns()
            for ev in pending:
                ev.synchronize()
            waited = time.perf_counter_ns() - t0
        ref = self._start
        same = [(0.0, ref.elapsed_time(self._end))]
        other_ms = 0.0
        for start, end, device in self._closed:
            if device == self.device_index:
                same.append((ref.elapsed_time(start), ref.elapsed_time(end)))
            else:  # events on different devices cannot be compared: add that device's time
                other_ms += max(start.elapsed_time(end), 0.0)
        covered = interval_union(same)
        device_ms = (covered[0] if covered else 0.0) + other_ms
        self._release()
        out = {
            semconv.DEVICE_TIME_NS: round(device_ms * 1e6),
            semconv.DEVICE_WALL_TIME_NS: self._wall_ns,
        }
        if waited:
            out[semconv.DEVICE_RESOLVE_WAIT_NS] = waited
        return out

    def _release(self) -> None:
        pool = self._backend.pool
        pool.put(self.device_index, [self._start, self._end])
        for start, end, device in self._closed:
            pool.put(device, [start, end])
        self._closed = []
        self._end = None


class _NullTiming:
    """A call that cannot be timed (inside CUDA graph capture): reports nothing."""

    __slots__ = ("device_index", "hw_id")
    device_type = "cuda"
    streams = 0
    ready = True

    def __init__(self, device_index: int | None, hw_id: str | None = None) -> None:
        self.device_index = device_index
        self.hw_id = hw_id  # the span still names its GPU: the same device as its timed calls

    def stream_enter(self, stream: Any) -> None:
        return None

    def stream_exit(self, stream: Any) -> None:
        return None

    def stop(self) -> None:
        return None

    def resolve(self) -> dict[str, int]:
        return {}


class _EventInterval:
    __slots__ = ("_backend", "_device", "_end", "_start")

    def __init__(self, backend: CudaBackend, device: int, start: Any, end: Any) -> None:
        self._backend = backend
        self._device = device
        self._start = start
        self._end = end

    @property
    def ready(self) -> bool:
        return False

    def ns(self) -> int:
        if not self._end.query():
            self._end.synchronize()
        ms = self._start.elapsed_time(self._end)
        self._backend.pool.put(self._device, [self._start, self._end])
        return round(max(ms, 0.0) * 1e6)


class CudaBackend:
    """CUDA events on the streams that ran the work; ``cuda`` is ``torch.cuda`` or a fake."""

    device_type = "cuda"

    def __init__(self, cuda: Any | None = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.cuda = cuda
        self.pool = _EventPool(cuda)
        # device index -> hw.id (None: not readable), read once per device (read_hw_id)
        self.hw_ids: dict[int, str | None] = {}

    def read_hw_id(self, device_index: int) -> str | None:
        """The GPU's UUID in NVML's spelling (``GPU-<uuid>``, what the NVML metrics' ``hw.id``
        says; torch prints it bare), read from ``get_device_properties`` once per device and
        kept. Processes pinned one per GPU all call theirs device 0: the UUID tells them apart,
        and says when two processes share one. None where CUDA does not report it."""
        hw: str | None = None
        try:
            raw = str(self.cuda.get_device_properties(device_index).uuid).strip().lower()
            if raw:
                hw = "GPU-" + raw[4:] if raw.startswith("gpu-") else (
                    "MIG-" + raw[4:] if raw.startswith("mig-") else "GPU-" + raw)
        except Exception as exc:
            swallow("cuda.uuid", exc)
        self.hw_ids[device_index] = hw
        return hw

    def capturing(self) -> bool:
        """True while the current stream is capturing a CUDA graph: recording timing events
        then would become part of the graph (or fail), so nothing is recorded."""
        fn = getattr(self.cuda, "is_current_stream_capturing", None)
        return bool(fn()) if fn is not None else False

    def begin(self, device_index: int | None = None) -> _CudaTiming | _NullTiming:
        if self.capturing():
            if device_index is None:  # the current device, as _CudaTiming reads it
                device_index = int(self.cuda.current_stream(None).device_index)
            hw = self.hw_ids.get(device_index, _UNREAD)
            return _NullTiming(device_index,
                               self.read_hw_id(device_index) if hw is _UNREAD else hw)
        return _CudaTiming(self, device_index)

    def interval_begin(self, device_index: int | None = None) -> tuple[int, Any] | None:
        if self.capturing():
            return None
        stream = self.cuda.current_stream(device_index)
        device = int(stream.device_index)
        ev = self.pool.get(device)
        ev.record(stream)
        return (device, ev)

    def interval_end(self, handle: tuple[int, Any]) -> _EventInterval:
        device, start = handle
        end = self.pool.get(device)
        end.record(self.cuda.current_stream(device))
        return _EventInterval(self, device, start, end)


_default_lock = threading.Lock()
_defaults: dict[str, Any] = {}


def default_backend(device_type: str) -> DeviceBackend:
    """The process-wide backend for a torch device type ("cuda" needs a CUDA build)."""
    backend = _defaults.get(device_type)
    if backend is None:
        with _default_lock:
            backend = _defaults.get(device_type)
            if backend is None:
                backend = CudaBackend() if device_type == "cuda" else CpuBackend()
                _defaults[device_type] = backend
    return backend
