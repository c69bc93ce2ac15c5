"""The batch span names its GPU host-wide (``hw.id``, the UUID in NVML's spelling).

Processes pinned one per GPU (CUDA_VISIBLE_DEVICES=0, =1, ...) all see their GPU as CUDA device
0, so ``inferaudit.device.id`` alone made four replicas on four GPUs one device to the analyzer.
The UUID tells them apart, and says when two processes share one GPU. Through the fake CUDA
backend (its ``get_device_properties`` is the interface torch's is read by).
"""

from __future__ import annotations

import pytest
import torch

from inferaudit_sdk import _guard, semconv
from inferaudit_sdk.instrumentation import instrument_model, uninstrument_model
from inferaudit_sdk.instrumentation._fake_cuda import FakeCudaBackend
from inferaudit_sdk.samplers._fake_nvml import FakeGpu

# torch prints a GPU's UUID bare; NVML (and so the hw.* metrics' hw.id) spells it GPU-<uuid>
NVML_UUID = "GPU-3c4b1b6a-58e0-d5a4-9f2e-0123456789ab"


def _batch_spans(spans):
    return [s for s in spans.get_finished_spans()
            if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]


def _calls(backend, n: int = 1) -> None:
    model = torch.nn.Linear(4, 4)
    instrument_model(model, backend=backend)
    try:
        with torch.no_grad():
            for _ in range(n):
                backend.cuda.launch(1_000_000)
                model(torch.randn(2, 4))
    finally:
        uninstrument_model(model)


def test_the_batch_span_carries_the_gpu_uuid_in_nvml_spelling(spans, config):
    backend = FakeCudaBackend(uuids=[NVML_UUID.removeprefix("GPU-")])
    _calls(backend)
    (span,) = _batch_spans(spans)
    assert span.attributes[semconv.DEVICE_ID] == 0
    assert span.attributes[semconv.HW_ID] == NVML_UUID
    assert FakeGpu(uuid=NVML_UUID).uuid == span.attributes[semconv.HW_ID]  # joins the metrics


def test_the_uuid_is_read_once_per_device_not_per_call(spans, config):
    backend = FakeCudaBackend()
    _calls(backend, n=5)
    ids = {s.attributes[semconv.HW_ID] for s in _batch_spans(spans)}
    assert ids == {"GPU-" + backend.cuda.uuids[0]}
    assert backend.cuda.properties_read == 1
    assert backend.hw_ids == {0: "GPU-" + backend.cuda.uuids[0]}


def test_processes_pinned_to_their_own_gpu_differ_and_sharers_agree(spans, config):
    # each a process's view: CUDA device 0 on every one of them
    first, second = FakeCudaBackend(), FakeCudaBackend()
    sharer = FakeCudaBackend(uuids=list(first.cuda.uuids))
    for backend in (first, second, sharer):
        _calls(backend)
    got = [(s.attributes[semconv.DEVICE_ID], s.attributes[semconv.HW_ID])
           for s in _batch_spans(spans)]
    assert [d for d, _ in got] == [0, 0, 0]
    assert got[0][1] != got[1][1]
    assert got[2][1] == got[0][1]


def test_each_gpu_of_a_process_has_its_own_uuid():
    backend = FakeCudaBackend(device_count=2)
    t0, t1 = backend.begin(0), backend.begin(1)
    assert (t0.device_index, t1.device_index) == (0, 1)
    assert t0.hw_id != t1.hw_id
    assert {t0.hw_id, t1.hw_id} == {"GPU-" + u for u in backend.cuda.uuids}


def test_an_unreadable_uuid_is_swallowed_and_not_asked_again(spans, config, monkeypatch):
    backend = FakeCudaBackend()
    asked = []

    def broken(device=None):
        asked.append(device)
        raise RuntimeError("CUDA driver error")

    monkeypatch.setattr(backend.cuda, "get_device_properties", broken)
    _calls(backend, n=3)
    spans_ = _batch_spans(spans)
    assert len(spans_) == 3
    assert all(semconv.HW_ID not in s.attributes for s in spans_)
    assert all(s.attributes[semconv.DEVICE_ID] == 0 for s in spans_)
    assert asked == [0]
    assert _guard.error_counts().get("cuda.uuid") == 1


@pytest.mark.parametrize("printed", ["GPU-ABCDEF01-0000-4000-8000-000000000001",
                                     "abcdef01-0000-4000-8000-000000000001"])
def test_either_spelling_of_the_uuid_gives_nvmls(printed):
    backend = FakeCudaBackend(uuids=[printed])
    assert backend.begin(0).hw_id == "GPU-abcdef01-0000-4000-8000-000000000001"


def test_the_cpu_device_has_no_hw_id(spans, config):
    model = torch.nn.Linear(4, 4)
    instrument_model(model)
    try:
        with torch.no_grad():
            model(torch.randn(2, 4))
    finally:
        uninstrument_model(model)
    (span,) = _batch_spans(spans)
    assert span.attributes[semconv.DEVICE_TYPE] == "cpu"
    assert semconv.HW_ID not in span.attributes


def test_a_call_inside_graph_capture_still_names_its_gpu():
    # nothing is timed during capture, but the span must not read as another device
    backend = FakeCudaBackend()
    backend.cuda.capturing = True
    timing = backend.begin(0)
    assert timing.resolve() == {}
    assert timing.hw_id == "GPU-" + backend.cuda.uuids[0]


def test_a_captured_call_through_a_fixed_backend_names_the_current_gpu(spans, config):
    # instrument_model(backend=...) passes no device index; under capture the span must still
    # name the current device, or the analyzer reads one GPU as two (index-keyed and UUID-keyed)
    backend = FakeCudaBackend()
    backend.cuda.capturing = True
    _calls(backend)
    (span,) = _batch_spans(spans)
    assert span.attributes[semconv.DEVICE_ID] == 0
    assert span.attributes[semconv.HW_ID] == "GPU-" + backend.cuda.uuids[0]


def test_a_later_call_on_the_cpu_leaves_no_stale_gpu_uuid(spans, config):
    import inferaudit_sdk as ia

    backend = FakeCudaBackend()
    gpu_model, cpu_model = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    instrument_model(gpu_model, backend=backend)
    instrument_model(cpu_model)
    try:
        with torch.no_grad(), ia.batch(model="m", batch_size=2):
            backend.cuda.launch(1_000_000)
            gpu_model(torch.randn(2, 4))
            cpu_model(torch.randn(2, 4))
    finally:
        uninstrument_model(gpu_model)
        uninstrument_model(cpu_model)
    (span,) = _batch_spans(spans)
    assert span.attributes[semconv.DEVICE_TYPE] == "cpu"
    assert semconv.HW_ID not in span.attributes
