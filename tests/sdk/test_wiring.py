"""configure()/build(): which providers and exporters get installed, from which settings.

In-process tests use ``build(..., set_global=False)`` (OpenTelemetry lets a process set its global
providers once); the global paths run in a subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_sdk import _guard, semconv
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.sdk import self_metrics
from inferaudit_sdk.sdk.provider import build, configure

_OTEL_VARS = (
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_TIMEOUT", "INFERAUDIT_EXPORTERS",
    "INFERAUDIT_TRACE_DIR",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def handles():
    made = []
    yield made
    for h in made:
        h.shutdown(timeout_s=5)


def _cfg(tmp_path: Path, **kw) -> AuditConfig:
    return AuditConfig(trace_dir=str(tmp_path / "traces"), nvml_enabled=False, **kw)


def _lines(directory: Path, prefix: str) -> list[dict]:
    out = []
    for path in sorted(directory.glob(f"{prefix}-*.jsonl")):
        out += [json.loads(x) for x in path.read_bytes().splitlines()]
    return out


def _span_names(directory: Path) -> list[str]:
    return [
        s["name"] for line in _lines(directory, "traces") for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"] for s in ss["spans"]
    ]


def _metric_points(lines: list[dict], name: str) -> list[dict]:
    """Data points of ``name`` in the LAST metrics line (cumulative: it holds the totals)."""
    if not lines:
        return []
    last = lines[-1]
    points = []
    for rm in last["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for metric in sm["metrics"]:
                if metric["name"] == name:
                    points += metric["sum"]["dataPoints"]
    return points


def _attrs(point: dict) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in point.get("attributes", ())}


def test_default_is_the_file_sink_with_hardware_resource(tmp_path, handles, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=given,deployment.environment=test")
    h = build(_cfg(tmp_path), set_global=False)
    handles.append(h)
    assert h.owns_tracer_provider and h.owns_meter_provider
    assert h.trace_exporters == ("file",) and h.metric_exporters == ("file",)
    assert h.trace_dir == (tmp_path / "traces").resolve()
    assert not h.trace_dir.exists()  # nothing touches the disk before the first export
    tracer = h.tracer_provider.get_tracer(semconv.INSTRUMENTATION_NAME)
    for i in range(3):
        tracer.start_span(f"s{i}").end()
    assert h.force_flush(timeout_s=10)
    assert sorted(_span_names(h.trace_dir)) == ["s0", "s1", "s2"]
    resource = _attrs(_lines(h.trace_dir, "traces")[0]["resourceSpans"][0]["resource"])
    assert resource[semconv.SERVICE_NAME] == "checkout"
    assert resource[semconv.HOST_NAME] == "given"  # the user's attributes win
    assert resource["deployment.environment"] == "test"
    assert resource[semconv.RES_SCHEMA_VERSION] == semconv.SCHEMA_VERSION
    assert semconv.RES_HOST_CPU_CORES in resource
    h.shutdown()
    exported = _metric_points(_lines(h.trace_dir, "metrics"), semconv.METRIC_SDK_SPANS_EXPORTED)
    by_exporter = {_attrs(p)[semconv.SDK_EXPORTER]: int(p["asInt"]) for p in exported}
    assert by_exporter["file"] == self_metrics.exported_counts()["file"]


@pytest.mark.parametrize(
    ("env", "cfg_exporters", "traces", "metrics"),
    [
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}, (),
         ("console",), ()),
        ({"OTEL_TRACES_EXPORTER": "none"}, (), (), ()),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("file",), ("file",), ("file",)),
        ({"OTEL_TRACES_EXPORTER": "bogus"}, (), ("file",), ("file",)),
        ({"OTEL_TRACES_EXPORTER": "console,file", "OTEL_METRICS_EXPORTER": "console"}, (),
         ("console", "file"), ("file", "console")),  # the file reader goes first
        ({}, ("none",), (), ()),
    ],
)
def test_exporter_precedence(tmp_path, handles, monkeypatch, env, cfg_exporters, traces, metrics):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    h = build(_cfg(tmp_path, exporters=cfg_exporters), set_global=False)
    handles.append(h)
    assert h.trace_exporters == traces
    assert h.metric_exporters == metrics
    assert (h.trace_dir is not None) == ("file" in traces)


def test_console_exporter_prints_spans(tmp_path, handles, capsys, monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    h = build(_cfg(tmp_path, exporters=("console",)), set_global=False)
    handles.append(h)
    h.tracer_provider.get_tracer("t").start_span("printed-span").end()
    h.force_flush(timeout_s=10)
    assert '"name": "printed-span"' in capsys.readouterr().out


def test_bad_environment_values_warn_and_still_work(tmp_path, handles, monkeypatch, caplog):
    bad = {
        "OTEL_TRACES_SAMPLER": "sometimes", "OTEL_TRACES_SAMPLER_ARG": "x",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
        "OTEL_RESOURCE_ATTRIBUTES": "no-equals-sign,,=", "OTEL_TRACES_EXPORTER": "otlp,???",
        "OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "INFERAUDIT_MAX_QUEUE_SIZE": "-5", "INFERAUDIT_FILE_MAX_BYTES": "lots",
        "INFERAUDIT_EXPORTERS": "file,otlp,???", "INFERAUDIT_TRACE_DIR": str(tmp_path / "t"),
        "INFERAUDIT_NVML": "maybe",
    }
    for k, v in bad.items():
        monkeypatch.setenv(k, v)
    with caplog.at_level(logging.WARNING):
        cfg = AuditConfig.from_env()
        h = build(cfg, set_global=False)
    handles.append(h)
    assert cfg.max_queue_size == AuditConfig().max_queue_size
    assert h.trace_exporters == ("file", "otlp")
    h.tracer_provider.get_tracer("t").start_span("still-works").end()
    h.processors[0].force_flush(10_000)
    assert _span_names(tmp_path / "t") == ["still-works"]
    text = caplog.text
    assert "???" in text and "carrier-pigeon" in text and "lots" in text
    h.shutdown(timeout_s=1)  # the OTLP side points at a closed port: do not wait for retries


def test_sampler_comes_from_the_standard_env(tmp_path, handles, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    h = build(_cfg(tmp_path), set_global=False)
    handles.append(h)
    h.tracer_provider.get_tracer("t").start_span("never").end()
    h.force_flush(timeout_s=10)
    assert _span_names(tmp_path / "traces") == []


def test_sdk_disabled_builds_nothing(tmp_path, handles, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    h = build(_cfg(tmp_path), set_global=False)
    handles.append(h)
    assert h.disabled and h.tracer_provider is None and h.processors == ()
    assert h.force_flush() is True
    h.shutdown()
    assert not (tmp_path / "traces").exists()


def test_apps_provider_is_used_and_left_alone(tmp_path, handles):
    app_spans = InMemorySpanExporter()
    app_tp = TracerProvider(shutdown_on_exit=False)
    app_tp.add_span_processor(SimpleSpanProcessor(app_spans))
    app_reader = InMemoryMetricReader()
    app_mp = MeterProvider(metric_readers=[app_reader], shutdown_on_exit=False)
    h = build(_cfg(tmp_path), tracer_provider=app_tp, meter_provider=app_mp, set_global=False)
    handles.append(h)
    assert not h.owns_tracer_provider and not h.owns_meter_provider
    assert h.processors == () and h.trace_dir is None  # nothing added unless asked
    app_tp.get_tracer("t").start_span("app").end()
    assert [s.name for s in app_spans.get_finished_spans()] == ["app"]
    data = app_reader.get_metrics_data()  # None when nothing was recorded yet (test run alone)
    names = {
        m.name for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics for m in sm.metrics
    }
    assert semconv.METRIC_SDK_SPANS_EXPORTED in names or not self_metrics.exported_counts()
    h.shutdown()
    app_tp.get_tracer("t").start_span("after").end()  # the app's provider still works
    assert [s.name for s in app_spans.get_finished_spans()] == ["app", "after"]


def test_file_sink_added_to_apps_provider_only_when_asked(tmp_path, handles):
    app_spans = InMemorySpanExporter()
    app_tp = TracerProvider(shutdown_on_exit=False)
    app_tp.add_span_processor(SimpleSpanProcessor(app_spans))
    h = build(_cfg(tmp_path, exporters=("file",)), tracer_provider=app_tp, set_global=False)
    handles.append(h)
    assert not h.owns_tracer_provider and h.trace_exporters == ("file",)
    app_tp.get_tracer("t").start_span("both").end()
    h.force_flush(timeout_s=10)
    assert _span_names(h.trace_dir) == ["both"]
    assert [s.name for s in app_spans.get_finished_spans()] == ["both"]
    before = sum(n for (e, _), n in self_metrics.dropped_counts().items() if e == "file")
    h.shutdown()
    app_tp.get_tracer("t").start_span("later").end()
    after = sum(n for (e, _), n in self_metrics.dropped_counts().items() if e == "file")
    assert after == before  # detached on shutdown: not offered to a dead sink
    assert _span_names(h.trace_dir) == ["both"]


def test_swallowed_faults_become_the_errors_metric(tmp_path, handles):
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    h = build(_cfg(tmp_path), meter_provider=mp, set_global=False)
    handles.append(h)
    _guard.swallow("wiring.test", ValueError("boom"))
    _guard.swallow("wiring.test", KeyError("k"))
    points = [
        p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
        for m in sm.metrics if m.name == semconv.METRIC_SDK_ERRORS for p in m.data.data_points
    ]
    by_component = {p.attributes[semconv.ERROR_COMPONENT]: p.value for p in points}
    assert by_component["wiring.test"] == self_metrics.error_counts()["wiring.test"] >= 2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"config": "file"}, "AuditConfig"),
        ({"tracer_provider": object()}, "TracerProvider"),
        ({"meter_provider": 3}, "MeterProvider"),
        ({"trace_dirr": "x"}, "trace_dirr"),
        ({"file_max_bytes": "big"}, "file_max_bytes"),
    ],
)
def test_programming_errors_raise_type_error(kwargs, fragment):
    with pytest.raises(TypeError, match=fragment):
        configure(**kwargs)


def _run(code: str, tmp_path: Path, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k not in _OTEL_VARS}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        env=full_env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_global_configure_is_idempotent(tmp_path):
    out = _run(
        """
        from opentelemetry import trace
        import inferaudit_sdk._settings as settings
        from inferaudit_sdk.sdk.provider import configure, shutdown
        h1 = configure(nvml_enabled=False)
        h2 = configure(nvml_enabled=False, content_max_chars=7)
        assert h1 is h2, (h1, h2)
        assert trace.get_tracer_provider() is h1.tracer_provider
        assert len(h1.tracer_provider._active_span_processor._span_processors) == 1
        assert settings.get_config().content_max_chars == 7
        trace.get_tracer("x").start_span("global-span").end()
        shutdown()
        print(h1.trace_dir)
        """,
        tmp_path, INFERAUDIT_TRACE_DIR="out",
    )
    trace_dir = Path(out.strip())
    assert trace_dir == (tmp_path / "out").resolve()
    assert _span_names(trace_dir) == ["global-span"]


def test_global_app_provider_is_detected_not_replaced(tmp_path):
    out = _run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from inferaudit_sdk.sdk.provider import configure
        app = TracerProvider()
        trace.set_tracer_provider(app)
        h = configure(nvml_enabled=False)
        assert h.tracer_provider is app and not h.owns_tracer_provider
        assert h.processors == ()
        print("ok")
        """,
        tmp_path,
    )
    assert out.strip() == "ok"
    assert not (tmp_path / "inferaudit-traces").exists()


