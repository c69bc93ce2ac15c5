"""Torch model instrumentation: every model call becomes (or adds to) a batch span that carries
what the device did while it ran.

``instrument_model(module)`` replaces the instance's ``forward`` (and ``generate`` where it has
one) with a method bound to that instance, so ``copy.deepcopy`` and pickling of the model keep
working (a ``wrapt`` proxy in the instance ``__dict__`` refuses both); the process-wide patches
use ``wrapt``. For each outermost call:

- inside an ``ia.batch(...)`` block the call adds to that batch span; otherwise it opens one
  with ``ia.batch(...)`` (a child of, and linked to, the active request span if any);
- batch size and padded / real tokens come from the input ids and attention mask; ``generate``
  also counts the tokens it produced (exact, from the ids);
- device time comes from a :class:`~._device_timer.DeviceBackend` (CUDA events on the streams
  that ran, resolved at span end; CPU time on a host without CUDA), copies from the
  ``Tensor.to``/``.cuda()``/``.cpu()``/``copy_`` wrappers, GPU counters from the NVML sampler
  over the call's window, and 1 in N calls runs under ``torch.profiler``.

Nested instrumented calls (``generate`` → ``forward``) are measured once, at the outermost.
Process-wide patches (tensor copies, CUDA stream contexts, and the opt-in Hugging Face
``GenerationMixin.generate`` patch) are installed by :class:`TorchInstrumentor` with symmetric
``instrument``/``uninstrument``; a method an older torch or transformers lacks is skipped.
Everything here is guarded: an instrumentation fault is counted, never raised into the model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import types
import weakref
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
from inferaudit_sdk.instrumentation._patches import CALL, TorchInstrumentor
from inferaudit_sdk.instrumentation._span_state import state_for

_logger = logging.getLogger("inferaudit_sdk")
_MARK = "_inferaudit_instrumented"
_SPEC = "_inferaudit_spec"
_CALL = CALL

_current = _active.current
_open_batch = _batch.open_batch
_close_batch = _batch.close_batch
_get_config = _settings.get_config
_ROLE_BATCH = semconv.ROLE_BATCH
# device type -> DeviceBackend, a lock-free copy of _device_timer's process-wide defaults.
_backends: dict[str, Any] = {}

_instrumentor_lock = threading.Lock()
_instrumentor: TorchInstrumentor  # set below, once _global_generate exists
# The models instrument_model installed the process-wide patches for (a deepcopy or unpickled
# copy is instrumented too but not a member: uninstrumenting it leaves the patches alone).
_models: weakref.WeakSet[Any] = weakref.WeakSet()


def instrument_generate() -> None:
    """Opt-in: instrument Hugging Face ``generate`` for every model (pipelines call it too)."""
    with _instrumentor_lock:
        _instrumentor.instrument(copies=False, generate=True)


def uninstrument_generate() -> None:
    with _instrumentor_lock:
        _instrumentor.uninstrument("generate")


# --------------------------------------------------------------------------------------------
# Model calls
# --------------------------------------------------------------------------------------------
class _Spec:
    """Per instrumented model: names, an optional fixed backend, and any ``forward`` /
    ``generate`` the instance already had in its own ``__dict__`` (e.g. another library's
    hook), which we call through and restore on uninstrument."""

    __slots__ = ("backend", "model", "module", "operation", "param", "prev")

    def __init__(self, module: Any, model: str | None, operation: str | None,
                 backend: Any | None) -> None:
        self.module = module
        self.param: Any = None
        self.model = model or _model_name(module)
        self.operation = operation
        self.backend = backend
        self.prev: dict[str, Any] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> _Spec:
        # copy.deepcopy(model): the copy is instrumented too, bound to the copied module.
        import copy

        twin = _Spec(memo.get(id(self.module), self.module), self.model, self.operation,
                     self.backend)
        twin.prev = {k: copy.deepcopy(v, memo) for k, v in self.prev.items()}
        return twin

    def __reduce__(self) -> Any:
        # Pickling (torch.save(model)) keeps the names, not the backend or previous hooks.
        return (_Spec, (self.module, self.model, self.operation, None))


class _Call:
    __slots__ = ("active", "eos", "gpu", "inputs", "is_generate", "opened", "prof", "spec",
                 "timing", "token")

    def __init__(self, spec: _Spec, inputs: CallInputs, is_generate: bool) -> None:
        self.active: Any = None
        self.opened: Any = None  # open_batch()'s result when this call opened the batch span
        self.eos: Any = None
        self.gpu: Any = None
        self.inputs: CallInputs | None = inputs
        self.is_generate = is_generate
        self.prof: Any = None
        self.spec: _Spec | None = spec
        self.timing: Any = None
        self.token: Any = None


def _model_name(module: Any) -> str:
    cfg = getattr(module, "config", None)
    name = getattr(cfg, "name_or_path", None) or getattr(cfg, "_name_or_path", None)
    return str(name) if name else type(module).__name__


def _first_tensor(module: Any) -> tuple[dict[str, Any], str, Any] | None:
    """(owning dict, name, tensor) of the module's first parameter, else its first buffer."""
    for slot in ("_parameters", "_buffers"):
        for mod in module.modules():
            owner = getattr(mod, slot, None) or {}
            for name, tensor in owner.items():
                if tensor is not None:
                    return owner, name, tensor
    return None


