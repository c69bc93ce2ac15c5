"""The NVML sampler samples only the GPUs CUDA_VISIBLE_DEVICES leaves this process, in CUDA's
order: the parser on its own, then the sampler, its metrics and a model span through the fake
NVML (which raises the real pynvml errors). The environment is set with monkeypatch only."""

from __future__ import annotations

import logging

import pynvml
import pytest
import torch
from _device_models import fake_cuda_call_span

from inferaudit_sdk import semconv
from inferaudit_sdk.samplers import _nvml_metrics, nvml
from inferaudit_sdk.samplers._cuda_visible import select
from inferaudit_sdk.samplers._fake_nvml import FakeGpu, FakeLoad, FakeNvml
from inferaudit_sdk.samplers.nvml import NvmlSampler

U = [
    "GPU-aaaa0000-0000-0000-0000-000000000000",
    "GPU-aaaa1111-1111-1111-1111-111111111111",
    "GPU-bbbb2222-2222-2222-2222-222222222222",
    "GPU-cccc3333-3333-3333-3333-333333333333",
]
SAME = ["NVIDIA H100 80GB HBM3"] * 4
MIXED = ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3",
         "NVIDIA H100 80GB HBM3"]
MIG_B = "MIG-5eb2a1f0-0d1e-5c3a-9f6e-3b8d2c1a0f9e"  # a slice of U[2]


@pytest.mark.parametrize(("spec", "want"), [
    ("2,0", (2, 0)),  # CUDA's order is the list's order
    (" 1 , 3 ", (1, 3)),  # entries stripped
    ("0,2,-1,1", (0, 2)),  # NVIDIA's own example: parsing stops at -1
    ("-1", ()),
    ("7", ()),  # out of range
    ("1,9,2", (1,)),
    ("0,,1", (0,)),  # an empty entry is invalid too
    ("1gpu", (1,)),  # read like strtoul
    ("0,0", ()),  # a GPU twice: nothing visible
    ("1,0,1", ()),
    ("3,-1,3", (3,)),  # a repeat after the stop is never read
    ("", ()),
    ("  ", ()),
    (U[3], (3,)),
    ("GPU-bbbb", (2,)),  # a unique prefix
    ("GPU-cccc3333,GPU-aaaa0", (3, 0)),
    ("GPU-aaaa", ()),  # a prefix of two UUIDs is invalid
    ("GPU-cccc,GPU-ffff,GPU-aaaa0", (3,)),  # an unknown UUID stops the list
    ("GPU-bbbb,GPU-bbbb2222", ()),  # two prefixes of one UUID: the GPU twice
    ("GPU-cccc,1", (3,)),  # an index after UUIDs stops the list
    ("1,GPU-cccc", (1,)),
    ("MIG-GPU-bbbb2222/1/0", (2,)),  # the older MIG form names its parent
])
def test_visible_list_is_read_the_way_cuda_reads_it(spec, want):
    got = select(spec, SAME, U, device_order=None)
    assert got.nvml_indices == want
    assert not got.every_gpu
    if not want:
        assert got.note  # the one log line says why nothing is visible


def _torch_reading(spec: str, uuids: list[str]) -> tuple[int, ...]:
    """What torch makes of ``spec`` before CUDA starts (its NVML-based device count)."""
    parsed = torch.cuda._parse_visible_devices()
    if not parsed:
        return ()
    if isinstance(parsed[0], str):
        return tuple(torch.cuda._transform_uuid_to_ordinals(parsed, uuids))
    out: list[int] = []
    for idx in parsed:  # _device_count_nvml's trim at the first index past the last GPU
        if idx >= len(uuids):
            break
        out.append(idx)
    return tuple(out)


def test_the_reading_is_torchs_over_a_grid_of_inputs(monkeypatch):
    """Every list of one to three entries drawn from these reads as torch reads it."""
    import itertools

    if not hasattr(torch.cuda, "_parse_visible_devices") \
            or not hasattr(torch.cuda, "_transform_uuid_to_ordinals"):
        pytest.skip("this torch has no NVML-based parser to compare with")
    uuids = ["GPU-aaaa1111-0000", "GPU-aaab2222-0000", "GPU-bbbb3333-0000"]
    atoms = ["0", "1", "2", "5", "-1", "+1", "-0", "1gpu", "", " 1", "x", "GPU-aaaa",
             "GPU-aaa", "GPU-bbbb", "GPU-zzz", " GPU-bbbb", "GPU-bbbb ", "GPU-aaab2222-0000",
             "gpu-bbbb", "MIG-GPU-bbbb3333-0000/1/0"]
    differ = []
    for n in (1, 2, 3):
        for combo in itertools.product(atoms, repeat=n):
            spec = ",".join(combo)
            if spec.startswith("MIG-"):
                continue  # torch does not map MIG devices
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
            want = _torch_reading(spec, uuids)
            got = select(spec, ["H100"] * 3, uuids, device_order="PCI_BUS_ID").nvml_indices
            if got != want:
                differ.append((spec, want, got))
    assert not differ, differ[:10]


