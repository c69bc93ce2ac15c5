"""Background samplers of hardware counters (see ``nvml``). Importing this package imports
neither pynvml nor torch."""

from __future__ import annotations

from inferaudit_sdk.samplers.nvml import NvmlSampler, get_sampler, start_sampler, stop_sampler

__all__ = ["NvmlSampler", "get_sampler", "start_sampler", "stop_sampler"]