def _device_of(spec: _Spec) -> tuple[str, int | None]:
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


def _gpu_sampler(device_index: int | None) -> tuple[Any, int] | None:
    global _nvml
    if _nvml is None:  # an import statement here would cost a package lookup per call
        from inferaudit_sdk.samplers import nvml

        _nvml = nvml
    sampler = _nvml.get_sampler()
    if sampler is None:
        return None
    return sampler, _nvml_index(sampler, device_index or 0)


_uuid_index: dict[int, int] = {}


def _nvml_index(sampler: Any, cuda_index: int) -> int:
    """CUDA and NVML number GPUs differently (CUDA_VISIBLE_DEVICES, ordering): map by UUID."""
    idx = _uuid_index.get(cuda_index)
    if idx is None:
        idx = cuda_index
        try:
            import torch

            if not torch.cuda.is_available():  # a fake device in tests: same numbering
                _uuid_index[cuda_index] = idx
                return idx
            uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
            found = sampler.index_for_uuid(uuid)
            if found is not None:
                idx = found
        except Exception as exc:
            swallow("torch.gpu_uuid", exc)
        _uuid_index[cuda_index] = idx
    return idx


def _begin(spec: _Spec, args: Any, kwargs: Any, is_generate: bool) -> _Call | None:
    """Open (or join) the batch span and mark the call as running. Only what cannot fail is
    done between entering the span and setting the call marker, so neither can leak."""
    cfg = _get_config()
    if not cfg.enabled:
        return None
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
        device_type, device_index = _device_of(spec)
        backend = _backends.get(device_type)
        if backend is None and device_type in ("cuda", "cpu"):
            backend = _backends[device_type] = default_backend(device_type)
    if backend is not None:
        call.timing = backend.begin(device_index)
        device_index = call.timing.device_index
    if device_type == "cuda":
        gpu = _gpu_sampler(device_index)
        if gpu is not None:
            call.gpu = (gpu[0], gpu[1], gpu[0].clock())
    if cfg.profile_every_n > 0:
        state = state_for(active)
        sampler = _sampler_for(cfg.profile_every_n)
        if not state.profiled and sampler.due():
            prof = guarded("profile.start", sampler.start, device_type == "cuda")
            if prof is None:
                sampler.release()
            else:
                call.prof = (sampler, prof, cfg.trace_dir)
                state.profiled = True


def _finish_profile(call: _Call, active: Any) -> None:
    sampler, prof, trace_dir = call.prof
    try:
        _prof.stop(prof)
        span_id = format(active.span.get_span_context().span_id, "016x")
        rel, summary = _prof.export(prof, trace_dir, span_id)
        active.set(semconv.PROFILE_TRACE_PATH, rel)
        active.span.add_event(semconv.EVENT_PROFILE_SUMMARY, attributes=summary)
    finally:
        sampler.release()


def _end(call: _Call, result: Any, exc: BaseException | None) -> None:
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
            guarded("profile.finish", _finish_profile, call, active)
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
            for key, value in timing.resolve().items():
                totals[key] = get(key, 0) + value
        else:  # device events: read once, when the span ends
            state_for(active).timings.append(timing)
        attrs[semconv.DEVICE_TYPE] = timing.device_type
        if timing.device_index is not None:
            attrs[semconv.DEVICE_ID] = timing.device_index
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


def _run(spec: _Spec, wrapped: Any, args: Any, kwargs: Any, is_generate: bool,
         begin: Any = _begin, end: Any = _end) -> Any:
    # guarded() spelled out: one Python frame less each, on every model call.
    if _CALL.get() is not None:  # nested inside an instrumented call: measured there
        return wrapped(*args, **kwargs)
    try:
        call = begin(spec, args, kwargs, is_generate)
    except Exception as fault:
        swallow("torch.begin", fault)
        call = None
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        try:
            end(call, None, exc)
        except Exception as fault:
            swallow("torch.end", fault)
        raise
    try:
        end(call, result, None)
    except Exception as fault:
        swallow("torch.end", fault)
    return result


