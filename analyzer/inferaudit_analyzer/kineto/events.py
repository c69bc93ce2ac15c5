"""Normalise Kineto events into integer-nanosecond interval arrays.

One :class:`TraceEvents` per trace file holds columnar numpy arrays for what the analyses use:

* GPU operations (``kernel``, ``gpu_memcpy``, ``gpu_memset``; the pre-2022 Kineto spellings
  ``Kernel``/``Memcpy``/``Memset`` too), with device, stream, correlation id and bytes;
* host runtime/driver calls (``cuda_runtime``, ``cuda_driver``, old ``Runtime``), each
  classified by :func:`classify_launch` (kernel launch, graph launch, memcpy, memset, sync);
* CPU operators (``cpu_op``, old ``Operator``).

``gpu_user_annotation`` events are deliberately dropped: they sit on GPU rows but are ranges,
not work, and counting them would make an idle device look busy. ``cuda_profiler_range``
events (CUPTI range-profiler mode) are only counted: in that mode kernels are replayed and
serialised, so their times are not a timeline.

Times: Kineto writes ``ts``/``dur`` in microseconds, as integers (old traces) or as floats with
nanosecond decimals. Both become exact integer ns here (integer part and fraction converted
separately, so epoch-sized timestamps keep their precision).

Device and correlation ids are made unique across files by :func:`concat` (device key =
``file_index * DEVICE_KEY_STRIDE + device``), so several files can be analysed as one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .load import TraceStream

__all__ = [
    "DEVICE_KEY_STRIDE",
    "KIND_KERNEL",
    "KIND_MEMCPY",
    "KIND_MEMSET",
    "LAUNCH_GRAPH",
    "LAUNCH_KERNEL",
    "LAUNCH_MEMCPY",
    "LAUNCH_MEMSET",
    "LAUNCH_OTHER",
    "LAUNCH_SYNC",
    "DeviceInfo",
    "TraceEvents",
    "classify_launch",
    "concat",
    "read_events",
    "runtime_of_gpu",
    "take",
    "us_to_ns",
]

KIND_KERNEL, KIND_MEMCPY, KIND_MEMSET = 0, 1, 2
LAUNCH_OTHER, LAUNCH_KERNEL, LAUNCH_GRAPH, LAUNCH_MEMCPY, LAUNCH_MEMSET, LAUNCH_SYNC = range(6)
LAUNCH_NAMES = ("other", "kernel", "graph", "memcpy", "memset", "sync")
DEVICE_KEY_STRIDE = 1 << 20
_CORR_KEY_STRIDE = 1 << 40

_GPU_CATS = {
    "kernel": KIND_KERNEL,
    "gpu_memcpy": KIND_MEMCPY,
    "memcpy": KIND_MEMCPY,
    "gpu_memset": KIND_MEMSET,
    "memset": KIND_MEMSET,
}
_RUNTIME_CATS = {"cuda_runtime", "cuda_driver", "runtime"}
_CPU_CATS = {"cpu_op", "operator"}
_COUNTER_CAT = "cuda_profiler_range"

# Launch APIs of CUDA runtime, CUDA driver and HIP, with their _v2/_ptsz/ExC variants.
_KERNEL_LAUNCH_RE = re.compile(r"^(cuda|cu|hip)(Ext)?(Module)?Launch(Cooperative)?Kernel\w*$")
_GRAPH_LAUNCH_RE = re.compile(r"^(cuda|cu|hip)GraphLaunch\w*$")
_MEMCPY_RE = re.compile(r"^(cuda|cu|hip)Memcpy\w*$")
_MEMSET_RE = re.compile(r"^(cuda|cu|hip)Memset\w*$")
_SYNC_RE = re.compile(r"^(cuda|cu|hip)(Stream|Device|Event|Ctx)Synchronize\w*$")
_STREAM_TID_RE = re.compile(r"(\d+)\s*$")
_launch_cache: dict[str, int] = {}


def classify_launch(name: str) -> int:
    """The ``LAUNCH_*`` class of a runtime/driver call name (``LAUNCH_OTHER`` if none)."""
    kind = _launch_cache.get(name)
    if kind is None:
        if _KERNEL_LAUNCH_RE.match(name):
            kind = LAUNCH_KERNEL
        elif _GRAPH_LAUNCH_RE.match(name):
            kind = LAUNCH_GRAPH
        elif _MEMCPY_RE.match(name):
            kind = LAUNCH_MEMCPY
        elif _MEMSET_RE.match(name):
            kind = LAUNCH_MEMSET
        elif _SYNC_RE.match(name):
            kind = LAUNCH_SYNC
        else:
            kind = LAUNCH_OTHER
        _launch_cache[name] = kind
    return kind


def us_to_ns(value: Any) -> int:
    """Kineto microseconds (int or float) to integer ns without losing epoch precision."""
    if isinstance(value, bool):
        raise TypeError("boolean is not a time")
    if isinstance(value, int):
        ns = value * 1000
    else:
        whole = int(value)  # raises on NaN/inf/str: the caller counts the event as malformed
        ns = whole * 1000 + round((value - whole) * 1000)
    if not _I64_MIN <= ns <= _I64_MAX:  # 1e30 us: no clock; it would not fit the arrays
        raise OverflowError(f"time {value} us is outside the signed 64-bit ns range")
    return ns


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class DeviceInfo:
    """One device seen in a trace. ``key`` is unique across files (see :func:`concat`)."""

    key: int
    source: str
    device_id: int
    name: str = ""
    num_sms: int | None = None


def _arr(values: list[int], dtype: Any = np.int64) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


@dataclass(frozen=True)
class TraceEvents:
    """Columnar, integer-ns events of one trace (or several, after :func:`concat`).

    GPU arrays (``gpu_*``) are aligned; so are runtime (``rt_*``) and CPU-op (``cpu_*``)
    arrays. Names are indices into :attr:`names`.
    """

    sources: tuple[str, ...]
    names: tuple[str, ...]
    gpu_start_ns: np.ndarray
    gpu_end_ns: np.ndarray
    gpu_kind: np.ndarray
    gpu_device: np.ndarray
    gpu_stream: np.ndarray
    gpu_corr: np.ndarray
    gpu_name: np.ndarray
    gpu_bytes: np.ndarray
    rt_start_ns: np.ndarray
    rt_end_ns: np.ndarray
    rt_corr: np.ndarray
    rt_name: np.ndarray
    rt_launch: np.ndarray
    cpu_start_ns: np.ndarray
    cpu_end_ns: np.ndarray
    cpu_name: np.ndarray
    devices: tuple[DeviceInfo, ...]
    profiler_ranges: int = 0
    counter_names: tuple[str, ...] = ()
    malformed_events: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpu_dur_ns(self) -> np.ndarray:
        return self.gpu_end_ns - self.gpu_start_ns

    @property
    def n_gpu(self) -> int:
        return int(self.gpu_start_ns.size)


class _Builder:
    """Accumulates one file's events into Python lists, then freezes them into arrays."""

    def __init__(self, file_index: int) -> None:
        self.dev_base = file_index * DEVICE_KEY_STRIDE
        self.corr_base = file_index * _CORR_KEY_STRIDE
        self.names: dict[str, int] = {}
        self.g: tuple[list[int], ...] = tuple([] for _ in range(8))
        self.r: tuple[list[int], ...] = tuple([] for _ in range(5))
        self.c: tuple[list[int], ...] = tuple([] for _ in range(3))
        self.devices: set[int] = set()
        self.profiler_ranges = 0
        self.counter_names: set[str] = set()
        self.malformed = 0

    def name_id(self, name: str) -> int:
        idx = self.names.get(name)
        if idx is None:
            idx = self.names[name] = len(self.names)
        return idx

    def add(self, ev: dict[str, Any]) -> None:
        cat = ev.get("cat")
        if not isinstance(cat, str) or ev.get("ph") != "X":
            return
        lcat = cat.lower()
        kind = _GPU_CATS.get(lcat)
        if kind is None and lcat not in _RUNTIME_CATS and lcat not in _CPU_CATS:
            if lcat == _COUNTER_CAT:
                self.profiler_ranges += 1
                args = ev.get("args")
                if isinstance(args, dict):
                    self.counter_names.update(args)
            return
        try:
            start = us_to_ns(ev["ts"])
            dur = us_to_ns(ev.get("dur", 0))
            if dur < 0 or start + dur > _I64_MAX:  # no span of time: as malformed as no time
                raise ValueError(f"duration {ev.get('dur')} us")
            end = start + dur
        except (KeyError, TypeError, ValueError, OverflowError):
            self.malformed += 1
            return
        args = ev.get("args")
        if not isinstance(args, dict):
            args = {}
        name = str(ev.get("name", ""))
        if kind is not None:
            self._add_gpu(kind, start, end, name, ev, args)
        elif lcat in _RUNTIME_CATS:
            r = self.r
            r[0].append(start)
            r[1].append(end)
            corr = _int(args.get("correlation"), -1)
            r[2].append(self.corr_base + corr if corr >= 0 else -1)
            r[3].append(self.name_id(name))
            r[4].append(classify_launch(name))
        else:
            c = self.c
            c[0].append(start)
            c[1].append(end)
            c[2].append(self.name_id(name))

    def _add_gpu(
        self, kind: int, start: int, end: int, name: str, ev: dict[str, Any], args: dict
    ) -> None:
        device = _int(args.get("device"), None)
        if device is None:
            device = _int(ev.get("pid"), 0)
        stream = _int(args.get("stream"), None)
        if stream is None:
            m = _STREAM_TID_RE.search(str(ev.get("tid", "")))
            stream = int(m.group(1)) if m else -1
        corr = _int(args.get("correlation"), -1)
        g = self.g
        g[0].append(start)
        g[1].append(end)
        g[2].append(kind)
        g[3].append(self.dev_base + device)
        g[4].append(stream)
        g[5].append(self.corr_base + corr if corr >= 0 else -1)
        g[6].append(self.name_id(name))
        g[7].append(_int(args.get("bytes"), -1))
        self.devices.add(device)

    def freeze(self, source: str, metadata: dict[str, Any]) -> TraceEvents:
        props = _device_properties(metadata)
        if len(props) == 1 and len(self.devices) == 1 and not self.devices & props.keys():
            # ROCm traces number GPU rows by agent (SGLang MI300X: device 9) but list the one
            # visible device as id 0: one device each side is the same device.
            props = {next(iter(self.devices)): next(iter(props.values()))}
        devices = tuple(
            DeviceInfo(
                key=self.dev_base + d,
                source=source,
                device_id=d,
                name=str(props.get(d, {}).get("name", "")),
                num_sms=_int(props.get(d, {}).get("numSms"), None),
            )
            for d in sorted(self.devices)
        )
        g, r, c = self.g, self.r, self.c
        notes: list[str] = []
        if self.malformed:
            notes.append(f"{self.malformed} events that were not objects or had no usable "
                         "ts/dur were skipped")
        return TraceEvents(
            sources=(source,),
            names=tuple(self.names),
            gpu_start_ns=_arr(g[0]),
            gpu_end_ns=_arr(g[1]),
            gpu_kind=_arr(g[2], np.int8),
            gpu_device=_arr(g[3]),
            gpu_stream=_arr(g[4]),
            gpu_corr=_arr(g[5]),
            gpu_name=_arr(g[6], np.int32),
            gpu_bytes=_arr(g[7]),
            rt_start_ns=_arr(r[0]),
            rt_end_ns=_arr(r[1]),
            rt_corr=_arr(r[2]),
            rt_name=_arr(r[3], np.int32),
            rt_launch=_arr(r[4], np.int8),
            cpu_start_ns=_arr(c[0]),
            cpu_end_ns=_arr(c[1]),
            cpu_name=_arr(c[2], np.int32),
            devices=devices,
            profiler_ranges=self.profiler_ranges,
            counter_names=tuple(sorted(self.counter_names)),
            malformed_events=self.malformed,
            notes=tuple(notes),
        )


