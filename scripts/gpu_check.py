"""Real-GPU check of the device instrumentation's CUDA and NVML paths (well under 5 minutes).

    .venv/bin/python scripts/gpu_check.py [--out DIR]      # or: bash scripts/gpu_check.sh

Runs on a machine with an NVIDIA GPU, never in CI (exit code 77 = skipped, no CUDA device).
Checks, each printed as ``CHECK <name>: OK|FAIL <details>``:

1. ``two_streams``: events on the current stream and a side stream (``torch.cuda.stream``);
   device time > 0, no more than the span's duration, at least the longer stream's own time
   and no more than the sum of both; ``inferaudit.device.streams`` == 2.
2. ``resolve``: a call whose output was read back resolves without waiting; one whose work
   is still queued waits at span end (``inferaudit.device.resolve_wait_ns``).
3. ``copies``: pinned and pageable H2D/D2H through ``.to``/``.cuda()``/``.cpu()``/``copy_``:
   bytes, count and pageable bytes exact, times > 0, a pinned non-blocking copy faster per
   byte than a pageable one is NOT asserted (hardware-dependent) but printed.
4. ``profiler``: one sampled call under torch.profiler with CUDA activity, including a CUDA
   graph replay: trace file written, summary basis "kernel", kernels > 0, graph launches >= 1.
5. ``nvml``: ~2 s of matmuls inside one model call: utilisation > 0.3, energy > 0, power > 0,
   samples >= 10, energy ≈ mean power × duration (within 50%), sampler CPU cost < 0.5% of a core.
6. ``graph_capture``: an instrumented call during CUDA graph capture records nothing and does
   not break the capture.

Everything printed is also written to ``<out>/gpu_check-<host>-<utc>.json`` and ``.log``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import socket
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LOG: list[str] = []
RESULTS: dict = {"checks": {}}


def say(line: str) -> None:
    print(line, flush=True)
    LOG.append(line)


def check(name: str, ok: bool, **details) -> None:
    RESULTS["checks"][name] = {"ok": bool(ok), **details}
    shown = " ".join(f"{k}={v}" for k, v in details.items())
    say(f"CHECK {name}: {'OK' if ok else 'FAIL'} {shown}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="InferAudit real-GPU device check")
    ap.add_argument("--out", type=Path, default=Path("."), help="where to write the record")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        say("SKIP: no CUDA device visible to torch (this check needs an NVIDIA GPU)")
        return 77

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import inferaudit_sdk as ia
    from inferaudit_sdk import _settings, _tracing, semconv
    from inferaudit_sdk.config import AuditConfig
    from inferaudit_sdk.instrumentation import instrument_model, uninstrument_model
    from inferaudit_sdk.samplers import nvml

    trace_dir = Path(tempfile.mkdtemp(prefix="inferaudit-gpu-check-"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.use_tracer_provider(provider)
    cfg = AuditConfig.from_env({}, trace_dir=str(trace_dir), nvml_enabled=True)
    _settings.set_config(cfg)

    dev = torch.device("cuda", 0)
    RESULTS.update({
        "host": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
    })
    say(f"gpu_check on {RESULTS['host']}: {RESULTS['gpu']}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}")
    sampler = nvml.start_sampler(cfg)
    say(f"nvml sampler: {'running' if sampler else 'UNAVAILABLE'}")

    def last_batch():
        spans = [s for s in exporter.get_finished_spans()
                 if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]
        return spans[-1]

    def event_ms(fn, stream=None) -> float:
        s = stream or torch.cuda.current_stream()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(s)
        fn()
        b.record(s)
        b.synchronize()
        return a.elapsed_time(b)

    failures = 0
    n = 4096
    x = torch.randn(n, n, device=dev)
    y = torch.randn(n, n, device=dev)
    side = torch.cuda.Stream()

    class TwoStreams(torch.nn.Module):
        def __init__(self, reps_main: int, reps_side: int) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, device=dev))
            self.reps_main, self.reps_side = reps_main, reps_side

        def forward(self, a):
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.reps_side):
                    torch.mm(a, y)
            for _ in range(self.reps_main):
                torch.mm(a, y)
            torch.cuda.current_stream().wait_stream(side)
            return a

    # 1. two streams -----------------------------------------------------------------------
    try:
        m = instrument_model(TwoStreams(8, 4), model="two-streams")
        for _ in range(2):
            m(x)  # warm-up (cuBLAS handles, clocks)
        torch.cuda.synchronize()
        t_main = event_ms(lambda: [torch.mm(x, y) for _ in range(8)])
        t_side = event_ms(lambda: [torch.mm(x, y) for _ in range(4)])
        m(x)
        span = last_batch()
        a = span.attributes
        dev_ms = a[semconv.DEVICE_TIME_NS] / 1e6
        dur_ms = (span.end_time - span.start_time) / 1e6
        ok = (a[semconv.DEVICE_STREAMS] == 2 and 0 < dev_ms <= dur_ms * 1.001
              and dev_ms >= 0.9 * max(t_main, t_side) and dev_ms <= 1.1 * (t_main + t_side) + 0.5)
        check("two_streams", ok, device_ms=round(dev_ms, 3), span_ms=round(dur_ms, 3),
              main_alone_ms=round(t_main, 3), side_alone_ms=round(t_side, 3),
              streams=a[semconv.DEVICE_STREAMS])
        failures += not ok

        # 2. resolve paths -------------------------------------------------------------------
        with ia.batch(model="resolve"):
            m(x)
            torch.cuda.synchronize()  # the server read the result back
        a_sync = last_batch().attributes
        with ia.batch(model="resolve"):
            m(x)  # still queued when the span ends
        a_wait = last_batch().attributes
        ok = (semconv.DEVICE_RESOLVE_WAIT_NS not in a_sync
              and a_wait.get(semconv.DEVICE_RESOLVE_WAIT_NS, 0) > 0)
        check("resolve", ok, waited_ns_after_sync=a_sync.get(semconv.DEVICE_RESOLVE_WAIT_NS),
              waited_ns_async=a_wait.get(semconv.DEVICE_RESOLVE_WAIT_NS))
        failures += not ok
        uninstrument_model(m)
    except Exception:
        failures += 1
        check("two_streams", False, error=traceback.format_exc(limit=3).replace("\n", " | "))

    # 3. copies -----------------------------------------------------------------------------
    try:
        holder = instrument_model(torch.nn.Linear(2, 2).to(dev))  # installs the copy hooks
        nbytes = 64 << 20
        elems = nbytes // 4
        pinned = torch.empty(elems, dtype=torch.float32).pin_memory()
        pageable = torch.empty(elems, dtype=torch.float32)
        gpu = torch.empty(elems, dtype=torch.float32, device=dev)
        pinned_dst = torch.empty(elems, dtype=torch.float32).pin_memory()
        with ia.batch(model="copies"):
            pinned.to(dev, non_blocking=True)  # pinned H2D
            pageable.cuda()  # pageable H2D
            gpu.cpu()  # D2H into pageable memory
            pinned_dst.copy_(gpu, non_blocking=True)  # D2H into pinned memory
            torch.cuda.synchronize()
        a = last_batch().attributes
        ok = (a.get(semconv.COPY_H2D_BYTES) == 2 * nbytes
              and a.get(semconv.COPY_D2H_BYTES) == 2 * nbytes
              and a.get(semconv.COPY_COUNT) == 4
              and a.get(semconv.COPY_PAGEABLE_BYTES) == 2 * nbytes
              and a.get(semconv.COPY_H2D_TIME_NS, 0) > 0
              and a.get(semconv.COPY_D2H_TIME_NS, 0) > 0)
        gbps = {k: round(2 * nbytes / a.get(t, 1), 2) for k, t in
                (("h2d_GBps", semconv.COPY_H2D_TIME_NS), ("d2h_GBps", semconv.COPY_D2H_TIME_NS))}
        check("copies", ok, h2d_bytes=a.get(semconv.COPY_H2D_BYTES),
              d2h_bytes=a.get(semconv.COPY_D2H_BYTES), count=a.get(semconv.COPY_COUNT),
              pageable_bytes=a.get(semconv.COPY_PAGEABLE_BYTES), **gbps)
        failures += not ok
        uninstrument_model(holder)
    except Exception:
        failures += 1
        check("copies", False, error=traceback.format_exc(limit=3).replace("\n", " | "))

    # 4. profiler sampling with a CUDA graph replay ------------------------------------------
    try:
        static_in = torch.randn(1024, 1024, device=dev)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                torch.relu(static_in @ static_in)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = torch.relu(static_in @ static_in)

        class Replay(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1, device=dev))

            def forward(self, a):
                graph.replay()
                return torch.mm(a, static_out)

        _settings.set_config(AuditConfig.from_env({}, trace_dir=str(trace_dir),
                                                  nvml_enabled=True, profile_every_n=1))
        rm = instrument_model(Replay(), model="profiled")
        rm(static_in)
        torch.cuda.synchronize()
        _settings.set_config(cfg)
        span = last_batch()
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
        failures += not ok

        uninstrument_model(rm)

        # 6. an instrumented call during graph capture records nothing and keeps the capture
        lin = instrument_model(torch.nn.Linear(1024, 1024).to(dev), model="captured")
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up off the capture, as CUDA graphs require
            for _ in range(3):
                lin(static_in)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        g2 = torch.cuda.CUDAGraph()
        before = len(exporter.get_finished_spans())
        with torch.cuda.graph(g2):
            cap_out = lin(static_in)
        g2.replay()
        torch.cuda.synchronize()
        spans = exporter.get_finished_spans()[before:]
        a = spans[-1].attributes if spans else {}
        ok = bool(torch.isfinite(cap_out).all()) and semconv.DEVICE_TIME_NS not in a
        check("graph_capture", ok, spans=len(spans), device_time=a.get(semconv.DEVICE_TIME_NS))
        failures += not ok
        uninstrument_model(lin)
    except Exception:
        failures += 1
        check("profiler", False, error=traceback.format_exc(limit=3).replace("\n", " | "))

    # 5. NVML aggregates over a ~2 s busy call --------------------------------------------------
    try:
        if sampler is None:
            raise RuntimeError("NVML sampler did not start on a CUDA host")

        class Busy(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1, device=dev))

            def forward(self, a):
                deadline = time.perf_counter() + 2.0
                while time.perf_counter() < deadline:
                    for _ in range(20):
                        torch.mm(a, y)
                    torch.cuda.synchronize()
                return a

        bm = instrument_model(Busy(), model="busy")
        bm(x)
        span = last_batch()
        a = span.attributes
        dur_s = (span.end_time - span.start_time) / 1e9
        energy = a.get(semconv.GPU_ENERGY_J, 0)
        power = a.get(semconv.GPU_POWER_W, 0)
        ok = (a.get(semconv.GPU_UTILIZATION_RATIO, 0) > 0.3 and energy > 0 and power > 0
              and a.get(semconv.GPU_SAMPLES, 0) >= 10
              and 0.5 <= energy / (power * dur_s) <= 1.5
              and sampler.cost_ratio() < 0.005)
        check("nvml", ok, util=a.get(semconv.GPU_UTILIZATION_RATIO), energy_j=energy,
              power_w=power, samples=a.get(semconv.GPU_SAMPLES),
              sm_clock_mhz=a.get(semconv.GPU_SM_CLOCK_MHZ),
              throttle=a.get(semconv.GPU_THROTTLE_REASONS),
              pcie_tx=a.get(semconv.GPU_PCIE_TX_BYTES), pcie_rx=a.get(semconv.GPU_PCIE_RX_BYTES),
              sampler_cpu_pct_of_core=round(100 * sampler.cost_ratio(), 4),
              sampler_ticks=sampler.ticks)
        failures += not ok
        uninstrument_model(bm)
    except Exception:
        failures += 1
        check("nvml", False, error=traceback.format_exc(limit=3).replace("\n", " | "))

    # What each NVML call costs here (informational: explains the sampler's cost) ----------
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        calls = {
            "utilization": lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
            "memory": lambda: pynvml.nvmlDeviceGetMemoryInfo(h),
            "sm_clock": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "power": lambda: pynvml.nvmlDeviceGetPowerUsage(h),
            "energy": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
            "pcie_tx": lambda: pynvml.nvmlDeviceGetPcieThroughput(
                h, pynvml.NVML_PCIE_UTIL_TX_BYTES),
        }
        costs = {}
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
        pynvml.nvmlShutdown()
        RESULTS["nvml_call_costs"] = costs
        say(f"INFO nvml call costs (per call): {costs}")
    except Exception as exc:
        say(f"INFO nvml call costs unavailable: {type(exc).__name__}: {exc}")

    nvml.stop_sampler()
    RESULTS["failures"] = failures
    say(f"gpu_check: {'PASS' if failures == 0 else f'FAIL ({failures})'}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check-{RESULTS['host']}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    (args.out / f"{stem}.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    (args.out / f"{stem}.log").write_text("\n".join(LOG) + "\n")
    say(f"record: {args.out / stem}.json")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
