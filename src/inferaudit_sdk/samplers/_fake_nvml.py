"""A stand-in for the ``pynvml`` functions the sampler calls, raising the real errors.

For tests and GPU-less development. It raises the genuine ``pynvml`` exception classes
(``pynvml`` is imported when a fake is built): ``NVMLError_LibraryNotFound`` from ``nvmlInit``
when the library is "missing", ``NVMLError_Uninitialized`` from any device call before
``nvmlInit`` or after the last ``nvmlShutdown``, ``NVMLError_InvalidArgument`` for a bad index,
``NVMLError_NotSupported`` for a counter a GPU lacks, ``NVMLError_GpuIsLost`` once a GPU has
fallen off the bus, ``NVMLError_NotFound`` from ``nvmlDeviceGetHandleByUUID`` for a UUID no
GPU or MIG device has (NVML matches the whole UUID, no prefixes), ``NVMLError_InvalidArgument``
from ``nvmlDeviceGetDeviceHandleFromMigDeviceHandle`` for a handle that is not a MIG device's
(nvml.h: "if migDevice or device is invalid"). Return shapes match pynvml's (structs with
``.gpu``/``.memory``, ``.used``/``.total``; power in mW, energy in mJ, PCIe in KB/s).

The energy counter integrates the programmed power over the fake's clock, so energy and power
stay consistent the way the real counters are.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeLoad:
    """What a fake GPU is doing at a moment."""

    sm_util_pct: int = 0
    mem_util_pct: int = 0
    power_w: float = 70.0
    sm_clock_mhz: int = 1980
    pcie_tx_kbps: int = 0
    pcie_rx_kbps: int = 0
    throttle_reasons: int = 0
    mem_used_bytes: int = 1 << 30


@dataclass
class FakeGpu:
    """One fake GPU. ``load`` is a constant :class:`FakeLoad` or a function of the clock (ns).
    ``unsupported`` lists pynvml function names that raise ``NVMLError_NotSupported``;
    ``missing`` those the driver's library lacks: pynvml defines every function, and one whose
    C symbol is not there raises ``NVMLError_FunctionNotFound`` when called."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    mem_total_bytes: int = 80 * (1 << 30)
    load: FakeLoad | Callable[[int], FakeLoad] = field(default_factory=FakeLoad)
    unsupported: frozenset[str] = frozenset()
    missing: frozenset[str] = frozenset()
    lost: bool = False
    mig_uuids: tuple[str, ...] = ()  # MIG devices (slices) of this GPU, ``MIG-<uuid>``
    # nvmlDeviceGetPowerUsage as a moving average over this long before the reading (about
    # 1 s on Ampere and newer); 0: the power at the moment of the reading.
    power_avg_ns: int = 0
    # energy state
    _energy_mj: float = 123_456_789.0
    _last_ns: int | None = None

    def at(self, now_ns: int) -> FakeLoad:
        return self.load(now_ns) if callable(self.load) else self.load


@dataclass(frozen=True)
class FakeMigDevice:
    """A MIG device handle: NVML hands these out from ``nvmlDeviceGetHandleByUUID``."""

    uuid: str
    parent: FakeGpu


