"""Torch model instrumentation: every model call becomes (or adds to) a batch span that carries
what the device did while it ran.

``instrument_model(module)`` replaces the instance's ``forward`` (and ``generate`` where it has
one) with a method bound to that instance, so ``copy.deepcopy`` and pickling of the model keep
working (a ``wrapt`` proxy in the instance ``__dict__`` refuses both); the process-wide patches
use ``wrapt``. For each outermost call:

- inside an ``ia.batch(...)`` block the call adds to that batch span; otherwise it opens one
  as ``ia.batch`` does (a child of, and linked to, the active request span if any);
- batch size and padded / real tokens come from the input ids and attention mask; ``generate``
  also counts the tokens it produced (exact, from the ids);
- device time comes from a :class:`~._device_timer.DeviceBackend` (CUDA events on the streams
  that ran, resolved at span end; CPU time on a host without CUDA), copies from the
  ``Tensor.to``/``.cuda()``/``.cpu()``/``copy_`` wrappers, GPU counters from the NVML sampler
  over the call's window, and 1 in N calls runs under ``torch.profiler`` (all of that per
  call: :mod:`._model_call`; this module installs and removes the entries).

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

from inferaudit_sdk import _settings
from inferaudit_sdk._guard import guarded
from inferaudit_sdk.instrumentation import _model_call, _profiler_sampling
from inferaudit_sdk.instrumentation._patches import CALL, TorchInstrumentor

_logger = logging.getLogger("inferaudit_sdk")
_MARK = "_inferaudit_instrumented"
_SPEC = "_inferaudit_spec"
_CALL = CALL

_run = _model_call.run

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


def _model_name(module: Any) -> str:
    cfg = getattr(module, "config", None)
    name = getattr(cfg, "name_or_path", None) or getattr(cfg, "_name_or_path", None)
    return str(name) if name else type(module).__name__


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
    run = disable(_model_call.run, recursive=False)
    begin, end = disable(_model_call.begin), disable(_model_call.end)

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
        copies: also report host<->device tensor copies (process-wide ``Tensor`` patches,
            installed only where an accelerator can run: CUDA, MPS, XPU, or a fixed CUDA
            ``backend``).
        generate: wrap the module's own ``generate`` if it has one.

    Idempotent. Thread-safe with respect to other calls; not while the model is running.
    ``copy.deepcopy`` of an instrumented model gives an instrumented copy. Undo with
    :func:`uninstrument_model`. A TorchScript module (``torch.jit.trace`` / ``script``) runs
    its compiled forward, which cannot be wrapped: it is returned unchanged, with a warning.

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module`` instance (a set-up mistake, raised
            before anything is changed).
        ImportError: torch is not installed (the SDK's core install), with the extra to add.
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
    # Copies need an accelerator to copy to: where none can run (a CPU-only build, no MPS or
    # XPU), the process-wide Tensor patches could never record one and would only tax every
    # ``.to()`` the process makes (~17 µs a batch-1 call of the tiny GPT-2 here, inside the
    # span: the forward's own ``.to(dtype)``).
    copies = copies and (bool(cuda_modules) or bool(guarded("torch.accel", _other_accelerator)))
    with _instrumentor_lock:
        _instrumentor.instrument(copies=copies, cuda_modules=tuple(cuda_modules))
        _models.add(module)
    if backend is None and cuda_modules:
        from inferaudit_sdk.samplers import nvml

        guarded("nvml.start", nvml.start_sampler)
        # Before the server captures graphs; only for a model already on the GPU, so that the
        # profiler's session creates no CUDA context that a pre-forking server's workers would
        # inherit (they could not use CUDA then).
        if _settings.get_config().profile_interval > 0 and _on_cuda(spec):
            guarded("profile.cuda_graphs", _profiler_sampling.prepare_for_cuda_graphs)
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
    try:
        import torch
    except ImportError as exc:  # the core install: say which part is missing
        raise ImportError("instrument_model() needs torch, which is not installed here; from "
                          "a clone: pip install -e '.[torch]'") from exc

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


def _on_cuda(spec: _Spec) -> bool:
    """Whether the module's parameters (or buffers) are on a CUDA device now."""
    device = guarded("torch.device", _model_call.device_of, spec)
    return device is not None and device[0] == "cuda"


def _other_accelerator() -> bool:
    """An accelerator besides CUDA that host<->device copies can reach (Apple MPS, Intel XPU)."""
    import torch

    for owner in (getattr(torch.backends, "mps", None), getattr(torch, "xpu", None)):
        available = getattr(owner, "is_available", None)
        if callable(available) and available():
            return True
    return False


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
