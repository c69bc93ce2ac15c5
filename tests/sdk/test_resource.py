"""The Resource describes the hardware the analyzer prices; the user's attributes win."""

from __future__ import annotations

import logging
import os
import platform
import socket
from pathlib import Path

import pytest

from inferaudit_sdk import semconv
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.sdk import resource as res


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)


def _dmi(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "dmi"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text + "\n")
    return d


def test_host_attributes_are_detected_locally():
    attrs = res.build_resource(AuditConfig(nvml_enabled=False)).attributes
    assert attrs[semconv.HOST_NAME] == socket.gethostname()
    assert attrs[semconv.HOST_ARCH] in {"amd64", "arm64", "x86", "arm32", "ppc64", "s390x",
                                        platform.machine().lower()}
    expected_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count())
    assert attrs[semconv.RES_HOST_CPU_CORES] == expected_cores
    assert attrs[semconv.RES_SCHEMA_VERSION] == semconv.SCHEMA_VERSION
    assert semconv.RES_PRICE_USD_PER_HOUR not in attrs
    if Path("/proc/cpuinfo").exists():
        assert attrs[semconv.HOST_CPU_MODEL_NAME] == res.cpu_model_name()


def test_cpu_model_from_cpuinfo(tmp_path: Path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                   "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t: fpu\n")
    assert res.cpu_model_name(x86) == "Intel(R) Xeon(R) Platinum 8488C"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 243.75\nCPU part\t: 0xd4f\n\n"
                   "Model\t: NVIDIA Grace\n")
    assert res.cpu_model_name(arm) == "NVIDIA Grace"


@pytest.mark.parametrize(
    ("files", "provider", "host_type"),
    [
        ({"sys_vendor": "Amazon EC2", "product_name": "g5.12xlarge"}, "aws", "g5.12xlarge"),
        ({"sys_vendor": "Amazon EC2", "product_name": "Not Specified"}, "aws", None),
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, "gcp", None),
        ({"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine",
          "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77"}, "azure", None),
        ({"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R750"}, None, None),
        ({}, None, None),
    ],
)
def test_cloud_from_dmi(tmp_path, files, provider, host_type):
    assert res.cloud_from_dmi(_dmi(tmp_path, **files)) == (provider, host_type)


def test_config_instance_type_and_price(monkeypatch):
    cfg = AuditConfig(nvml_enabled=False, instance_type="p4d.24xlarge", price_usd_per_hour=32.77)
    attrs = res.build_resource(cfg).attributes
    assert attrs[semconv.HOST_TYPE] == "p4d.24xlarge"
    assert attrs[semconv.RES_PRICE_USD_PER_HOUR] == pytest.approx(32.77)


def test_user_resource_attributes_win(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES",
                       "host.type=my-box,inferaudit.gpu.model=H100-custom,team=ml")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "inference")
    cfg = AuditConfig(nvml_enabled=False, instance_type="g5.xlarge")
    attrs = res.build_resource(cfg).attributes
    assert attrs[semconv.HOST_TYPE] == "my-box"
    assert attrs[semconv.RES_GPU_MODEL] == "H100-custom"
    assert attrs["team"] == "ml" and attrs[semconv.SERVICE_NAME] == "inference"
    assert attrs[semconv.HOST_NAME] == socket.gethostname()


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVML")
def test_no_gpu_means_no_gpu_attributes_and_one_log(caplog):
    res._gpu_cached.cache_clear()
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        attrs = res.detect_attributes(AuditConfig(nvml_enabled=True))
        res.detect_attributes(AuditConfig(nvml_enabled=True))
    assert semconv.RES_GPU_MODEL not in attrs and semconv.RES_GPU_COUNT not in attrs
    logs = [r for r in caplog.records if "NVML" in r.getMessage() or "nvidia" in r.getMessage()]
    assert len(logs) == 1 and logs[0].levelno <= logging.INFO


def test_nvml_disabled_skips_the_query(caplog):
    res._gpu_cached.cache_clear()
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        attrs = res.detect_attributes(AuditConfig(nvml_enabled=False))
    assert semconv.RES_GPU_COUNT not in attrs
    assert not [r for r in caplog.records if "NVML" in r.getMessage()]


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_works(), reason="needs an NVIDIA GPU with a working NVML")
def test_gpu_model_and_count_from_nvml():
    import pynvml

    res._gpu_cached.cache_clear()
    attrs = res.detect_attributes(AuditConfig(nvml_enabled=True))
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    finally:
        pynvml.nvmlShutdown()
    name = name.decode() if isinstance(name, bytes) else name
    assert attrs[semconv.RES_GPU_COUNT] == count >= 1
    assert attrs[semconv.RES_GPU_MODEL] == name
    print(f"GPU resource: {name} x{count}")
