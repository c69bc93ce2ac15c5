"""The hardware the analyzer will price, as OpenTelemetry Resource attributes.

Everything is read locally, without network calls (no cloud metadata endpoints: they can hang
for seconds in a server's start-up): ``/proc/cpuinfo``, CPU affinity, NVML (lazily imported,
guarded; no driver means no GPU attributes and one info log) and the DMI strings in
``/sys/devices/virtual/dmi/id`` for the cloud. ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_SERVICE_NAME`` are merged on top, so what the user states wins over what we detect.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import re
import socket
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource

from inferaudit_sdk import semconv
from inferaudit_sdk.config import AuditConfig

_logger = logging.getLogger("inferaudit_sdk")

_DMI_DIR = Path("/sys/devices/virtual/dmi/id")
# host.arch values of the OpenTelemetry semantic conventions.
_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "i386": "x86", "i686": "x86", "x86": "x86",
    "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm32", "armv6l": "arm32",
    "ppc64": "ppc64", "ppc64le": "ppc64", "ppc": "ppc32", "s390x": "s390x", "ia64": "ia64",
}
# AWS Nitro puts the instance type in product_name ("m5.xlarge", "g5.12xlarge", "p4d.24xlarge").
_AWS_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


def cpu_model_name(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> str | None:
    """The CPU model from ``/proc/cpuinfo`` (x86 ``model name``; ARM ``Model``/``Hardware``),
    else ``platform.processor()``; None when nothing says."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "cpu"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or None


def cpu_cores() -> int | None:
    """CPUs this process may run on (affinity, e.g. a container's cpuset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def gpu_info() -> tuple[str, int] | None:
    """(model of GPU 0, number of GPUs) via NVML, or None without a usable driver."""
    try:
        import pynvml
    except ImportError:
        _logger.info("inferaudit: nvidia-ml-py not installed; no GPU in the resource")
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...
        _logger.info("inferaudit: NVML unavailable (%s); no GPU in the resource", exc)
        return None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        if count <= 0:
            return None
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return str(name), count
    except Exception as exc:
        _logger.info("inferaudit: NVML query failed (%s); no GPU in the resource", exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def cloud_from_dmi(dmi_dir: str | os.PathLike[str] = _DMI_DIR) -> tuple[str | None, str | None]:
    """(cloud.provider, host.type) guessed from DMI strings; either may be None.

    AWS: ``sys_vendor`` "Amazon EC2", ``product_name`` the instance type on Nitro. GCP:
    "Google" / "Google Compute Engine" (no type in DMI). Azure: "Microsoft Corporation" /
    "Virtual Machine" with the Azure chassis asset tag.
    """
    base = Path(dmi_dir)
    vendor = _read(base / "sys_vendor")
    product = _read(base / "product_name")
    asset = _read(base / "chassis_asset_tag")
    bios_vendor = _read(base / "bios_vendor")
    if vendor.startswith("Amazon") or bios_vendor.startswith("Amazon"):
        return "aws", product if _AWS_INSTANCE_TYPE.match(product) else None
    if vendor.startswith("Google") or product.startswith("Google Compute Engine"):
        return "gcp", None
    if vendor == "Microsoft Corporation" and (
        asset == "7783-7084-3265-9085-8269-3286-77" or product == "Virtual Machine"
    ):
        return "azure", None
    return None, None


@functools.lru_cache(maxsize=1)
def _hardware() -> tuple[tuple[str, Any], ...]:
    """Host facts that cannot change while the process runs (detected once)."""
    attrs: dict[str, Any] = {
        semconv.HOST_NAME: socket.gethostname(),
        semconv.HOST_ARCH: _ARCH.get(platform.machine().lower(), platform.machine().lower()),
    }
    model = cpu_model_name()
    if model:
        attrs[semconv.HOST_CPU_MODEL_NAME] = model
    cores = cpu_cores()
    if cores:
        attrs[semconv.RES_HOST_CPU_CORES] = cores
    provider, host_type = cloud_from_dmi()
    if provider:
        attrs[semconv.CLOUD_PROVIDER] = provider
    if host_type:
        attrs[semconv.HOST_TYPE] = host_type
    return tuple(attrs.items())


def detect_attributes(config: AuditConfig, *, gpu: bool | None = None) -> dict[str, Any]:
    """Our resource attributes (before the user's ``OTEL_RESOURCE_ATTRIBUTES``).

    Args:
        config: ``instance_type`` overrides the DMI guess; ``price_usd_per_hour`` is added when
            set; ``nvml_enabled`` False skips the GPU query.
        gpu: force the GPU query on/off (default: ``config.nvml_enabled``).
    """
    attrs = dict(_hardware())
    if gpu if gpu is not None else config.nvml_enabled:
        info = _gpu_cached()
        if info is not None:
            attrs[semconv.RES_GPU_MODEL], attrs[semconv.RES_GPU_COUNT] = info
    if config.instance_type:
        attrs[semconv.HOST_TYPE] = config.instance_type
    if config.price_usd_per_hour is not None:
        attrs[semconv.RES_PRICE_USD_PER_HOUR] = float(config.price_usd_per_hour)
    attrs[semconv.RES_SCHEMA_VERSION] = semconv.SCHEMA_VERSION
    return attrs


@functools.lru_cache(maxsize=1)
def _gpu_cached() -> tuple[str, int] | None:
    return gpu_info()


def build_resource(config: AuditConfig, *, gpu: bool | None = None) -> Resource:
    """Detected hardware merged with the SDK defaults and the environment; the user's
    ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME`` win over anything detected."""
    try:
        ours = Resource(detect_attributes(config, gpu=gpu))
    except Exception as exc:  # detection must never stop configure()
        _logger.warning("inferaudit: hardware detection failed (%s); resource without it", exc)
        ours = Resource({semconv.RES_SCHEMA_VERSION: semconv.SCHEMA_VERSION})
    return ours.merge(Resource.create({}))
