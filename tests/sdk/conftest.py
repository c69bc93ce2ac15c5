"""Shared fixtures for the SDK tests: real OpenTelemetry SDK providers, isolated per test.

``otel`` yields ``(InMemorySpanExporter, InMemoryMetricReader)`` wired to a fresh SDK
``TracerProvider``/``MeterProvider``. They are bound to the SDK's own tracer and meter through
``inferaudit_sdk._tracing.use_tracer_provider``/``use_meter_provider`` rather than the global
``set_tracer_provider`` (which OpenTelemetry allows only once per process), so every test gets
fresh providers, nothing leaks between tests, and tests that exercise ``configure()`` and the
global provider stay unaffected. Code inside a test that needs a tracer for its own child spans
uses ``tp.get_tracer(...)`` (the ``otel_provider`` fixture) or ``make_otel``; context
propagation and parenting work across providers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _lean_twins import make_pair  # noqa: F401  (a fixture for tests/sdk/test_lean_span_*.py)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_sdk import _guard, _settings, _tracing


class Otel:
    """One test's providers, exporter and reader."""

    def __init__(self, sampler: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        kwargs = {"sampler": sampler} if sampler is not None else {}
        self.tracer_provider = TracerProvider(**kwargs)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        _tracing.use_tracer_provider(self.tracer_provider)
        _tracing.use_meter_provider(self.meter_provider)

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def tracer(self) -> Any:
        return self.tracer_provider.get_tracer("tests")

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points (histogram points have count/sum/bucket_counts)."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.setdefault(m.name, []).extend(m.data.data_points)
        return out

    def close(self) -> None:
        _tracing.use_tracer_provider(None)
        _tracing.use_meter_provider(None)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    """Fresh config (from the environment), fault counters and once-only warnings for every
    test."""
    from inferaudit_sdk.sdk import exporters

    _settings.reset_for_tests()
    _guard.reset_for_tests()
    exporters._warned.clear()
    yield
    _settings.reset_for_tests()
    _guard.reset_for_tests()


@pytest.fixture
def make_otel() -> Iterator[Callable[..., Otel]]:
    """Build (and bind) providers with a given sampler: ``make_otel(sampler=ALWAYS_OFF)``."""
    made: list[Otel] = []

    def make(sampler: Any = None) -> Otel:
        if made:
            made[-1].close()
        o = Otel(sampler)
        made.append(o)
        return o

    yield make
    if made:
        made[-1].close()


@pytest.fixture
def otel_env(make_otel: Callable[..., Otel]) -> Otel:
    """The whole :class:`Otel` bundle with the SDK's default sampler."""
    return make_otel()


@pytest.fixture
def otel(otel_env: Otel) -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    """``(InMemorySpanExporter, InMemoryMetricReader)`` of fresh, bound SDK providers."""
    return otel_env.exporter, otel_env.reader


@pytest.fixture
def otel_provider(otel_env: Otel) -> TracerProvider:
    """The TracerProvider behind ``otel`` (for child spans made by test code)."""
    return otel_env.tracer_provider


@pytest.fixture
def audit_config() -> Callable[..., Any]:
    """Install an AuditConfig for this test: ``audit_config(capture_content=True)``."""
    from inferaudit_sdk.config import AuditConfig

    def install(**fields: Any) -> AuditConfig:
        cfg = AuditConfig(**fields)
        _settings.set_config(cfg)
        return cfg

    return install
