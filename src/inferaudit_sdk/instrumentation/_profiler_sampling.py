"""Kernel-level sampling: 1 in N model calls runs under ``torch.profiler``.

The sampled call's Kineto trace is kept beside the span files as
``<trace_dir>/profiles/<span_id>.json.gz`` (gzip) and referenced from the span by
``inferaudit.profile.trace_path`` (relative to the trace directory); a compact summary goes on
the span as the ``inferaudit.profile.summary`` event, so the analyzer can rank hot kernels and
launch gaps without opening every trace.

The summary is computed from the exported Chrome-trace JSON, the same format the analyzer and
the real traces in ``shared/traces`` use. With CUDA activity it counts GPU kernels
(``cat == "kernel"``); on a CPU-only run there are none, and it counts CPU operators
(``cpu_op``, by self time) instead, saying so in ``inferaudit.profile.basis``.

Cost: a sampled call is slower by the profiler's start and stop; the trace's export, its
summary and compression run on a worker thread (:class:`ExportWorker`), which ends the span
once they are done. That is why sampling is off by default in production and the
span says it was profiled (its trace path); the analyzer leaves the requests profiled calls
served out of its latency percentiles, and those calls out of its service-time fit.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import json
import os
import shutil
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from inferaudit_sdk import semconv
from inferaudit_sdk._guard import swallow
from inferaudit_sdk.instrumentation._intervals import interval_union

PROFILES_DIR = "profiles"
TOP_KERNELS = 5
_MAX_NAME_CHARS = 120
_GRAPH_LAUNCH_PREFIXES = ("cudaGraphLaunch", "hipGraphLaunch", "cuGraphLaunch")
# Trace categories, lower-cased; older Kineto wrote "Kernel", "Memcpy", "Memset", "Runtime",
# "Operator" (e.g. the V100 ResNet-50 trace in shared/traces).
_CAT = {
    "kernel": "kernel",
    "gpu_memcpy": "memcpy", "memcpy": "memcpy",
    "gpu_memset": "memset", "memset": "memset",
    "cuda_runtime": "runtime", "cuda_driver": "runtime", "runtime": "runtime",
    "cpu_op": "cpu_op", "operator": "cpu_op",
}
_GPU_BUSY = ("kernel", "memcpy", "memset")
BASIS_KERNEL = "kernel"
BASIS_CPU_OP = "cpu_op"


class ProfileSampler:
    """Decides which calls are profiled (every ``every_n``-th; 0 = never) and runs them.

    Thread-safe counter; one profiled call at a time per process (torch.profiler is global):
    a call that comes due while another one is being profiled, or while the application runs
    its own profiler, is simply not profiled.
    """

    def __init__(self, every_n: int) -> None:
        self.every_n = int(every_n)
        self._lock = threading.Lock()
        self._count = 0
        self._busy = False

    def due(self) -> bool:
        if self.every_n <= 0:
            return False
        with self._lock:
            self._count += 1
            if self._count % self.every_n or self._busy:
                return False
            self._busy = True
            return True

    def release(self) -> None:
        with self._lock:
            self._busy = False

    def start(self, cuda: bool) -> Any | None:
        """Start a profiler (CPU, plus CUDA activity when ``cuda``); None if one is running."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        if _profiler_running(torch):
            return None
        activities = [ProfilerActivity.CPU]
        if cuda:
            activities.append(ProfilerActivity.CUDA)
        prof = profile(activities=activities, record_shapes=False, with_stack=False)
        prof.__enter__()
        return prof


_cuda_graphs_prepared = False
_prepare_lock = threading.Lock()


def cuda_graphs_prepared() -> bool:
    """Whether :func:`prepare_for_cuda_graphs` has run in this process (a global read)."""
    return _cuda_graphs_prepared


