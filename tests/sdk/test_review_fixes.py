"""Regressions from the review: content under extra attribute names, the EVENT_ONLY capture
mode, numpy integer counts in record(), and the decorators' provider after shutdown()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, _settings, semconv
from inferaudit_sdk.config import AuditConfig

SECRET = "SECRET-zebra-diagnosis"
_CONTENT_EXTRAS = {
    semconv.GEN_AI_INPUT_MESSAGES: SECRET,
    semconv.GEN_AI_OUTPUT_MESSAGES: SECRET,
    semconv.GEN_AI_SYSTEM_INSTRUCTIONS: SECRET,
    # the tool content the GenAI conventions mark sensitive
    semconv.GEN_AI_TOOL_CALL_ARGUMENTS: SECRET,
    semconv.GEN_AI_TOOL_CALL_RESULT: SECRET,
    semconv.GEN_AI_TOOL_DEFINITIONS: SECRET,
    semconv.GEN_AI_TOOL_DESCRIPTION: SECRET,
    f"{semconv.LEGACY_GEN_AI_PROMPT}.0.content": SECRET,
    semconv.LEGACY_GEN_AI_COMPLETION: SECRET,
    "prompt": SECRET,
    "Messages": SECRET,
    semconv.EXCEPTION_MESSAGE: SECRET,
    semconv.EXCEPTION_STACKTRACE: SECRET,
}


def _all_values(span) -> list[str]:
    values = [str(v) for v in span.attributes.values()]
    for ev in span.events:
        values.extend(str(v) for v in ev.attributes.values())
    return values


def _leaks(span) -> bool:
    return any(SECRET in v for v in _all_values(span))


# --------------------------------------------------------------------------------------------
# 5. record(**extras) under content names stays off spans while capture is off
# --------------------------------------------------------------------------------------------
def test_content_named_extras_are_dropped_and_counted_when_capture_is_off(otel, audit_config):
    exporter, _ = otel
    audit_config()  # capture_content defaults to off

    @ia.audited(model="m")
    def handler():
        ia.record(**_CONTENT_EXTRAS, **{"my.route_weight": 3, "promptness": "ok"})
        return None

    handler()
    (span,) = exporter.get_finished_spans()
    assert not _leaks(span), dict(span.attributes)
    for name in _CONTENT_EXTRAS:
        assert name not in span.attributes
    # Other extras still apply, including names that merely start like a content name.
    assert span.attributes["my.route_weight"] == 3
    assert span.attributes["promptness"] == "ok"
    assert _guard.error_counts().get("record") == len(_CONTENT_EXTRAS)


def test_content_named_extras_are_dropped_on_a_batch_span_too(otel, audit_config):
    exporter, _ = otel
    audit_config()
    with ia.batch(model="m"):
        ia.record(**{"prompt": SECRET, semconv.GEN_AI_INPUT_MESSAGES: SECRET}, batch_size=2)
    (span,) = exporter.get_finished_spans()
    assert not _leaks(span)
    assert span.attributes[semconv.BATCH_SIZE] == 2
    assert _guard.error_counts().get("record") == 2


def test_content_named_extras_pass_when_capture_is_on(otel, audit_config):
    exporter, _ = otel
    audit_config(capture_content=True)

    @ia.audited(model="m")
    def handler():
        ia.record(**{"prompt": SECRET, semconv.GEN_AI_SYSTEM_INSTRUCTIONS: SECRET})

    handler()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["prompt"] == SECRET
    assert span.attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS] == SECRET
    assert "record" not in _guard.error_counts()


def test_the_drop_is_logged_without_the_text(otel, audit_config, caplog):
    exporter, _ = otel
    audit_config()

    @ia.audited(model="m")
    def handler():
        ia.record(**{semconv.GEN_AI_INPUT_MESSAGES: SECRET})

    with caplog.at_level("WARNING", logger="inferaudit_sdk"):
        handler()
    assert semconv.GEN_AI_INPUT_MESSAGES in caplog.text
    assert SECRET not in caplog.text
    (span,) = exporter.get_finished_spans()
    assert not _leaks(span)


# --------------------------------------------------------------------------------------------
# 6. EVENT_ONLY means no content on spans (the SDK emits no GenAI events)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,expected", [
    ("true", True), ("TRUE", True), ("span_only", True), ("SPAN_ONLY", True),
    ("span_and_event", True), ("Span_And_Event", True),
    ("event_only", False), ("EVENT_ONLY", False), ("false", False), ("no_content", False),
])
def test_capture_modes_map_to_span_capture(raw, expected):
    cfg = AuditConfig.from_env({semconv.ENV_CAPTURE_MESSAGE_CONTENT: raw})
    assert cfg.capture_content is expected


def test_event_only_puts_no_text_on_spans(otel):
    exporter, _ = otel
    _settings.set_config(AuditConfig.from_env({semconv.ENV_CAPTURE_MESSAGE_CONTENT: "EVENT_ONLY"}))

    @ia.audited(model="m")
    def handler(prompt):
        ia.record(prompt_text=SECRET, completion_text=SECRET)
        return SECRET

    handler(SECRET)
    (span,) = exporter.get_finished_spans()
    assert not _leaks(span), dict(span.attributes)
    assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes


# --------------------------------------------------------------------------------------------
# 7. numpy integer scalars are token counts; bools and negatives still are not
# --------------------------------------------------------------------------------------------
def test_record_accepts_numpy_integer_counts_as_plain_ints(otel, audit_config):
    exporter, _ = otel
    audit_config()

    @ia.audited(model="m")
    def handler():
        ia.record(input_tokens=np.int64(5), output_tokens=np.uint32(3),
                  max_tokens=np.int16(7), cache_read_tokens=np.int32(2))

    handler()
    (span,) = exporter.get_finished_spans()
    a = span.attributes
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 5
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert a[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 7
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2
    assert type(a[semconv.GEN_AI_USAGE_INPUT_TOKENS]) is int
    assert "record" not in _guard.error_counts()


def test_record_numpy_counts_on_a_batch_span(otel, audit_config):
    exporter, _ = otel
    audit_config()
    with ia.batch(model="m"):
        ia.record(input_tokens=np.int64(11), batch_size=np.int8(4))
    (span,) = exporter.get_finished_spans()
    assert span.attributes[semconv.BATCH_INPUT_TOKENS] == 11
    assert span.attributes[semconv.BATCH_SIZE] == 4
    assert type(span.attributes[semconv.BATCH_SIZE]) is int


@pytest.mark.parametrize("bad", [True, np.bool_(True), np.int64(-1), 2.5, "5", np.float32(1.5)])
def test_record_still_rejects_what_is_not_a_count(otel, audit_config, bad):
    exporter, _ = otel
    audit_config()

    @ia.audited(model="m")
    def handler():
        ia.record(input_tokens=bad, output_tokens=np.int64(1))

    handler()
    (span,) = exporter.get_finished_spans()
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 1  # the rest still applies
    assert _guard.error_counts().get("record") == 1


# --------------------------------------------------------------------------------------------
# 4. shutdown() unbinds the decorators from the first configure()'s explicit provider
# --------------------------------------------------------------------------------------------
_ENV_DROP = ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED",
             "INFERAUDIT_EXPORTERS", "INFERAUDIT_TRACE_DIR", "OTEL_TRACES_SAMPLER",
             semconv.ENV_CAPTURE_MESSAGE_CONTENT)


def _run(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_configure_after_shutdown_sends_spans_to_its_own_exporter_not_the_old_one(tmp_path):
    # In a subprocess: configure() sets OpenTelemetry's global provider (once per process).
    out = _run(
        """
        import json
        import inferaudit_sdk as ia
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        mem = InMemorySpanExporter()
        app = TracerProvider()
        app.add_span_processor(SimpleSpanProcessor(mem))

        @ia.audited(model="tiny")
        def handler(tag):
            return tag

        ia.configure(tracer_provider=app, nvml_enabled=False)
        handler("first")
        ia.shutdown()
        h = ia.configure(exporters=("file",), trace_dir="audit", nvml_enabled=False)
        handler("second")
        ia.shutdown()
        print(json.dumps({"mem": len(mem.get_finished_spans()), "dir": str(h.trace_dir)}))
        """,
        tmp_path,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mem"] == 1  # only the call made while the app's provider was configured
    names = []
    for path in sorted(Path(result["dir"]).glob("traces-*.jsonl")):
        for line in path.read_bytes().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                names += [s["name"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(names) == 1, names


def test_faults_are_exported_without_configure(tmp_path):
    """An application that wires OpenTelemetry itself and never calls configure() still gets
    inferaudit.sdk.errors on its own MeterProvider (the SDK's log line says it would)."""
    out = _run('''
        import inferaudit_sdk as ia
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        trace.set_tracer_provider(TracerProvider())

        @ia.audited(model="m")
        def f():
            ia.record(input_tokens="bad")
            return [1, 2]

        f()
        f()
        data = reader.get_metrics_data()
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "inferaudit.sdk.errors":
                        for p in m.data.data_points:
                            print(dict(p.attributes), p.value)
    ''', tmp_path)
    assert "{'inferaudit.component': 'record'} 2" in out


def test_an_otlp_endpoint_without_an_exporter_choice_selects_otlp(monkeypatch):
    """`OTEL_EXPORTER_OTLP_ENDPOINT=... python serve.py` beside `inferaudit collect`: the spans
    must go to the endpoint, not silently to local files."""
    from inferaudit_sdk.config import AuditConfig
    from inferaudit_sdk.sdk.exporters import resolve_exporters

    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "INFERAUDIT_EXPORTERS",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    cfg = AuditConfig.from_env({})
    assert resolve_exporters(cfg, "traces")[0] == ("file",)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert resolve_exporters(cfg, "traces")[0] == ("otlp",)
    assert resolve_exporters(cfg, "metrics")[0] == ("otlp",)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")  # an explicit choice still wins
    assert resolve_exporters(cfg, "traces")[0] == ("console",)
