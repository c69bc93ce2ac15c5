"""Each finding fires on the fixture that has the problem and stays silent on one that does not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _analysis_fixtures import MS, T0, FixtureDb, batched_db, unbatched_db

from inferaudit_analyzer.analyses.redundancy import near_duplicate_pairs
from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection


def _findings(db: FixtureDb, **kw) -> dict[str, dict]:
    rep = analyze_connection(db.con, AnalyzeParams(**kw))
    return {f["id"]: f for f in rep["findings"]}


def test_unbatched_serving_fires_when_requests_queue_behind_size1_calls():
    f = _findings(unbatched_db())
    assert f["unbatched_serving"]["layer"] == "runtime"
    assert f["unbatched_serving"]["evidence"]["size1_ratio"] == 1.0
    assert f["unbatched_serving"]["evidence"]["concurrency_while_device_busy"] > 1.5


def test_no_unbatched_finding_when_requests_do_not_overlap():
    # arrivals slower than service: size-1 calls are right, nobody waits
    f = _findings(unbatched_db(n=30, gap_ms=100, service_ms=50, device_ms=48))
    assert "unbatched_serving" not in f
    assert "idle_device_while_waiting" not in f


def test_batched_saturated_server_has_no_runtime_findings():
    f = _findings(batched_db())
    assert not [k for k, v in f.items() if v["layer"] == "runtime"], f


def test_idle_device_while_waiting():
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    for i in range(20):
        start = T0 + i * 100 * MS
        r = db.request(start, start + 100 * MS, input_tokens=10, output_tokens=10)
        # the model call takes 20 ms of a 100 ms request: 80 % of the wait is the stack
        db.batch(start + 70 * MS, start + 90 * MS, [r], device_time_ns=20 * MS)
    f = _findings(db)
    ev = f["idle_device_while_waiting"]["evidence"]
    assert ev["idle_while_waiting_ratio"] == pytest.approx(0.8)
    assert f["idle_device_while_waiting"]["severity"] == "high"
    assert "device_underused" not in f  # the cause is the waiting, not over-provisioning


def test_device_underused_without_waiting():
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    for i in range(20):
        start = T0 + i * 1000 * MS
        r = db.request(start, start + 20 * MS, input_tokens=10, output_tokens=10)
        db.batch(start, start + 20 * MS, [r], device_time_ns=20 * MS)
    f = _findings(db)
    assert f["device_underused"]["evidence"]["device_utilization_ratio"] < 0.05


def _fp_db(prompts: list[tuple[str, str]], cache_hits: set[int] = frozenset()) -> FixtureDb:
    db = FixtureDb()
    for i, (fp, sh) in enumerate(prompts):
        start = T0 + i * 10 * MS
        r = db.request(start, start + 5 * MS, prompt_fp=fp, prompt_simhash=sh, fp_key_id="k1",
                       input_tokens=10, output_tokens=10, cache_hit=i in cache_hits)
        db.batch(start, start + 5 * MS, [r], device_time_ns=4 * MS)
    return db


def test_exact_and_near_duplicates_are_counted():
    base = 0x0123456789ABCDEF
    prompts = [(f"fp{i}", f"{(base * (i + 7)) % (1 << 64):016x}") for i in range(20)]
    prompts += [("fp0", prompts[0][1])] * 3  # 3 exact repeats
    prompts += [("near1", f"{int(prompts[1][1], 16) ^ 0b101:016x}")]  # 2 bits away
    prompts += [("far1", f"{int(prompts[2][1], 16) ^ 0xF0F0:016x}")]  # 8 bits away
    f = _findings(_fp_db(prompts))
    ev = f["redundant_compute"]["evidence"]
    assert ev["exact_duplicate_requests"] == 3
    assert ev["near_duplicate_requests"] == 1
    assert ev["cacheable_ratio"] == pytest.approx(4 / 25)
    assert ev["redundant_device_s"] == pytest.approx(4 * 4e-3)


def test_cache_hits_and_other_keys_are_not_redundant():
    prompts = [("same", "0000000000000001")] * 10
    f = _findings(_fp_db(prompts, cache_hits=set(range(1, 10))))
    assert "redundant_compute" not in f


def test_lsh_banding_finds_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(3)
    seeds = rng.integers(0, 2**63, size=60, dtype=np.int64).astype(np.uint64)
    hashes = [int(s) for s in seeds]
    for s in seeds[:30]:  # near copies with 1-5 flipped bits
        bits = rng.choice(64, size=int(rng.integers(1, 6)), replace=False)
        h = int(s)
        for b in bits:
            h ^= 1 << int(b)
        hashes.append(h)
    arr = np.asarray(hashes, dtype=np.uint64)
    got = set(near_duplicate_pairs(arr, 3))
    want = {(i, j) for i, j in itertools.combinations(range(len(hashes)), 2)
            if bin(hashes[i] ^ hashes[j]).count("1") <= 3}
    assert got == want and want


def test_routing_with_two_models():
    db = FixtureDb()
    for i in range(40):
        start = T0 + i * 50 * MS
        short = i % 2 == 0
        tokens = (5, 5) if short else (400, 200)
        model = "big" if i % 4 != 3 else "small"
        r = db.request(start, start + 40 * MS, request_model=model, input_tokens=tokens[0],
                       output_tokens=tokens[1], model_tier="large" if model == "big" else "small")
        db.batch(start, start + 30 * MS, [r], request_model=model, device_time_ns=30 * MS)
    f = _findings(db)
    ev = f["routing_opportunity"]["evidence"]
    assert f["routing_opportunity"]["severity"] == "medium"
    assert f["routing_opportunity"]["scope"] == {"model": "big"}
    assert ev["short_on_largest_requests"] == 20  # every short request went to big
    assert "p25" in ev["rule"]


def test_copies_and_pageable_memory():
    db = FixtureDb()
    for i in range(20):
        start = T0 + i * 10 * MS
        r = db.request(start, start + 10 * MS, input_tokens=10, output_tokens=10)
        db.batch(start, start + 10 * MS, [r], device_time_ns=10 * MS, copy_time_ns=4 * MS,
                 h2d_bytes=8 << 20, d2h_bytes=1 << 20, pageable_bytes=8 << 20)
    f = _findings(db)
    assert f["hot_path_copies"]["layer"] == "hardware"  # 40 % of device time
    assert f["hot_path_copies"]["evidence"]["copy_time_ratio"] == pytest.approx(0.4)
    assert f["pageable_copies"]["evidence"]["pageable_ratio"] == pytest.approx(8 / 9, abs=1e-4)


def test_low_coverage_from_dropped_spans_and_missing_links():
    db = batched_db(n_batches=5, size=2)
    db.metric("inferaudit.sdk.spans.dropped", T0, 50.0)
    db.metric("inferaudit.sdk.spans.dropped", T0 + 1, 100.0)  # cumulative: max counts
    db.metric("inferaudit.sdk.spans.exported", T0 + 1, 100.0)
    f = _findings(db)
    assert f["low_coverage"]["evidence"]["drop_ratio"] == pytest.approx(0.5)
    assert f["low_coverage"]["layer"] == "coverage"

    db2 = batched_db(n_batches=5, size=2)
    db2.batch(T0, T0 + MS, [("f" * 32, "e" * 16)] * 3)  # links to spans not in the input
    f2 = _findings(db2)
    assert f2["low_coverage"]["evidence"]["missing_link_ratio"] == pytest.approx(3 / 13, abs=1e-4)
    assert f2["low_coverage"]["evidence"]["missing_requests"] == 1  # three links, one request


def test_padding_waste():
    db = FixtureDb()
    for i in range(12):
        start = T0 + i * 10 * MS
        rs = [db.request(start, start + 10 * MS, input_tokens=10, output_tokens=1)
              for _ in range(4)]
        db.batch(start, start + 10 * MS, rs, device_time_ns=9 * MS, batch_input_tokens=40,
                 padded_tokens=100)
    f = _findings(db)
    assert f["padding_waste"]["evidence"]["padding_ratio"] == pytest.approx(0.6)


def test_dram_bound_decode_is_the_models_physics():
    db = batched_db()
    db2 = FixtureDb()
    db2.resource(1, gpu_model="NVIDIA H100", gpu_count=1)
    for k in range(20):
        start = T0 + k * 100 * MS
        rs = [db2.request(start, start + 99 * MS, input_tokens=10, output_tokens=200)
              for _ in range(16)]
        db2.batch(start, start + 99 * MS, rs, device_time_ns=99 * MS,
                  attributes={"inferaudit.gpu.memory_utilization_ratio": 0.85})
    f = _findings(db2)
    assert f["dram_bound_decode"]["layer"] == "model"
    assert "dram_bound_decode" not in _findings(db)  # no memory counters: nothing claimed
