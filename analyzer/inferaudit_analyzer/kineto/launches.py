"""Launch statistics (HTA's "CUDA kernel launch statistics") and CUDA/HIP graph launches.

Each GPU op is joined to the host call with its correlation id (:func:`.events.runtime_of_gpu`).
For ops launched *directly* (``cudaLaunchKernel``, ``cudaLaunchKernelExC``, ``cuLaunchKernel``,
``cuLaunchKernelEx``, ``hipLaunchKernel``, ``hipExtLaunchKernel``, ``hipModuleLaunchKernel``,
``hipExtModuleLaunchKernel``, ``cudaMemcpyAsync``/``hipMemcpyAsync``, ``cudaMemsetAsync``...):

* **launch delay** = GPU start - host call end (HTA's stated definition, "the difference
  between GPU kernel starting and CPU operator ending"; HTA's code adds the call's duration
  instead of subtracting it, see docs). Negative when the op started before the call returned.
* **runtime duration** = host call end - start; outliers above :data:`RUNTIME_CUTOFF_NS`.
* **short kernel** = a kernel whose GPU duration is below its launch call's duration (HTA):
  the host cannot launch such kernels as fast as the device runs them.

Launch delay, runtime duration and ``launch_api_time_ns`` are over *kernel* launches only: a
copy call (``cudaMemcpy``, a pageable ``cudaMemcpyAsync``, ``hipMemcpyWithStream``) returns only
when its copy is done, so its GPU op starts inside the call (a "negative delay" that is no
clock error) and its duration is waiting on the device, not launch cost. Their call time is
reported apart as ``memcpy_api_time_ns``, with that of memset calls. Clock skew is suspected
only when a GPU op (any kind) starts more than :data:`CLOCK_SKEW_SUSPECT_NS` before its host
call *started*: no op can start before it was asked for.

Ops of a graph replay share one ``cudaGraphLaunch``/``hipGraphLaunch`` call. They are *not*
counted as launches, short kernels or launch delays (comparing 400 kernels with one 500 us
graph-launch call would call every one of them short); they are summarised per graph launch
instead. A graph launch with no GPU op in the trace is counted in ``launches_without_ops``:
the replay ran somewhere the trace does not show, so the device time it used is unknown.
A replay's ``first_op_delay`` runs from its launch call's *start*: the call enqueues the whole
graph and its first op often starts before the call returns (from the call's end, SGLang's
replays read a median of -1.6 ms beside ``negative_launch_delays`` 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import (
    KIND_KERNEL,
    LAUNCH_GRAPH,
    LAUNCH_KERNEL,
    LAUNCH_MEMCPY,
    LAUNCH_MEMSET,
    TraceEvents,
    take,
)

__all__ = [
    "LAUNCH_DELAY_CUTOFF_NS",
    "RUNTIME_CUTOFF_NS",
    "GraphLaunches",
    "LaunchStats",
    "graph_launches",
    "launch_stats",
]

RUNTIME_CUTOFF_NS = 50_000  # HTA get_cuda_kernel_launch_stats(runtime_cutoff=50), in us
LAUNCH_DELAY_CUTOFF_NS = 100_000  # HTA launch_delay_cutoff=100, in us
# A GPU op cannot start before the host call that enqueued it started; beyond this margin the CPU
# and GPU clocks of the trace disagree (house rule, the same magnitude as HTA's outlier cutoff),
# and launch delays read wrong by that much.
CLOCK_SKEW_SUSPECT_NS = 100_000
_DIRECT = (LAUNCH_KERNEL, LAUNCH_MEMCPY, LAUNCH_MEMSET)


def _dist(values: np.ndarray) -> dict[str, int]:
    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50_ns": round(p50),
        "p90_ns": round(p90),
        "p99_ns": round(p99),
        "mean_ns": round(float(values.mean())),
        "max_ns": int(values.max()),
        "min_ns": int(values.min()),
    }


@dataclass(frozen=True)
class LaunchStats:
    """Directly launched GPU ops and their host calls."""

    launches: int
    kernel_launches: int
    short_kernels: int
    short_kernel_time_ns: int
    launch_delay_outliers: int
    runtime_outliers: int
    negative_launch_delays: int  # kernel started before its launch call ended (any amount)
    skewed_launch_delays: int  # op started > CLOCK_SKEW_SUSPECT_NS before its call started
    unmatched_ops: int
    launch_api_time_ns: int  # kernel and graph launch calls
    api_counts: tuple[tuple[str, int], ...]
    launch_delay_ns: tuple[tuple[str, int], ...]
    runtime_ns: tuple[tuple[str, int], ...]
    kernel_dur_ns: tuple[tuple[str, int], ...]
    memcpy_api_time_ns: int = 0  # copy and memset calls: mostly waiting, kept apart

    @property
    def short_kernel_ratio(self) -> float:
        return self.short_kernels / self.kernel_launches if self.kernel_launches else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "launches": self.launches,
            "kernel_launches": self.kernel_launches,
            "short_kernels": self.short_kernels,
            "short_kernel_ratio": round(self.short_kernel_ratio, 4),
            "short_kernel_time_ns": self.short_kernel_time_ns,
            "launch_delay": dict(self.launch_delay_ns),
            "launch_delay_outliers": self.launch_delay_outliers,
            "launch_delay_cutoff_ns": LAUNCH_DELAY_CUTOFF_NS,
            "negative_launch_delays": self.negative_launch_delays,
            "skewed_launch_delays": self.skewed_launch_delays,
            "clock_skew_suspect_ns": CLOCK_SKEW_SUSPECT_NS,
            "clock_skew_suspected": self.skewed_launch_delays > 0,
            "runtime": dict(self.runtime_ns),
            "runtime_outliers": self.runtime_outliers,
            "runtime_cutoff_ns": RUNTIME_CUTOFF_NS,
            "kernel_duration": dict(self.kernel_dur_ns),
            "launch_api_time_ns": self.launch_api_time_ns,
            "memcpy_api_time_ns": self.memcpy_api_time_ns,
            "ops_without_host_call": self.unmatched_ops,
            "api_counts": dict(self.api_counts),
        }


def _api_counts(ev: TraceEvents) -> tuple[tuple[str, int], ...]:
    m = np.isin(ev.rt_launch, (LAUNCH_KERNEL, LAUNCH_GRAPH, LAUNCH_MEMCPY, LAUNCH_MEMSET))
    if not m.any():
        return ()
    uniq, counts = np.unique(ev.rt_name[m], return_counts=True)
    rows = sorted(((ev.names[int(u)], int(c)) for u, c in zip(uniq, counts, strict=True)))
    return tuple(sorted(rows, key=lambda r: -r[1]))


def launch_stats(ev: TraceEvents, rt_index: np.ndarray) -> LaunchStats:
    """Launch delay, runtime duration and short-kernel counts of directly launched ops.

    Delay and runtime distributions are of kernel launches (see the module docstring).
    """
    has = rt_index >= 0
    direct = np.isin(take(ev.rt_launch, rt_index, -1), _DIRECT)
    gi = np.nonzero(direct)[0]
    r = rt_index[gi]
    skewed = ev.gpu_start_ns[gi] < ev.rt_start_ns[r] - CLOCK_SKEW_SUSPECT_NS
    is_kernel = (ev.gpu_kind[gi] == KIND_KERNEL) & (ev.rt_launch[r] == LAUNCH_KERNEL)
    gk, rk = gi[is_kernel], r[is_kernel]
    delay = ev.gpu_start_ns[gk] - ev.rt_end_ns[rk]
    rt_dur = ev.rt_end_ns[rk] - ev.rt_start_ns[rk]
    gpu_dur = ev.gpu_end_ns[gk] - ev.gpu_start_ns[gk]
    short = gpu_dur < rt_dur
    launch_rows = np.isin(ev.rt_launch, (LAUNCH_KERNEL, LAUNCH_GRAPH))
    copy_rows = np.isin(ev.rt_launch, (LAUNCH_MEMCPY, LAUNCH_MEMSET))
    return LaunchStats(
        launches=int(gi.size),
        kernel_launches=int(gk.size),
        short_kernels=int(short.sum()),
        short_kernel_time_ns=int(gpu_dur[short].sum()),
        launch_delay_outliers=int((delay > LAUNCH_DELAY_CUTOFF_NS).sum()),
        runtime_outliers=int((rt_dur > RUNTIME_CUTOFF_NS).sum()),
        negative_launch_delays=int((delay < 0).sum()),
        skewed_launch_delays=int(skewed.sum()),
        unmatched_ops=int((~has).sum()),
        launch_api_time_ns=int((ev.rt_end_ns[launch_rows] - ev.rt_start_ns[launch_rows]).sum()),
        api_counts=_api_counts(ev),
        launch_delay_ns=tuple(_dist(delay).items()),
        runtime_ns=tuple(_dist(rt_dur).items()),
        kernel_dur_ns=tuple(_dist(gpu_dur).items()),
        memcpy_api_time_ns=int((ev.rt_end_ns[copy_rows] - ev.rt_start_ns[copy_rows]).sum()),
    )


@dataclass(frozen=True)
class GraphLaunches:
    """CUDA/HIP graph launches and the GPU ops of their replays."""

    launches: int
    launches_with_ops: int
    ops: int
    op_time_ns: int
    replay_span_ns: int
    launch_api_time_ns: int
    first_op_delay_ns: tuple[tuple[str, int], ...]

    @property
    def launches_without_ops(self) -> int:
        return self.launches - self.launches_with_ops

    def to_json(self) -> dict[str, object]:
        return {
            "launches": self.launches,
            "launches_with_ops": self.launches_with_ops,
            "launches_without_ops": self.launches_without_ops,
            "ops": self.ops,
            "ops_per_launch": round(self.ops / self.launches_with_ops, 2)
            if self.launches_with_ops
            else 0.0,
            "op_time_ns": self.op_time_ns,
            "replay_span_ns": self.replay_span_ns,
            "launch_api_time_ns": self.launch_api_time_ns,
            "first_op_delay": dict(self.first_op_delay_ns),
        }


def graph_launches(ev: TraceEvents, rt_index: np.ndarray) -> GraphLaunches:
    """Summarise graph launches; see the module docstring for why they are kept apart."""
    graph_rows = np.nonzero(ev.rt_launch == LAUNCH_GRAPH)[0]
    if graph_rows.size == 0:
        return GraphLaunches(0, 0, 0, 0, 0, 0, ())
    in_graph = take(ev.rt_launch, rt_index, -1) == LAUNCH_GRAPH
    gi = np.nonzero(in_graph)[0]
    owner = rt_index[gi]
    uniq, inv = np.unique(owner, return_inverse=True)
    first = np.full(uniq.size, np.iinfo(np.int64).max)
    np.minimum.at(first, inv, ev.gpu_start_ns[gi])
    last = np.full(uniq.size, np.iinfo(np.int64).min)
    np.maximum.at(last, inv, ev.gpu_end_ns[gi])
    first_delay = first - ev.rt_start_ns[uniq] if uniq.size else np.zeros(0, dtype=np.int64)
    api = ev.rt_end_ns[graph_rows] - ev.rt_start_ns[graph_rows]
    return GraphLaunches(
        launches=int(graph_rows.size),
        launches_with_ops=int(uniq.size),
        ops=int(gi.size),
        op_time_ns=int((ev.gpu_end_ns[gi] - ev.gpu_start_ns[gi]).sum()),
        replay_span_ns=int((last - first).sum()) if uniq.size else 0,
        launch_api_time_ns=int(api.sum()),
        first_op_delay_ns=tuple(_dist(first_delay).items()),
    )
