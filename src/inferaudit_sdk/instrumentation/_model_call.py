"""One instrumented model call: open (or join) the batch span, time the device, account for
the call's inputs and outputs, and end the span it opened.

:func:`run` is what an instrumented ``forward``/``generate`` entry calls (``torch.py`` installs
the entries). Per outermost call it finds batch size and tokens in the arguments
(``_inputs``), starts a :class:`~._device_timer.DeviceBackend` timing, a GPU window on the NVML
sampler and, 1 in N calls, the profiler; when the call returns it stops them and writes what
it learnt to the batch span: host-clock numbers at once, device events and mask sums through
resolvers that run when the span ends. Nested instrumented calls (``generate`` → ``forward``)
go straight through. Every step is guarded: a fault is counted, never raised into the model.
"""

from __future__ import annotations

import logging
import os
import threading
from time import time_ns
from typing import Any

from inferaudit_sdk import _active, _batch, _settings, semconv
from inferaudit_sdk._guard import guarded, swallow
from inferaudit_sdk.instrumentation import _profiler_sampling as _prof
from inferaudit_sdk.instrumentation._device_timer import default_backend
from inferaudit_sdk.instrumentation._inputs import (
    CallInputs,
    eos_of,
    generated_tokens,
    inspect_call,
)
from inferaudit_sdk.instrumentation._patches import CALL
from inferaudit_sdk.instrumentation._span_state import state_for

_logger = logging.getLogger("inferaudit_sdk")
_CALL = CALL
_current = _active.current
_open_batch = _batch.open_batch
_close_batch = _batch.close_batch
_get_config = _settings.get_config
_ROLE_BATCH = semconv.ROLE_BATCH
# device type -> DeviceBackend, a lock-free copy of _device_timer's process-wide defaults.
_backends: dict[str, Any] = {}


class _Call:
    __slots__ = ("active", "eos", "gpu", "inputs", "is_generate", "opened", "prof", "spec",
                 "timing", "token")

    def __init__(self, spec: Any, inputs: CallInputs, is_generate: bool) -> None:
        self.active: Any = None
        self.opened: Any = None  # open_batch()'s result when this call opened the batch span
        self.eos: Any = None
        self.gpu: Any = None
        self.inputs: CallInputs | None = inputs
        self.is_generate = is_generate
        self.prof: Any = None
        self.spec: Any = spec  # torch._Spec
        self.timing: Any = None
        self.token: Any = None


def _first_tensor(module: Any) -> tuple[dict[str, Any], str, Any] | None:
    """(owning dict, name, tensor) of the module's first parameter, else its first buffer."""
    for slot in ("_parameters", "_buffers"):
        for mod in module.modules():
            owner = getattr(mod, slot, None) or {}
            for name, tensor in owner.items():
                if tensor is not None:
                    return owner, name, tensor
    return None


def device_of(spec: Any) -> tuple[str, int | None]:
    """The module's device, from its first parameter (or buffer). The tensor is cached with
    the dict that owns it: ``module.to(...)`` moves it in place (its ``.device`` stays
    current), and a replaced tensor (``load_state_dict(assign=True)``, overwriting
    conversions) is noticed by one dict lookup and looked up again."""
    ref = spec.param
    if ref is None or ref[0].get(ref[1]) is not ref[2]:
        try:
            ref = _first_tensor(spec.module)
        except Exception:
            ref = None
        spec.param = ref
        if ref is None:
            return "cpu", None
    p = ref[2]
    if p.is_cpu:  # a C-level flag: reading .device builds a torch.device object
        return "cpu", None
    dev = p.device
    return dev.type, dev.index


_profile_lock = threading.Lock()
_profile_sampler: tuple[int, _prof.ProfileSampler] | None = None


def _new_profile_sampler() -> None:
    """A forked child starts with a sampler of its own: the parent's may be busy with a trace
    that only the parent's export worker would release."""
    global _profile_lock, _profile_sampler
    _profile_lock = threading.Lock()
    _profile_sampler = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_profile_sampler)


def _sampler_for(every_n: int) -> _prof.ProfileSampler:
    global _profile_sampler
    cur = _profile_sampler
    if cur is None or cur[0] != every_n:
        with _profile_lock:
            cur = _profile_sampler
            if cur is None or cur[0] != every_n:
                cur = _profile_sampler = (every_n, _prof.ProfileSampler(every_n))
    return cur[1]


_nvml: Any = None  # inferaudit_sdk.samplers.nvml, imported on the first CUDA call


def _gpu_sampler(device_index: int | None, hw_id: str | None) -> tuple[Any, int] | None:
    global _nvml
    if _nvml is None:  # an import statement here would cost a package lookup per call
        from inferaudit_sdk.samplers import nvml

        _nvml = nvml
    sampler = _nvml.get_sampler()
    if sampler is None:
        return None
    idx = _nvml_index(sampler, device_index or 0, hw_id)
    return (sampler, idx) if idx >= 0 else None  # -1: a GPU the sampler does not sample