def test_global_sdk_disabled_exports_nothing(tmp_path):
    out = _run(
        """
        from opentelemetry import trace
        from inferaudit_sdk.sdk.provider import configure, shutdown
        h = configure()
        trace.get_tracer("x").start_span("nope").end()
        shutdown()
        print(h.disabled)
        """,
        tmp_path, OTEL_SDK_DISABLED="true",
    )
    assert out.strip() == "True"
    assert not (tmp_path / "inferaudit-traces").exists()


def test_end_to_end_audited_spans_reach_the_file_sink(tmp_path):
    out = _run(
        """
        import inferaudit_sdk as ia
        h = ia.configure(nvml_enabled=False, trace_dir="audit")
        assert isinstance(h, ia.AuditHandle)

        @ia.audited(model="tiny", operation="text_completion", provider="test")
        def handler(prompt):
            ia.record(input_tokens=3, output_tokens=2)
            return "ok"

        for _ in range(5):
            handler("hi")
        assert h.force_flush(timeout_s=10)
        ia.shutdown()
        print(h.trace_dir)
        """,
        tmp_path,
    )
    trace_dir = Path(out.strip())
    spans = [
        s for line in _lines(trace_dir, "traces") for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"] for s in ss["spans"]
    ]
    assert len(spans) == 5
    roles = {_attrs(s)[semconv.SPAN_ROLE] for s in spans}
    assert roles == {semconv.ROLE_REQUEST}
    assert {_attrs(s)[semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in spans} == {"3"}


def test_explicit_app_provider_receives_the_decorators_spans(tmp_path):
    out = _run(
        """
        import inferaudit_sdk as ia
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        mem = InMemorySpanExporter()
        app = TracerProvider()
        app.add_span_processor(SimpleSpanProcessor(mem))
        h = ia.configure(tracer_provider=app, nvml_enabled=False)
        assert h.tracer_provider is app and h.processors == ()

        @ia.audited(model="tiny")
        def handler():
            return "ok"

        handler()
        print(len(mem.get_finished_spans()))
        """,
        tmp_path,
    )
    assert out.strip() == "1"
    assert not (tmp_path / "inferaudit-traces").exists()


def test_forked_worker_writes_its_own_files(tmp_path):
    out = _run(
        """
        import os
        from opentelemetry import trace
        from inferaudit_sdk.sdk.provider import configure, shutdown
        h = configure(nvml_enabled=False, trace_dir="audit")
        tracer = trace.get_tracer("x")
        tracer.start_span("before-fork").end()
        h.force_flush(timeout_s=10)
        pid = os.fork()
        if pid == 0:
            tracer.start_span("in-child").end()
            ok = h.force_flush(timeout_s=10)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        tracer.start_span("parent-after").end()
        shutdown()
        print(pid)
        """,
        tmp_path,
    )
    child = int(out.strip())
    by_pid: dict[int, list[str]] = {}
    for path in (tmp_path / "audit").glob("traces-*.jsonl"):
        pid = int(path.name.split("-")[2])
        by_pid.setdefault(pid, [])
        for line in path.read_bytes().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                by_pid[pid] += [s["name"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert by_pid.pop(child) == ["in-child"]
    [parent_spans] = by_pid.values()
    assert sorted(parent_spans) == ["before-fork", "parent-after"]


def test_configure_again_after_shutdown_reuses_the_global_provider(tmp_path):
    out = _run(
        """
        from opentelemetry import trace
        from inferaudit_sdk.sdk.provider import configure, shutdown
        h1 = configure(nvml_enabled=False, trace_dir="one")
        trace.get_tracer("x").start_span("first").end()
        shutdown()
        h2 = configure(nvml_enabled=False, trace_dir="two")
        assert h2 is not h1 and h2.tracer_provider is h1.tracer_provider and h2.owns_tracer_provider
        trace.get_tracer("x").start_span("second").end()
        shutdown()
        print("ok")
        """,
        tmp_path,
    )
    assert out.strip() == "ok"
    assert _span_names(tmp_path / "one") == ["first"]
    assert _span_names(tmp_path / "two") == ["second"]


def test_every_setting_is_documented():
    import dataclasses

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for f in dataclasses.fields(AuditConfig):
        assert f"`{f.metadata['env_var']}`" in doc, f.metadata["env_var"]
        assert f"`{f.name}`" in doc, f.name
        standard = f.metadata["standard_env_var"]
        assert standard is None or f"`{standard}`" in doc, standard
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
                 "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                 "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
        assert f"`{name}`" in doc, name


def test_zero_drops_are_stated_not_implied(tmp_path):
    """A clean run exports ``inferaudit.sdk.spans.dropped`` = 0 for each exporter and reason,
    so an audit reads "0 lost" instead of "no counter" (fresh process: counts are global)."""
    script = textwrap.dedent(
        f"""
        import json, pathlib
        from inferaudit_sdk import semconv
        from inferaudit_sdk.config import AuditConfig
        from inferaudit_sdk.sdk.provider import build
        h = build(AuditConfig(trace_dir={str(tmp_path)!r}, nvml_enabled=False), set_global=False)
        tracer = h.tracer_provider.get_tracer(semconv.INSTRUMENTATION_NAME)
        for i in range(3):
            tracer.start_span("s").end()
        h.shutdown(timeout_s=10)
        last = [json.loads(x) for p in sorted(pathlib.Path({str(tmp_path)!r}).glob("metrics-*"))
                for x in p.read_bytes().splitlines()][-1]
        out = {{}}
        for rm in last["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for m in sm["metrics"]:
                    for p in m.get("sum", {{}}).get("dataPoints", []):
                        attrs = tuple(sorted((a["key"], a["value"]["stringValue"])
                                             for a in p.get("attributes", [])))
                        out[m["name"] + repr(attrs)] = int(p["asInt"])
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in _OTEL_VARS}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    points = json.loads(proc.stdout)
    dropped = {k: v for k, v in points.items() if k.startswith(semconv.METRIC_SDK_SPANS_DROPPED)}
    for reason in (semconv.DROP_REASON_QUEUE_FULL, semconv.DROP_REASON_EXPORT_FAILED,
                   semconv.DROP_REASON_SHUTDOWN):
        key = semconv.METRIC_SDK_SPANS_DROPPED + repr(tuple(sorted(
            ((semconv.SDK_DROP_REASON, reason), (semconv.SDK_EXPORTER, "file")))))
        assert dropped.get(key) == 0, (key, dropped)
    exported = semconv.METRIC_SDK_SPANS_EXPORTED + repr(((semconv.SDK_EXPORTER, "file"),))
    assert points[exported] == 3


def test_configure_starts_the_gpu_sampler_and_shutdown_stops_it(tmp_path):
    """With NVML present, configure() samples GPU counters into hw.* metrics; shutdown stops
    the thread. (A fake NVML module stands in for the real library, same interface.)"""
    out = _run(
        """
        import sys, time
        from inferaudit_sdk.samplers._fake_nvml import FakeGpu, FakeNvml
        sys.modules["pynvml"] = FakeNvml([FakeGpu()])
        from inferaudit_sdk.samplers import nvml
        from inferaudit_sdk.sdk.provider import configure, shutdown
        h = configure(nvml_sample_hz=50.0)
        sampler = nvml.get_sampler()
        assert sampler is not None and sampler.running
        time.sleep(0.3)
        shutdown()
        assert nvml.get_sampler() is None and not sampler.running
        print(h.trace_dir)
        """,
        tmp_path, INFERAUDIT_TRACE_DIR="out",
    )
    trace_dir = Path(out.strip())
    text = "".join(p.read_text() for p in trace_dir.glob("metrics-*.jsonl"))
    assert f'"name":"{semconv.METRIC_HW_GPU_UTILIZATION}"' in text.replace(" ", "")


def test_configure_without_nvml_keeps_serving(tmp_path):
    out = _run(
        """
        from inferaudit_sdk.samplers import nvml
        from inferaudit_sdk.sdk.provider import configure, shutdown
        configure()
        print(nvml.get_sampler())
        shutdown()
        """,
        tmp_path, INFERAUDIT_TRACE_DIR="out",
    )
    assert out.strip() == "None"


def test_metrics_beside_an_apps_provider_carry_the_apps_resource(tmp_path, handles):
    # The app's traces say service.name=checkout-api; metrics under a resource of our own
    # would land under another service (unknown_service:python) in the backend.
    from opentelemetry.sdk.resources import Resource

    app_tp = TracerProvider(resource=Resource.create({semconv.SERVICE_NAME: "checkout-api"}),
                            shutdown_on_exit=False)
    h = build(_cfg(tmp_path, exporters=("file",)), tracer_provider=app_tp, set_global=False)
    handles.append(h)
    assert h.owns_meter_provider and h.meter_provider is not None
    app_tp.get_tracer("t").start_span("s").end()
    h.shutdown()
    lines = _lines(h.trace_dir, "metrics")
    assert lines
    for line in lines:
        for rm in line["resourceMetrics"]:
            assert _attrs(rm["resource"])[semconv.SERVICE_NAME] == "checkout-api"


def test_sdk_disabled_starts_no_gpu_sampler(tmp_path):
    out = _run(
        """
        import sys
        from inferaudit_sdk.samplers._fake_nvml import FakeGpu, FakeNvml
        sys.modules["pynvml"] = FakeNvml([FakeGpu()])
        from inferaudit_sdk.samplers import nvml
        from inferaudit_sdk.sdk.provider import configure, shutdown
        h = configure()
        print(h.disabled, nvml.get_sampler())
        shutdown()
        """,
        tmp_path, OTEL_SDK_DISABLED="true", INFERAUDIT_TRACE_DIR="out",
    )
    assert out.strip() == "True None"


def test_batch_processor_settings_fall_back_to_the_standard_variables(caplog):
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
           "OTEL_BSP_SCHEDULE_DELAY": "50"}
    cfg = AuditConfig.from_env(env)
    assert (cfg.max_queue_size, cfg.max_export_batch_size, cfg.schedule_delay_ms) == (100, 10, 50)
    # ours, where set, wins
    cfg = AuditConfig.from_env({**env, "INFERAUDIT_MAX_QUEUE_SIZE": "300"})
    assert cfg.max_queue_size == 300
    # a bad standard value is named in the warning and takes the default
    with caplog.at_level(logging.WARNING):
        cfg = AuditConfig.from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"})
    assert cfg.max_queue_size == AuditConfig().max_queue_size
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in caplog.text and "lots" in caplog.text


def test_a_bad_setting_is_warned_about_once(tmp_path, handles, monkeypatch, caplog):
    # traces and metrics both read INFERAUDIT_EXPORTERS and the protocol variable
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            h = build(_cfg(tmp_path, exporters=("bogus", "otlp")), set_global=False)
            handles.append(h)
    assert caplog.text.count("'bogus'") == 1
    assert caplog.text.count("'http/json'") == 1
    for h in handles:
        h.shutdown(timeout_s=1)


def test_an_otlp_endpoint_beside_the_apps_provider_builds_no_metrics(tmp_path, handles,
                                                                       monkeypatch):
    # An endpoint alone does not ask for InferAudit's metrics: the app's pipeline carries what
    # it wants, and the global MeterProvider stays free for the app.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    app_tp = TracerProvider(shutdown_on_exit=False)
    h = build(_cfg(tmp_path), tracer_provider=app_tp, set_global=False)
    handles.append(h)
    assert not h.owns_meter_provider and h.metric_exporters == ()
