"""instrument_model on real torch modules: the example's tiny GPT-2 and a small MLP, on CPU,
plus the CUDA paths through the fake CUDA runtime."""

from __future__ import annotations

import pytest
import torch

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, semconv
from inferaudit_sdk.instrumentation import (
    _span_state,
    instrument_generate,
    instrument_model,
    is_instrumented,
    uninstrument_generate,
    uninstrument_model,
)
from inferaudit_sdk.instrumentation._fake_cuda import FakeCudaBackend

MS = 1_000_000


def role(exporter, name):
    return [s for s in exporter.get_finished_spans()
            if s.attributes.get(semconv.SPAN_ROLE) == name]


@pytest.fixture
def gpt2(tiny_gpt2):
    instrument_model(tiny_gpt2.model, model="gpt2-tiny")
    yield tiny_gpt2
    uninstrument_model(tiny_gpt2.model)


def test_forward_opens_a_batch_span_with_shape_and_cpu_device_time(spans, config, gpt2):
    ids, mask = gpt2.pad_left([[5, 6, 7], [1, 2, 3, 4, 5, 6]])
    with torch.inference_mode():
        out = gpt2.model(ids, attention_mask=mask)
    assert out.logits.shape == (2, 6, gpt2.spec.vocab_size)
    (span,) = role(spans, semconv.ROLE_BATCH)
    a = span.attributes
    assert span.name == "batch gpt2-tiny"
    assert a[semconv.BATCH_SIZE] == 2
    assert a[semconv.BATCH_PADDED_TOKENS] == 12
    assert a[semconv.BATCH_INPUT_TOKENS] == 9
    assert a[semconv.BATCH_PADDING_RATIO] == pytest.approx(0.25)
    assert a[semconv.DEVICE_TYPE] == "cpu"
    assert a[semconv.DEVICE_CPU_THREADS] == torch.get_num_threads()
    wall = a[semconv.DEVICE_WALL_TIME_NS]
    assert 0 < a[semconv.DEVICE_TIME_NS] <= wall <= span.end_time - span.start_time
    assert a[semconv.DEVICE_CPU_TIME_NS] > 0
    assert a[semconv.DEVICE_CALLS] == 1
    assert semconv.BATCH_OUTPUT_TOKENS not in a  # a forward produces logits, not tokens
    assert _span_state.pending_count() == 0


def test_cpu_calls_are_accounted_at_once_and_summed_in_an_open_batch(spans, config, gpt2):
    # Host clocks need no resolver at span end: the state that holds device events for it is
    # not even created, and two calls in one batch add up.
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode(), ia.batch(model="gpt2-tiny", batch_size=1):
        gpt2.model(ids)
        gpt2.model(ids)
        assert _span_state.pending_count() == 0
    (span,) = role(spans, semconv.ROLE_BATCH)
    a = span.attributes
    assert a[semconv.DEVICE_CALLS] == 2
    assert a[semconv.BATCH_PADDED_TOKENS] == 4  # the first call's inputs only
    assert a[semconv.BATCH_INPUT_TOKENS] == 4  # no mask: every position is real
    assert semconv.BATCH_PADDING_RATIO in a and a[semconv.BATCH_PADDING_RATIO] == 0.0
    assert 0 < a[semconv.DEVICE_TIME_NS] <= a[semconv.DEVICE_WALL_TIME_NS]
    assert a[semconv.DEVICE_WALL_TIME_NS] <= span.end_time - span.start_time


def test_generate_is_measured_once_and_counts_generated_tokens(spans, config, gpt2):
    prompts = [[5, 6, 7], [1, 2, 3, 4]]
    outs = gpt2.generate(prompts, [3, 5])
    assert [len(o) for o in outs] == [3, 5]
    (span,) = role(spans, semconv.ROLE_BATCH)  # the inner forwards opened nothing
    a = span.attributes
    assert a[semconv.DEVICE_CALLS] == 1
    # A static batch decodes max(max_new_tokens) steps for every row: 2 x 5.
    assert a[semconv.BATCH_OUTPUT_TOKENS] == 10
    assert a[semconv.BATCH_INPUT_TOKENS] == 7
    assert a[semconv.BATCH_PADDED_TOKENS] == 8