def _nvml_index(sampler: Any, cuda_index: int, hw_id: str | None) -> int:
    """CUDA and NVML number GPUs differently (CUDA_VISIBLE_DEVICES, ordering): map by UUID,
    the ``hw_id`` the call's backend read from its own CUDA module (a fake one in tests, so a
    test on a GPU host maps the fake's device, not the real GPU's). A GPU the sampler does not
    sample gets -1 (no counters), never another GPU's; no UUID: the same numbering."""
    idx = sampler.cuda_indices.get(cuda_index)
    if idx is None:
        idx = cuda_index
        if hw_id is not None:
            try:
                found = sampler.index_for_uuid(hw_id)
                if found is None:
                    _logger.debug("inferaudit: CUDA device %d (%s) is not among the GPUs "
                                  "NVML samples here; its spans get no GPU counters",
                                  cuda_index, hw_id)
                idx = -1 if found is None else found
            except Exception as exc:
                swallow("torch.gpu_uuid", exc)
        sampler.cuda_indices[cuda_index] = idx
    return idx


def _prepare_for_cuda_graphs(spec: Any) -> None:
    """Sampling turned on after ``instrument_model`` (a later ``configure(mode="audit")``), or
    a model moved to the GPU since: the one empty CUDA profiler session runs at the model's
    first eager CUDA call, before a server captures its graphs (never inside a capture), and
    before the call's span opens, so the call is not timed with it. A batch span the server
    opened around the call does hold it, and is marked as profiled."""
    try:
        if device_of(spec)[0] != "cuda":
            return
        backend = _backends.get("cuda")
        if backend is None:
            backend = _backends["cuda"] = default_backend("cuda")
        if backend.capturing():
            return
    except Exception as exc:
        swallow("profile.cuda_graphs", exc)
        return
    if guarded("profile.cuda_graphs", _prof.prepare_for_cuda_graphs):
        active = _current()
        if active is not None and active.role == _ROLE_BATCH and active.recording:
            active.attributes[semconv.PROFILE_SAMPLED] = True


def begin(spec: Any, args: Any, kwargs: Any, is_generate: bool) -> _Call | None:
    """Open (or join) the batch span and mark the call as running. Only what cannot fail is
    done between entering the span and setting the call marker, so neither can leak."""
    cfg = _settings._config or _get_config()  # the attribute: a frame less per call
    if not cfg.enabled:
        return None
    if cfg.profile_interval > 0 and spec.backend is None and not _prof.cuda_graphs_prepared():
        _prepare_for_cuda_graphs(spec)
    inputs = inspect_call(args, kwargs)
    call = _Call(spec, inputs, is_generate)
    if is_generate:
        call.eos = eos_of(spec.module, kwargs)
    active = _current()
    if active is None or active.role != _ROLE_BATCH:
        opened = call.opened = _open_batch((), spec.model, spec.operation, inputs.batch_size)
        active = opened[0]
    call.active = active
    call.token = _CALL.set(call)
    if active is not None and active.recording:
        try:
            _start_measuring(call, active, cfg)
        except Exception as exc:
            swallow("torch.begin", exc)
    return call


def _start_measuring(call: _Call, active: Any, cfg: Any) -> None:
    spec = call.spec
    assert spec is not None
    backend = spec.backend
    if backend is not None:
        device_index = None
        device_type = backend.device_type
    else:
        device_type, device_index = device_of(spec)
        backend = _backends.get(device_type)
        if backend is None and device_type in ("cuda", "cpu"):
            backend = _backends[device_type] = default_backend(device_type)
    if backend is not None:
        call.timing = backend.begin(device_index)
        device_index = call.timing.device_index
    if device_type == "cuda":
        gpu = _gpu_sampler(device_index, getattr(call.timing, "hw_id", None))
        if gpu is not None:
            call.gpu = (gpu[0], gpu[1], gpu[0].clock())
    if cfg.profile_interval > 0:
        state = state_for(active)
        sampler = _sampler_for(cfg.profile_interval)
        if not state.profiled and sampler.due():
            span = active.span
            # a call in a copied context can outlive its block: no profile for an ended span
            prof = (guarded("profile.start", sampler.start, device_type == "cuda")
                    if span.is_recording() else None)
            if prof is None:
                sampler.release()
            else:
                # the span now ends through its SpanEnd: once both its block has ended and
                # this call has stopped the profiler, whichever comes first
                span_end = active.end_span = _prof.SpanEnd(span)
                if not span.is_recording():  # its block ended just now, without seeing it
                    span_end(time_ns())
                call.prof = (sampler, prof, cfg.trace_dir, span_end)
                state.profiled = True
                active.attributes[semconv.PROFILE_SAMPLED] = True


def _finish_profile(call: _Call) -> None:
    """Stop the profiler on the call's path; its trace is written, summarised and put on the
    span by the export worker (``_prof.SpanEnd``)."""
    sampler, prof, trace_dir, span_end = call.prof
    try:
        _prof.stop(prof)
    except BaseException:
        sampler.release()
        span_end.stopped(None, sampler, trace_dir)
        raise
    span_end.stopped(prof, sampler, trace_dir)


