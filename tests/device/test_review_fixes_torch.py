"""Regressions from the review: TorchScript modules and non-modules given to instrument_model,
and ``.cuda()`` on a CPU-only torch build inside an audited span."""

from __future__ import annotations

import logging

import pytest
import torch

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, semconv
from inferaudit_sdk.instrumentation import instrument_model, is_instrumented, uninstrument_model

# torch.jit is deprecated, not gone: users still hand us traced models.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


class Outer(torch.nn.Module):
    """An eager module around a TorchScript one: the eager forward is what gets wrapped."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.lin(x))


def _batch_spans(exporter):
    return [s for s in exporter.get_finished_spans()
            if s.attributes.get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "inferaudit_sdk" and r.levelno == logging.WARNING]


# --------------------------------------------------------------------------------------------
# 1. TorchScript: one warning, returned unchanged, every call still works
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda x: torch.jit.trace(Doubler(), x),
    lambda x: torch.jit.script(Doubler()),
], ids=["trace", "script"])
def test_torchscript_module_is_left_uninstrumented_with_one_warning(spans, config, caplog, make):
    x = torch.ones(2, 3)
    scripted = make(x)
    expected = scripted(x)
    with caplog.at_level(logging.WARNING, logger="inferaudit_sdk"):
        out = instrument_model(scripted, model="scripted")
    assert out is scripted
    assert not is_instrumented(scripted)
    (warning,) = _warnings(caplog)
    assert "TorchScript" in warning.getMessage()
    with ia.batch(model="outer"):
        for _ in range(3):
            assert torch.equal(scripted(x), expected)
    assert torch.equal(scripted(x), expected)  # outside any span too
    assert _guard.error_counts() == {}
    # Only the user's own batch: the scripted calls opened none of their own.
    assert [s.name for s in _batch_spans(spans)] == ["batch outer"]
    assert uninstrument_model(scripted) is scripted


def test_eager_module_around_a_traced_one_is_still_instrumented(spans, config):
    x = torch.ones(2, 3)
    model = Outer(torch.jit.trace(Doubler(), x))
    instrument_model(model, model="outer")
    try:
        model(x)
    finally:
        uninstrument_model(model)
    (span,) = _batch_spans(spans)
    assert span.attributes[semconv.DEVICE_CALLS] == 1
    assert _guard.error_counts() == {}


# --------------------------------------------------------------------------------------------
# 2. Not a module instance: a TypeError that names the argument and what was given
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given,fragment", [
    (None, "got None"),
    (torch.nn.Linear, "the class torch.nn.modules.linear.Linear"),
    ("model.pt", "got a str"),
    (Doubler().forward, "got a method"),
])
def test_a_non_module_is_a_clear_type_error(given, fragment):
    with pytest.raises(TypeError) as info:
        instrument_model(given)
    msg = str(info.value)
    assert "instrument_model(module=...) needs a torch.nn.Module instance" in msg
    assert fragment in msg


def test_passing_the_class_changes_nothing_on_it():
    before = dict(vars(torch.nn.Linear))
    with pytest.raises(TypeError):
        instrument_model(torch.nn.Linear)
    assert dict(vars(torch.nn.Linear)) == before


def test_without_torch_the_error_names_the_missing_extra(monkeypatch):
    # the SDK's core install has no torch: say so instead of a bare ModuleNotFoundError
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees without it
    with pytest.raises(ImportError) as info:
        instrument_model(object())
    assert "needs torch" in str(info.value) and ".[torch]" in str(info.value)


# --------------------------------------------------------------------------------------------
# 3. .cuda() on a CPU-only build: the user's error, untouched, and no fault of ours
# --------------------------------------------------------------------------------------------
def _uninstrumented_error(fn):
    try:
        fn()
    except Exception as exc:  # what torch itself raises, with no instrumentation involved
        return type(exc), str(exc)
    pytest.fail("expected torch to refuse a CUDA copy on a CPU-only build")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch build without CUDA")
@pytest.mark.parametrize("copy", [
    lambda t: t.cuda(),
    lambda t: t.to("cuda"),
    lambda t: t.to(torch.device("cuda", 0), non_blocking=True),
], ids=["cuda()", "to(str)", "to(device)"])
def test_cuda_copy_on_a_cpu_build_raises_the_users_error_and_counts_no_fault(
        spans, config, mlp, copy):
    x = torch.ones(4)
    exc_type, message = _uninstrumented_error(lambda: copy(x))
    instrument_model(mlp)  # installs the process-wide Tensor copy wrappers
    try:
        @ia.audited(model="m")
        def handler():
            return copy(x)

        with pytest.raises(exc_type) as info:
            handler()
    finally:
        uninstrument_model(mlp)
    assert str(info.value) == message
    assert _guard.error_counts() == {}
    (req,) = spans.get_finished_spans()
    assert req.attributes[semconv.ERROR_TYPE] == exc_type.__qualname__
    assert semconv.COPY_COUNT not in req.attributes  # the copy never happened


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_copy_on_a_gpu_is_still_timed_on_the_device(spans, config, mlp):
    instrument_model(mlp)
    try:
        @ia.audited(model="m")
        def handler():
            y = torch.ones(1 << 20).cuda()
            return y.cpu()

        handler()
    finally:
        uninstrument_model(mlp)
    assert _guard.error_counts() == {}
    (req,) = spans.get_finished_spans()
    a = req.attributes
    assert a[semconv.COPY_H2D_BYTES] == 4 << 20
    assert a[semconv.COPY_D2H_BYTES] == 4 << 20
    assert a[semconv.COPY_COUNT] == 2
    assert a[semconv.COPY_H2D_TIME_NS] > 0
    assert a[semconv.COPY_D2H_TIME_NS] > 0
