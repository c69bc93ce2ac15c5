"""What the device wrappers accumulate for one audited span, resolved once when it ends.

Model-call timings and copy intervals still held as device events (host-clock timings, the CPU
fallback, are added to the span when the call returns and never come here), and the span's GPU
window all hang off one :class:`SpanDeviceState` per :class:`~inferaudit_sdk._active.ActiveSpan`,
which registers a single resolver with ``ActiveSpan.defer``: one pass at span end reads every
event (waiting only where the device is not done yet), and the NVML aggregates are taken over
the union window of all calls, so means are computed once instead of being summed.
"""

from __future__ import annotations

import threading
from typing import Any

from inferaudit_sdk._active import ActiveSpan
from inferaudit_sdk._guard import guarded, swallow

# Spans whose state was created but never resolved (their span never flushed) are forgotten
# beyond this many, oldest first, so a misbehaving caller cannot grow memory without bound.
_MAX_PENDING = 4096

_lock = threading.Lock()
_states: dict[int, SpanDeviceState] = {}


class SpanDeviceState:
    """Not thread-safe on its own: an ActiveSpan belongs to one task (see ``_active``)."""

    __slots__ = ("active", "copies", "gpu", "profiled", "timings")

    def __init__(self, active: ActiveSpan) -> None:
        self.active = active
        self.timings: list[Any] = []  # CallTiming
        self.copies: list[tuple[str, Any]] = []  # (time attribute, Interval)
        # (sampler, gpu index, start_ns, end_ns) over the monotonic clock, or None
        self.gpu: list[Any] | None = None
        self.profiled = False

    def add_gpu_window(self, sampler: Any, index: int, start_ns: int, end_ns: int) -> None:
        gpu = self.gpu
        if gpu is None or gpu[1] != index:
            self.gpu = [sampler, index, start_ns, end_ns]
        else:
            gpu[2] = min(gpu[2], start_ns)
            gpu[3] = max(gpu[3], end_ns)

    def resolve(self) -> dict[str, Any]:
        """Runs at span end (``ActiveSpan.flush_attributes``). Numbers returned are summed
        into the span's totals."""
        with _lock:
            if _states.get(id(self.active)) is self:
                del _states[id(self.active)]
        out: dict[str, Any] = {}
        for timing in self.timings:
            attrs = guarded("device.resolve", timing.resolve)
            if not attrs:
                continue
            for key, value in attrs.items():
                out[key] = out.get(key, 0) + value
            # No per-call inferaudit.device.time histogram here: one OTel SDK histogram record
            # (with exemplars) cost ~85 µs per call in bench/device_overhead.py, 2.5% of a
            # batch-1 forward of the tiny GPT-2; the value is on every batch span instead.
        for key, interval in self.copies:
            ns = guarded("copy.resolve", interval.ns)
            if ns is not None:
                out[key] = out.get(key, 0) + ns
        self.timings = []
        self.copies = []
        gpu = self.gpu
        if gpu is not None:
            agg = guarded("nvml.aggregate", gpu[0].aggregate, gpu[1], gpu[2], gpu[3])
            if agg:
                out.update(agg)
        return out


def state_for(active: ActiveSpan) -> SpanDeviceState:
    """The state of ``active``, created (and its resolver deferred) on first use."""
    key = id(active)
    state = _states.get(key)
    if state is not None and state.active is active:
        return state
    state = SpanDeviceState(active)
    with _lock:
        _states[key] = state
        if len(_states) > _MAX_PENDING:
            oldest = next(iter(_states))
            del _states[oldest]
            swallow("device.state", RuntimeError("span device state evicted unresolved"))
    active.defer(state.resolve)
    return state


def pending_count() -> int:
    """States awaiting their span's end (for tests)."""
    return len(_states)