class _Struct:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeNvml:
    """Module-like object with the pynvml API subset :class:`NvmlSampler` uses."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        library_missing: bool = False,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._pynvml = importlib.import_module("pynvml")
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.library_missing = library_missing
        self.clock = clock
        self._refs = 0
        self._lock = threading.Lock()
        self.calls = 0
        self.calls_by_uuid: Counter[str] = Counter()  # GPU UUID -> device calls on its handle
        self.raised: Counter[str] = Counter()  # error class name -> times raised
        self.NVML_CLOCK_SM = self._pynvml.NVML_CLOCK_SM
        self.NVML_PCIE_UTIL_TX_BYTES = self._pynvml.NVML_PCIE_UTIL_TX_BYTES
        self.NVML_PCIE_UTIL_RX_BYTES = self._pynvml.NVML_PCIE_UTIL_RX_BYTES
        self.NVMLError = self._pynvml.NVMLError

    def _err(self, name: str) -> Exception:
        self.raised[name] += 1
        return getattr(self._pynvml, name)()

    # -- life cycle --------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.library_missing:
            raise self._err("NVMLError_LibraryNotFound")
        with self._lock:
            self._refs += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._refs == 0:
                raise self._err("NVMLError_Uninitialized")
            self._refs -= 1

    def _check(self) -> None:
        self.calls += 1
        if self._refs == 0:
            raise self._err("NVMLError_Uninitialized")

    def _gpu(self, handle: Any, fn: str) -> FakeGpu:
        self._check()
        if not isinstance(handle, FakeGpu):
            raise self._err("NVMLError_InvalidArgument")
        if fn in handle.missing:  # pynvml's lookup of the symbol fails before any device call
            raise self._err("NVMLError_FunctionNotFound")
        self.calls_by_uuid[handle.uuid] += 1
        if handle.lost:
            raise self._err("NVMLError_GpuIsLost")
        if fn in handle.unsupported:
            raise self._err("NVMLError_NotSupported")
        return handle

    # -- devices -----------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise self._err("NVMLError_InvalidArgument")
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGpu | FakeMigDevice:
        self._check()
        if isinstance(uuid, bytes):  # pynvml's convertStrBytes takes either
            uuid = uuid.decode()
        if not isinstance(uuid, str) or not uuid:
            raise self._err("NVMLError_InvalidArgument")
        for g in self.gpus:
            if g.uuid == uuid:
                return g
            if uuid in g.mig_uuids:
                return FakeMigDevice(uuid, g)
        raise self._err("NVMLError_NotFound")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> FakeGpu:
        self._check()
        if not isinstance(handle, FakeMigDevice):
            raise self._err("NVMLError_InvalidArgument")
        return handle.parent

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        g = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        load = g.at(self.clock())
        return _Struct(gpu=load.sm_util_pct, memory=load.mem_util_pct)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        g = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        used = g.at(self.clock()).mem_used_bytes
        return _Struct(total=g.mem_total_bytes, used=used, free=g.mem_total_bytes - used)

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        g = self._gpu(handle, "nvmlDeviceGetClockInfo")
        if clock_type != self.NVML_CLOCK_SM:
            raise self._err("NVMLError_InvalidArgument")
        return g.at(self.clock()).sm_clock_mhz

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        g = self._gpu(handle, "nvmlDeviceGetPowerUsage")
        now = self.clock()
        if g.power_avg_ns <= 0:
            return round(g.at(now).power_w * 1000)
        n = 100  # midpoint rule over the averaging window
        step = g.power_avg_ns / n
        mean_w = sum(g.at(round(now - g.power_avg_ns + (k + 0.5) * step)).power_w
                     for k in range(n)) / n
        return round(mean_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        g = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        return int(self._energy(g))

    def _energy(self, g: FakeGpu) -> float:
        """Integrate power since the last reading (piecewise constant, sampled at the end)."""
        now = self.clock()
        with self._lock:
            if g._last_ns is not None and now > g._last_ns:
                # midpoint rule over the elapsed interval
                mid = g._last_ns + (now - g._last_ns) // 2
                g._energy_mj += g.at(mid).power_w * (now - g._last_ns) / 1e6
            g._last_ns = now
            return g._energy_mj

    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: int) -> int:
        g = self._gpu(handle, "nvmlDeviceGetPcieThroughput")
        load = g.at(self.clock())
        if counter == self.NVML_PCIE_UTIL_TX_BYTES:
            return load.pcie_tx_kbps
        if counter == self.NVML_PCIE_UTIL_RX_BYTES:
            return load.pcie_rx_kbps
        raise self._err("NVMLError_InvalidArgument")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        g = self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        return g.at(self.clock()).throttle_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        g = self._gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return g.at(self.clock()).throttle_reasons