def test_generate_counts_stop_at_eos(spans, config, tiny_gpt2):
    model = tiny_gpt2.model
    instrument_model(model)
    try:
        ids = torch.tensor([[3, 4, 5]])
        with torch.inference_mode():
            greedy = model.generate(ids, max_new_tokens=6, do_sample=False,
                                    pad_token_id=tiny_gpt2.spec.pad_token_id)
        first_new = int(greedy[0, 3])
        spans.clear()
        # Declare the first generated id to be EOS: generation stops right after it.
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=6, do_sample=False,
                                 eos_token_id=first_new, pad_token_id=first_new)
    finally:
        uninstrument_model(model)
    (span,) = role(spans, semconv.ROLE_BATCH)
    expected = int(out.shape[1]) - 3
    assert expected == 1
    assert span.attributes[semconv.BATCH_OUTPUT_TOKENS] == expected


def test_call_inside_a_request_is_its_child_and_linked(spans, config, gpt2):
    @ia.audited(model="gpt2-tiny")
    def handle(prompt):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            return gpt2.model(ids).logits.shape

    handle([1, 2, 3])
    (req,) = role(spans, semconv.ROLE_REQUEST)
    (batch,) = role(spans, semconv.ROLE_BATCH)
    assert batch.parent.span_id == req.context.span_id
    assert [link.context.span_id for link in batch.links] == [req.context.span_id]
    assert batch.attributes[semconv.BATCH_SIZE] == 1


def test_calls_inside_a_server_batch_accumulate_into_it(spans, config, gpt2):
    ids = torch.tensor([[1, 2, 3, 4]])
    with ia.batch(model="gpt2-tiny", batch_size=1) as b, torch.inference_mode():
        gpt2.model(ids)
        gpt2.model(ids[:, -1:])  # a decode step feeding back one token
        b.record(output_tokens=1)
    (span,) = role(spans, semconv.ROLE_BATCH)
    a = span.attributes
    assert a[semconv.DEVICE_CALLS] == 2
    assert a[semconv.BATCH_PADDED_TOKENS] == 4  # shape of the first call only
    assert a[semconv.BATCH_OUTPUT_TOKENS] == 1  # what the server recorded wins
    assert a[semconv.DEVICE_TIME_NS] <= a[semconv.DEVICE_WALL_TIME_NS]


def test_recorded_token_count_beats_the_accumulated_one_in_the_single_write(spans, config,
                                                                            gpt2):
    ids = torch.tensor([[1, 2, 3, 4]])
    with ia.batch(model="gpt2-tiny", batch_size=1) as b, torch.inference_mode():
        b.record(input_tokens=3)  # the server knows one position is padding
        gpt2.model(ids)  # accumulates 4 input tokens (no mask)
    (span,) = role(spans, semconv.ROLE_BATCH)
    a = span.attributes
    assert a[semconv.BATCH_INPUT_TOKENS] == 3
    assert a[semconv.BATCH_PADDED_TOKENS] == 4
    assert a[semconv.BATCH_PADDING_RATIO] == pytest.approx(0.25)


def test_mlp_batch_size_from_leading_dimension(spans, config, mlp):
    instrument_model(mlp, model="mlp")
    try:
        with torch.no_grad():
            mlp(torch.randn(8, 16))
    finally:
        uninstrument_model(mlp)
    (span,) = role(spans, semconv.ROLE_BATCH)
    assert span.attributes[semconv.BATCH_SIZE] == 8
    assert semconv.BATCH_PADDED_TOKENS not in span.attributes
    assert span.attributes[semconv.DEVICE_TYPE] == "cpu"


def test_user_exception_is_recorded_and_reraised_untouched(spans, config, mlp):
    instrument_model(mlp)
    try:
        with pytest.raises(RuntimeError) as info:
            mlp(torch.randn(2, 3))  # wrong width
    finally:
        uninstrument_model(mlp)
    assert "mat1 and mat2" in str(info.value)
    (span,) = role(spans, semconv.ROLE_BATCH)
    assert span.status.is_ok is False
    assert span.attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert _span_state.pending_count() == 0


def test_uninstrument_restores_the_module(spans, config, mlp):
    original = mlp.forward
    instrument_model(mlp)
    instrument_model(mlp)  # idempotent
    assert is_instrumented(mlp)
    uninstrument_model(mlp)
    assert not is_instrumented(mlp)
    assert mlp.forward == original
    assert "forward" not in vars(mlp)
    assert torch.Tensor.to is torch._C.TensorBase.to  # process-wide patches gone too
    with torch.no_grad():
        mlp(torch.randn(1, 16))
    assert role(spans, semconv.ROLE_BATCH) == []


