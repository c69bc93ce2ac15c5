"""Real-GPU check of the device instrumentation's CUDA and NVML paths (well under 5 minutes).

    bash scripts/gpu_check.sh [OUTDIR]     # or: python3 scripts/gpu_check.py --out OUTDIR

Runs on a machine with an NVIDIA GPU, never in CI (exit code 77 = skipped, no CUDA device).
Checks, each printed as ``CHECK <name>: OK|FAIL <details>`` and each in its own guard (a
fault in one is that check's FAIL, never another's):

1. ``two_streams``: events on the current stream and a side stream (``torch.cuda.stream``);
   device time > 0, no more than the span's duration, at least 0.9× the longer stream's own
   time and at most 1.25× the sum of both (references timed before and after, the larger
   kept: clocks move); ``inferaudit.device.streams`` == 2.
2. ``resolve``: a call whose output was read back resolves without waiting; one whose work
   is still queued waits at span end (``inferaudit.device.resolve_wait_ns``).
3. ``copies``: pinned and pageable H2D/D2H through ``.to``/``.cuda()``/``.cpu()``/``copy_``:
   bytes, count and pageable bytes exact, times > 0; throughput per direction printed.
4. ``profiler`` (run last): one sampled call under torch.profiler with CUDA activity,
   including a CUDA graph replay: trace file written (under OUTDIR/traces), summary basis
   "kernel", kernels > 0, graph launches >= 1.
5. ``graph_capture``: an instrumented call during CUDA graph capture gives one span with no
   device time and does not break the capture.
6. ``nvml``: ~2 s of matmuls inside one model call: utilisation > 0.3, energy > 0, power > 0
   and no more than 1.2× the enforced power limit, samples >= 10, the span's ``hw.id`` one of
   NVML's GPUs; a 50 ms call (shorter than a sample period) still gets power and energy > 0.
7. ``nvml_cost``: the sampler's own CPU cost < 0.5% of one core at 10 Hz (the issue's target;
   its own check so that a slow virtualised NVML does not hide the counters' results; the
   fake NVML makes no driver calls, so a sandboxed driver may well miss it).

The profiler check runs last (see ``_run``), after one empty CUDA profiler session that runs
before any graph is captured.

The record is written as it goes: ``OUTDIR/gpu_check-<host>-<utc>.log`` gets every line as it
is printed (the SDK's log lines and Python warnings included), and the ``.json`` beside it
is rewritten after every check and once more on exit, also on SIGTERM (``timeout``). It
holds each check's numbers, the SDK's swallowed-fault counts, NVML counters found
unsupported, per-call NVML costs, versions, and the attributes of every span made.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gzip
import itertools
import json
import logging
import os
import platform
import re
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESULTS: dict[str, Any] = {"checks": {}}


class Record:
    """The log and the JSON record, kept on disk as the run goes."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"
        stem = f"gpu_check-{host}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        self.json_path = out / f"{stem}.json"
        self._log = (out / f"{stem}.log").open("a", encoding="utf-8")

    def say(self, line: str) -> None:
        print(line, flush=True)
        self._log.write(line + "\n")
        self._log.flush()

    def save(self) -> None:
        """Whole or not at all: a kill during the write leaves the previous record."""
        tmp = self.json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(RESULTS, indent=2, default=str))
        os.replace(tmp, self.json_path)


REC: Record | None = None


def say(line: str) -> None:
    if REC is not None:
        REC.say(line)
    else:
        print(line, flush=True)


def check(name: str, ok: bool, **details: Any) -> None:
    RESULTS["checks"][name] = {"ok": bool(ok), **details}
    shown = " ".join(f"{k}={v}" for k, v in details.items())
    say(f"CHECK {name}: {'OK' if ok else 'FAIL'} {shown}")