def end(call: _Call, result: Any, exc: BaseException | None) -> None:
    active = call.active
    try:
        timing = call.timing
        if timing is not None:
            # Before the profiler is stopped and its trace exported: those are not the call.
            try:
                timing.stop()
            except Exception as fault:
                swallow("torch.stop", fault)
        if call.gpu is not None:
            call.gpu = (*call.gpu[:3], call.gpu[0].clock())
        if call.prof is not None:
            guarded("profile.finish", _finish_profile, call)
        if active is not None and active.recording:
            _account(call, active, result, exc)
    finally:
        try:
            if call.token is not None:
                _CALL.reset(call.token)
        finally:
            if call.opened is not None:
                _close_batch(*call.opened, exc)


def _account(call: _Call, active: Any, result: Any, exc: BaseException | None) -> None:
    """Add this call to the (recording) span. Plain writes to ``active.attributes`` where
    ``ActiveSpan.set`` would only re-check what the caller checked: a call costs here."""
    timing = call.timing
    totals = active._totals  # ActiveSpan.add, inlined: the span is known to be recording
    get = totals.get
    attrs = active.attributes
    if timing is not None:
        if getattr(timing, "ready", False):
            # Host clocks (CPU fallback): the numbers are known now; no resolver needed.
            if totals:
                for key, value in timing.resolve().items():
                    totals[key] = get(key, 0) + value
            else:  # the span's first call: nothing to add to
                totals.update(timing.resolve())
        else:  # device events: read once, when the span ends
            state_for(active).timings.append(timing)
        # Type, index and UUID name one device together: a later call on another device (or
        # one whose UUID could not be read) replaces all three, never leaves a stale one.
        attrs[semconv.DEVICE_TYPE] = timing.device_type
        if timing.device_index is not None:
            attrs[semconv.DEVICE_ID] = timing.device_index
        else:
            attrs.pop(semconv.DEVICE_ID, None)
        hw_id = getattr(timing, "hw_id", None)  # the GPU's UUID, read once per device
        if hw_id is not None:
            attrs[semconv.HW_ID] = hw_id
        else:
            attrs.pop(semconv.HW_ID, None)
        streams = timing.streams
        if streams:
            attrs[semconv.DEVICE_STREAMS] = max(attrs.get(semconv.DEVICE_STREAMS, 0), streams)
        threads = getattr(timing, "threads", None)
        if threads:
            attrs[semconv.DEVICE_CPU_THREADS] = threads
    totals[semconv.DEVICE_CALLS] = get(semconv.DEVICE_CALLS, 0) + 1
    if call.gpu is not None:
        sampler, index, start, end = call.gpu
        state_for(active).add_gpu_window(sampler, index, start, end)
    inputs = call.inputs
    if inputs is not None and inputs.ids is not None \
            and semconv.BATCH_PADDED_TOKENS not in attrs:
        # First call of the span only: later calls of a manual decode loop feed back
        # generated tokens, which are not input tokens of the batch.
        padded = inputs.padded
        attrs[semconv.BATCH_PADDED_TOKENS] = padded
        if inputs.mask is None:  # no mask: every position is a real token
            totals[semconv.BATCH_INPUT_TOKENS] = get(semconv.BATCH_INPUT_TOKENS, 0) + padded
        else:  # the mask's values (maybe on the device) are read at span end
            active.defer(lambda: _real_tokens(inputs))
    if call.is_generate and exc is None and inputs is not None:
        module = call.spec.module if call.spec else None
        eos = call.eos
        enc_dec = bool(getattr(getattr(module, "config", None), "is_encoder_decoder", False))
        active.defer(lambda: _out_tokens(result, inputs, eos, enc_dec))


def _real_tokens(inputs: CallInputs) -> dict[str, int]:
    attrs = inputs.shape_attributes()
    attrs.pop(semconv.BATCH_PADDED_TOKENS, None)  # already set on the hot path
    return attrs


def _out_tokens(result: Any, inputs: CallInputs, eos: Any, enc_dec: bool) -> dict[str, int]:
    n = generated_tokens(result, inputs, eos, enc_dec)
    return {} if n is None else {semconv.BATCH_OUTPUT_TOKENS: n}


def run(spec: Any, wrapped: Any, args: Any, kwargs: Any, is_generate: bool,
        begin_fn: Any = begin, end_fn: Any = end) -> Any:
    """Call ``wrapped`` as one measured model call. ``begin_fn``/``end_fn``: the same steps
    made opaque to ``torch.compile`` (see ``torch._prepare_for_compile``)."""
    # guarded() spelled out: one Python frame less each, on every model call.
    if _CALL.get() is not None:  # nested inside an instrumented call: measured there
        return wrapped(*args, **kwargs)
    try:
        call = begin_fn(spec, args, kwargs, is_generate)
    except Exception as fault:
        swallow("torch.begin", fault)
        call = None
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        try:
            end_fn(call, None, exc)
        except Exception as fault:
            swallow("torch.end", fault)
        raise
    try:
        end_fn(call, result, None)
    except Exception as fault:
        swallow("torch.end", fault)
    return result
