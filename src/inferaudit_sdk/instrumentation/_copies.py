"""Host<->device copies made through ``Tensor.to`` / ``.cuda()`` / ``.cpu()`` / ``copy_``.

Each cross-device copy inside an audited span (request or batch) adds its bytes, direction,
count and whether the host side was pageable to that span. Pageable host memory matters: a
"non_blocking" copy from or to pageable memory is staged and synchronous, a hidden stall the
analyzer reports. Copy time comes from the device backend: CUDA events around the copy on the
current stream of the GPU it reaches or leaves (read at span end, like model-call timings), or
host wall time otherwise.

Outside an audited span the wrappers cost one context-variable read; inside one, a call that
is not a host<->device copy (``.to(dtype)``, ``.to("cpu")`` of a host tensor, ``copy_``
between host tensors: the model's own forward makes such calls) costs a few attribute reads
before it goes through. Bytes are the source tensor's size (exact whenever the dtype is
unchanged; a dtype-changing ``.to`` is counted at the source dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from inferaudit_sdk import _active, semconv
from inferaudit_sdk._guard import guarded, swallow
from inferaudit_sdk.instrumentation._span_state import state_for

_current = _active.current
# torch.device / torch.dtype, looked up once torch is loaded (the wrappers only run then).
_torch_types: tuple[type, type] | None = None


def _types() -> tuple[type, type]:
    global _torch_types
    if _torch_types is None:
        import torch

        _torch_types = (torch.device, torch.dtype)
    return _torch_types

H2D = "h2d"
D2H = "d2h"
_BYTES = {H2D: semconv.COPY_H2D_BYTES, D2H: semconv.COPY_D2H_BYTES}
_TIME = {H2D: semconv.COPY_H2D_TIME_NS, D2H: semconv.COPY_D2H_TIME_NS}
# Methods patched on torch.Tensor.
METHODS = ("to", "cuda", "cpu", "copy_")


def classify(src_type: str, dst_type: str, accelerators: Iterable[str]) -> str | None:
    """``"h2d"``, ``"d2h"`` or ``None`` (same side, or a device pair we do not track)."""
    if src_type == dst_type:
        return None
    if src_type == "cpu" and dst_type in accelerators:
        return H2D
    if dst_type == "cpu" and src_type in accelerators:
        return D2H
    return None


def _is_cpu(t: Any) -> bool | None:
    """``t.is_cpu`` (a flag read: cheaper than ``t.device.type``); None if not a tensor."""
    return getattr(t, "is_cpu", None)


def _device_index_of(dev: Any) -> int | None:
    """The ordinal in a device spec (``"cuda:1"``, ``torch.device("cuda", 1)``, ``1``), or
    ``None`` for the current device."""
    if dev is None:
        return None
    if isinstance(dev, str):
        _, sep, index = dev.partition(":")
        return int(index) if sep and index.isdigit() else None
    if isinstance(dev, int) and not isinstance(dev, bool):
        return dev
    index = getattr(dev, "index", None)
    return index if isinstance(index, int) else None


def _device_type_of(dev: Any) -> str | None:
    if dev is None:
        return None
    if isinstance(dev, str):
        return dev.split(":", 1)[0]
    if isinstance(dev, int) and not isinstance(dev, bool):
        return "cuda"  # a bare ordinal means a CUDA device
    return getattr(dev, "type", None)


class CopyTracker:
    """The wrapper logic; ``backend_for(device_type)`` gives the DeviceBackend that times a
    copy involving that accelerator."""

    def __init__(
        self,
        backend_for: Callable[[str], Any],
        accelerators: Iterable[str] = ("cuda",),
    ) -> None:
        self._backend_for = backend_for
        self.accelerators = frozenset(accelerators)

    # -- target device per method ------------------------------------------------------------
    def _target_of_to(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The device spec a ``.to(...)`` call moves to (a torch.device, str or ordinal), or
        ``None`` for a cast."""
        dev = kwargs.get("device") if kwargs else None
        if dev is None and args:
            first = args[0]
            device_cls, dtype_cls = _torch_types or _types()
            kind = type(first)
            if kind is device_cls:  # .to(torch.device(...)): what models do in forward
                return first
            if kind is dtype_cls:  # .to(dtype[, ...]): a cast, unless a device follows
                if len(args) < 2 and not kwargs:
                    return None
                first = args[1] if len(args) > 1 else None
            if first is None:
                pass
            elif isinstance(first, (str, int)) and not isinstance(first, bool):
                dev = first
            else:
                dev_attr = getattr(first, "device", None)  # .to(other_tensor)
                if dev_attr is not None and not isinstance(first, type):
                    dev = dev_attr
                elif type(first).__name__ == "device":  # torch.device
                    dev = first
        if dev is None and kwargs:
            other = kwargs.get("other")
            dev = getattr(other, "device", None)
        return dev

    # -- wrappers ----------------------------------------------------------------------------
    def wrap_to(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        active = _current()
        if active is None or not active.recording:
            return wrapped(*args, **kwargs)
        try:
            target = self._target_of_to(args, kwargs)
            dst = _device_type_of(target)
            if dst is not None and instance.is_cpu == (dst == "cpu"):  # same side of the bus
                dst = None
        except Exception as exc:
            swallow("copy.inspect", exc)
            dst = None
        if dst is None:  # a cast, or no cross-device move: nothing to record
            return wrapped(*args, **kwargs)
        return self._copy(wrapped, instance, args, kwargs, active, instance, dst, None,
                          target)

    def wrap_cuda(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        active = _current()
        if active is None or not active.recording or not _is_cpu(instance):
            return wrapped(*args, **kwargs)  # from a device: not host<->device
        target = args[0] if args else kwargs.get("device")  # .cuda(device=None, ...)
        return self._copy(wrapped, instance, args, kwargs, active, instance, "cuda", None,
                          target)

    def wrap_cpu(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        active = _current()
        if active is None or not active.recording or _is_cpu(instance) is not False:
            return wrapped(*args, **kwargs)  # already on the host (or not a tensor)
        return self._copy(wrapped, instance, args, kwargs, active, instance, "cpu", None)

    def wrap_copy_(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        active = _current()
        if active is None or not active.recording:
            return wrapped(*args, **kwargs)
        src = args[0] if args else kwargs.get("src")
        src_cpu = _is_cpu(src)
        if src_cpu is None or instance.is_cpu == src_cpu:  # not a tensor, or the same side
            return wrapped(*args, **kwargs)
        dst_type = ("cpu" if instance.is_cpu
                    else guarded("copy.inspect", lambda: instance.device.type))
        return self._copy(wrapped, instance, args, kwargs, active, src, dst_type, instance)

    def _copy(
        self, wrapped: Any, instance: Any, args: Any, kwargs: Any, active: Any,
        src: Any, dst_type: str | None, dst: Any, target: Any = None,
    ) -> Any:
        """``target``: the destination's device spec where ``dst`` is not a tensor yet."""
        direction = None
        if dst_type is not None and src is not None:
            src_type = guarded("copy.inspect", lambda: src.device.type)
            if src_type is not None:
                direction = classify(src_type, dst_type, self.accelerators)
        if direction is None:
            return wrapped(*args, **kwargs)
        accel = dst_type if direction == H2D else src_type
        backend = guarded("copy.backend", self._backend_for, accel)
        handle = None
        if backend is not None:
            # Timed on the accelerator's own stream: the copy runs on the current stream of
            # the device it reaches or leaves, which need not be the current device.
            on = dst if direction == H2D else src
            index = guarded("copy.inspect",
                            lambda: _device_index_of(target if on is None else on.device))
            handle = guarded("copy.time", backend.interval_begin, index)
        result = wrapped(*args, **kwargs)
        interval = None
        if handle is not None:
            interval = guarded("copy.time", backend.interval_end, handle)
        guarded("copy.record", self._record, active, direction, src,
                dst if dst is not None else result, interval)
        return result

    @staticmethod
    def _record(active: Any, direction: str, src: Any, dst: Any, interval: Any) -> None:
        if dst is src:  # .to() returned self: no copy happened
            return
        nbytes = int(src.nbytes)
        host = src if direction == H2D else dst
        pinned = bool(guarded("copy.pinned", host.is_pinned))
        active.add(_BYTES[direction], nbytes)
        active.add(semconv.COPY_COUNT, 1)
        if not pinned:
            active.add(semconv.COPY_PAGEABLE_BYTES, nbytes)
        if interval is None:
            return
        if interval.ready:
            active.add(_TIME[direction], interval.ns())
        else:
            state_for(active).copies.append((_TIME[direction], interval))
