"""A stand-in for the slice of ``torch.cuda`` the device timer uses, with the real semantics.

For tests on machines without a GPU. The fake device runs on a virtual clock that only moves
when the test says so (:meth:`FakeCuda.advance`) or when the host waits for it (``synchronize``),
which makes the interesting states reachable on purpose: an event that is recorded but not yet
complete (``query()`` is False), work queued behind earlier work on a stream, two streams
running side by side. Errors match torch's: ``elapsed_time`` raises ``ValueError`` on events
created without timing or never recorded and ``RuntimeError`` on events not yet completed;
``query()`` on a never-recorded event is True; recording an event on another device's stream
raises ``RuntimeError``.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

_handles = itertools.count(0x7F00_0000_1000, 0x10)
_instances = itertools.count(1)


class FakeDeviceProperties:
    """What ``torch.cuda.get_device_properties`` returns, as far as the SDK reads it: the
    UUID torch prints bare (no ``GPU-`` prefix, which NVML's spelling has)."""

    def __init__(self, name: str, uuid: str, total_memory: int = 80 * 2**30) -> None:
        self.name = name
        self.uuid = uuid
        self.total_memory = total_memory


class FakeStream:
    """One queue of work on a fake device. ``tail_ns`` is when its queued work completes."""

    def __init__(self, cuda: FakeCuda, device_index: int, default: bool = False) -> None:
        self._cuda = cuda
        self.device_index = device_index
        # As CUDA: every device's default (legacy) stream has handle 0; others are pointers.
        self.cuda_stream = 0 if default else next(_handles)
        self.tail_ns = 0

    def query(self) -> bool:
        return self._cuda.now_ns >= self.tail_ns

    def synchronize(self) -> None:
        self._cuda._wait_until(self.tail_ns)

    # torch.cuda.Stream is a context manager on CUDA builds (via torch.Stream).
    def __enter__(self) -> FakeStream:
        self._prev = self._cuda.current_stream(self.device_index)
        self._cuda.set_stream(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cuda.set_stream(self._prev)

    def __repr__(self) -> str:
        return f"<FakeStream device={self.device_index} cuda_stream={self.cuda_stream:#x}>"


class FakeEvent:
    """Behaves like ``torch.cuda.Event`` for record/query/synchronize/elapsed_time."""

    def __init__(self, cuda: FakeCuda, enable_timing: bool = False) -> None:
        self._cuda = cuda
        self.enable_timing = enable_timing
        self._device: int | None = None
        self._ts: int | None = None
        cuda.events_created += 1

    def record(self, stream: FakeStream | None = None) -> None:
        stream = stream or self._cuda.current_stream()
        if self._device is not None and self._device != stream.device_index:
            raise RuntimeError(
                f"Event device index {self._device} does not match recording stream's device "
                f"index {stream.device_index}."
            )
        self._device = stream.device_index
        # Completes once everything queued before it on the stream has run.
        self._ts = max(stream.tail_ns, self._cuda.now_ns)
        stream.tail_ns = self._ts

    def query(self) -> bool:
        return self._ts is None or self._cuda.now_ns >= self._ts

    def synchronize(self) -> None:
        if self._ts is not None:
            self._cuda.host_waits += 1
            self._cuda._wait_until(self._ts)

    def elapsed_time(self, end_event: FakeEvent) -> float:
        if not (self.enable_timing and end_event.enable_timing):
            raise ValueError("Both events must be created with argument 'enable_timing=True'.")
        if self._ts is None or end_event._ts is None:
            raise ValueError("Both events must be recorded before calculating elapsed time.")
        if not (self.query() and end_event.query()):
            raise RuntimeError("Both events must be completed before calculating elapsed time.")
        return (end_event._ts - self._ts) / 1e6


class FakeStreamContext:
    """Like ``torch.cuda.StreamContext``: makes ``stream`` current inside the block."""

    def __init__(self, stream: FakeStream | None) -> None:
        self.stream = stream
        self._prev: FakeStream | None = None

    def __enter__(self) -> None:
        if self.stream is None:
            return
        cuda = self.stream._cuda
        self._prev = cuda.current_stream(self.stream.device_index)
        cuda.set_stream(self.stream)

    def __exit__(self, *exc: Any) -> None:
        if self.stream is not None and self._prev is not None:
            self.stream._cuda.set_stream(self._prev)


class FakeCuda:
    """The fake ``torch.cuda`` module: ``Event``, ``Stream``, ``StreamContext``, ``stream``,
    ``current_stream``, ``set_stream``, ``synchronize``, ``get_device_properties``, plus test
    drivers ``launch`` (queue ``duration_ns`` of work on a stream) and ``advance`` (let the
    device run)."""

    StreamContext = FakeStreamContext

    def __init__(self, device_count: int = 1, uuids: list[str] | None = None) -> None:
        """``uuids``: each device's UUID as torch prints it; by default distinct per device
        and per fake (two fakes are two hosts' GPUs), so a test can share one on purpose."""
        n = next(_instances)
        self.uuids = list(uuids) if uuids is not None else [
            f"{n:08x}-0000-4000-8000-{d:012x}" for d in range(device_count)]
        if len(self.uuids) != device_count:
            raise ValueError(f"FakeCuda: {device_count} devices, {len(self.uuids)} uuids")
        self.properties_read = 0  # get_device_properties calls: the SDK reads them once
        self.now_ns = 0
        self.events_created = 0
        self.host_waits = 0
        self.capturing = False  # set by tests: "the current stream is capturing a graph"
        self._lock = threading.Lock()
        self._default = [FakeStream(self, d, default=True) for d in range(device_count)]
        self._current = threading.local()

    # --- the torch.cuda surface ---------------------------------------------------------
    def is_available(self) -> bool:
        return True

    def is_current_stream_capturing(self) -> bool:
        return self.capturing

    def device_count(self) -> int:
        return len(self._default)

    def get_device_properties(self, device: int | None = None) -> FakeDeviceProperties:
        index = 0 if device is None else int(device)
        if not 0 <= index < len(self._default):
            raise AssertionError("Invalid device id")  # torch's own message and type
        self.properties_read += 1
        return FakeDeviceProperties("Fake GPU", self.uuids[index])

    def Event(self, enable_timing: bool = False, **_: Any) -> FakeEvent:
        return FakeEvent(self, enable_timing)

    def Stream(self, device: int | None = None, priority: int = 0) -> FakeStream:
        return FakeStream(self, 0 if device is None else int(device))

    def stream(self, stream: FakeStream | None) -> FakeStreamContext:
        return self.StreamContext(stream)

    def _streams(self) -> dict[int, FakeStream]:
        cur = getattr(self._current, "by_device", None)
        if cur is None:
            cur = self._current.by_device = {}
        return cur

    def current_stream(self, device: int | None = None) -> FakeStream:
        index = 0 if device is None else int(device)
        return self._streams().get(index) or self._default[index]

    def default_stream(self, device: int | None = None) -> FakeStream:
        return self._default[0 if device is None else int(device)]

    def set_stream(self, stream: FakeStream) -> None:
        self._streams()[stream.device_index] = stream

    def synchronize(self, device: int | None = None) -> None:
        tails = [s.tail_ns for s in self._default]
        tails += [s.tail_ns for s in self._streams().values()]
        self._wait_until(max(tails))

    # --- test drivers ---------------------------------------------------------------------
    def launch(self, duration_ns: int, stream: FakeStream | None = None) -> None:
        """Queue a kernel of ``duration_ns`` on ``stream`` (default: the current stream)."""
        stream = stream or self.current_stream()
        start = max(stream.tail_ns, self.now_ns)
        stream.tail_ns = start + int(duration_ns)

    def advance(self, ns: int) -> None:
        """Let ``ns`` of device time pass (the host did something else meanwhile)."""
        with self._lock:
            self.now_ns += int(ns)

    def _wait_until(self, ts: int) -> None:
        with self._lock:
            self.now_ns = max(self.now_ns, ts)


def fake_cuda_backend(device_count: int = 1, uuids: list[str] | None = None) -> Any:
    """A :class:`CudaBackend` over a fresh :class:`FakeCuda` (``backend.cuda`` is the fake)."""
    from inferaudit_sdk.instrumentation._device_timer import CudaBackend

    return CudaBackend(FakeCuda(device_count, uuids))


# The name the device tests and docs use.
FakeCudaBackend = fake_cuda_backend
