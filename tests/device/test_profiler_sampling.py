"""Kernel-level sampling with a real torch.profiler run on CPU, and the trace summary against
real Kineto traces from GPUs (shared/traces; skipped where absent)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import inferaudit_sdk as ia
from inferaudit_sdk import semconv
from inferaudit_sdk.instrumentation import instrument_model, uninstrument_model
from inferaudit_sdk.instrumentation._profiler_sampling import (
    BASIS_CPU_OP,
    BASIS_KERNEL,
    ProfileSampler,
    drain,
    summarize_chrome_trace,
)

SHARED_TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


def batch_spans(exporter):
    """The batch spans in the order their calls started, once every sampled call's trace is
    written (their spans end on the export worker)."""
    assert drain(10.0)
    return sorted((s for s in exporter.get_finished_spans()
                   if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH),
                  key=lambda s: s.start_time)


def test_every_nth_call_is_profiled_and_its_trace_kept(spans, config, tiny_gpt2, tmp_path):
    cfg = config(profile_every_n=2)
    model = tiny_gpt2.model
    instrument_model(model, model="gpt2-tiny")
    try:
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        with torch.inference_mode():
            for _ in range(3):
                model(ids)
    finally:
        uninstrument_model(model)
    first, second, third = batch_spans(spans)
    assert semconv.PROFILE_TRACE_PATH not in first.attributes
    assert semconv.PROFILE_TRACE_PATH not in third.attributes
    rel = second.attributes[semconv.PROFILE_TRACE_PATH]
    assert rel == f"profiles/{second.context.span_id:016x}.json.gz"
    path = Path(cfg.trace_dir) / rel
    with gzip.open(path, "rt") as fh:
        trace = json.load(fh)
    cpu_ops = [e for e in trace["traceEvents"] if e.get("cat") == "cpu_op" and e.get("ph") == "X"]
    assert any(e["name"] == "aten::addmm" for e in cpu_ops)  # GPT-2's Conv1D
    (event,) = [e for e in second.events if e.name == semconv.EVENT_PROFILE_SUMMARY]
    s = event.attributes
    assert s[semconv.PROFILE_BASIS] == BASIS_CPU_OP
    assert s[semconv.PROFILE_KERNEL_COUNT] == len(cpu_ops)
    assert s[semconv.PROFILE_KERNEL_TIME_NS] > 0
    assert 0 < len(s[semconv.PROFILE_TOP_KERNELS]) <= 5
    name, ns = s[semconv.PROFILE_TOP_KERNELS][0].rsplit(":", 1)
    assert name.startswith("aten::") and int(ns) > 0
    assert s[semconv.PROFILE_GRAPH_LAUNCHES] == 0
    # Nothing half-written is left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_profiler_is_not_started_when_the_application_runs_one(config):
    sampler = ProfileSampler(1)
    with torch.profiler.profile():
        assert sampler.start(cuda=False) is None


def test_sampler_counts_and_skips_while_busy():
    s = ProfileSampler(3)
    assert [s.due() for _ in range(3)] == [False, False, True]
    assert [s.due() for _ in range(3)] == [False, False, False]  # still busy: skipped
    s.release()
    assert [s.due() for _ in range(3)] == [False, False, True]
    assert not any(ProfileSampler(0).due() for _ in range(5))


def test_summary_self_time_and_gaps_on_a_synthetic_cpu_trace():
    us = [
        {"ph": "X", "cat": "cpu_op", "name": "outer", "ts": 0, "dur": 10, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "inner", "ts": 2, "dur": 6, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "next", "ts": 14, "dur": 4, "pid": 1, "tid": 1},
    ]
    s = summarize_chrome_trace({"traceEvents": us})
    assert s[semconv.PROFILE_KERNEL_COUNT] == 3
    assert s[semconv.PROFILE_KERNEL_TIME_NS] == 14_000  # self times 4 + 6 + 4 µs
    assert s[semconv.PROFILE_TOP_KERNELS][0] == "inner:6000"
    assert s[semconv.PROFILE_LAUNCH_GAP_NS] == 4_000


def _load(rel):
    path = SHARED_TRACES / rel
    if not path.exists():
        pytest.skip(f"{path} not present (shared real traces are not in this checkout)")
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


def test_real_cudagraph_trace_counts_graph_launches_and_is_busy():
    s = summarize_chrome_trace(_load("tracelens/vllm_decode_cudagraph_mi300x_bs32.json.gz"))
    assert s[semconv.PROFILE_BASIS] == BASIS_KERNEL
    assert s[semconv.PROFILE_KERNEL_COUNT] > 0
    assert s[semconv.PROFILE_GRAPH_LAUNCHES] >= 1  # one hipGraphLaunch replays the decode step
    # README: GPU busy 99.8% -> idle gaps are a tiny fraction of kernel time.
    assert s[semconv.PROFILE_LAUNCH_GAP_NS] < 0.01 * s[semconv.PROFILE_KERNEL_TIME_NS]


def test_real_idle_trace_has_gaps_dominating():
    s = summarize_chrome_trace(_load("hta/simple_add.json.gz"))
    assert s[semconv.PROFILE_BASIS] == BASIS_KERNEL
    # README: GPU busy 0.3% -> gaps exceed kernel time many times over.
    assert s[semconv.PROFILE_LAUNCH_GAP_NS] > 50 * s[semconv.PROFILE_KERNEL_TIME_NS]


def test_real_training_trace_counts_copies():
    s = summarize_chrome_trace(_load("hta/a100_train_rank0_nccl.json.gz"))
    assert s[semconv.PROFILE_COPY_COUNT] > 0
    assert s[semconv.PROFILE_KERNEL_COUNT] > s[semconv.PROFILE_COPY_COUNT] > 0
    assert len(s[semconv.PROFILE_TOP_KERNELS]) == 5


def test_real_piecewise_graph_trace_counts_every_graph_launch():
    s = summarize_chrome_trace(_load("tracelens/vllm_prefilldecode_piecewise_mi300x.json.gz"))
    events = _load("tracelens/vllm_prefilldecode_piecewise_mi300x.json.gz")["traceEvents"]
    launches = [e for e in events if e.get("ph") == "X"
                and str(e.get("name", "")).startswith(("hipGraphLaunch", "cudaGraphLaunch"))]
    assert s[semconv.PROFILE_GRAPH_LAUNCHES] == len(launches) > 1


def test_real_busy_ratio_matches_the_reference_figure():
    # shared/README.md: H100 Qwen chat trace, GPU busy 91.9% (union over the kernel span).
    s = summarize_chrome_trace(_load("tracelens/h100_qwen1.5-0.5b-chat.json.gz"))
    busy = s[semconv.PROFILE_KERNEL_TIME_NS]
    assert busy / (busy + s[semconv.PROFILE_LAUNCH_GAP_NS]) == pytest.approx(0.919, abs=0.02)


def test_old_kineto_category_names_are_read():
    # The V100 ResNet-50 trace predates the lower-case categories ("Kernel", "Memcpy", ...).
    trace = _load("kineto/v100_resnet50_num_workers_0.json.gz")
    s = summarize_chrome_trace(trace)
    x = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    assert s[semconv.PROFILE_BASIS] == BASIS_KERNEL
    assert s[semconv.PROFILE_KERNEL_COUNT] == sum(e.get("cat") == "Kernel" for e in x) > 0
    assert s[semconv.PROFILE_COPY_COUNT] == sum(e.get("cat") == "Memcpy" for e in x) > 0


def _kernel(ts, dur, device=0):
    return {"ph": "X", "cat": "kernel", "name": "k", "ts": ts, "dur": dur, "pid": device,
            "tid": 7, "args": {"device": device, "stream": 7}}


def test_epoch_microsecond_timestamps_convert_to_exact_nanoseconds():
    # Old Kineto writes integer epoch µs (~1.6e15): times 1000 as a float lands on a 256 ns grid.
    t0 = 1623142623460111
    s = summarize_chrome_trace({"traceEvents": [_kernel(t0, 10), _kernel(t0 + 20, 5)]})
    assert s[semconv.PROFILE_LAUNCH_GAP_NS] == 10_000
    assert s[semconv.PROFILE_KERNEL_TIME_NS] == 15_000
    frac = summarize_chrome_trace({"traceEvents": [_kernel(6606412432.125, 1.5),
                                                   _kernel(6606412434.75, 0.25)]})
    assert frac[semconv.PROFILE_LAUNCH_GAP_NS] == 1_125


def test_busy_time_is_per_device_not_merged_across_devices():
    # Each device is busy over its whole span; merged, their spans would show a 90 µs "gap".
    s = summarize_chrome_trace({"traceEvents": [_kernel(0, 10, device=0),
                                                _kernel(100, 10, device=1)]})
    assert s[semconv.PROFILE_LAUNCH_GAP_NS] == 0
    one = summarize_chrome_trace({"traceEvents": [_kernel(0, 10), _kernel(100, 10)]})
    assert one[semconv.PROFILE_LAUNCH_GAP_NS] == 90_000


@pytest.mark.parametrize("rel", ["kineto/v100_resnet50_num_workers_0.json.gz",
                                 "tracelens/h100_qwen1.5-0.5b-chat.json.gz"])
def test_real_launch_gap_equals_the_analyzers_idle_to_the_ns(rel):
    from inferaudit_analyzer.kineto import analyze_kineto

    s = summarize_chrome_trace(_load(rel))
    t = analyze_kineto(SHARED_TRACES / rel).files[0].temporal
    assert s[semconv.PROFILE_LAUNCH_GAP_NS] == t.idle_ns


class _RecordingProfile:
    """Stands in for torch.profiler.profile: records the sessions run and their activities."""

    sessions: ClassVar[list[tuple[str, ...]]] = []

    def __init__(self, activities=(), **_kw) -> None:
        self.activities = tuple(sorted(a.name for a in activities))

    def __enter__(self):
        type(self).sessions.append(self.activities)
        return self

    def __exit__(self, *exc) -> None:
        return None


@pytest.fixture
def recorded_sessions(monkeypatch):
    from inferaudit_sdk.instrumentation import _profiler_sampling

    _RecordingProfile.sessions = []
    monkeypatch.setattr(torch.profiler, "profile", _RecordingProfile)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)  # a CPU build here
    monkeypatch.setattr(_profiler_sampling, "_cuda_graphs_prepared", False)
    return _RecordingProfile.sessions


def test_one_cuda_profiler_session_runs_before_any_graph_is_captured(recorded_sessions):
    from inferaudit_sdk.instrumentation._profiler_sampling import prepare_for_cuda_graphs

    assert prepare_for_cuda_graphs() is True
    assert prepare_for_cuda_graphs() is False  # once per process
    assert recorded_sessions == [("CPU", "CUDA")]


def test_instrument_model_prepares_for_cuda_graphs_only_when_profiling_on_cuda(
        spans, config, recorded_sessions, monkeypatch):
    from inferaudit_sdk.instrumentation import _profiler_sampling
    from inferaudit_sdk.instrumentation import torch as torch_instr

    model = torch.nn.Linear(2, 2)
    config(profile_every_n=0)
    monkeypatch.setattr(torch_instr, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch_instr._instrumentor, "instrument", lambda **kw: None)
    instrument_model(model)
    uninstrument_model(model)
    assert recorded_sessions == []  # sampling off: nothing to prepare for
    config(profile_every_n=10)
    monkeypatch.setattr(torch_instr, "_cuda_available", lambda: False)
    instrument_model(model)
    uninstrument_model(model)
    assert recorded_sessions == []  # no CUDA: no graphs to protect
    monkeypatch.setattr(torch_instr, "_cuda_available", lambda: True)
    instrument_model(model)
    uninstrument_model(model)
    assert recorded_sessions == []  # the model is on the CPU: no CUDA context made for it
    monkeypatch.setattr(torch_instr, "_on_cuda", lambda spec: True)
    instrument_model(model)
    uninstrument_model(model)
    assert recorded_sessions == [("CPU", "CUDA")]
    assert _profiler_sampling._cuda_graphs_prepared


def test_a_models_first_eager_cuda_call_prepares_where_instrument_model_could_not(
        spans, config, recorded_sessions, monkeypatch):
    # configure(mode="audit") after instrument_model, or a model moved to the GPU after it:
    # instrument_model had nothing to prepare for, and the server's graphs were then captured
    # before the first CUDA profiler session (pytorch#75504).
    from inferaudit_sdk.instrumentation import _model_call, _profiler_sampling
    from inferaudit_sdk.instrumentation._fake_cuda import FakeCudaBackend

    fake = FakeCudaBackend()
    model = torch.nn.Linear(2, 2)
    config(profile_every_n=0)
    instrument_model(model)
    monkeypatch.setattr(_model_call, "device_of", lambda spec: ("cuda", 0))  # moved since
    monkeypatch.setitem(_model_call._backends, "cuda", fake)  # torch.cuda, as a fake
    prepared_at: list[int] = []
    prepare = _profiler_sampling.prepare_for_cuda_graphs
    monkeypatch.setattr(_profiler_sampling, "prepare_for_cuda_graphs",
                        lambda: prepared_at.append(time.time_ns()) or prepare())
    x = torch.randn(1, 2)
    try:
        model(x)
        assert recorded_sessions == []  # sampling off: nothing to prepare for
        config(profile_every_n=10_000)  # audit mode, turned on later (no call comes due)
        fake.cuda.capturing = True
        model(x)
        assert recorded_sessions == []  # inside a capture: no profiler session there
        fake.cuda.capturing = False
        model(x)
        model(x)
        assert recorded_sessions == [("CPU", "CUDA")]  # at the first eager call, once
        with ia.batch(model="m"):  # a server's own batch span: nothing left to prepare
            model(x)
    finally:
        uninstrument_model(model)
    done = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert len(done) == 5 and len(prepared_at) == 1
    # before the call's span opened: the session is not timed as the call
    assert done[1].end_time < prepared_at[0] < done[2].start_time
    assert not any(s.attributes.get(semconv.PROFILE_SAMPLED) for s in done)


def test_the_preparation_marks_a_server_opened_batch_span_that_holds_it(
        spans, config, recorded_sessions, monkeypatch):
    from inferaudit_sdk.instrumentation import _model_call
    from inferaudit_sdk.instrumentation._fake_cuda import FakeCudaBackend

    model = torch.nn.Linear(2, 2)
    config(profile_every_n=10_000)
    monkeypatch.setattr(_model_call, "device_of", lambda spec: ("cuda", 0))
    monkeypatch.setitem(_model_call._backends, "cuda", FakeCudaBackend())
    instrument_model(model)
    try:
        with ia.batch(model="m"):
            model(torch.randn(1, 2))
    finally:
        uninstrument_model(model)
    (span,) = spans.get_finished_spans()
    assert recorded_sessions == [("CPU", "CUDA")]
    assert span.attributes[semconv.PROFILE_SAMPLED] is True  # out of the latency statistics


@pytest.mark.parametrize(("env", "overrides", "mode", "interval"), [
    ({}, {}, "production", 0),                                       # production: off
    ({"INFERAUDIT_MODE": "Audit"}, {}, "audit", 100),                # audit: on by default
    ({"INFERAUDIT_MODE": "audit", "INFERAUDIT_PROFILE_EVERY_N": "0"}, {}, "audit", 0),
    ({"INFERAUDIT_PROFILE_EVERY_N": "7"}, {}, "production", 7),      # explicit wins
    ({}, {"mode": "audit"}, "audit", 100),
    ({"INFERAUDIT_MODE": "staging", "INFERAUDIT_PROFILE_EVERY_N": "-3"}, {}, "production", 0),
])
def test_audit_mode_turns_profile_sampling_on_unless_told_otherwise(env, overrides, mode,
                                                                    interval):
    import dataclasses

    from inferaudit_sdk.config import AuditConfig

    cfg = AuditConfig.from_env(env, **overrides)
    assert (cfg.mode, cfg.profile_interval) == (mode, interval)
    # configure(mode=...) replaces a field of a built config: the interval follows
    replaced = dataclasses.replace(AuditConfig.from_env({}), mode="audit")
    assert replaced.profile_interval == 100


def test_a_bad_mode_or_interval_in_code_is_an_error_naming_the_field():
    from inferaudit_sdk.config import AuditConfig

    with pytest.raises(ValueError, match=r"AuditConfig\.mode"):
        AuditConfig(mode="prod")
    with pytest.raises(ValueError, match="profile_every_n"):
        AuditConfig(profile_every_n=-1)
    with pytest.raises(TypeError, match="profile_every_n"):
        AuditConfig(profile_every_n=True)


def test_audit_mode_profiles_model_calls_at_its_default_interval(spans, config, mlp,
                                                                  monkeypatch):
    from inferaudit_sdk import config as config_module

    monkeypatch.setattr(config_module, "AUDIT_PROFILE_EVERY_N", 3)
    config(mode="audit")
    instrument_model(mlp, model="mlp")
    try:
        for _ in range(6):
            mlp(torch.randn(2, 16))
            drain(10.0)  # a call due while a trace is still being written is not profiled
    finally:
        uninstrument_model(mlp)
    profiled = [s for s in batch_spans(spans) if semconv.PROFILE_TRACE_PATH in s.attributes]
    assert len(profiled) == 2



def test_a_sampled_call_returns_before_its_trace_is_written(spans, config, mlp, monkeypatch):
    # the trace's export, summary and compression run on the export worker: the call and its
    # span's end time do not wait for them; the span ends (is exported) once they are done
    import threading
    import time

    from inferaudit_sdk.instrumentation import _profiler_sampling

    gate = threading.Event()
    real_export = _profiler_sampling.export

    def slow_export(*args):
        gate.wait(10.0)
        return real_export(*args)

    monkeypatch.setattr(_profiler_sampling, "export", slow_export)
    config(profile_every_n=1)
    instrument_model(mlp, model="mlp")
    try:
        mlp(torch.randn(2, 16))
        returned_ns = time.time_ns()
        assert batch_spans_now(spans) == []  # still being written: not ended yet
        assert not drain(0.05)
        gate.set()
        (span,) = batch_spans(spans)
    finally:
        gate.set()
        uninstrument_model(mlp)
    assert span.end_time <= returned_ns  # the block's end, not the export's
    assert semconv.PROFILE_TRACE_PATH in span.attributes
    assert span.attributes[semconv.PROFILE_SAMPLED] is True
    assert [e.name for e in span.events] == [semconv.EVENT_PROFILE_SUMMARY]


def test_the_pipeline_flush_waits_for_sampled_calls(tmp_path, mlp):
    from opentelemetry.sdk.trace import TracerProvider

    import inferaudit_sdk as ia

    # the application's own provider: no global one is installed for the tests after this
    handle = ia.configure(tracer_provider=TracerProvider(), trace_dir=str(tmp_path),
                          exporters=("file",), nvml_enabled=False, profile_every_n=1)
    try:
        instrument_model(mlp, model="mlp")
        mlp(torch.randn(2, 16))
        uninstrument_model(mlp)
        assert handle.force_flush(10.0)
        assert drain(0.0)  # nothing left once the flush returned
        lines = "".join(p.read_text() for p in tmp_path.glob("traces-*.jsonl"))
        assert semconv.PROFILE_TRACE_PATH in lines
    finally:
        ia.shutdown()


def batch_spans_now(exporter):
    return [s for s in exporter.get_finished_spans()
            if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]


def test_a_block_that_ends_before_its_sampled_call_still_gets_the_trace(spans, config):
    # a call in a copied context can outlive its ia.batch block (a cancelled task whose thread
    # runs on): the span ends, with the block's end time, once the call stops its profiler,
    # and the sampler is free again (it stayed busy: profiling was off for the process)
    import contextvars
    import threading

    import inferaudit_sdk as ia
    from inferaudit_sdk.instrumentation import _model_call

    started, release = threading.Event(), threading.Event()

    class Held(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(16, 4)

        def forward(self, x):
            started.set()
            release.wait(10.0)
            return self.lin(x)

    config(profile_every_n=1)
    model = instrument_model(Held(), model="held")
    try:
        with ia.batch(model="held"):
            ctx = contextvars.copy_context()
            worker = threading.Thread(target=ctx.run, args=(model, torch.randn(2, 16)))
            worker.start()
            assert started.wait(10.0)
        block_end = time.time_ns()
        release.set()
        worker.join(10.0)
        (span,) = batch_spans(spans)
        assert span.end_time <= block_end
        assert semconv.PROFILE_TRACE_PATH in span.attributes
        assert not _model_call._sampler_for(1)._busy
    finally:
        release.set()
        uninstrument_model(model)


def test_an_ended_span_gets_no_profile(spans, config, mlp):
    import contextvars

    import inferaudit_sdk as ia
    from inferaudit_sdk.instrumentation import _model_call

    config(profile_every_n=1)
    instrument_model(mlp, model="mlp")
    try:
        with ia.batch(model="mlp"):
            ctx = contextvars.copy_context()
        ctx.run(mlp, torch.randn(2, 16))  # joins the closed block's (ended) span
        (span,) = batch_spans(spans)
        assert semconv.PROFILE_TRACE_PATH not in span.attributes
        assert not _model_call._sampler_for(1)._busy
    finally:
        uninstrument_model(mlp)


def test_a_forked_child_has_its_own_sampler_and_export_worker():
    from inferaudit_sdk.instrumentation import _model_call, _profiler_sampling

    parent = _model_call._sampler_for(5)
    parent._busy = True  # a trace the parent's worker is still writing
    worker = _profiler_sampling._worker
    try:
        _model_call._new_profile_sampler()
        _profiler_sampling._new_worker()
        assert _model_call._sampler_for(5) is not parent
        assert not _model_call._sampler_for(5)._busy
        assert _profiler_sampling._worker is not worker
    finally:
        parent._busy = False


def test_flushing_the_applications_own_provider_waits_for_sampled_calls(tmp_path, mlp):
    from opentelemetry.sdk.trace import TracerProvider

    import inferaudit_sdk as ia
    from inferaudit_sdk.instrumentation import _profiler_sampling

    app_tp = TracerProvider()
    ia.configure(tracer_provider=app_tp, trace_dir=str(tmp_path), exporters=("file",),
                 nvml_enabled=False, profile_every_n=1)
    try:
        instrument_model(mlp, model="mlp")
        mlp(torch.randn(2, 16))
        uninstrument_model(mlp)
        assert app_tp.force_flush(10_000)  # the application's flush, not ours
        lines = "".join(p.read_text() for p in tmp_path.glob("traces-*.jsonl"))
        assert semconv.PROFILE_TRACE_PATH in lines
        assert _profiler_sampling._exit_hook  # and at exit, before the providers' own hooks
    finally:
        ia.shutdown()


def test_a_call_joining_an_ended_block_leaves_no_device_state(spans, config, mlp):
    import contextvars

    import inferaudit_sdk as ia
    from inferaudit_sdk.instrumentation import _span_state

    instrument_model(mlp, model="mlp")
    try:
        with ia.batch(model="mlp"):
            ctx = contextvars.copy_context()
        ctx.run(mlp, torch.randn(2, 16))
        assert _span_state.pending_count() == 0  # nothing deferred on a span that has ended
    finally:
        uninstrument_model(mlp)


def test_a_call_whose_trace_cannot_be_written_is_still_marked_sampled(spans, config, mlp,
                                                                      monkeypatch):
    from inferaudit_sdk import _guard
    from inferaudit_sdk.instrumentation import _model_call, _profiler_sampling

    def broken_export(*args):
        raise OSError("disk full")

    monkeypatch.setattr(_profiler_sampling, "export", broken_export)
    config(profile_every_n=1)
    instrument_model(mlp, model="mlp")
    try:
        mlp(torch.randn(2, 16))
        (span,) = batch_spans(spans)
    finally:
        uninstrument_model(mlp)
    assert span.attributes[semconv.PROFILE_SAMPLED] is True  # its latency paid the profiler
    assert semconv.PROFILE_TRACE_PATH not in span.attributes
    assert _guard.error_counts().get("profile.export") == 1  # counted, not raised
    assert not _model_call._sampler_for(1)._busy
