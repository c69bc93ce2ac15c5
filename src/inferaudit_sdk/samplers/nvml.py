"""Background NVML sampler: what every GPU did, ~10 times a second, for spans and metrics.

A daemon thread reads, per GPU: SM and memory-controller utilisation, memory used, SM clock,
power, the total-energy counter, PCIe TX/RX throughput and clock-throttle reasons, into a ring
buffer (:mod:`._ring`). Model-call spans take aggregates over their own window
(:meth:`NvmlSampler.aggregate`); the same counters are exported as OpenTelemetry metrics under
the hardware conventions (:mod:`._nvml_metrics`).

The NVML seam is the module itself: ``backend`` is ``pynvml`` (package nvidia-ml-py, imported
lazily) or :class:`._fake_nvml.FakeNvml`, which raises the real ``pynvml`` errors where the real
library would. Without NVML (no driver, no GPU, library missing) :meth:`NvmlSampler.start`
logs one line and returns False; nothing else changes. A counter a GPU does not support is
dropped for that GPU after its first ``NVMLError_NotSupported``; any other NVML fault on a
tick is counted (``inferaudit.sdk.errors``) and the tick goes on.

Which GPUs: the ones this process can see, read from ``CUDA_VISIBLE_DEVICES`` the way CUDA
reads it and kept in CUDA's order (:mod:`._cuda_visible`), so a sampler index is the CUDA
device index wherever that mapping is certain; :meth:`NvmlSampler.index_for_uuid` maps the
UUID CUDA reports where it is not. Nothing visible: as without NVML (one log line, no thread).

Cost: the thread measures its own CPU time (:attr:`NvmlSampler.cpu_time_ns`); at 10 Hz it is a
few NVML calls per GPU per tick. ``nvmlDeviceGetPcieThroughput`` blocks in the driver for about
20 ms while it measures (sleeping, off the GIL); with many GPUs pass ``pcie=False`` or a lower
rate. The request path only ever takes the ring's lock for an array copy.
"""

from __future__ import annotations

import enum
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferaudit_sdk._guard import guarded, swallow
from inferaudit_sdk.samplers import _cuda_visible
from inferaudit_sdk.samplers._ring import FIELDS, F, Ring, aggregate

_logger = logging.getLogger("inferaudit_sdk")

DEFAULT_HZ = 10.0
# 10 minutes of history at the default rate: the longest span a window can cover.
DEFAULT_CAPACITY = 6000
# Errors after which a counter is not asked again on that GPU.
# Clock event (throttle) reasons: the current name, and the one drivers before r535 have.
_THROTTLE_CALLS = ("nvmlDeviceGetCurrentClocksEventReasons",
                   "nvmlDeviceGetCurrentClocksThrottleReasons")
_UNSUPPORTED = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission")
# Any other fault this many ticks in a row (a lost GPU, a call a virtualised driver does not
# pass through) and the counter is asked only once every _RETRY_EVERY ticks (10 s at the
# default rate): a failing call each tick costs the sampler's CPU and fills the fault counts,
# but the GPU may come back.
_FAULTS_BEFORE_BACKOFF = 10
_RETRY_EVERY = 100


class _Env(enum.Enum):
    FROM_ENV = "from the environment"


FROM_ENV = _Env.FROM_ENV


@dataclass
class GpuInfo:
    """One sampled GPU. ``index`` is its position in the sampler (what :meth:`aggregate`,
    :meth:`latest`, :meth:`energy_j` take; the CUDA device index where the mapping is
    certain), ``nvml_index`` NVML's number for it. ``mig_uuids``: the MIG devices visible to
    this process that are slices of it (CUDA reports their UUIDs; the counters are the GPU's)."""

    index: int
    nvml_index: int
    name: str
    uuid: str
    handle: Any
    mig_uuids: tuple[str, ...] = ()