def test_disabled_config_means_no_spans(spans, config, mlp):
    config(enabled=False)
    instrument_model(mlp)
    try:
        with torch.no_grad():
            y = mlp(torch.randn(4, 16))
    finally:
        uninstrument_model(mlp)
    assert y.shape == (4, 4)
    assert spans.get_finished_spans() == ()


def test_a_faulty_backend_never_reaches_the_model(spans, config, mlp):
    class Broken:
        device_type = "cuda"

        def begin(self, device_index):
            raise RuntimeError("driver on fire")

    instrument_model(mlp, backend=Broken())
    try:
        with torch.no_grad():
            y = mlp(torch.randn(3, 16))
    finally:
        uninstrument_model(mlp)
    assert y.shape == (3, 4)
    assert _guard.error_counts().get("torch.begin") == 1
    (span,) = role(spans, semconv.ROLE_BATCH)  # the span itself still happened
    assert span.attributes[semconv.BATCH_SIZE] == 3


# --- CUDA paths through the fake runtime ----------------------------------------------------
class FakeGpuModel(torch.nn.Module):
    """Launches fake kernels: 5 ms on the current stream, 3 ms on a side stream."""

    def __init__(self, cuda, side_ms=3):
        super().__init__()
        self.cuda = cuda
        self.side = cuda.Stream()
        self.side_ms = side_ms
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        self.cuda.launch(5 * MS)
        if self.side_ms:
            with self.cuda.stream(self.side):
                self.cuda.launch(self.side_ms * MS)
        return self.lin(x)


def test_cuda_events_on_two_streams(spans, config):
    backend = FakeCudaBackend()
    cuda = backend.cuda
    model = FakeGpuModel(cuda, side_ms=8)
    instrument_model(model, backend=backend)
    try:
        with torch.no_grad():
            model(torch.randn(2, 4))
    finally:
        uninstrument_model(model)
    (span,) = role(spans, semconv.ROLE_BATCH)
    a = span.attributes
    assert a[semconv.DEVICE_TYPE] == "cuda"
    assert a[semconv.DEVICE_ID] == 0
    assert a[semconv.DEVICE_STREAMS] == 2
    assert a[semconv.DEVICE_TIME_NS] == 8 * MS  # union of 0..5 and 0..8
    # The device had not finished when the span ended: the resolver waited, once per event.
    assert a[semconv.DEVICE_RESOLVE_WAIT_NS] >= 0
    assert cuda.host_waits >= 1


def test_cuda_call_resolved_without_wait_when_device_is_done(spans, config):
    backend = FakeCudaBackend()
    cuda = backend.cuda
    model = FakeGpuModel(cuda, side_ms=0)
    instrument_model(model, backend=backend)
    try:
        with ia.batch(model="fake") as _b, torch.no_grad():
            model(torch.randn(1, 4))
            cuda.advance(100 * MS)  # e.g. the server read the output back meanwhile
    finally:
        uninstrument_model(model)
    (span,) = role(spans, semconv.ROLE_BATCH)
    assert span.attributes[semconv.DEVICE_TIME_NS] == 5 * MS
    assert semconv.DEVICE_RESOLVE_WAIT_NS not in span.attributes
    assert cuda.host_waits == 0


def test_global_generate_patch_covers_uninstrumented_models(spans, config, tiny_gpt2):
    instrument_generate()
    try:
        ids = torch.tensor([[1, 2, 3]])
        with torch.inference_mode():
            tiny_gpt2.model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False,
                                     pad_token_id=tiny_gpt2.spec.pad_token_id)
    finally:
        uninstrument_generate()
    (span,) = role(spans, semconv.ROLE_BATCH)
    assert span.attributes[semconv.BATCH_OUTPUT_TOKENS] == 2
    import wrapt
    from transformers.generation.utils import GenerationMixin

    assert not isinstance(vars(GenerationMixin)["generate"], wrapt.FunctionWrapper)


