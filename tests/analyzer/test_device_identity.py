"""A device is the GPU the span names (``hw.id``), not the CUDA index of one process.

Serving fleets run one process per GPU (``CUDA_VISIBLE_DEVICES=i`` per replica), so every batch
span says ``inferaudit.device.id`` 0. Keyed by (host, index), four replicas on four GPUs of one
host were one device: their busy time merged into one union, utilisation read a quarter of the
truth and a false ``device_underused`` followed; keyed by (process, index) in the concurrency
sweep, two processes on one GPU were two devices. And idle-while-waiting was one fleet-wide
sweep: a replica idle while its own requests waited read as busy whenever another replica was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb
from _otlp_span_builder import on_both_engines, otlp_span, resource

from inferaudit_analyzer.analyses.concurrency import Concurrency, analyze_concurrency
from inferaudit_analyzer.analyses.utilization import Utilization, analyze_utilization
from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv as sc

GPU_A = "GPU-0a0a0a0a-0000-4000-8000-00000000000a"
GPU_B = "GPU-0b0b0b0b-0000-4000-8000-00000000000b"
WINDOW = 2_000 * MS


def _gpu(hw_id: str | None, index: int = 0) -> dict[str, Any]:
    """A CUDA batch span's device attributes, as the SDK writes them."""
    attrs: dict[str, Any] = {sc.DEVICE_ID: index}
    if hw_id is not None:
        attrs[sc.HW_ID] = hw_id
    return attrs


def _serve(db: FixtureDb, resource_id: int, hw_id: str | None, call_ms: tuple[int, int],
           n: int = 20, period_ms: int = 100, req_ms: int = 100) -> None:
    """One request at a time every ``period_ms``, its model call ``call_ms`` into it."""
    for i in range(n):
        st = T0 + i * period_ms * MS
        r = db.request(st, st + req_ms * MS, resource_id=resource_id, input_tokens=100,
                       output_tokens=20)
        a, b = call_ms
        db.batch(st + a * MS, st + b * MS, [r], resource_id=resource_id,
                 device_time_ns=(b - a) * MS, attributes=_gpu(hw_id))


def _measure(db: FixtureDb) -> tuple[Utilization, Concurrency]:
    create_views(db.con)
    return analyze_utilization(db.con, WINDOW), analyze_concurrency(db.con, WINDOW)


def _pinned(hw_ids: tuple[str | None, str | None], gpu_count: int | None = 2) -> FixtureDb:
    """Two processes on host ``node``, each on its CUDA device 0, both busy 90 of every 100 ms
    at the same time."""
    db = FixtureDb()
    for p, hw in enumerate(hw_ids, start=1):
        db.resource(p, host_name="node", gpu_count=gpu_count, service_name="worker",
                    price_usd_per_hour=1.0)
        _serve(db, p, hw, (5, 95))
    return db


def test_processes_pinned_one_per_gpu_are_as_many_busy_devices():
    util, conc = _measure(_pinned((GPU_A, GPU_B)))
    assert util.devices == 2
    assert util.busy_ns == 2 * 20 * 90 * MS   # each GPU its own union, not one merged
    assert util.ratio == pytest.approx(0.9)
    assert conc.swept_devices == 2
    assert conc.mean_while_busy == 1.0


def test_the_host_counts_its_distinct_gpus_where_its_gpu_count_is_unknown():
    util, _ = _measure(_pinned((GPU_A, GPU_B), gpu_count=None))
    assert util.devices == 2
    assert util.ratio == pytest.approx(0.9)


def test_pinned_gpus_at_90_percent_are_not_underused():
    rep = analyze_connection(_pinned((GPU_A, GPU_B)).con, AnalyzeParams())
    detail = rep["baseline"]["overall"]["device_utilization_detail"]
    assert detail["devices"] == 2
    assert detail["ratio"] > 0.85
    assert "device_underused" not in {f["id"] for f in rep["findings"]}


def test_without_hw_id_the_index_rule_stands():
    # spans of an older SDK: one host's processes on index 0 are its device 0 (utilisation),
    # and each process's own device in the concurrency sweep, as before
    util, conc = _measure(_pinned((None, None)))
    assert util.devices == 2                  # the host's gpu_count
    assert util.busy_ns == 20 * 90 * MS      # one union over the two processes' calls
    assert conc.swept_devices == 2


