"""Late binding: functions decorated before any provider exists bind to the global providers
set later (as ``configure()`` or the application does). Runs in a subprocess because the
global providers can be set only once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import inferaudit_sdk as ia
    from inferaudit_sdk import semconv, _guard

    @ia.audited(model="m")
    def handler(input_ids):
        return [1, 2, 3]

    assert handler([9]) == [1, 2, 3]  # no provider yet: fast path, nothing recorded

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tp)
    handler([9, 9])  # instruments are created now, from the proxy meter (no provider yet)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    handler([9, 9, 9])

    spans = exporter.get_finished_spans()
    assert [s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in spans] == [2, 3], spans
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == semconv.INSTRUMENTATION_NAME
            for m in sm.metrics:
                points[m.name] = list(m.data.data_points)
    (dur,) = points[semconv.METRIC_SERVER_REQUEST_DURATION]
    assert dur.count == 1, dur
    assert tuple(dur.explicit_bounds) == semconv.BUCKETS_REQUEST_DURATION_S
    assert sum(p.count for p in points[semconv.METRIC_CLIENT_TOKEN_USAGE]) == 2
    assert _guard.error_counts() == {}, _guard.error_counts()
    print("LATE-BINDING-OK")
    """
)


def test_decorated_before_providers_binds_later():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LATE-BINDING-OK" in proc.stdout


HEAVY = ("torch", "opentelemetry.sdk", "transformers", "duckdb", "pynvml", "chdb",
         "clickhouse_connect", "inferaudit_analyzer", "inferaudit_collector",
         "inferaudit_sdk.sdk", "inferaudit_sdk.instrumentation")


def test_import_is_light():
    """A serving process that imports the SDK (and decorates and calls a function) loads
    none of the heavy or offline parts: no torch, NVML, DuckDB, analyzer or collector."""
    code = textwrap.dedent(
        f"""
        import sys
        import inferaudit_sdk as ia

        @ia.audited(model="m")
        def handler(input_ids):
            return [1, 2]

        handler([3, 4, 5])
        ia.record  # attribute access of the public API
        heavy = sorted({{m for m in sys.modules for h in {HEAVY!r}
                        if m == h or m.startswith(h + ".")}})
        print(heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