def prepare_for_cuda_graphs() -> bool:
    """Run one empty profiler session with CUDA activity, once per process; True if it ran.

    A CUDA graph captured before the process's first CUDA profiler session can fault (illegal
    memory access) or hang when a later session replays it (pytorch#75504, the reason for
    ``torch.profiler._utils._init_for_cuda_graphs``; kineto#1165 for CUDA 12). Serving stacks
    capture their graphs at start-up, after the model is loaded: ``instrument_model`` calls
    this when profile sampling is on, and an instrumented model's first eager CUDA call does
    where it had not run (sampling turned on later, a model moved to the GPU later), so our
    first sampled call is not the first session.
    """
    global _cuda_graphs_prepared
    if _cuda_graphs_prepared:
        return False
    with _prepare_lock:  # two threads' first calls: one session
        if _cuda_graphs_prepared:
            return False
        _cuda_graphs_prepared = True
    import torch
    from torch.profiler import ProfilerActivity, profile

    if _profiler_running(torch):  # the application's own session: it has initialised it
        return False
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]):
        torch.cuda.synchronize()
    return True


def _profiler_running(torch: Any) -> bool:
    enabled = getattr(torch._C._autograd, "_profiler_enabled", None)
    if enabled is not None and enabled():
        return True
    return bool(getattr(torch.autograd.profiler, "_is_profiler_enabled", False))


def stop(prof: Any) -> None:
    """Stop a profiler started by :meth:`ProfileSampler.start` (on the call's exit)."""
    prof.__exit__(None, None, None)


class _Job:
    __slots__ = ("end_ns", "prof", "sampler", "span", "trace_dir")

    def __init__(self, prof: Any, sampler: ProfileSampler, trace_dir: str, span: Any) -> None:
        self.prof, self.sampler, self.trace_dir = prof, sampler, trace_dir
        self.span = span
        self.end_ns: int | None = None  # the span's block's end, set before it is submitted

    def run(self) -> None:
        """Write the trace, put its path and summary on the span, end the span at the time
        its block ended. The sampler is released last: one profiler's results at a time."""
        # ended already only where its block closed as the profile started (SpanEnd's race)
        live = self.span.is_recording()
        try:
            span_id = format(self.span.get_span_context().span_id, "016x")
            rel, summary = export(self.prof, self.trace_dir, span_id)
            if live:
                self.span.set_attribute(semconv.PROFILE_TRACE_PATH, rel)
                self.span.add_event(semconv.EVENT_PROFILE_SUMMARY, attributes=summary)
        except Exception as exc:
            swallow("profile.export", exc)
        finally:
            try:
                if live:
                    self.span.end(end_time=self.end_ns)
            except Exception as exc:
                swallow("profile.export", exc)
            self.sampler.release()


class ExportWorker:
    """One daemon thread that writes sampled calls' traces off the request path.

    A sampled call used to pay the trace's export, re-read for its summary, and compression on
    its own path (about 45 ms of a 17 ms tiny GPT-2 call on CPU, 80 ms in all); now it pays the
    profiler's start and stop, and its span's block ends on time. The span ends once its trace
    is on disk: :func:`drain` (``AuditHandle.force_flush``/``shutdown`` call it) waits for that.
    Where no thread can be started the job runs inline, as before.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._pending = 0
        self._thread: threading.Thread | None = None

    def submit(self, job: _Job) -> None:
        _drain_at_exit()
        with self._cond:
            if not self._ensure_thread():
                inline = True
            else:
                inline = False
                self._jobs.append(job)
                self._pending += 1
                self._cond.notify_all()
        if inline:
            job.run()

    def _ensure_thread(self) -> bool:
        if self._thread is not None and self._thread.is_alive():
            return True
        try:
            thread = threading.Thread(target=self._loop, name="inferaudit-profile-export",
                                      daemon=True)
            thread.start()
        except RuntimeError:  # interpreter shutting down
            return False
        self._thread = thread
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.pop(0)
            try:
                job.run()
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted trace is written and its span ended; False on timeout
        (and at once on the worker's own thread: a span it ends may flush the pipeline)."""
        if threading.current_thread() is self._thread:
            return False
        with self._cond:
            return self._cond.wait_for(lambda: self._pending <= 0, timeout_s)


_worker = ExportWorker()


_exit_hook = False
# How long the exit hook waits for traces still being written.
EXIT_DRAIN_S = 10.0