def test_unset_means_every_gpu():
    got = select(None, SAME, U)
    assert got.nvml_indices == (0, 1, 2, 3) and got.every_gpu and got.note is None


def test_indices_under_fastest_first_with_different_gpus_fall_back_to_every_gpu():
    fastest = select("1", MIXED, U, device_order=None)
    assert fastest.nvml_indices == (0, 1, 2, 3) and fastest.every_gpu
    assert "FASTEST_FIRST" in fastest.note and "A100" in fastest.note
    assert select("1", MIXED, U, device_order="FASTEST_FIRST").every_gpu
    assert select("1", MIXED, U, device_order="PCI_BUS_ID").nvml_indices == (1,)
    assert select("1", SAME, U, device_order=None).nvml_indices == (1,)  # alike: PCI order
    assert select("GPU-aaaa1", MIXED, U, device_order=None).nvml_indices == (1,)  # UUIDs: safe
    assert select("-1", MIXED, U, device_order=None).nvml_indices == ()  # nothing, either way


def test_mig_entries_map_to_their_parent_gpu():
    parents = {MIG_B: 2, "MIG-0f0f": 2}
    got = select(f"{MIG_B},MIG-0f0f", SAME, U, mig_parent=parents.get)
    assert got.nvml_indices == (2,)  # two slices of one GPU: that GPU once
    assert got.aliases == {2: (MIG_B, "MIG-0f0f")}
    assert select(f"{MIG_B},{MIG_B}", SAME, U, mig_parent=parents.get).nvml_indices == ()
    unknown = select("MIG-dead", SAME, U, mig_parent=parents.get)
    assert unknown.every_gpu and unknown.nvml_indices == (0, 1, 2, 3) and "MIG" in unknown.note


# --------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------
def two_gpus(**second):
    return FakeNvml([FakeGpu(uuid=U[0], load=FakeLoad(sm_util_pct=10, power_w=90.0)),
                     FakeGpu(uuid=U[1], load=FakeLoad(sm_util_pct=37, power_w=250.0), **second)])


def test_sampler_polls_only_the_visible_gpu(monkeypatch, metric_reader):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fake = two_gpus()
    sampler = NvmlSampler(fake)
    assert sampler.open()
    assert [(g.index, g.nvml_index, g.uuid) for g in sampler.gpus] == [(0, 1, U[1])]
    before = fake.calls_by_uuid.copy()
    sampler.sample_once()
    assert fake.calls_by_uuid[U[0]] == before[U[0]]  # not one call for GPU 0 on a tick
    assert fake.calls_by_uuid[U[1]] > before[U[1]]
    assert sampler.index_for_uuid(U[1]) == 0
    assert sampler.index_for_uuid(U[1].removeprefix("GPU-")) == 0  # torch's spelling
    assert sampler.index_for_uuid(U[0]) is None
    reader, provider = metric_reader
    _nvml_metrics.register(sampler, provider)
    util = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == semconv.METRIC_HW_GPU_UTILIZATION
            for p in m.data.data_points]
    assert [(p.attributes[semconv.HW_ID], p.value) for p in util] == [(U[1], 0.37)]
    sampler.stop()


def test_a_model_span_gets_the_visible_gpu(monkeypatch, spans, config):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    sampler = nvml.start_sampler(config(nvml_enabled=True), backend=two_gpus())
    assert sampler is not None
    span = fake_cuda_call_span(sampler, spans)  # CUDA device 0 = NVML GPU 1 here
    assert span.attributes[semconv.GPU_UTILIZATION_RATIO] == pytest.approx(0.37)


@pytest.mark.parametrize("spec", ["", "-1", "5", "0,0"])
def test_no_visible_gpu_is_like_no_nvml(monkeypatch, caplog, config, spec):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    fake = two_gpus()
    sampler = NvmlSampler(fake)
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        assert not sampler.start()
    assert not sampler.running and not sampler.is_open and sampler.gpus == []
    assert fake._refs == 0  # NVML shut down again
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no GPU visible" in lines[0], lines
    assert nvml.start_sampler(config(nvml_enabled=True), backend=two_gpus()) is None


