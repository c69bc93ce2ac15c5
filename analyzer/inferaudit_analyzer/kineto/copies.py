"""Memory copies: bandwidth per direction, pageable copies, copy time not hidden by kernels.

Direction and memory kind come from Kineto's activity name, e.g.
``Memcpy HtoD (Pageable -> Device)`` (CUDA) or ``Memcpy DtoH (Device -> Host)`` (ROCm, which
does not say pinned or pageable: counted as ``host``). Bandwidth = bytes / GPU duration, in
GB/s (1e9 bytes/s, i.e. bytes per ns), over the copies whose byte count is known; HTA's
``get_memory_bw_summary`` reports the same quantity per copy from Kineto's
``memory bandwidth (GB/s)`` argument.

*Exposed* copy time is copy time on a device during which no kernel ran on that device
(``|copies ∪ kernels| - |kernels|``): the part of data movement the device waited through.
Pageable host memory forces the driver to stage through a pinned bounce buffer and makes
``cudaMemcpyAsync`` synchronous with the host, so pageable copies on the hot path are
avoidable serialisation (use pinned memory: ``pin_memory=True``, ``non_blocking=True``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .events import KIND_KERNEL, KIND_MEMCPY, KIND_MEMSET, TraceEvents
from .temporal import union_ns

__all__ = ["HOST_DIRECTIONS", "CopyStats", "copy_stats"]

_DIR_RE = re.compile(r"Memcpy\s+(\w+)")
_KINDS_RE = re.compile(r"\((\w+)\s*->\s*(\w+)\)")
HOST_DIRECTIONS = ("HtoD", "DtoH", "HtoH")


def _parse(name: str) -> tuple[str, bool]:
    m = _DIR_RE.search(name)
    direction = m.group(1) if m else "unknown"
    k = _KINDS_RE.search(name)
    pageable = bool(k) and "pageable" in (k.group(1) + k.group(2)).lower()  # type: ignore[union-attr]
    return direction, pageable


@dataclass(frozen=True)
class CopyStats:
    """Copy and memset totals; ``directions`` rows are per copy direction."""

    directions: tuple[dict[str, object], ...]
    copies: int
    copy_bytes: int
    copy_time_ns: int
    pageable_copies: int
    pageable_bytes: int
    pageable_time_ns: int
    exposed_copy_ns: int
    exposed_host_copy_ns: int
    host_copy_bytes: int
    host_copy_time_ns: int
    memsets: int
    memset_bytes: int
    memset_time_ns: int

    @property
    def host_copy_gbps(self) -> float:
        return self.host_copy_bytes / self.host_copy_time_ns if self.host_copy_time_ns else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "directions": [dict(d) for d in self.directions],
            "copies": self.copies,
            "copy_bytes": self.copy_bytes,
            "copy_time_ns": self.copy_time_ns,
            "pageable_copies": self.pageable_copies,
            "pageable_bytes": self.pageable_bytes,
            "pageable_time_ns": self.pageable_time_ns,
            "exposed_copy_ns": self.exposed_copy_ns,
            "exposed_host_copy_ns": self.exposed_host_copy_ns,
            "host_copy_gbps": round(self.host_copy_gbps, 3),
            "memsets": self.memsets,
            "memset_bytes": self.memset_bytes,
            "memset_time_ns": self.memset_time_ns,
        }


def _exposed(ev: TraceEvents, copy_mask: np.ndarray) -> int:
    """Copy ns with no kernel running on the same device, summed over devices."""
    total = 0
    kmask = ev.gpu_kind == KIND_KERNEL
    for dev in np.unique(ev.gpu_device[copy_mask]):
        on = ev.gpu_device == dev
        k = on & kmask
        both = k | (on & copy_mask)
        total += union_ns(ev.gpu_start_ns[both], ev.gpu_end_ns[both]) - union_ns(
            ev.gpu_start_ns[k], ev.gpu_end_ns[k]
        )
    return total


def copy_stats(ev: TraceEvents) -> CopyStats:
    """Aggregate memcpy/memset ops of ``ev``."""
    cm = ev.gpu_kind == KIND_MEMCPY
    idx = np.nonzero(cm)[0]
    parsed = {int(n): _parse(ev.names[int(n)]) for n in np.unique(ev.gpu_name[idx])}
    direction = np.asarray([parsed[int(n)][0] for n in ev.gpu_name[idx]], dtype=object)
    pageable = np.asarray([parsed[int(n)][1] for n in ev.gpu_name[idx]], dtype=bool)
    dur = ev.gpu_dur_ns[idx]
    nbytes = ev.gpu_bytes[idx]
    known = nbytes >= 0
    rows: list[dict[str, object]] = []
    for d in sorted(set(direction.tolist())):
        m = direction == d
        mk = m & known
        b, t_known = int(nbytes[mk].sum()), int(dur[mk].sum())
        rows.append(
            {
                "direction": d,
                "count": int(m.sum()),
                "bytes": b,
                "time_ns": int(dur[m].sum()),
                "bandwidth_gbps": round(b / t_known, 3) if t_known else None,
                "pageable": int((m & pageable).sum()),
            }
        )
    host = np.isin(direction, HOST_DIRECTIONS) if idx.size else np.zeros(0, dtype=bool)
    host_mask = np.zeros(ev.n_gpu, dtype=bool)
    host_mask[idx[host]] = True
    hk = host & known
    sm = ev.gpu_kind == KIND_MEMSET
    return CopyStats(
        directions=tuple(rows),
        copies=int(idx.size),
        copy_bytes=int(nbytes[known].sum()),
        copy_time_ns=int(dur.sum()),
        pageable_copies=int(pageable.sum()),
        pageable_bytes=int(nbytes[pageable & known].sum()),
        pageable_time_ns=int(dur[pageable].sum()),
        exposed_copy_ns=_exposed(ev, cm) if idx.size else 0,
        exposed_host_copy_ns=_exposed(ev, host_mask) if host.any() else 0,
        host_copy_bytes=int(nbytes[hk].sum()),
        host_copy_time_ns=int(dur[hk].sum()),
        memsets=int(sm.sum()),
        memset_bytes=int(np.maximum(ev.gpu_bytes[sm], 0).sum()),
        memset_time_ns=int(ev.gpu_dur_ns[sm].sum()),
    )