def _sharing(hw_ids: tuple[str, str]) -> FixtureDb:
    """Two processes on one host, each taking one request at a time (every 100 ms, 100 ms
    long); the first's calls run 5..45 ms into it, the second's 50..90 ms."""
    db = FixtureDb()
    for p in (1, 2):
        db.resource(p, host_name="node", service_name="worker")
    _serve(db, 1, hw_ids[0], (5, 45))
    _serve(db, 2, hw_ids[1], (50, 90))
    return db


def test_two_processes_sharing_one_gpu_are_one_device():
    util, conc = _measure(_sharing((GPU_A, GPU_A)))
    assert util.devices == 1
    assert util.busy_ns == 20 * 80 * MS
    assert conc.swept_devices == 1
    # while the GPU runs one process's call, the other's request waits on the same GPU
    assert conc.mean_while_busy == pytest.approx(2.0)


def test_two_processes_on_their_own_gpus_are_two_devices():
    util, conc = _measure(_sharing((GPU_A, GPU_B)))
    assert util.devices == 2
    assert conc.swept_devices == 2
    assert conc.mean_while_busy == pytest.approx(1.0)


def _replicas_one_idle() -> FixtureDb:
    """Replica A (GPU_A) takes a request every 200 ms, 100 ms long, and runs its model call in
    the last 20 ms: 80 ms of each its own requests wait with its GPU idle. Replica B (GPU_B)
    serves back-to-back requests, its GPU busy the whole time."""
    db = FixtureDb()
    db.resource(1, host_name="gpu0", gpu_count=1, service_name="a")
    db.resource(2, host_name="gpu1", gpu_count=1, service_name="b")
    _serve(db, 1, GPU_A, (80, 100), n=20, period_ms=200)
    _serve(db, 2, GPU_B, (0, 100), n=40, period_ms=100)
    return db


def test_a_replica_idle_while_its_requests_wait_is_idle_though_another_is_busy():
    db = _replicas_one_idle()
    _, conc = _measure(db)
    assert conc.idle_waiting_ns == 0             # fleet-wide: some call always runs
    assert conc.idle_while_waiting_ratio == pytest.approx(1600 / 6000)   # per device: A's
    assert conc.swept_devices == 2
    assert conc.device_idle_waiting_ns == 20 * 80 * MS
    assert conc.device_inflight_ns == 20 * 100 * MS + 40 * 100 * MS
    rep = analyze_connection(db.con, AnalyzeParams())
    f = {x["id"]: x for x in rep["findings"]}
    ev = f["idle_device_while_waiting"]["evidence"]
    assert ev["idle_while_waiting_ratio"] == pytest.approx(1600 / 6000, abs=1e-4)
    assert ev["idle_while_waiting_s"] == pytest.approx(1.6)
    assert ev["requests_inflight_s"] == pytest.approx(6.0)
    assert ev["devices_swept"] == 2


def test_calls_linked_to_no_request_keep_the_fleet_wide_idle_share():
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(20):
        st = T0 + i * 100 * MS
        db.request(st, st + 100 * MS, input_tokens=10, output_tokens=10)
        db.batch(st + 80 * MS, st + 100 * MS, [], device_time_ns=20 * MS,
                 attributes=_gpu(GPU_A))
    _, conc = _measure(db)
    assert conc.swept_devices == 0
    assert conc.idle_while_waiting_ratio == pytest.approx(0.8)