def _drain_at_exit() -> None:
    """Registered on the first submit, so it runs before the providers' own exit hooks
    (registered earlier: atexit runs the last first): a sampled span still being written is
    ended and reaches them, also where the application built its provider without
    ``configure()``."""
    global _exit_hook
    if not _exit_hook:
        _exit_hook = True
        atexit.register(drain, EXIT_DRAIN_S)


def _new_worker() -> None:
    global _worker
    _worker = ExportWorker()  # a forked child has neither the parent's thread nor its jobs


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_worker)


class SpanEnd:
    """Ends a sampled call's span (``ActiveSpan.end_span``, set when its profiler starts) once
    both have happened, in either order: the span's block ended (``close_batch`` calls it
    with the end time) and the call stopped its profiler (:meth:`stopped`). The trace then
    goes to the export worker, which ends the span; without a trace (the stop failed) the
    span ends at once. A block can end first: a call in a copied context that outlives it."""

    __slots__ = ("_end_ns", "_job", "_lock", "_span", "_stopped")

    def __init__(self, span: Any) -> None:
        self._lock = threading.Lock()
        self._span = span
        self._end_ns: int | None = None
        self._job: _Job | None = None
        self._stopped = False

    def __call__(self, end_ns: int) -> None:
        with self._lock:
            if self._end_ns is not None:
                return
            self._end_ns = end_ns
            job, stopped = self._job, self._stopped
        if stopped:
            self._finish(job, end_ns)

    def stopped(self, prof: Any | None, sampler: ProfileSampler, trace_dir: str) -> None:
        """The call stopped its profiler (``prof``; None where stopping failed)."""
        job = None if prof is None else _Job(prof, sampler, trace_dir, self._span)
        with self._lock:
            self._stopped, self._job = True, job
            end_ns = self._end_ns
        if end_ns is not None:
            self._finish(job, end_ns)

    def _finish(self, job: _Job | None, end_ns: int) -> None:
        if job is not None:
            job.end_ns = end_ns
            _worker.submit(job)
        elif self._span.is_recording():
            self._span.end(end_time=end_ns)


def drain(timeout_s: float | None = None) -> bool:
    """Wait for the sampled calls' traces (and their spans) still being written."""
    return _worker.drain(timeout_s)


