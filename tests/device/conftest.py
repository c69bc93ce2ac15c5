"""Fixtures for the device instrumentation tests: a real OpenTelemetry SDK with in-memory
exporters, the example's tiny GPT-2, a small MLP, and clean process-wide state per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _device_models import MLP
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_sdk import _guard, _settings, _tracing
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.samplers import nvml

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / ".." / "shared"


@pytest.fixture
def spans():
    """In-memory span exporter bound to the SDK's tracer for this test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.use_tracer_provider(provider)
    yield exporter
    _tracing.use_tracer_provider(None)
    provider.shutdown()


@pytest.fixture
def metric_reader():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


@pytest.fixture
def config(tmp_path):
    """Install an AuditConfig (trace_dir in tmp_path); call with overrides to change it."""

    def install(**overrides):
        overrides.setdefault("trace_dir", str(tmp_path / "traces"))
        overrides.setdefault("nvml_enabled", False)
        cfg = AuditConfig.from_env({}, **overrides)
        _settings.set_config(cfg)
        return cfg

    install()
    yield install
    _settings.reset_for_tests()


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    """Fresh fault counts and sampler per test; the fake NVML's GPUs all visible whatever the
    host's CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER say (a test that needs them sets them)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    _guard.reset_for_tests()
    yield
    nvml.reset_for_tests()


@pytest.fixture(scope="session")
def tiny_gpt2():
    from examples.tiny_gpt2 import TinyGPT2

    torch.set_num_threads(1)  # stable, and what the example server uses
    return TinyGPT2()


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP().eval()

