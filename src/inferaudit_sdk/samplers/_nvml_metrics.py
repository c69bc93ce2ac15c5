"""The NVML sampler's counters as OpenTelemetry metrics (hardware conventions, ``hw.*``).

Observable instruments whose callbacks read the newest ring row per GPU (no NVML call at
collection time). Every point carries ``hw.id`` (the GPU UUID), ``hw.model`` (the product
name), ``hw.type`` = "gpu" and ``hw.vendor``; utilisation adds ``hw.gpu.task`` = "general",
PCIe I/O adds ``network.io.direction``. What the conventions lack (memory-controller busy
time, SM clock, throttle reasons) uses ``inferaudit.gpu.*`` names.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from inferaudit_sdk import semconv
from inferaudit_sdk.samplers._ring import F

VENDOR = "NVIDIA"


def _attrs(gpu: Any) -> dict[str, Any]:
    return {
        semconv.HW_ID: gpu.uuid,
        semconv.HW_MODEL: gpu.name,
        semconv.HW_TYPE: "gpu",
        semconv.HW_VENDOR: VENDOR,
    }


Source = Callable[[], Any]  # the sampler to read now (None: no points)


def _gpu_cb(source: Source, points: Callable[[Any, Any], Iterable[tuple[Any, Any]]]
            ) -> Callable[[Any], Iterable[Any]]:
    """A callback observing ``points(sampler, gpu)`` -> (value, extra attributes) per GPU."""
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> Iterable[Any]:
        out: list[Any] = []
        sampler = source()
        if sampler is None or not sampler.is_open:
            return out
        for gpu in sampler.gpus:
            for value, extra in points(sampler, gpu):
                attrs = _attrs(gpu)
                if extra:
                    attrs.update(extra)
                out.append(Observation(value, attrs))
        return out

    return callback


def _field_cb(source: Source, field: str, extra: dict[str, Any] | None = None
              ) -> Callable[[Any], Iterable[Any]]:
    col = F[field]

    def points(sampler: Any, gpu: Any) -> Iterable[tuple[Any, Any]]:
        latest = sampler.latest(gpu.index)
        if latest is not None:
            value = float(latest[1][col])
            if not math.isnan(value):
                yield value, extra

    return _gpu_cb(source, points)


def _memory_used_cb(source: Source) -> Callable[[Any], Iterable[Any]]:
    """``hw.gpu.memory.utilization``: the fraction of the GPU's memory in use."""
    used_col, total_col = F["mem_used_bytes"], F["mem_total_bytes"]

    def points(sampler: Any, gpu: Any) -> Iterable[tuple[Any, Any]]:
        latest = sampler.latest(gpu.index)
        if latest is not None:
            used, total = float(latest[1][used_col]), float(latest[1][total_col])
            if total > 0 and not math.isnan(used):
                yield used / total, None

    return _gpu_cb(source, points)


def _io_cb(source: Source) -> Callable[[Any], Iterable[Any]]:
    def points(sampler: Any, gpu: Any) -> Iterable[tuple[Any, Any]]:
        io = sampler.io_bytes(gpu.index)
        if io is not None:
            yield int(io[0]), {semconv.NETWORK_IO_DIRECTION: "transmit"}
            yield int(io[1]), {semconv.NETWORK_IO_DIRECTION: "receive"}

    return _gpu_cb(source, points)


def _energy_cb(source: Source) -> Callable[[Any], Iterable[Any]]:
    def points(sampler: Any, gpu: Any) -> Iterable[tuple[Any, Any]]:
        joules = sampler.energy_j(gpu.index)
        if joules is not None:
            yield joules, None

    return _gpu_cb(source, points)


# Meters the instruments exist on. The SDK returns an existing instrument (and drops the new
# callbacks) when one is created again, so they are created once per meter and read whichever
# sampler ``source`` gives: a sampler started again after a stop keeps being exported.
_registered: weakref.WeakSet[Any] = weakref.WeakSet()


def register(sampler: Any, meter_provider: Any | None = None) -> list[Any]:
    """Create the observable instruments on ``meter_provider`` (default: the SDK's meter, bound
    to whatever provider ``configure()`` installs), reading ``sampler``: a sampler, or a
    zero-argument callable returning the one to read. Once per meter; [] after the first."""
    source: Source = sampler if callable(sampler) else (lambda: sampler)
    if meter_provider is not None:
        from inferaudit_sdk._version import VERSION

        meter = meter_provider.get_meter(semconv.INSTRUMENTATION_NAME, VERSION)
    else:
        from inferaudit_sdk import _tracing

        meter = _tracing.meter()
    if meter in _registered:
        return []
    _registered.add(meter)
    general = {semconv.HW_GPU_TASK: "general"}
    return [
        meter.create_observable_gauge(
            semconv.METRIC_HW_GPU_UTILIZATION, [_field_cb(source, "sm_util_ratio", general)],
            unit="1", description="Fraction of time the GPU ran kernels (NVML).",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_HW_GPU_MEMORY_UTILIZATION, [_memory_used_cb(source)],
            unit="1", description="Fraction of GPU memory in use.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_GPU_MEMORY_CONTROLLER_UTILIZATION,
            [_field_cb(source, "mem_util_ratio")],
            unit="1", description="Fraction of time GPU memory was read or written (NVML).",
        ),
        meter.create_observable_up_down_counter(
            semconv.METRIC_HW_GPU_MEMORY_USAGE, [_field_cb(source, "mem_used_bytes")],
            unit="By", description="GPU memory in use.",
        ),
        meter.create_observable_up_down_counter(
            semconv.METRIC_HW_GPU_MEMORY_LIMIT, [_field_cb(source, "mem_total_bytes")],
            unit="By", description="GPU memory size.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_HW_POWER, [_field_cb(source, "power_w")],
            unit="W", description="GPU power draw.",
        ),
        meter.create_observable_counter(
            semconv.METRIC_HW_ENERGY, [_energy_cb(source)],
            unit="J", description="GPU energy consumed (driver counter).",
        ),
        meter.create_observable_counter(
            semconv.METRIC_HW_GPU_IO, [_io_cb(source)],
            unit="By", description="PCIe bytes moved, integrated from NVML throughput.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_GPU_SM_CLOCK, [_field_cb(source, "sm_clock_mhz")],
            unit="MHz", description="SM clock.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_GPU_THROTTLE_REASONS, [_field_cb(source, "throttle_reasons")],
            unit="1", description="NVML clock event (throttle) reasons bitmask.",
        ),
    ]