def export(prof: Any, trace_dir: str | os.PathLike[str], span_id_hex: str) -> tuple[str, dict]:
    """Write the trace as ``profiles/<span_id>.json.gz`` under ``trace_dir``; returns the path
    relative to ``trace_dir`` and the summary attributes."""
    out_dir = Path(trace_dir) / PROFILES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = f"{PROFILES_DIR}/{span_id_hex}.json.gz"
    fd, tmp = tempfile.mkstemp(prefix=f".{span_id_hex}.", suffix=".json", dir=out_dir)
    os.close(fd)
    try:
        prof.export_chrome_trace(tmp)
        with open(tmp, "rb") as fh:
            trace = json.load(fh)
        summary = summarize_chrome_trace(trace)
        final = out_dir / f"{span_id_hex}.json.gz"
        part = final.with_name(final.name + ".part")
        with open(tmp, "rb") as src, gzip.open(part, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
        os.replace(part, final)  # readers never see a half-written trace
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return rel, summary


def _self_times(ops: list[tuple[int, int, str]]) -> tuple[dict[str, int], list[tuple[int, int]]]:
    """Self time per op name, and top-level intervals, for nested ops of one thread."""
    self_ns: dict[str, int] = defaultdict(int)
    top: list[tuple[int, int]] = []
    stack: list[list[Any]] = []  # [end, name, child_ns]
    for ts, dur, name in sorted(ops, key=lambda o: (o[0], -o[1])):
        end = ts + dur
        while stack and ts >= stack[-1][0]:
            done = stack.pop()
            self_ns[done[1]] += done[3] - done[2]
        if stack:
            stack[-1][2] += dur
        else:
            top.append((ts, end))
        stack.append([end, name, 0, dur])
    while stack:
        done = stack.pop()
        self_ns[done[1]] += done[3] - done[2]
    return self_ns, top


def _us_to_ns(value: Any) -> int:
    """Kineto µs (int, float or numeric string) to integer ns, exactly.

    ``round(float(ts) * 1000)`` is not: epoch-µs timestamps (~1.6e15) times 1000 exceed a
    double's 53-bit mantissa, so ns land on a 256 ns grid. The integer part is scaled as an
    int and only the fraction goes through floating point.
    """
    if isinstance(value, bool):
        raise TypeError("boolean is not a time")
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            value = float(value)
    if isinstance(value, int):
        return value * 1000
    f = float(value)
    whole = int(f)  # ValueError/OverflowError on NaN/inf: the caller skips the event
    return whole * 1000 + round((f - whole) * 1000)


def _gpu_device(ev: dict[str, Any]) -> Any:
    """The device a GPU event ran on: ``args.device``, else its ``pid`` (older traces)."""
    args = ev.get("args")
    device = args.get("device") if isinstance(args, dict) else None
    return ev.get("pid") if device is None else device


def _short(name: str) -> str:
    # Readers split "name:ns" at the LAST colon, so names may keep their own (aten::mm).
    return name if len(name) <= _MAX_NAME_CHARS else name[: _MAX_NAME_CHARS - 3] + "..."


def summarize_chrome_trace(trace: dict[str, Any], top_k: int = TOP_KERNELS) -> dict[str, Any]:
    """Kernel count/time, top kernels, launch gaps, graph launches and copies of one Kineto
    trace (``ts``/``dur`` in µs, converted to ns exactly; returned values in ns). The launch gap
    is idle time inside each device's span (first to last GPU op), summed over devices. Falls
    back to CPU ops without GPU activity."""
    events = trace.get("traceEvents") or []
    kernels: dict[str, int] = defaultdict(int)
    kernel_count = 0
    busy: dict[Any, list[tuple[int, int]]] = defaultdict(list)  # per device
    copies = 0
    graphs = 0
    cpu_ops: dict[Any, list[tuple[int, int, str]]] = defaultdict(list)
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        cat = _CAT.get(str(ev.get("cat", "")).lower())
        if cat is None:
            continue
        try:
            ts = _us_to_ns(ev.get("ts", 0))
            dur = _us_to_ns(ev.get("dur", 0))
        except (TypeError, ValueError, OverflowError):
            continue
        name = str(ev.get("name", ""))
        if cat == "kernel":
            kernel_count += 1
            kernels[name] += dur
        if cat in _GPU_BUSY:
            busy[_gpu_device(ev)].append((ts, ts + dur))
        if cat == "memcpy":
            copies += 1
        elif cat == "runtime" and name.startswith(_GRAPH_LAUNCH_PREFIXES):
            graphs += 1
        elif cat == "cpu_op":
            cpu_ops[(ev.get("pid"), ev.get("tid"))].append((ts, dur, name))
    if kernel_count:
        basis = BASIS_KERNEL
        by_name = kernels
        count = kernel_count
        gap_ns = 0
        for intervals in busy.values():  # devices run in parallel: never merge their time
            busy_ns, first, last = interval_union(intervals) or (0, 0, 0)
            gap_ns += max(last - first - busy_ns, 0)
    else:
        basis = BASIS_CPU_OP
        by_name = defaultdict(int)
        count = 0
        gap_ns = 0
        for ops in cpu_ops.values():
            count += len(ops)
            self_ns, top = _self_times(ops)
            for name, ns in self_ns.items():
                by_name[name] += ns
            t_busy, first, last = interval_union(top) or (0, 0, 0)
            gap_ns += max(last - first - t_busy, 0)
    ranked = sorted(by_name.items(), key=lambda kv: kv[1], reverse=True)[:top_k]
    return {
        semconv.PROFILE_BASIS: basis,
        semconv.PROFILE_KERNEL_COUNT: count,
        semconv.PROFILE_KERNEL_TIME_NS: int(sum(by_name.values())),
        semconv.PROFILE_TOP_KERNELS: tuple(f"{_short(n)}:{ns}" for n, ns in ranked),
        semconv.PROFILE_LAUNCH_GAP_NS: int(gap_ns),
        semconv.PROFILE_GRAPH_LAUNCHES: graphs,
        semconv.PROFILE_COPY_COUNT: copies,
    }