def _otlp_replicas() -> dict[str, Any]:
    """Two processes on host ``node`` (2 GPUs), each pinned to its GPU (device 0, its own
    hw.id): A idle 80 of each 100 ms request, B busy throughout; calls under their requests."""
    ids = iter(range(1, 100_000))

    def sid() -> str:
        return f"{next(ids):016x}"

    out = []
    for p, (hw, n, period, call) in enumerate(((GPU_A, 20, 200, (80, 100)),
                                              (GPU_B, 40, 100, (0, 100)))):
        spans = []
        for i in range(n):
            tid, st = f"{p + 1:08x}{i + 1:024x}", T0 + i * period * MS
            r = sid()
            spans.append(otlp_span(tid, r, st, st + 100 * MS, {
                sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_REQUEST_MODEL: "m", sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}))
            spans.append(otlp_span(tid, sid(), st + call[0] * MS, st + call[1] * MS, {
                sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "m", sc.BATCH_SIZE: 1,
                sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: (call[1] - call[0]) * MS,
                sc.DEVICE_ID: 0, sc.HW_ID: hw}, parent=r))
        res = {sc.SERVICE_NAME: f"worker{p}", sc.HOST_NAME: "node", sc.RES_GPU_COUNT: 2,
               sc.RES_PRICE_USD_PER_HOUR: 1.0}
        out.append(resource(res, sc.INSTRUMENTATION_NAME, spans))
    return {"resourceSpans": out}


def _figures(rep: dict[str, Any]) -> dict[str, Any]:
    detail = rep["baseline"]["overall"]["device_utilization_detail"]
    idle = next(f for f in rep["findings"] if f["id"] == "idle_device_while_waiting")
    return {"devices": detail["devices"], "busy_device_s": round(detail["busy_device_s"], 6),
            "idle": idle["evidence"]["idle_while_waiting_ratio"],
            "swept": idle["evidence"]["devices_swept"],
            "mean_while_busy": rep["baseline"]["overall"]["concurrency"]
                                  ["mean_while_device_busy"]}


def test_the_device_key_on_duckdb_and_clickhouse(tmp_path: Path) -> None:
    duck, ch = (_figures(rep) for rep in on_both_engines(tmp_path, _otlp_replicas()))
    assert duck == ch
    assert duck["devices"] == 2
    assert duck["busy_device_s"] == pytest.approx(20 * 0.02 + 40 * 0.1)
    assert duck["idle"] == pytest.approx(1600 / 6000, abs=1e-4)
    assert duck["swept"] == 2


def _gpu_with_cpu_calls(gpu_hw: str | None) -> FixtureDb:
    """One process on a one-GPU host: its GPU calls run 5..95 ms of each 100 ms request, and
    between them a CPU-side call (a tokenizer model, a CPU fallback) runs 95..99 ms."""
    db = FixtureDb()
    db.resource(1, host_name="node", gpu_count=1, gpu_model="NVIDIA H200", service_name="w",
                price_usd_per_hour=1.0)
    _serve(db, 1, gpu_hw, (5, 95))
    for i in range(20):
        st = T0 + i * 100 * MS
        r = db.request(st, st + 100 * MS, resource_id=1, input_tokens=10, output_tokens=0)
        db.batch(st + 95 * MS, st + 99 * MS, [r], resource_id=1, device_type="cpu",
                 cpu_time_ns=4 * MS, attributes={sc.DEVICE_CPU_THREADS: 1})
    return db


@pytest.mark.parametrize("gpu_hw", [GPU_A, None])
def test_cpu_calls_on_a_gpu_host_are_not_one_more_device(gpu_hw):
    # CPU calls named device 0 of their process while the GPU (keyed by its hw.id) was a device
    # of its own: a one-GPU host read as two devices and its utilisation halved
    util, _ = _measure(_gpu_with_cpu_calls(gpu_hw))
    assert util.devices == 1
    assert util.busy_ns <= WINDOW
    # the CPU step (95..99 ms) left the GPU idle: only the GPU calls' 90 ms are its busy time
    assert util.ratio == pytest.approx(20 * 90 * MS / WINDOW)


@pytest.mark.parametrize("gpu_hw", [GPU_A, None])
def test_cpu_calls_on_a_gpu_host_are_not_a_device_of_the_concurrency_sweep(gpu_hw):
    # the CPU calls' own key was a second device whose requests waited 96 of every 100 ms with
    # it idle: idle-while-waiting read 0.53 and a false idle_device_while_waiting followed
    _, conc = _measure(_gpu_with_cpu_calls(gpu_hw))
    assert conc.swept_devices == 1
    # on the GPU, each request waits 10 of its 100 ms with the GPU idle (its CPU-side step
    # and the gap): 0.1 of the time requests were in flight there
    assert conc.idle_while_waiting_ratio == pytest.approx(0.1, abs=0.01)
