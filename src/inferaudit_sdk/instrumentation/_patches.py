"""Process-wide torch patches, installed and removed symmetrically (``TorchInstrumentor``).

Like OpenLLMetry's instrumentors: every patch is recorded with how to undo it, and a method an
older torch or transformers lacks is skipped (:func:`_try_wrap`), never an error. The stream
wrappers report side-stream work to the instrumented call running in this context
(:data:`CALL`, set by :mod:`.torch`).
"""

from __future__ import annotations

import importlib
import logging
from contextvars import ContextVar
from typing import Any

import wrapt

from inferaudit_sdk._guard import guarded, swallow
from inferaudit_sdk.instrumentation._copies import METHODS as _COPY_METHODS
from inferaudit_sdk.instrumentation._copies import CopyTracker
from inferaudit_sdk.instrumentation._device_timer import default_backend

_logger = logging.getLogger("inferaudit_sdk")
# The outermost instrumented model call running in this context (a torch._Call), or None.
CALL: ContextVar[Any] = ContextVar("inferaudit_model_call", default=None)


# --------------------------------------------------------------------------------------------
# Process-wide patches
# --------------------------------------------------------------------------------------------
class _Patch:
    __slots__ = ("had_own", "name", "original", "owner")

    def __init__(self, owner: Any, name: str, had_own: bool, original: Any) -> None:
        self.owner, self.name, self.had_own, self.original = owner, name, had_own, original


def _try_wrap(owner: Any, name: str, wrapper: Any, patches: list[_Patch]) -> bool:
    """Wrap ``owner.name`` if it exists (older versions may lack it); remember how to undo."""
    raw = None
    for klass in getattr(owner, "__mro__", (owner,)):
        if name in vars(klass):
            raw = vars(klass)[name]
            break
    if raw is None:
        _logger.debug("inferaudit: %r has no %s; not instrumented", owner, name)
        return False
    had_own = name in vars(owner)
    setattr(owner, name, wrapt.FunctionWrapper(raw, wrapper))
    patches.append(_Patch(owner, name, had_own, raw))
    return True


def _unwrap_all(patches: list[_Patch]) -> None:
    while patches:
        p = patches.pop()
        try:
            if p.had_own:
                setattr(p.owner, p.name, p.original)
            else:
                delattr(p.owner, p.name)
        except Exception as exc:
            swallow("torch.unwrap", exc)


def _stream_of(instance: Any) -> Any:
    # StreamContext keeps its target in .stream; a Stream used as a context is itself.
    return instance.stream if hasattr(instance, "stream") and not callable(instance.stream) \
        else instance


def _stream_enter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    call = CALL.get()
    if call is not None and call.timing is not None:
        stream = _stream_of(instance)
        if stream is not None:
            guarded("torch.stream", call.timing.stream_enter, stream)
    return result


def _stream_exit(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = CALL.get()
    if call is not None and call.timing is not None:
        stream = _stream_of(instance)
        if stream is not None:
            guarded("torch.stream", call.timing.stream_exit, stream)
    return wrapped(*args, **kwargs)


_cuda_usable: bool | None = None  # torch.cuda.is_available(), asked once


def _copy_backend(device_type: str) -> Any:
    """CUDA events only where CUDA can run: on a CPU-only build a ``.cuda()`` call fails in
    torch itself (the user's error, passed through), and asking the CUDA backend for events
    first would be a fault of ours. Everywhere else copies are timed on the host clock."""
    global _cuda_usable
    if device_type == "cuda":
        if _cuda_usable is None:
            import torch

            _cuda_usable = bool(torch.cuda.is_available())
        if _cuda_usable:
            return default_backend("cuda")
    return default_backend("cpu")


class TorchInstrumentor:
    """Process-wide torch patches, installed and removed symmetrically.

    ``copies``: ``Tensor.to``/``cuda``/``cpu``/``copy_`` report host<->device copies to the
    active span. ``streams``: ``StreamContext`` and ``Stream`` enter/exit of each given CUDA
    module (``torch.cuda`` when CUDA is available; a fake in tests) attribute side-stream work.
    ``generate``: Hugging Face ``GenerationMixin.generate`` for every model (opt-in).
    """

    def __init__(self, copy_tracker: CopyTracker | None = None,
                 generate_wrapper: Any | None = None) -> None:
        self._tracker = copy_tracker or CopyTracker(_copy_backend, ("cuda", "xpu", "mps"))
        self._generate_wrapper = generate_wrapper
        self._patches: dict[str, list[_Patch]] = {}

    def is_instrumented(self, part: str) -> bool:
        return part in self._patches

    def instrument(self, *, copies: bool = True, cuda_modules: tuple[Any, ...] = (),
                   generate: bool = False) -> None:
        if copies and "copies" not in self._patches:
            import torch

            patches: list[_Patch] = []
            t = self._tracker
            for name, fn in zip(_COPY_METHODS, (t.wrap_to, t.wrap_cuda, t.wrap_cpu,
                                                t.wrap_copy_), strict=False):
                _try_wrap(torch.Tensor, name, fn, patches)
            self._patches["copies"] = patches
        for cuda in cuda_modules:
            self._instrument_streams(cuda)
        if generate and "generate" not in self._patches and self._generate_wrapper is not None:
            self._instrument_generate()

    def _instrument_streams(self, cuda: Any) -> None:
        key = f"streams:{id(cuda)}"
        if key in self._patches:
            return
        patches: list[_Patch] = []
        ctx = getattr(cuda, "StreamContext", None)
        if isinstance(ctx, type):
            _try_wrap(ctx, "__enter__", _stream_enter, patches)
            _try_wrap(ctx, "__exit__", _stream_exit, patches)
        stream_cls = getattr(cuda, "Stream", None)
        if not isinstance(stream_cls, type):
            stream_cls = type(cuda.default_stream())
        if hasattr(stream_cls, "__enter__"):
            _try_wrap(stream_cls, "__enter__", _stream_enter, patches)
            _try_wrap(stream_cls, "__exit__", _stream_exit, patches)
        self._patches[key] = patches

    def _instrument_generate(self) -> None:
        patches: list[_Patch] = []
        try:
            utils = importlib.import_module("transformers.generation.utils")
        except ImportError:
            _logger.debug("inferaudit: transformers not installed; generate not patched")
            return
        mixin = getattr(utils, "GenerationMixin", None)
        if mixin is not None:
            _try_wrap(mixin, "generate", self._generate_wrapper, patches)
        self._patches["generate"] = patches

    def uninstrument(self, part: str | None = None) -> None:
        """Remove ``part`` ("copies", "generate", "streams:<id>") or everything."""
        for key in list(self._patches):
            if part is None or key == part or (part == "streams" and key.startswith(part)):
                _unwrap_all(self._patches.pop(key))
