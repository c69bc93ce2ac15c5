"""Host<->device copy accounting through real Tensor methods. Without a GPU, the "meta" device
stands in for the accelerator (a real cross-device .to() that moves no data)."""

from __future__ import annotations

import pytest
import torch

import inferaudit_sdk as ia
from inferaudit_sdk import semconv
from inferaudit_sdk.instrumentation import TorchInstrumentor
from inferaudit_sdk.instrumentation._copies import (
    D2H,
    H2D,
    CopyTracker,
    _device_index_of,
    classify,
)
from inferaudit_sdk.instrumentation._device_timer import CpuBackend
from inferaudit_sdk.instrumentation._fake_cuda import FakeCudaBackend


def batch_span(exporter):
    (span,) = [s for s in exporter.get_finished_spans()
               if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]
    return span


@pytest.fixture
def meta_copies():
    backend = CpuBackend(threads=lambda: 1)
    inst = TorchInstrumentor(CopyTracker(lambda _t: backend, ("cuda", "meta")))
    inst.instrument(copies=True)
    yield
    inst.uninstrument()


def test_classify_directions():
    acc = ("cuda",)
    assert classify("cpu", "cuda", acc) == H2D
    assert classify("cuda", "cpu", acc) == D2H
    assert classify("cpu", "cpu", acc) is None
    assert classify("cuda", "cuda", acc) is None
    assert classify("cpu", "meta", acc) is None  # untracked device pair


def test_h2d_bytes_count_and_pageable_are_exact(spans, config, meta_copies):
    a = torch.zeros(1000, dtype=torch.float32)  # 4000 B
    b = torch.zeros(10, 10, dtype=torch.int64)  # 800 B
    c = torch.zeros(3)
    with ia.batch(model="m"):
        a.to("meta")
        b.to(device=torch.device("meta"), non_blocking=True)
        a.to(torch.float64)  # dtype only: no copy
        c.to("cpu")  # same device: no copy
        torch.empty(10, device="meta").copy_(torch.ones(10, dtype=torch.float16))  # 20 B
    s = batch_span(spans).attributes
    assert s[semconv.COPY_H2D_BYTES] == 4000 + 800 + 20
    assert s[semconv.COPY_COUNT] == 3
    # CPU tensors are pageable unless pinned (pinning needs CUDA): all three count.
    assert s[semconv.COPY_PAGEABLE_BYTES] == 4820
    assert s[semconv.COPY_H2D_TIME_NS] > 0
    assert semconv.COPY_D2H_BYTES not in s


def test_to_other_tensor_targets_its_device(spans, config, meta_copies):
    other = torch.empty(1, device="meta")
    with ia.batch(model="m"):
        torch.zeros(25, dtype=torch.float32).to(other)
    assert batch_span(spans).attributes[semconv.COPY_H2D_BYTES] == 100


def test_copies_in_a_request_span_count_there(spans, config, meta_copies):
    @ia.audited(model="m")
    def handle():
        torch.zeros(64, dtype=torch.uint8).to("meta")

    handle()
    (req,) = spans.get_finished_spans()
    assert req.attributes[semconv.COPY_H2D_BYTES] == 64


def test_outside_any_span_nothing_is_recorded(spans, config, meta_copies):
    y = torch.zeros(8).to("meta")
    assert y.device.type == "meta"
    assert spans.get_finished_spans() == ()


def test_cuda_timed_copy_is_resolved_at_span_end(spans, config):
    backend = FakeCudaBackend()
    cuda = backend.cuda
    inst = TorchInstrumentor(CopyTracker(lambda _t: backend, ("meta",)))
    inst.instrument(copies=True)
    try:
        with ia.batch(model="m"):
            torch.zeros(256, dtype=torch.float32).to("meta")
            cuda.launch(2_000)  # work queued on the stream after the copy's start event
    finally:
        inst.uninstrument()
    s = batch_span(spans).attributes
    assert s[semconv.COPY_H2D_BYTES] == 1024
    # The copy's end event was recorded before the launch: the copy itself took no fake time.
    assert s[semconv.COPY_H2D_TIME_NS] == 0


class _IndexRecorder(CpuBackend):
    """A host-clock backend that notes which device each copy was timed on."""

    def __init__(self) -> None:
        super().__init__(threads=lambda: 1)
        self.indexes: list[int | None] = []

    def interval_begin(self, device_index: int | None = None) -> int:
        self.indexes.append(device_index)
        return super().interval_begin(device_index)


def test_a_copy_is_timed_on_the_device_it_reaches(spans, config):
    backend = _IndexRecorder()
    inst = TorchInstrumentor(CopyTracker(lambda _t: backend, ("meta",)))
    inst.instrument(copies=True)
    try:
        with ia.batch(model="m"):
            torch.zeros(4).to("meta:1")
            torch.zeros(4).to(torch.device("meta", 2))
            torch.zeros(4).to(device="meta:3", non_blocking=True)
            torch.zeros(4).to("meta")  # the current device
            torch.zeros(4).to(torch.empty(1, device="meta"))  # that tensor's (no index)
    finally:
        inst.uninstrument()
    assert backend.indexes == [1, 2, 3, None, None]
    assert batch_span(spans).attributes[semconv.COPY_COUNT] == 5


def test_device_index_of_every_spelling():
    assert _device_index_of("cuda:1") == 1
    assert _device_index_of("cuda") is None
    assert _device_index_of(torch.device("cuda", 2)) == 2
    assert _device_index_of(torch.device("cuda")) is None
    assert _device_index_of(3) == 3
    assert _device_index_of(True) is None
    assert _device_index_of(None) is None


def test_cuda_interval_on_another_device_uses_that_devices_stream():
    """The fake, like CUDA, refuses an event recorded on another device's stream: the end
    event must come from the device the start event was recorded on."""
    backend = FakeCudaBackend(device_count=2)
    cuda = backend.cuda
    handle = backend.interval_begin(1)
    assert handle is not None and handle[0] == 1
    cuda.launch(3_000, cuda.current_stream(1))
    cuda.launch(5_000, cuda.current_stream(0))  # other work on device 0: not the copy's
    interval = backend.interval_end(handle)
    cuda.advance(10_000)
    assert interval.ns() == 3_000


def test_uninstrument_restores_tensor_methods():
    inst = TorchInstrumentor()
    inst.instrument(copies=True)
    assert "to" in vars(torch.Tensor)
    inst.uninstrument()
    for name in ("to", "cuda", "cpu", "copy_"):
        assert name not in vars(torch.Tensor)


def test_calls_that_copy_nothing_are_not_counted_but_copies_still_are(spans, config,
                                                                      meta_copies):
    # The fast paths for what a model's forward does on the host (casts, moves to the device
    # it is already on, host-to-host copy_) must not hide the real copy among them.
    x = torch.zeros(16, dtype=torch.float32)  # 64 B
    with ia.batch(model="m"):
        x.to(torch.device("cpu"))
        x.to(torch.float16, non_blocking=True)
        x.to("cpu", torch.float64)
        x.cpu()
        torch.empty(16).copy_(x)
        x.to(torch.device("meta"))  # the one copy
    s = batch_span(spans).attributes
    assert s[semconv.COPY_COUNT] == 1
    assert s[semconv.COPY_H2D_BYTES] == 64
