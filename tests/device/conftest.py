"""Fixtures for the device instrumentation tests: a real OpenTelemetry SDK with in-memory
exporters, the example's tiny GPT-2, a small MLP, and clean process-wide state per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
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
if str(ROOT) not in sys.path:  # the example package lives at the repository root
    sys.path.insert(0, str(ROOT))


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
def _clean_state():
    _guard.reset_for_tests()
    yield
    nvml.reset_for_tests()


@pytest.fixture(scope="session")
def tiny_gpt2():
    from examples.tiny_gpt2 import TinyGPT2

    torch.set_num_threads(1)  # stable, and what the example server uses
    return TinyGPT2()


class MLP(torch.nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 32, d_out: int = 4) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d_in, d_hidden), torch.nn.ReLU(), torch.nn.Linear(d_hidden, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP().eval()