def test_uuid_and_prefix_entries(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{U[1]},GPU-aaaa0")
    sampler = NvmlSampler(two_gpus())
    assert sampler.open()
    assert [(g.index, g.nvml_index) for g in sampler.gpus] == [(0, 1), (1, 0)]  # CUDA's order
    assert sampler.index_for_uuid(U[0]) == 1
    sampler.stop()


def test_fastest_first_with_different_gpus_samples_every_gpu_and_says_why(monkeypatch, caplog):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fake = FakeNvml([FakeGpu(uuid=U[0]), FakeGpu(uuid=U[1], name="NVIDIA L4")])
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        sampler = NvmlSampler(fake)
        assert sampler.open()
    assert [g.nvml_index for g in sampler.gpus] == [0, 1]
    assert [r.getMessage() for r in caplog.records if "FASTEST_FIRST" in r.getMessage()]
    sampler.stop()
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert sampler.open()
    assert [g.nvml_index for g in sampler.gpus] == [1]
    sampler.stop()


def test_a_mig_device_is_sampled_as_its_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_B)
    fake = two_gpus(mig_uuids=(MIG_B,))
    sampler = NvmlSampler(fake)
    assert sampler.open()
    assert [(g.nvml_index, g.mig_uuids) for g in sampler.gpus] == [(1, (MIG_B,))]
    assert sampler.index_for_uuid(MIG_B) == 0  # what CUDA reports for the slice
    assert sampler.index_for_uuid(MIG_B.removeprefix("MIG-")) == 0
    sampler.stop()


@pytest.mark.parametrize("spec", [None, f"MIG-GPU-{U[1].removeprefix('GPU-')}/1/0"],
                         ids=["unset", "older-mig-form"])
def test_a_mig_device_not_named_by_its_uuid_is_found_through_nvml(monkeypatch, spec):
    """A container runtime exposes the slice and leaves CUDA_VISIBLE_DEVICES unset, or the
    older form names the parent: CUDA reports the slice's UUID, and NVML knows its parent."""
    if spec is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    sampler = NvmlSampler(two_gpus(mig_uuids=(MIG_B,)))
    assert sampler.open()
    want = [g.uuid for g in sampler.gpus].index(U[1])
    assert sampler.index_for_uuid(MIG_B.removeprefix("MIG-")) == want  # torch's spelling
    assert MIG_B in sampler.gpus[want].mig_uuids  # asked once, then known
    assert sampler.index_for_uuid("MIG-0badc0de-0000-0000-0000-000000000000") is None
    sampler.stop()


def test_a_mig_device_nvml_does_not_know_falls_back_to_every_gpu(monkeypatch, caplog):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_B)
    fake = two_gpus()  # no GPU has that slice
    with caplog.at_level(logging.INFO, logger="inferaudit_sdk"):
        sampler = NvmlSampler(fake)
        assert sampler.open()
    assert fake.raised["NVMLError_NotFound"] == 1
    assert [g.nvml_index for g in sampler.gpus] == [0, 1]
    assert len([r for r in caplog.records if "MIG" in r.getMessage()]) == 1
    sampler.stop()


def test_an_explicit_visible_list_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    sampler = NvmlSampler(two_gpus(), visible="0")
    assert sampler.open()
    assert [g.nvml_index for g in sampler.gpus] == [0]
    sampler.stop()
    every = NvmlSampler(two_gpus(), visible=None)  # as if unset
    assert every.open()
    assert [g.nvml_index for g in every.gpus] == [0, 1]
    every.stop()


def test_fake_lookup_by_uuid_raises_what_real_nvml_raises():
    fake = two_gpus(mig_uuids=(MIG_B,))
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetHandleByUUID(U[0])
    fake.nvmlInit()
    assert fake.nvmlDeviceGetHandleByUUID(U[0]) is fake.gpus[0]
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetHandleByUUID("GPU-aaaa0")  # NVML takes whole UUIDs only
    mig = fake.nvmlDeviceGetHandleByUUID(MIG_B.encode())
    assert fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig) is fake.gpus[1]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(fake.gpus[0])
    fake.nvmlShutdown()


def test_a_cuda_device_maps_to_its_sampler_index_by_uuid(monkeypatch):
    """The torch wrappers map a device by the UUID its backend read (hw.id) once per sampler:
    the sampler's index for it, -1 (no counters) for a GPU it does not sample, never another
    GPU's counters; without a UUID, the same numbering."""
    from inferaudit_sdk.instrumentation import _model_call

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", U[1])
    sampler = NvmlSampler(two_gpus())
    assert sampler.open()
    looked_up: list[str] = []
    lookup = sampler.index_for_uuid
    monkeypatch.setattr(sampler, "index_for_uuid", lambda u: looked_up.append(u) or lookup(u))
    assert _model_call._nvml_index(sampler, 0, U[1]) == 0
    assert _model_call._nvml_index(sampler, 1, U[0]) == -1  # U[0]: not sampled here
    assert sampler.aggregate(-1, 0, 10**9) == {}
    assert _model_call._nvml_index(sampler, 0, U[1]) == 0
    assert looked_up == [U[1], U[0]]  # once per device
    assert _model_call._nvml_index(sampler, 2, None) == 2
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fresh = NvmlSampler(two_gpus())  # every GPU, in NVML's order
    assert fresh.open()
    assert (_model_call._nvml_index(fresh, 0, U[1]),
            _model_call._nvml_index(fresh, 1, U[0])) == (1, 0)
