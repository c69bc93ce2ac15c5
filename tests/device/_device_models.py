"""Small torch modules for the device tests, in a module of their own so they pickle
(a class defined in a conftest cannot: several conftest modules share that name), and one
instrumented call on the fake CUDA once a sampler has ticked."""

from __future__ import annotations

import time
from typing import Any

import torch


class MLP(torch.nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 32, d_out: int = 4) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d_in, d_hidden), torch.nn.ReLU(), torch.nn.Linear(d_hidden, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fake_cuda_call_span(sampler: Any, spans: Any) -> Any:
    """The one span of an instrumented call on the fake CUDA device 0, made after the NVML
    sampler's first tick (so the span's window has a sample to aggregate). The fake CUDA
    device is the sampler's first GPU: the same UUID, as CUDA and NVML report one GPU."""
    from inferaudit_sdk.instrumentation import instrument_model, uninstrument_model
    from inferaudit_sdk.instrumentation._fake_cuda import FakeCudaBackend

    deadline = time.monotonic() + 2
    while sampler.ticks < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    model = torch.nn.Linear(4, 4)
    bare = sampler.gpus[0].uuid.removeprefix("GPU-")  # torch prints it without the prefix
    instrument_model(model, backend=FakeCudaBackend(uuids=[bare]))
    try:
        with torch.no_grad():
            model(torch.randn(2, 4))
    finally:
        uninstrument_model(model)
    (span,) = spans.get_finished_spans()
    return span
