"""The NVML sampler's counters as OpenTelemetry metrics (hardware conventions, ``hw.*``).

Observable instruments whose callbacks read the newest ring row per GPU (no NVML call at
collection time). Every point carries ``hw.id`` (the GPU UUID), ``hw.name``, ``hw.type`` =
"gpu" and ``hw.vendor``; utilisation adds ``hw.gpu.task`` = "general", PCIe I/O adds
``network.io.direction``. What the conventions lack (SM clock, throttle reasons) uses
``inferaudit.gpu.*`` names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from inferaudit_sdk import semconv
from inferaudit_sdk.samplers._ring import F

VENDOR = "NVIDIA"


def _attrs(gpu: Any) -> dict[str, Any]:
    return {
        semconv.HW_ID: gpu.uuid,
        semconv.HW_NAME: gpu.name,
        semconv.HW_TYPE: "gpu",
        semconv.HW_VENDOR: VENDOR,
    }


def _field_cb(sampler: Any, field: str, extra: dict[str, Any] | None = None,
              scale: float = 1.0) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> Iterable[Any]:
        out = []
        if not sampler.is_open:
            return out
        for gpu in sampler.gpus:
            latest = sampler.latest(gpu.index)
            if latest is None:
                continue
            value = float(latest[1][F[field]])
            if math.isnan(value):
                continue
            attrs = _attrs(gpu)
            if extra:
                attrs.update(extra)
            out.append(Observation(value * scale, attrs))
        return out

    return callback


def _io_cb(sampler: Any) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> Iterable[Any]:
        out = []
        if not sampler.is_open:
            return out
        for gpu in sampler.gpus:
            if "pcie" in sampler._disabled[gpu.index]:
                continue
            tx, rx = sampler.io_bytes(gpu.index)
            for value, direction in ((tx, "transmit"), (rx, "receive")):
                attrs = _attrs(gpu)
                attrs[semconv.NETWORK_IO_DIRECTION] = direction
                out.append(Observation(int(value), attrs))
        return out

    return callback


def _energy_cb(sampler: Any) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> Iterable[Any]:
        out = []
        if not sampler.is_open:
            return out
        for gpu in sampler.gpus:
            joules = sampler.energy_j(gpu.index)
            if joules is not None:
                out.append(Observation(joules, _attrs(gpu)))
        return out

    return callback


def register(sampler: Any, meter_provider: Any | None = None) -> list[Any]:
    """Create the observable instruments for ``sampler`` on ``meter_provider`` (default: the
    SDK's meter, bound to whatever provider ``configure()`` installs)."""
    if meter_provider is not None:
        from inferaudit_sdk._version import VERSION

        meter = meter_provider.get_meter(semconv.INSTRUMENTATION_NAME, VERSION)
    else:
        from inferaudit_sdk import _tracing

        meter = _tracing.meter()
    general = {semconv.HW_GPU_TASK: "general"}
    return [
        meter.create_observable_gauge(
            semconv.METRIC_HW_GPU_UTILIZATION, [_field_cb(sampler, "sm_util_ratio", general)],
            unit="1", description="Fraction of time the GPU ran kernels (NVML).",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_HW_GPU_MEMORY_UTILIZATION, [_field_cb(sampler, "mem_util_ratio")],
            unit="1", description="Fraction of time GPU memory was read or written (NVML).",
        ),
        meter.create_observable_up_down_counter(
            semconv.METRIC_HW_GPU_MEMORY_USAGE, [_field_cb(sampler, "mem_used_bytes")],
            unit="By", description="GPU memory in use.",
        ),
        meter.create_observable_up_down_counter(
            semconv.METRIC_HW_GPU_MEMORY_LIMIT, [_field_cb(sampler, "mem_total_bytes")],
            unit="By", description="GPU memory size.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_HW_POWER, [_field_cb(sampler, "power_w")],
            unit="W", description="GPU power draw.",
        ),
        meter.create_observable_counter(
            semconv.METRIC_HW_ENERGY, [_energy_cb(sampler)],
            unit="J", description="GPU energy consumed (driver counter).",
        ),
        meter.create_observable_counter(
            semconv.METRIC_HW_GPU_IO, [_io_cb(sampler)],
            unit="By", description="PCIe bytes moved, integrated from NVML throughput.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_GPU_SM_CLOCK, [_field_cb(sampler, "sm_clock_mhz")],
            unit="MHz", description="SM clock.",
        ),
        meter.create_observable_gauge(
            semconv.METRIC_GPU_THROTTLE_REASONS, [_field_cb(sampler, "throttle_reasons")],
            unit="1", description="NVML clock event (throttle) reasons bitmask.",
        ),
    ]