class NvmlSampler:
    """Samples every GPU visible to this process at ``hz`` into a ring of ``capacity`` rows
    per GPU. ``visible`` is a ``CUDA_VISIBLE_DEVICES`` value (None: as if unset, every GPU)
    and ``device_order`` a ``CUDA_DEVICE_ORDER`` one; both default to the environment, read
    at :meth:`open`.

    Thread-safety: :meth:`aggregate`, :meth:`latest` and the metric callbacks may be called
    from any thread; :meth:`start`/:meth:`stop` from one controlling thread.
    """

    def __init__(
        self,
        backend: Any | None = None,
        *,
        hz: float = DEFAULT_HZ,
        capacity: int = DEFAULT_CAPACITY,
        pcie: bool = True,
        clock: Callable[[], int] = time.monotonic_ns,
        visible: str | _Env | None = FROM_ENV,
        device_order: str | _Env | None = FROM_ENV,
    ) -> None:
        if hz <= 0:
            raise ValueError(f"NvmlSampler: hz must be > 0, got {hz}")
        self._backend = backend
        self.hz = float(hz)
        self.capacity = int(capacity)
        self.pcie = pcie
        self.clock = clock
        self.visible = visible
        self.device_order = device_order
        self.gpus: list[GpuInfo] = []
        # CUDA device index -> index here (-1: not sampled), filled by the torch wrappers from
        # the UUID CUDA reports, once per device; kept on the sampler, so a new one asks again.
        self.cuda_indices: dict[int, int] = {}
        self._rings: list[Ring] = []
        self._disabled: list[set[str]] = []
        self._faults: list[dict[str, int]] = []  # consecutive faults per counter group
        self._io_bytes: list[list[float]] = []  # cumulative [tx, rx] bytes per GPU
        self._energy_j: list[float] = []  # cumulative, for GPUs without the energy counter
        self._last_ts: list[int | None] = []
        # Throttle reasons' call: the name drivers since r535 have, until one lacks it.
        self._throttle_call = _THROTTLE_CALLS[0]
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        self.unavailable_reason: str | None = None
        self.cpu_time_ns = 0
        self.wall_time_ns = 0
        self.ticks = 0

    # ----------------------------------------------------------------------------------------
    @property
    def nvml(self) -> Any:
        if self._backend is None:
            self._backend = importlib.import_module("pynvml")
        return self._backend

    @property
    def is_open(self) -> bool:
        """NVML initialised and GPUs listed (samples may be taken)."""
        return self._started

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> bool:
        """Initialise NVML and enumerate GPUs (no thread). False, with one log line, when NVML
        is not usable here."""
        if self._started:
            return True
        try:
            nv = self.nvml
            nv.nvmlInit()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.unavailable_reason = f"{type(exc).__name__}: {exc}"
            _logger.info(
                "inferaudit: NVML not available (%s); GPU counters are disabled",
                self.unavailable_reason,
            )
            return False
        self._reset_gpus()  # a sampler opened again after stop() lists its GPUs afresh
        try:
            selection = self._list_gpus(nv)
        except Exception as exc:
            self.unavailable_reason = f"{type(exc).__name__}: {exc}"
            _logger.info("inferaudit: NVML could not list GPUs (%s); GPU counters are disabled",
                         self.unavailable_reason)
            guarded("nvml.shutdown", nv.nvmlShutdown)
            self._reset_gpus()
            return False
        if not self.gpus:
            self.unavailable_reason = selection.note or "NVML lists no GPU"
            _logger.info("inferaudit: no GPU visible to this process (%s); GPU counters are "
                         "disabled", self.unavailable_reason)
            guarded("nvml.shutdown", nv.nvmlShutdown)
            return False
        if selection.note:
            _logger.info("inferaudit: %s", selection.note)
        self._started = True
        return True

    def _list_gpus(self, nv: Any) -> _cuda_visible.Selection:
        """Every GPU NVML lists (name and UUID: two calls each, once), then the visible ones,
        in CUDA's order, get a ring each."""
        handles: list[Any] = []
        names: list[str] = []
        uuids: list[str] = []
        for i in range(int(nv.nvmlDeviceGetCount())):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            handles.append(handle)
            names.append(_text(guarded("nvml.name", nv.nvmlDeviceGetName, handle)) or "unknown")
            uuids.append(_text(guarded("nvml.uuid", nv.nvmlDeviceGetUUID, handle)) or f"gpu-{i}")
        spec = os.environ.get("CUDA_VISIBLE_DEVICES") if self.visible is FROM_ENV else self.visible
        order = (os.environ.get("CUDA_DEVICE_ORDER") if self.device_order is FROM_ENV
                 else self.device_order)
        selection = _cuda_visible.select(
            spec, names, uuids, device_order=order,
            mig_parent=lambda mig_uuid: _mig_parent(nv, mig_uuid, uuids))
        for pos, i in enumerate(selection.nvml_indices):
            self.gpus.append(GpuInfo(pos, i, names[i], uuids[i], handles[i],
                                     selection.aliases.get(i, ())))
            self._rings.append(Ring(self.capacity))
            self._disabled.append(set() if self.pcie else {"pcie"})
            self._faults.append({})
            self._io_bytes.append([0.0, 0.0])
            self._energy_j.append(0.0)
            self._last_ts.append(None)
        return selection

    def _reset_gpus(self) -> None:
        for per_gpu in (self.gpus, self._rings, self._disabled, self._faults, self._io_bytes,
                        self._energy_j, self._last_ts):
            per_gpu.clear()
        self.cuda_indices.clear()  # positions change with the list

    def start(self) -> bool:
        """:meth:`open`, then start the daemon thread. Idempotent."""
        if not self.open():
            return False
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="inferaudit-nvml", daemon=True
            )
            self._thread.start()
        return True

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread and shut NVML down (the ring keeps its samples)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        self._thread = None
        if self._started:
            guarded("nvml.shutdown", self.nvml.nvmlShutdown)
            self._started = False

    # ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        cpu0 = time.thread_time_ns()
        t0 = time.monotonic_ns()
        period_ns = int(1e9 / self.hz)
        due = t0
        while not self._stop.is_set():
            guarded("nvml.sample", self.sample_once)
            now = time.monotonic_ns()
            self.cpu_time_ns = time.thread_time_ns() - cpu0
            self.wall_time_ns = now - t0
            due += period_ns
            if due < now:  # a slow tick: skip the missed ones rather than burst
                due = now
            self._stop.wait((due - now) / 1e9)

    def cost_ratio(self) -> float:
        """Sampler thread CPU time / wall time since start (0.005 = 0.5% of one core)."""
        return self.cpu_time_ns / self.wall_time_ns if self.wall_time_ns else 0.0

    def sample_once(self) -> None:
        """Read every GPU once and append to the rings (the thread calls this each tick)."""
        for gpu in self.gpus:
            row = self._read(gpu)
            ts = self.clock()
            self._integrate(gpu.index, ts, row)
            self._rings[gpu.index].append(ts, row)
        self.ticks += 1

    def _integrate(self, i: int, ts: int, row: np.ndarray) -> None:
        last = self._last_ts[i]
        self._last_ts[i] = ts
        if last is None:
            return
        dt_s = (ts - last) / 1e9
        tx, rx, p = (float(row[F["pcie_tx_kbps"]]), float(row[F["pcie_rx_kbps"]]),
                     float(row[F["power_w"]]))
        acc = self._io_bytes[i]
        if tx == tx:  # not NaN
            acc[0] += tx * 1024 * dt_s
        if rx == rx:
            acc[1] += rx * 1024 * dt_s
        if p == p:
            self._energy_j[i] += p * dt_s

    def _read(self, gpu: GpuInfo) -> np.ndarray:
        nv = self.nvml
        h = gpu.handle
        row = np.full(len(FIELDS), np.nan)
        off = self._disabled[gpu.index]
        faults = self._faults[gpu.index]
        retry_tick = self.ticks % _RETRY_EVERY == 0

        def ask(group: str, fn: Callable[[], None]) -> None:
            if group in off:
                return
            failed = faults.get(group, 0)
            if failed >= _FAULTS_BEFORE_BACKOFF and not retry_tick:
                return
            try:
                fn()
            except Exception as exc:
                if type(exc).__name__ in _UNSUPPORTED or isinstance(exc, AttributeError):
                    off.add(group)
                    _logger.debug("inferaudit: NVML GPU %d: %s unsupported (%s)",
                                  gpu.nvml_index, group, type(exc).__name__)
                else:
                    faults[group] = failed + 1
                    swallow("nvml.read", exc)
                    if failed + 1 == _FAULTS_BEFORE_BACKOFF:
                        _logger.info("inferaudit: NVML GPU %d: %s failed %d times in a row (%s); "
                                     "asked every %d ticks from now on", gpu.nvml_index, group,
                                     failed + 1, type(exc).__name__, _RETRY_EVERY)
            else:
                if failed:
                    faults[group] = 0

        def util() -> None:
            u = nv.nvmlDeviceGetUtilizationRates(h)
            row[F["sm_util_ratio"]] = u.gpu / 100.0
            row[F["mem_util_ratio"]] = u.memory / 100.0

        def memory() -> None:
            m = nv.nvmlDeviceGetMemoryInfo(h)
            row[F["mem_used_bytes"]] = m.used
            row[F["mem_total_bytes"]] = m.total

        def clock() -> None:
            row[F["sm_clock_mhz"]] = nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)

        def power() -> None:
            row[F["power_w"]] = nv.nvmlDeviceGetPowerUsage(h) / 1000.0

        def energy() -> None:
            row[F["energy_mj"]] = nv.nvmlDeviceGetTotalEnergyConsumption(h)

        def pcie() -> None:
            row[F["pcie_tx_kbps"]] = nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_TX_BYTES)
            row[F["pcie_rx_kbps"]] = nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_RX_BYTES)

        def throttle() -> None:
            try:
                value = getattr(nv, self._throttle_call)(h)
            except Exception as exc:
                # pynvml defines both names; a driver library without the new symbol raises
                # FunctionNotFound (an older pynvml lacks the attribute): the old name then.
                old = _THROTTLE_CALLS[1]
                if self._throttle_call == old or not (
                        type(exc).__name__ == "NVMLError_FunctionNotFound"
                        or isinstance(exc, AttributeError)):
                    raise
                self._throttle_call = old
                value = getattr(nv, old)(h)
            row[F["throttle_reasons"]] = value

        # PCIe first (it blocks ~20 ms per direction) and the energy counter last, just before
        # the row is stamped: a span's power is its energy over its window, so the counter's
        # reading must carry the time it was taken.
        for group, fn in (("pcie", pcie), ("util", util), ("memory", memory), ("clock", clock),
                          ("power", power), ("throttle", throttle), ("energy", energy)):
            ask(group, fn)
        return row

    # ----------------------------------------------------------------------------------------
    def aggregate(self, index: int, start_ns: int, end_ns: int) -> dict[str, Any]:
        """``inferaudit.gpu.*`` attributes of GPU ``index`` over ``[start_ns, end_ns]`` on
        :attr:`clock`. Never waits for a sample; ``{}`` for an unknown GPU or no samples."""
        if not 0 <= index < len(self._rings):
            return {}
        ts, data, inside = self._rings[index].window(start_ns, end_ns)
        return aggregate(ts, data, inside, start_ns, end_ns)

    def latest(self, index: int) -> tuple[int, np.ndarray] | None:
        """Newest ``(ts_ns, row)`` of GPU ``index`` (row indexed by :data:`._ring.FIELDS`)."""
        if not 0 <= index < len(self._rings):
            return None
        return self._rings[index].latest()

    def io_bytes(self, index: int) -> tuple[float, float] | None:
        """Cumulative PCIe (tx, rx) bytes since the sampler started, integrated per tick; None
        where PCIe counters are off or unsupported."""
        if "pcie" in self._disabled[index]:
            return None
        tx, rx = self._io_bytes[index]
        return tx, rx

    def energy_j(self, index: int) -> float | None:
        """Cumulative energy in J: the driver's counter where supported, else power × time."""
        latest = self.latest(index)
        if latest is not None and not np.isnan(latest[1][F["energy_mj"]]):
            return float(latest[1][F["energy_mj"]]) / 1000.0
        if "power" in self._disabled[index] and self._energy_j[index] == 0.0:
            return None
        return self._energy_j[index]

    def index_for_uuid(self, uuid: str) -> int | None:
        """The sampler index (what :meth:`aggregate` takes) of the GPU with this UUID, or of
        the GPU a MIG device with this UUID is a slice of; ``GPU-``/``MIG-`` prefixes
        optional (CUDA's and torch's spellings differ). None: not sampled here."""
        want = _bare_uuid(uuid)
        for gpu in self.gpus:
            if _bare_uuid(gpu.uuid) == want or any(_bare_uuid(m) == want for m in gpu.mig_uuids):
                return gpu.index
        if not self._started or not want:
            return None
        # A MIG device CUDA_VISIBLE_DEVICES did not name (a container runtime exposed it, or
        # the older MIG-GPU-<uuid>/<gi>/<ci> form was used): NVML knows its parent.
        found = _mig_parent(self.nvml, f"MIG-{want}", [g.uuid for g in self.gpus])
        if found is None:
            return None
        gpu = self.gpus[found]
        gpu.mig_uuids = (*gpu.mig_uuids, f"MIG-{want}")
        return gpu.index