def _int(value: Any, default: Any) -> Any:
    """``int(value)`` for ints and numeric strings (ROCm writes ``"bytes": "9216"``)."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _device_properties(metadata: dict[str, Any]) -> dict[int, dict[str, Any]]:
    props = metadata.get("deviceProperties")
    out: dict[int, dict[str, Any]] = {}
    if isinstance(props, list):
        for p in props:
            if isinstance(p, dict) and _int(p.get("id"), None) is not None:
                out[int(p["id"])] = p
    return out


def read_events(path: str | Path, file_index: int = 0) -> TraceEvents:
    """Read and normalise one trace file.

    Raises:
        KinetoTraceError: the file is missing, truncated, corrupt or not a Kineto trace.
    """
    stream = TraceStream(path)
    builder = _Builder(file_index)
    for ev in stream.events():
        builder.add(ev)
    builder.malformed += stream.non_objects
    return builder.freeze(str(path), stream.metadata)


def concat(parts: Sequence[TraceEvents]) -> TraceEvents:
    """One :class:`TraceEvents` over several files (their device/correlation keys stay apart)."""
    if len(parts) == 1:
        return parts[0]
    names: dict[str, int] = {}
    maps: list[np.ndarray] = []
    for p in parts:
        maps.append(np.asarray([names.setdefault(n, len(names)) for n in p.names], dtype=np.int32))

    def cat(attr: str, remap: bool = False) -> np.ndarray:
        arrays: Iterable[np.ndarray] = (
            m[getattr(p, attr)] if remap else getattr(p, attr)
            for p, m in zip(parts, maps, strict=True)
        )
        return np.concatenate(list(arrays))

    return TraceEvents(
        sources=tuple(s for p in parts for s in p.sources),
        names=tuple(names),
        gpu_start_ns=cat("gpu_start_ns"),
        gpu_end_ns=cat("gpu_end_ns"),
        gpu_kind=cat("gpu_kind"),
        gpu_device=cat("gpu_device"),
        gpu_stream=cat("gpu_stream"),
        gpu_corr=cat("gpu_corr"),
        gpu_name=cat("gpu_name", remap=True),
        gpu_bytes=cat("gpu_bytes"),
        rt_start_ns=cat("rt_start_ns"),
        rt_end_ns=cat("rt_end_ns"),
        rt_corr=cat("rt_corr"),
        rt_name=cat("rt_name", remap=True),
        rt_launch=cat("rt_launch"),
        cpu_start_ns=cat("cpu_start_ns"),
        cpu_end_ns=cat("cpu_end_ns"),
        cpu_name=cat("cpu_name", remap=True),
        devices=tuple(d for p in parts for d in p.devices),
        profiler_ranges=sum(p.profiler_ranges for p in parts),
        counter_names=tuple(sorted({n for p in parts for n in p.counter_names})),
        malformed_events=sum(p.malformed_events for p in parts),
        notes=tuple(n for p in parts for n in p.notes),
    )


def runtime_of_gpu(ev: TraceEvents) -> np.ndarray:
    """For each GPU op, the index (into ``rt_*``) of the host call with its correlation id.

    -1 where the trace has no such call (missing correlation or host events not recorded).
    For ops of a CUDA/HIP graph replay this is the one graph-launch call they share.
    """
    out = np.full(ev.n_gpu, -1, dtype=np.int64)
    if ev.rt_corr.size == 0 or ev.n_gpu == 0:
        return out
    order = np.argsort(ev.rt_corr, kind="stable")
    sorted_corr = ev.rt_corr[order]
    pos = np.searchsorted(sorted_corr, ev.gpu_corr)
    pos = np.minimum(pos, sorted_corr.size - 1)
    hit = (sorted_corr[pos] == ev.gpu_corr) & (ev.gpu_corr >= 0)
    out[hit] = order[pos[hit]]
    return out


def take(values: np.ndarray, index: np.ndarray, fill: int) -> np.ndarray:
    """``values[index]`` with ``fill`` where ``index < 0`` (safe when ``values`` is empty)."""
    out = np.full(index.shape, fill, dtype=values.dtype if values.size else np.int64)
    ok = index >= 0
    if ok.any():
        out[ok] = values[index[ok]]
    return out