# torch.compile traces whatever forward it is given, ours included. Traced, our bookkeeping
# breaks (ContextVars, clocks and OpenTelemetry are not traceable) and the original method is
# resolved to the entry itself, which then calls itself without end. So while dynamo traces an
# entry, the entry's work runs in frames dynamo skips, eagerly; the model's own forward, called
# from there, is still compiled. Set once torch is loaded (instrument_model).
_is_compiling: Any = None
_entry_under_compile: Any = None


def _prepare_for_compile() -> None:
    global _is_compiling, _entry_under_compile
    if _is_compiling is not None:
        return
    import torch

    compiler = getattr(torch, "compiler", None)
    disable = getattr(compiler, "disable", None)
    is_compiling = getattr(compiler, "is_compiling", None)
    if disable is None or is_compiling is None:  # an older torch: nothing traces into us
        _is_compiling = bool
        return
    run = disable(_run, recursive=False)
    begin, end = disable(_begin), disable(_end)

    def entry_under_compile(self: Any, name: str, is_generate: bool, args: Any,
                            kwargs: Any) -> Any:
        spec = self.__dict__.get(_SPEC)
        target = _original(self, spec, name)
        if spec is None:
            return target(*args, **kwargs)
        return run(spec, target, args, kwargs, is_generate, begin, end)

    _entry_under_compile = disable(entry_under_compile, recursive=False)
    _is_compiling = is_compiling