def test_instrumented_model_survives_deepcopy_and_pickling(spans, config, mlp):
    import copy
    import io

    instrument_model(mlp, model="mlp")
    try:
        twin = copy.deepcopy(mlp)
        buf = io.BytesIO()
        torch.save(mlp, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        x = torch.randn(5, 16)
        with torch.no_grad():
            assert torch.equal(twin(x), mlp(x))
            assert torch.equal(loaded(x), mlp(x))
    finally:
        uninstrument_model(mlp)
    sizes = [s.attributes[semconv.BATCH_SIZE] for s in role(spans, semconv.ROLE_BATCH)]
    assert len(sizes) >= 2 and set(sizes) == {5}  # the copy is instrumented too


def test_uninstrumenting_a_copy_keeps_the_originals_patches(spans, config, mlp, monkeypatch):
    import copy

    from inferaudit_sdk.instrumentation import torch as torch_instr

    monkeypatch.setattr(torch_instr, "_other_accelerator", lambda: True)  # copies can happen
    instrument_model(mlp, model="mlp")
    try:
        twin = copy.deepcopy(mlp)
        uninstrument_model(twin)
        assert not is_instrumented(twin)
        assert is_instrumented(mlp)
        assert torch_instr._instrumentor.is_instrumented("copies")
    finally:
        uninstrument_model(mlp)
    assert not torch_instr._instrumentor.is_instrumented("copies")


def test_an_existing_instance_forward_is_kept(spans, config, mlp):
    calls = []
    original = mlp.forward

    def hooked(x):
        calls.append(1)
        return original(x)

    mlp.forward = hooked  # e.g. another library's hook
    instrument_model(mlp)
    with torch.no_grad():
        mlp(torch.randn(2, 16))
    uninstrument_model(mlp)
    assert calls == [1]
    assert mlp.forward is hooked
    assert len(role(spans, semconv.ROLE_BATCH)) == 1


def test_wrapped_forward_keeps_its_signature_so_generate_passes_position_ids(
    spans, config, tiny_gpt2
):
    """Hugging Face generate filters its inputs by inspect.signature(model.forward): an entry
    that hides the signature drops position_ids and changes what a left-padded batch computes."""
    import inspect

    before = inspect.signature(tiny_gpt2.model.forward)
    jobs = [(tiny_gpt2.prompt_ids(4 + 7 * i, seed=i), 2 + i) for i in range(4)]
    prompts, lengths = [p for p, _ in jobs], [n for _, n in jobs]
    plain = tiny_gpt2.generate(prompts, lengths)
    instrument_model(tiny_gpt2.model, model="gpt2-tiny")
    try:
        assert inspect.signature(tiny_gpt2.model.forward) == before
        assert tiny_gpt2.generate(prompts, lengths) == plain
    finally:
        uninstrument_model(tiny_gpt2.model)


def test_device_follows_a_replaced_parameter():
    """The cached first parameter is checked against its owner: a tensor swapped in
    (``load_state_dict(assign=True)``, overwriting conversions) gives the new device."""
    from inferaudit_sdk.instrumentation._model_call import device_of as _device_of
    from inferaudit_sdk.instrumentation.torch import _Spec

    lin = torch.nn.Linear(2, 2)
    spec = _Spec(lin, "m", None, None)
    assert _device_of(spec) == ("cpu", None)
    lin.weight = torch.nn.Parameter(torch.empty(2, 2, device="meta"))
    assert _device_of(spec) == ("meta", None)
    buffers_only = torch.nn.Module()
    buffers_only.register_buffer("b", torch.zeros(1, device="meta"))
    assert _device_of(_Spec(buffers_only, "m", None, None)) == ("meta", None)
    assert _device_of(_Spec(torch.nn.Module(), "m", None, None)) == ("cpu", None)


@pytest.mark.parametrize("how", ["compile_then_call", "module_compile"])
def test_torch_compile_keeps_the_batch_span_and_still_compiles_the_forward(spans, config, mlp,
                                                                           how):
    """Dynamo must not trace our bookkeeping (it recursed without end): the entry runs eagerly
    while the model's own forward is handed to the compiler backend."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    instrument_model(mlp, model="mlp")
    try:
        x = torch.randn(4, 16)
        want = type(mlp).forward(mlp, x)
        if how == "module_compile":
            mlp.compile(backend=backend)
            run = mlp
        else:
            run = torch.compile(mlp, backend=backend)
        with torch.no_grad():
            got = [run(x), run(x)]
    finally:
        uninstrument_model(mlp)
        torch._dynamo.reset()
    assert all(torch.allclose(g, want) for g in got)
    assert graphs, "the model's forward was not compiled"
    batch = role(spans, semconv.ROLE_BATCH)
    assert len(batch) == 2 and all(s.attributes[semconv.BATCH_SIZE] == 4 for s in batch)


def test_a_data_parallel_replica_runs_its_own_weights_and_is_instrumented(spans, config, mlp):
    """DataParallel replicates by copying the module's __dict__: the replica's entries must be
    bound to the replica (its weights, its device), not to the module it came from."""
    instrument_model(mlp, model="mlp")
    try:
        replica = mlp._replicate_for_data_parallel()
        replica.net = torch.nn.Sequential(torch.nn.Linear(16, 4))  # the replica's own layers
        torch.nn.init.zeros_(replica.net[0].weight)
        torch.nn.init.ones_(replica.net[0].bias)
        assert replica.forward.__self__ is replica
        x = torch.randn(2, 16)
        with torch.no_grad():
            got = replica(x)
        assert torch.equal(got, torch.ones(2, 4))  # not the original's output
        assert is_instrumented(replica)
        twice = replica._replicate_for_data_parallel()
        assert twice.forward.__self__ is twice
    finally:
        uninstrument_model(mlp)
    assert "_replicate_for_data_parallel" not in vars(mlp)
    assert len(role(spans, semconv.ROLE_BATCH)) == 1


def test_tensor_methods_are_patched_only_where_an_accelerator_can_run(spans, config, mlp,
                                                                       monkeypatch):
    # on a host with no accelerator no copy can cross a bus: the process-wide Tensor patches
    # would only tax every .to() the process makes (the model's own casts among them)
    from inferaudit_sdk.instrumentation import torch as torch_instr

    originals = {name: vars(torch.Tensor).get(name) for name in ("to", "cuda", "cpu", "copy_")}
    monkeypatch.setattr(torch_instr, "_cuda_available", lambda: False)
    monkeypatch.setattr(torch_instr, "_other_accelerator", lambda: False)
    instrument_model(mlp, model="mlp")
    try:
        assert not torch_instr._instrumentor.is_instrumented("copies")
        assert {name: vars(torch.Tensor).get(name) for name in originals} == originals
        mlp(torch.randn(2, 16))  # still measured
        assert role(spans, semconv.ROLE_BATCH)
    finally:
        uninstrument_model(mlp)
    monkeypatch.setattr(torch_instr, "_other_accelerator", lambda: True)  # an MPS host, say
    instrument_model(mlp, model="mlp")
    try:
        assert torch_instr._instrumentor.is_instrumented("copies")
        assert vars(torch.Tensor).get("to") is not originals["to"]
    finally:
        uninstrument_model(mlp)
    assert {name: vars(torch.Tensor).get(name) for name in originals} == originals


def test_a_request_takes_its_exact_output_count_from_the_generate_call_it_made(
        spans, config, tiny_gpt2):
    # The README's shape: @audited around model.generate(..., num_return_sequences=4) with no
    # pad or EOS id among the function's arguments. The request counted the rows' full width
    # (padding after each row's EOS included); its batch span counted them exactly.
    model = tiny_gpt2.model
    instrument_model(model, model="tiny")
    eos = list(range(2, 400))  # most ids end a row: rows stop at different lengths

    @ia.audited(model="tiny")
    def generate(input_ids, max_new_tokens=8):
        return model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=True,
                              num_return_sequences=4, eos_token_id=eos, pad_token_id=0)

    torch.manual_seed(3)
    try:
        with torch.inference_mode():
            out = generate(torch.tensor([[3, 4, 5, 6, 7]]))
    finally:
        uninstrument_model(model)
    new = out[:, 5:].tolist()
    exact = 0
    for row in new:  # each row up to and including its first EOS
        ends = [i for i, t in enumerate(row) if t in set(eos)]
        exact += ends[0] + 1 if ends else len(row)
    assert exact < out[:, 5:].numel()  # some padding to over-count
    (batch,) = role(spans, semconv.ROLE_BATCH)
    (request,) = role(spans, semconv.ROLE_REQUEST)
    assert batch.attributes[semconv.BATCH_OUTPUT_TOKENS] == exact
    assert request.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == exact