class _ToRecord(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a log line must never end the run
            say(f"LOG {record.levelname} {record.name}: {record.getMessage()}")


def _on_sigterm(signum: int, frame: Any) -> None:
    # Once: timeout signals the child and then its process group, and a second SystemExit
    # inside main's finally would skip the save.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(124)  # unwinds through main's finally: the record is saved


def main(argv: list[str] | None = None) -> int:
    global REC
    ap = argparse.ArgumentParser(description="InferAudit real-GPU device check")
    ap.add_argument("--out", type=Path, default=Path("."), help="where to write the record")
    args = ap.parse_args(argv)
    REC = Record(args.out)
    signal.signal(signal.SIGTERM, _on_sigterm)
    handler = _ToRecord()
    for name in ("inferaudit_sdk", "opentelemetry", "py.warnings"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    logging.captureWarnings(True)
    # Stuck in a CUDA or NVML call, Python's handlers never run: every thread's stack goes
    # to the log from a C watchdog shortly before gpu_check.sh's timeout.
    faulthandler.dump_traceback_later(280, file=REC._log)
    RESULTS.update({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "host": socket.gethostname(), "python": platform.python_version(),
                    "argv": sys.argv})
    try:
        return _run(args.out)
    except BaseException as exc:
        RESULTS["aborted"] = f"{type(exc).__name__}: {exc}"
        say(f"gpu_check: ABORTED {RESULTS['aborted']}")
        if not isinstance(exc, SystemExit):
            say(traceback.format_exc())
            return 2
        raise
    finally:
        faulthandler.cancel_dump_traceback_later()
        REC.save()
        say(f"record: {REC.json_path}")


def _run(out: Path) -> int:
    import torch

    RESULTS["torch"] = torch.__version__
    if not torch.cuda.is_available():
        say("SKIP: no CUDA device visible to torch (this check needs an NVIDIA GPU)")
        RESULTS["skipped"] = True
        return 77

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import inferaudit_sdk as ia
    from inferaudit_sdk import _guard, _settings, _tracing, semconv
    from inferaudit_sdk.config import AuditConfig
    from inferaudit_sdk.instrumentation import instrument_model, uninstrument_model
    from inferaudit_sdk.samplers import nvml

    trace_dir = out / "traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.use_tracer_provider(provider)
    cfg = AuditConfig.from_env({}, trace_dir=str(trace_dir), nvml_enabled=True)
    _settings.set_config(cfg)

    dev = torch.device("cuda", 0)
    RESULTS.update({"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
                    "gpu_uuid": str(torch.cuda.get_device_properties(0).uuid)})
    say(f"gpu_check on {RESULTS['host']}: {RESULTS['gpu']}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, Python {RESULTS['python']}")
    sampler = nvml.start_sampler(cfg)
    say(f"nvml sampler: {'running' if sampler else 'UNAVAILABLE (its reason is logged above)'}")
    # Before any graph is captured (the profiler check replays one): a graph captured before
    # the process's first CUDA profiler session can fault when a session replays it, and the
    # fault would poison the context for every check after it (pytorch#75504).
    from inferaudit_sdk.instrumentation._profiler_sampling import prepare_for_cuda_graphs

    RESULTS["profiler_prepared"] = prepare_for_cuda_graphs()

    def last_batch(after: int = 0) -> Any:
        """The newest batch span among those exported after the first ``after``."""
        spans = [s for s in exporter.get_finished_spans()[after:]
                 if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]
        if not spans:
            raise AssertionError("no batch span was exported by the measured call")
        return spans[-1]

    def exported() -> int:
        return len(exporter.get_finished_spans())

    def event_ms(fn: Callable[[], Any], stream: Any = None) -> float:
        s = stream or torch.cuda.current_stream()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(s)
        fn()
        b.record(s)
        b.synchronize()
        return a.elapsed_time(b)

    def guard(name: str, fn: Callable[[], None]) -> None:
        """One check: a fault in it is its own FAIL; the config is restored after it."""
        t0 = time.perf_counter()
        say(f"RUN {name}")
        try:
            fn()
        except Exception:
            check(name, False, error=traceback.format_exc(limit=4).replace("\n", " | "))
        finally:
            _settings.set_config(cfg)
            RESULTS["checks"].setdefault(name, {"ok": False, "error": "no result"})
            RESULTS["checks"][name]["seconds"] = round(time.perf_counter() - t0, 2)
            RESULTS["swallowed_faults"] = _guard.error_counts()
            assert REC is not None
            REC.save()

    n = 4096
    x = torch.randn(n, n, device=dev)
    y = torch.randn(n, n, device=dev)
    side = torch.cuda.Stream()

    class TwoStreams(torch.nn.Module):
        def __init__(self, reps_main: int, reps_side: int) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, device=dev))
            self.reps_main, self.reps_side = reps_main, reps_side

        def forward(self, a: Any) -> Any:
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.reps_side):
                    torch.mm(a, y)
            for _ in range(self.reps_main):
                torch.mm(a, y)
            torch.cuda.current_stream().wait_stream(side)
            return a

    def two_streams() -> None:
        m = instrument_model(TwoStreams(8, 4), model="two-streams")
        try:
            for _ in range(2):
                m(x)  # warm-up (cuBLAS handles, clocks)
            torch.cuda.synchronize()
            main_ms = [event_ms(lambda: [torch.mm(x, y) for _ in range(8)])]
            side_ms = [event_ms(lambda: [torch.mm(x, y) for _ in range(4)])]
            n0 = exported()
            m(x)
            span = last_batch(n0)
            main_ms.append(event_ms(lambda: [torch.mm(x, y) for _ in range(8)]))
            side_ms.append(event_ms(lambda: [torch.mm(x, y) for _ in range(4)]))
            t_main, t_side = max(main_ms), max(side_ms)
            a = span.attributes
            dev_ms = a.get(semconv.DEVICE_TIME_NS, 0) / 1e6  # a missing one: FAIL, numbers kept
            dur_ms = (span.end_time - span.start_time) / 1e6
            ok = (a.get(semconv.DEVICE_STREAMS) == 2 and 0 < dev_ms <= dur_ms * 1.001
                  and dev_ms >= 0.9 * max(t_main, t_side)
                  and dev_ms <= 1.25 * (t_main + t_side) + 0.5)
            check("two_streams", ok, device_ms=round(dev_ms, 3), span_ms=round(dur_ms, 3),
                  main_alone_ms=[round(v, 3) for v in main_ms],
                  side_alone_ms=[round(v, 3) for v in side_ms],
                  streams=a.get(semconv.DEVICE_STREAMS))
        finally:
            uninstrument_model(m)

    def resolve() -> None:
        m = instrument_model(TwoStreams(8, 4), model="resolve")
        try:
            m(x)
            torch.cuda.synchronize()
            n0 = exported()
            with ia.batch(model="resolve"):
                m(x)
                torch.cuda.synchronize()  # the server read the result back
            a_sync = last_batch(n0).attributes
            n0 = exported()
            with ia.batch(model="resolve"):
                m(x)  # still queued when the span ends
            a_wait = last_batch(n0).attributes
            ok = (semconv.DEVICE_RESOLVE_WAIT_NS not in a_sync
                  and a_wait.get(semconv.DEVICE_RESOLVE_WAIT_NS, 0) > 0)
            check("resolve", ok,
                  waited_ns_after_sync=a_sync.get(semconv.DEVICE_RESOLVE_WAIT_NS),
                  waited_ns_async=a_wait.get(semconv.DEVICE_RESOLVE_WAIT_NS))
        finally:
            uninstrument_model(m)

    def copies() -> None:
        holder = instrument_model(torch.nn.Linear(2, 2).to(dev))  # installs the copy hooks
        try:
            nbytes = 64 << 20
            elems = nbytes // 4
            pinned = torch.empty(elems, dtype=torch.float32).pin_memory()
            pageable = torch.empty(elems, dtype=torch.float32)
            gpu = torch.empty(elems, dtype=torch.float32, device=dev)
            pinned_dst = torch.empty(elems, dtype=torch.float32).pin_memory()
            n0 = exported()
            with ia.batch(model="copies"):
                pinned.to(dev, non_blocking=True)  # pinned H2D
                pageable.cuda()  # pageable H2D
                gpu.cpu()  # D2H into pageable memory
                pinned_dst.copy_(gpu, non_blocking=True)  # D2H into pinned memory
                torch.cuda.synchronize()
            a = last_batch(n0).attributes
            ok = (a.get(semconv.COPY_H2D_BYTES) == 2 * nbytes
                  and a.get(semconv.COPY_D2H_BYTES) == 2 * nbytes
                  and a.get(semconv.COPY_COUNT) == 4
                  and a.get(semconv.COPY_PAGEABLE_BYTES) == 2 * nbytes
                  and a.get(semconv.COPY_H2D_TIME_NS, 0) > 0
                  and a.get(semconv.COPY_D2H_TIME_NS, 0) > 0)
            gbps = {k: round(2 * nbytes / a.get(t, 1), 2) for k, t in
                    (("h2d_GBps", semconv.COPY_H2D_TIME_NS),
                     ("d2h_GBps", semconv.COPY_D2H_TIME_NS))}
            check("copies", ok, h2d_bytes=a.get(semconv.COPY_H2D_BYTES),
                  d2h_bytes=a.get(semconv.COPY_D2H_BYTES), count=a.get(semconv.COPY_COUNT),
                  pageable_bytes=a.get(semconv.COPY_PAGEABLE_BYTES), **gbps)
        finally:
            uninstrument_model(holder)

    static_in = torch.randn(1024, 1024, device=dev)
    warm = torch.cuda.Stream()

    def profiler() -> None:
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):
            for _ in range(3):
                torch.relu(static_in @ static_in)
        torch.cuda.current_stream().wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = torch.relu(static_in @ static_in)

        class Replay(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1, device=dev))

            def forward(self, a: Any) -> Any:
                graph.replay()
                return torch.mm(a, static_out)

        _settings.set_config(AuditConfig.from_env({}, trace_dir=str(trace_dir),
                                                  nvml_enabled=True, profile_every_n=1))
        rm = instrument_model(Replay(), model="profiled")
        n0 = exported()
        try:
            rm(static_in)
            torch.cuda.synchronize()
        finally:
            _settings.set_config(cfg)
            uninstrument_model(rm)
        # The export worker writes the trace and only then ends the span: wait for it, as
        # AuditHandle.force_flush does.
        from inferaudit_sdk.instrumentation._profiler_sampling import drain

        if not drain(60.0):
            raise AssertionError("the profile export worker did not finish within 60 s")
        span = last_batch(n0)
        rel = span.attributes.get(semconv.PROFILE_TRACE_PATH)
        path = trace_dir / rel if rel else None
        trace_ok = path is not None and path.exists()
        if trace_ok:
            with gzip.open(path, "rt") as fh:
                trace_ok = "traceEvents" in json.load(fh)
        events = [e for e in span.events if e.name == semconv.EVENT_PROFILE_SUMMARY]
        summ = dict(events[0].attributes) if events else {}
        ok = (trace_ok and summ.get(semconv.PROFILE_BASIS) == "kernel"
              and summ.get(semconv.PROFILE_KERNEL_COUNT, 0) > 0
              and summ.get(semconv.PROFILE_GRAPH_LAUNCHES, 0) >= 1)
        check("profiler", ok, trace=str(path), kernels=summ.get(semconv.PROFILE_KERNEL_COUNT),
              graph_launches=summ.get(semconv.PROFILE_GRAPH_LAUNCHES),
              launch_gap_ns=summ.get(semconv.PROFILE_LAUNCH_GAP_NS),
              top=list(summ.get(semconv.PROFILE_TOP_KERNELS, ()))[:2])

    def graph_capture() -> None:
        lin = instrument_model(torch.nn.Linear(1024, 1024).to(dev), model="captured")
        try:
            warm.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(warm):  # warm-up off the capture, as CUDA graphs require
                for _ in range(3):
                    lin(static_in)
            torch.cuda.current_stream().wait_stream(warm)
            torch.cuda.synchronize()
            g2 = torch.cuda.CUDAGraph()
            before = len(exporter.get_finished_spans())
            with torch.cuda.graph(g2):
                cap_out = lin(static_in)
            g2.replay()
            torch.cuda.synchronize()
            spans = exporter.get_finished_spans()[before:]
            a = spans[-1].attributes if spans else {}
            ok = (len(spans) == 1 and bool(torch.isfinite(cap_out).all())
                  and semconv.DEVICE_TIME_NS not in a)
            check("graph_capture", ok, spans=len(spans),
                  device_time=a.get(semconv.DEVICE_TIME_NS))
        finally:
            uninstrument_model(lin)

    def nvml_counters() -> None:
        if sampler is None:
            raise RuntimeError("NVML sampler did not start on a CUDA host")

        class Busy(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1, device=dev))
                self.seconds = 2.0

            def forward(self, a: Any) -> Any:
                deadline = time.perf_counter() + self.seconds
                while time.perf_counter() < deadline:
                    for _ in range(20):
                        torch.mm(a, y)
                    torch.cuda.synchronize()
                return a

        bm = instrument_model(Busy(), model="busy")
        try:
            n0 = exported()
            bm(x)
            span = last_batch(n0)
            bm.seconds = 0.05  # shorter than a sample period: the slope or the readings
            n0 = exported()
            bm(x)
            short = last_batch(n0).attributes
        finally:
            uninstrument_model(bm)
        a = span.attributes
        dur_s = (span.end_time - span.start_time) / 1e9
        energy = a.get(semconv.GPU_ENERGY_J, 0)
        power = a.get(semconv.GPU_POWER_W, 0)  # energy / window where the counter exists
        limit_w = _power_limit_w(sampler)
        # torch's device and NVML's GPU are one: the span's hw.id is among NVML's UUIDs
        hw_id = a.get(semconv.HW_ID)
        nvml_gpu = sampler.index_for_uuid(hw_id) if hw_id else None
        ok = (a.get(semconv.GPU_UTILIZATION_RATIO, 0) > 0.3 and energy > 0 and power > 0
              and a.get(semconv.GPU_SAMPLES, 0) >= 10 and nvml_gpu is not None
              and (limit_w is None or power <= 1.2 * limit_w)
              and short.get(semconv.GPU_POWER_W, 0) > 0 and short.get(semconv.GPU_ENERGY_J, 0) > 0)
        check("nvml", ok, util=a.get(semconv.GPU_UTILIZATION_RATIO), energy_j=energy,
              hw_id=hw_id, nvml_index=nvml_gpu,
              power_w=power, power_limit_w=limit_w, span_s=round(dur_s, 3),
              short_span_power_w=short.get(semconv.GPU_POWER_W),
              short_span_energy_j=short.get(semconv.GPU_ENERGY_J),
              samples=a.get(semconv.GPU_SAMPLES),
              sm_clock_mhz=a.get(semconv.GPU_SM_CLOCK_MHZ),
              throttle=a.get(semconv.GPU_THROTTLE_REASONS),
              pcie_tx=a.get(semconv.GPU_PCIE_TX_BYTES), pcie_rx=a.get(semconv.GPU_PCIE_RX_BYTES))

    def nvml_cost() -> None:
        if sampler is None:
            raise RuntimeError("NVML sampler did not start on a CUDA host")
        RESULTS["nvml_unsupported"] = [sorted(off) for off in sampler._disabled]
        check("nvml_cost", sampler.cost_ratio() < 0.005,
              sampler_cpu_pct_of_core=round(100 * sampler.cost_ratio(), 4),
              sampler_ticks=sampler.ticks, gpus=len(sampler.gpus))

    # The profiler check last: should CUPTI still fault on the graph it replays, the checks
    # before it keep their results.
    for name, fn in (("two_streams", two_streams), ("resolve", resolve), ("copies", copies),
                     ("graph_capture", graph_capture), ("nvml", nvml_counters),
                     ("nvml_cost", nvml_cost), ("profiler", profiler)):
        guard(name, fn)

    _nvml_call_costs(sampler)
    RESULTS["spans"] = [
        {"name": s.name, "attributes": dict(s.attributes),
         "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in s.events]}
        for s in exporter.get_finished_spans()[:100]
    ]
    nvml.stop_sampler()
    failures = sum(1 for c in RESULTS["checks"].values() if not c.get("ok"))
    RESULTS["failures"] = failures
    say(f"gpu_check: {'PASS' if failures == 0 else f'FAIL ({failures})'}")
    return 0 if failures == 0 else 1


def _power_limit_w(sampler: Any) -> float | None:
    """The enforced power limit of CUDA device 0's GPU, in W; None where NVML will not say."""
    try:
        import pynvml
        import torch

        found = sampler.index_for_uuid(str(torch.cuda.get_device_properties(0).uuid))
        if found is None:
            return None
        return pynvml.nvmlDeviceGetEnforcedPowerLimit(sampler.gpus[found].handle) / 1000.0
    except Exception as exc:  # NVMLError_NotSupported on some virtualised GPUs
        say(f"power limit not read: {type(exc).__name__}: {exc}")
        return None


def _nvml_call_costs(sampler: Any) -> None:
    """What each NVML call costs here (informational: explains the sampler's cost), on the
    GPU NVML numbers as CUDA device 0; also the driver version and MIG mode."""
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        try:
            index = 0
            if sampler is not None:
                found = sampler.index_for_uuid(str(torch.cuda.get_device_properties(0).uuid))
                index = sampler.gpus[found].nvml_index if found is not None else 0
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            RESULTS["nvml_index"] = index
            RESULTS["driver"] = pynvml.nvmlSystemGetDriverVersion()
            try:
                RESULTS["mig_mode"] = pynvml.nvmlDeviceGetMigMode(h)
            except pynvml.NVMLError as exc:
                RESULTS["mig_mode"] = type(exc).__name__
            calls = {
                "utilization": lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
                "memory": lambda: pynvml.nvmlDeviceGetMemoryInfo(h),
                "sm_clock": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                "power": lambda: pynvml.nvmlDeviceGetPowerUsage(h),
                "energy": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
                "pcie_tx": lambda: pynvml.nvmlDeviceGetPcieThroughput(
                    h, pynvml.NVML_PCIE_UTIL_TX_BYTES),
            }
            costs: dict[str, Any] = {}
            for name, fn in calls.items():
                w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(5):
                    try:
                        fn()
                    except pynvml.NVMLError as exc:
                        costs[name] = f"unsupported ({type(exc).__name__})"
                        break
                else:
                    costs[name] = {"wall_us": (time.perf_counter_ns() - w0) // 5000,
                                   "cpu_us": (time.thread_time_ns() - c0) // 5000}
            RESULTS["nvml_call_costs"] = costs
            RESULTS["energy_counter_refresh_ms"] = _energy_refresh_ms(pynvml, h)
            say(f"INFO nvml call costs (per call): {costs}; driver {RESULTS['driver']}, "
                f"MIG {RESULTS['mig_mode']}; energy counter refreshed every "
                f"{RESULTS['energy_counter_refresh_ms']} ms")
        finally:
            pynvml.nvmlShutdown()  # reference-counted: the sampler's own init stays
    except Exception as exc:
        say(f"INFO nvml call costs unavailable: {type(exc).__name__}: {exc}")


def _energy_refresh_ms(pynvml: Any, handle: Any, seconds: float = 1.0) -> dict | str:
    """How often the driver moves the total-energy counter (the span power's source): the
    median and largest gap between changes over ``seconds`` of polling. Slower than the
    sampler's 100 ms tick, short spans fall back to the power readings (_ring)."""
    try:
        changes: list[int] = []
        last = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        deadline = time.perf_counter_ns() + int(seconds * 1e9)
        while time.perf_counter_ns() < deadline:
            now = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            if now != last:
                changes.append(time.perf_counter_ns())
                last = now
            time.sleep(0.001)
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    gaps = sorted(b - a for a, b in itertools.pairwise(changes))
    if not gaps:
        return {"changes": len(changes)}
    return {"changes": len(changes), "median": round(gaps[len(gaps) // 2] / 1e6, 1),
            "max": round(gaps[-1] / 1e6, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