def _global_generate(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if _CALL.get() is not None or instance is None:
        return wrapped(*args, **kwargs)
    spec = getattr(instance, _SPEC, None)
    if spec is None:
        spec = _Spec(instance, None, None, None)
        guarded("torch.spec", object.__setattr__, instance, _SPEC, spec)
    return _run(spec, wrapped, args, kwargs, True)


def _original(module: Any, spec: _Spec | None, name: str) -> Any:
    prev = spec.prev.get(name) if spec is not None else None
    if prev is not None:
        return prev
    return getattr(type(module), name).__get__(module, type(module))


def _make_entry(name: str) -> Any:
    """The function installed as ``module.<name>`` (a method bound to the instance, so
    ``copy.deepcopy`` and pickling of the model keep working)."""
    is_generate = name == "generate"

    def entry(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_compiling is not None and _is_compiling():  # torch.compile is tracing this
            return _entry_under_compile(self, name, is_generate, args, kwargs)
        spec = self.__dict__.get(_SPEC)
        target = _original(self, spec, name)
        if spec is None:
            return target(*args, **kwargs)
        return _run(spec, target, args, kwargs, is_generate)

    # A bound method pickles as getattr(instance, __name__): named after what it replaces.
    entry.__name__ = entry.__qualname__ = name
    return entry


_forward_entry = _make_entry("forward")
_generate_entry = _make_entry("generate")
_ENTRIES = {"forward": _forward_entry, "generate": _generate_entry}
_entry_cache: dict[tuple[type, str], Any] = {}


def _entry_for(cls: type, name: str) -> Any:
    """The entry function installed as ``name`` on instances of ``cls``: it carries the
    original method's signature (``__wrapped__``), because callers introspect it — Hugging
    Face ``generate`` filters the inputs it passes (``position_ids`` among them) by
    ``inspect.signature(model.forward)``; a bare ``*args, **kwargs`` entry silently changes
    what a left-padded batch computes."""
    key = (cls, name)
    entry = _entry_cache.get(key)
    if entry is None:
        original = getattr(cls, name, None)
        if not callable(original):
            return _ENTRIES[name]
        entry = _make_entry(name)  # its own function: one frame on every call, not two
        functools.update_wrapper(entry, original)
        entry.__name__ = name
        entry = _entry_cache.setdefault(key, entry)
    return entry


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def instrument_model(
    module: Any,
    *,
    model: str | None = None,
    operation: str | None = None,
    backend: Any | None = None,
    copies: bool = True,
    generate: bool = True,
) -> Any:
    """Instrument one torch module in place and return it.

    Args:
        module: a ``torch.nn.Module`` (a Hugging Face model gets ``generate`` wrapped too).
        model: ``gen_ai.request.model`` of its batch spans (default: config name or class).
        operation: ``gen_ai.operation.name`` (default: the enclosing request's).
        backend: a fixed :class:`~._device_timer.DeviceBackend` (default: chosen per call from
            the module's device: CUDA events on CUDA, CPU time otherwise).
        copies: also report host<->device tensor copies (process-wide ``Tensor`` patches).
        generate: wrap the module's own ``generate`` if it has one.

    Idempotent. Thread-safe with respect to other calls; not while the model is running.
    ``copy.deepcopy`` of an instrumented model gives an instrumented copy. Undo with
    :func:`uninstrument_model`. A TorchScript module (``torch.jit.trace`` / ``script``) runs
    its compiled forward, which cannot be wrapped: it is returned unchanged, with a warning.

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module`` instance (a set-up mistake, raised
            before anything is changed).
    """
    if not _check_module(module):
        return module
    if getattr(module, _MARK, None) is not None:
        return module
    guarded("torch.compile_guard", _prepare_for_compile)
    spec = _Spec(module, model, operation, backend)
    names = ["forward"]
    if generate and callable(getattr(module, "generate", None)):
        names.append("generate")
    for name in names:
        own = module.__dict__.get(name)
        if own is not None:
            spec.prev[name] = own
        entry = _ENTRIES[name] if own is not None else _entry_for(type(module), name)
        object.__setattr__(module, name, types.MethodType(entry, module))
    if callable(getattr(type(module), _REPLICATE, None)) and _REPLICATE not in module.__dict__:
        object.__setattr__(module, _REPLICATE, types.MethodType(_replicate_entry, module))
        names.append(_REPLICATE)
    object.__setattr__(module, _MARK, tuple(names))
    object.__setattr__(module, _SPEC, spec)
    cuda_modules: list[Any] = []
    if backend is not None:
        if getattr(backend, "cuda", None) is not None:
            cuda_modules.append(backend.cuda)
    elif guarded("torch.cuda", _cuda_available):
        import torch

        cuda_modules.append(torch.cuda)
    with _instrumentor_lock:
        _instrumentor.instrument(copies=copies, cuda_modules=tuple(cuda_modules))
        _models.add(module)
    if backend is None and cuda_modules:
        from inferaudit_sdk.samplers import nvml

        guarded("nvml.start", nvml.start_sampler)
    return module


# DataParallel builds each replica as a shallow copy of the module's __dict__, which would keep
# our entries bound to the original module: the replica would run the original's weights (on
# the original's device). The replica's entries are rebound to it here.
_REPLICATE = "_replicate_for_data_parallel"


def _replicate_entry(self: Any) -> Any:
    replica = getattr(type(self), _REPLICATE)(self)
    guarded("torch.replicate", _rebind, replica, self)
    return replica


_replicate_entry.__name__ = _replicate_entry.__qualname__ = _REPLICATE  # pickles by this name


def _rebind(replica: Any, source: Any) -> None:
    """Bind ``source``'s installed methods to ``replica``, with a spec of its own."""
    spec = source.__dict__.get(_SPEC)
    for name in source.__dict__.get(_MARK) or ():
        bound = source.__dict__.get(name)
        if isinstance(bound, types.MethodType) and bound.__self__ is source:
            object.__setattr__(replica, name, types.MethodType(bound.__func__, replica))
    if spec is not None:
        twin = _Spec(replica, spec.model, spec.operation, spec.backend)
        twin.prev = dict(spec.prev)
        object.__setattr__(replica, _SPEC, twin)


def _check_module(module: Any) -> bool:
    """True when ``module`` can be instrumented; False (after one warning) for a TorchScript
    module, whose calls go to its compiled forward, not a Python attribute we could replace.
    Anything but a ``torch.nn.Module`` instance is a TypeError naming what was given."""
    import torch

    if not isinstance(module, torch.nn.Module):
        if module is None:
            given = "None"
        elif isinstance(module, type):
            given = (f"the class {module.__module__}.{module.__qualname__} (pass an instance: "
                     f"{module.__qualname__}(...))")
        else:
            given = f"a {type(module).__qualname__} ({module!r:.60})"
        raise TypeError(f"instrument_model(module=...) needs a torch.nn.Module instance, got "
                        f"{given}")
    script_module = getattr(getattr(torch, "jit", None), "ScriptModule", None)
    if script_module is not None and isinstance(module, script_module):
        _logger.warning(
            "inferaudit: instrument_model() got a TorchScript module (%s); its compiled "
            "forward cannot be wrapped, so it is left uninstrumented (instrument the eager "
            "module, or wrap calls in ia.batch(...))", type(module).__name__,
        )
        return False
    return True


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def uninstrument_model(module: Any) -> Any:
    """Undo :func:`instrument_model`; the process-wide patches go with the last model."""
    names = getattr(module, _MARK, None)
    if names is None:
        return module
    spec = module.__dict__.get(_SPEC)
    for name in names:
        with contextlib.suppress(AttributeError):
            object.__delattr__(module, name)
        prev = spec.prev.get(name) if spec is not None else None
        if prev is not None:
            object.__setattr__(module, name, prev)
    for attr in (_MARK, _SPEC):
        with contextlib.suppress(AttributeError):
            object.__delattr__(module, attr)
    with _instrumentor_lock:
        if module not in _models:
            return module  # a copy: the model it came from still needs the patches
        _models.discard(module)
        if not _models:
            for part in ("copies", "streams"):
                _instrumentor.uninstrument(part)
    return module


def is_instrumented(module: Any) -> bool:
    return getattr(module, _MARK, None) is not None


_instrumentor = TorchInstrumentor(generate_wrapper=_global_generate)