def _bare_uuid(uuid: str) -> str:
    u = uuid.strip().lower()
    return u[4:] if u.startswith(("gpu-", "mig-")) else u


def _mig_parent(nv: Any, mig_uuid: str, uuids: list[str]) -> int | None:
    """NVML index of the GPU the MIG device ``mig_uuid`` is a slice of; None where NVML
    does not know the UUID (``NVMLError_NotFound``) or lacks the MIG calls."""
    try:
        mig = nv.nvmlDeviceGetHandleByUUID(mig_uuid)
        parent = _text(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)))
    except Exception as exc:  # NVMLError_NotFound, _InvalidArgument, _NotSupported; no MIG API
        _logger.debug("inferaudit: MIG device %s not resolved (%s)", mig_uuid, type(exc).__name__)
        return None
    want = _bare_uuid(parent or "")
    hits = [i for i, u in enumerate(uuids) if _bare_uuid(u) == want]
    return hits[0] if hits else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------------------------
# The process-wide sampler
# --------------------------------------------------------------------------------------------
_lock = threading.Lock()
_sampler: NvmlSampler | None = None
_unavailable = False


def start_sampler(
    config: Any | None = None,
    *,
    meter_provider: Any | None = None,
    backend: Any | None = None,
    force: bool = False,
) -> NvmlSampler | None:
    """Start (once) the process-wide sampler per ``config`` (default: the active config) and
    export its metrics. ``None`` when disabled or NVML is unusable; that is decided once per
    process unless ``force``. Called by ``configure()`` and by ``instrument_model``."""
    global _sampler, _unavailable
    if config is None:
        from inferaudit_sdk import _settings

        config = _settings.get_config()
    if not config.nvml_enabled:
        return None
    with _lock:
        if _sampler is not None and _sampler.running:
            return _sampler
        if _unavailable and not force:
            return None
        sampler = NvmlSampler(backend, hz=config.nvml_sample_hz or DEFAULT_HZ)
        if not sampler.start():
            _unavailable = True
            return None
        from inferaudit_sdk.samplers import _nvml_metrics

        guarded("nvml.metrics", _nvml_metrics.register, get_sampler, meter_provider)
        _sampler = sampler
        return sampler


def get_sampler() -> NvmlSampler | None:
    """The running process-wide sampler, if any (cheap: one global read)."""
    return _sampler


def stop_sampler() -> None:
    """Stop the process-wide sampler (``shutdown()`` calls this)."""
    global _sampler
    with _lock:
        sampler, _sampler = _sampler, None
    if sampler is not None:
        sampler.stop()


def reset_for_tests() -> None:
    global _unavailable
    stop_sampler()
    _unavailable = False
