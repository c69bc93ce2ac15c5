"""Cost: price resolution order, the bill vs busy-only view, scopes, per-1k-token rule."""

from __future__ import annotations

import json

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, batched_db, unbatched_db

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.cost import PriceFileError, _match_gpu, load_price_table


def _rep(db: FixtureDb, **kw) -> dict:
    return analyze_connection(db.con, AnalyzeParams(**kw))


def test_bundled_prices_are_dated_and_sourced():
    table = load_price_table()
    assert table.gpus and table.instances and "--price-per-hour" in table.note
    for row in (*table.gpus, *table.instances):
        assert row["usd_per_hour"] > 0
        assert row["as_of"] and row["source"].startswith("https://")
    names = {r["gpu"] for r in table.gpus}
    assert {"H100", "H200", "A100 40GB", "A10G", "L4", "T4"} <= names


@pytest.mark.parametrize(("model", "gpu"), [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA L4", "L4"),
    ("Tesla T4", "T4"),
])
def test_gpu_model_matching(model, gpu):
    assert _match_gpu(load_price_table(), model)["gpu"] == gpu


def test_l40s_is_not_priced_as_l4():
    assert _match_gpu(load_price_table(), "NVIDIA L40S") is None


def test_bill_view_includes_idle_and_busy_view_is_the_floor():
    db = unbatched_db(n=30, gap_ms=100, service_ms=50, device_ms=20)  # mostly idle
    rep = _rep(db, price_per_hour=3.6)
    o = rep["baseline"]["overall"]
    window_h = rep["window"]["duration_s"] / 3600
    assert o["cost_per_request_usd"] == pytest.approx(3.6 * window_h / 30)
    busy_h = 30 * 0.020 / 3600
    assert o["busy_cost_per_request_usd"] == pytest.approx(3.6 * busy_h / 30)
    assert o["busy_cost_per_request_usd"] / o["cost_per_request_usd"] == pytest.approx(
        o["device_utilization"], rel=1e-3)


def test_price_precedence(tmp_path):
    db = batched_db(n_batches=5, size=2)
    db.resource(2, gpu_model="NVIDIA H100", gpu_count=1, host_type="p5.48xlarge")
    # flag beats everything
    assert _rep(db, price_per_hour=1.0)["price"]["usd_per_hour"] == 1.0
    # resource 1 has an H100: the bundled GPU row
    rep = _rep(db)
    assert rep["price"]["resources"][0]["source"].endswith("GPU H100")
    # a user file beats the bundled table
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"gpus": [{"gpu": "H100", "usd_per_hour": 2.5}]}))
    assert _rep(db, price_file=str(pf))["price"]["usd_per_hour"] == pytest.approx(2.5)
    # --gpu-model overrides what the resource says
    assert _rep(db, gpu_model="Tesla T4")["price"]["usd_per_hour"] == pytest.approx(0.526)


def test_resource_price_attribute_and_instance_type():
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=2, price_usd_per_hour=0.5)
    db.resource(2, gpu_model="NVIDIA A100", gpu_count=8, host_type="p4d.24xlarge")
    for rid in (1, 2):
        for i in range(5):
            r = db.request(T0 + i * MS, T0 + (i + 1) * MS, resource_id=rid, input_tokens=1)
            db.batch(T0 + i * MS, T0 + (i + 1) * MS, [r], resource_id=rid, device_time_ns=MS)
    rep = _rep(db)
    by_res = {r["resource_id"]: r for r in rep["price"]["resources"]}
    assert by_res[1]["usd_per_hour"] == pytest.approx(1.0)  # 0.5 per device x 2
    assert by_res[2]["usd_per_hour"] == pytest.approx(32.7726)  # the whole instance
    assert by_res[2]["devices"] == 8


def _cpu_db(**resource) -> FixtureDb:
    db = FixtureDb()
    db.resource(1, **resource)
    r = db.request(T0, T0 + 10 * MS, input_tokens=3)
    db.batch(T0, T0 + 10 * MS, [r], device_type="cpu", cpu_time_ns=10 * MS)
    return db


def test_cpu_host_without_instance_type_gets_an_assumed_per_vcpu_price():
    rep = _rep(_cpu_db(cpu_cores=8))
    res = rep["price"]["resources"][0]
    assert res["source"].startswith("assumed")
    assert res["usd_per_hour"] == pytest.approx(8 * load_price_table().cpu_fallback[
        "usd_per_vcpu_hour"])


def test_unpriced_says_so():
    rep = _rep(_cpu_db(host_name="x"))  # no instance type, no core count
    assert rep["baseline"]["overall"]["cost_per_request_usd"] is None
    assert rep["price"]["resources"][0]["source"] == "unpriced"
    assert "--price-per-hour" in rep["price"]["resources"][0]["basis"]


def test_per_1k_tokens_and_scopes_share_by_device_time():
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    for i in range(10):
        s = T0 + i * 100 * MS
        a = db.request(s, s + 90 * MS, request_model="a", input_tokens=100, output_tokens=100)
        db.batch(s, s + 60 * MS, [a], request_model="a", device_time_ns=60 * MS)
        b = db.request(s, s + 90 * MS, request_model="b", input_tokens=10, output_tokens=10)
        db.batch(s + 60 * MS, s + 80 * MS, [b], request_model="b", device_time_ns=20 * MS)
    rep = _rep(db, price_per_hour=3.6)
    total = rep["cost"]["window_cost_usd"]
    bm = rep["baseline"]["by_model"]
    assert bm["a"]["cost_usd"] == pytest.approx(total * 0.75)
    assert bm["b"]["cost_usd"] == pytest.approx(total * 0.25)
    o = rep["baseline"]["overall"]
    assert o["cost_per_1k_input_tokens_usd"] == pytest.approx(total / (2200 / 1000))
    assert "token share" in rep["cost"]["rule"]


def test_price_file_errors_name_the_problem(tmp_path):
    with pytest.raises(PriceFileError, match="cannot read"):
        load_price_table(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(PriceFileError, match="line 1"):
        load_price_table(bad)
    bad.write_text('{"instances": [{"usd_per_hour": 1}]}')
    with pytest.raises(PriceFileError, match="host_type"):
        load_price_table(bad)


def test_gpu_model_flag_prices_foreign_spans_and_an_untimed_busy_floor_is_unknown():
    """Request spans alone (a foreign GenAI server): the device is not in the spans, so the
    user's --gpu-model sets the price; nothing timed the model calls, so the busy-only floor
    is unknown (None), not $0."""
    db = FixtureDb()
    db.resource(1, service_name="svc")
    for i in range(20):
        start = T0 + i * 100 * MS
        db.request(start, start + 30 * MS, input_tokens=40, output_tokens=8, role=None,
                   operation="chat")
    rep = analyze_connection(db.con, AnalyzeParams(gpu_model="NVIDIA H100 80GB HBM3"))
    assert "H100" in rep["price"]["source"] or any(
        "H100" in str(r.get("source")) for r in rep["price"].get("by_resource") or [])
    overall = rep["baseline"]["overall"]
    assert overall["cost_per_request_usd"] > 0
    assert overall["busy_cost_per_request_usd"] is None


def test_requests_batches_served_but_missing_from_the_input_count_in_the_served_cost():
    from inferaudit_analyzer.report._fmt import baseline_rows

    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    for i in range(10):
        t = T0 + i * 100 * MS
        r = db.request(t, t + 60 * MS, input_tokens=5, output_tokens=5)
        # each batch also served a request whose span was sampled out (not in the input)
        db.batch(t, t + 50 * MS, [r, (f"{10_000 + i:032x}", f"{10_000 + i:016x}")],
                 device_time_ns=50 * MS)
    rep = _rep(db, price_per_hour=3.6)
    o = rep["baseline"]["overall"]
    assert rep["input"]["coverage"]["missing_requests"] == 10
    assert o["requests_served_at_least"] == 20
    assert o["cost_per_request_served_usd"] == pytest.approx(o["cost_usd"] / 20)
    assert o["cost_per_request_usd"] == pytest.approx(o["cost_usd"] / 10)
    rows = dict(baseline_rows(rep))
    assert any("not in the input" in label for label in rows)
    # nothing missing: the same figure, and no extra row
    full = _rep(unbatched_db(n=10, gap_ms=100, service_ms=50, device_ms=20), price_per_hour=3.6)
    fo = full["baseline"]["overall"]
    assert fo["cost_per_request_served_usd"] == fo["cost_per_request_usd"]
    assert not any("not in the input" in label for label in dict(baseline_rows(full)))


def _streamed_db(n: int) -> FixtureDb:
    """``n`` streamed requests of 400 prompt and 100 output tokens: 5 ms queued, first token at
    25 ms (20 ms of prompt), done at 100 ms (75 ms of output)."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    for i in range(n):
        s = T0 + i * 200 * MS
        r = db.request(s, s + 100 * MS, input_tokens=400, output_tokens=100, stream=True,
                       ttft_ns=25 * MS, queue_ns=5 * MS)
        db.batch(s + 5 * MS, s + 100 * MS, [r], device_time_ns=95 * MS)
    return db


def test_input_and_output_tokens_are_priced_by_the_time_their_phases_took():
    # One price per token on both sides: an output token (a decode step, 0.75 ms here) was
    # priced like a prompt token (0.05 ms of prefill), 15x under its cost.
    rep = _rep(_streamed_db(30), price_per_hour=3.6)
    o = rep["baseline"]["overall"]
    cost = o["cost_usd"]
    assert o["token_price_basis"] == "phase_time" and o["phase_time_requests"] == 30
    assert o["input_phase_time_ratio"] == pytest.approx(20 / 95, abs=1e-4)
    assert o["cost_per_1k_input_tokens_usd"] == pytest.approx(cost * 20 / 95 / 12.0)
    assert o["cost_per_1k_output_tokens_usd"] == pytest.approx(cost * 75 / 95 / 3.0)
    # the two sides add back up to the scope's cost
    assert (o["cost_per_1k_input_tokens_usd"] * 12 + o["cost_per_1k_output_tokens_usd"] * 3
            == pytest.approx(cost))
    assert o["cost_per_1k_tokens_usd"] == pytest.approx(cost / 15.0)


def test_a_handful_of_timed_requests_does_not_price_the_scope():
    o = _rep(_streamed_db(10), price_per_hour=3.6)["baseline"]["overall"]
    assert o["token_price_basis"] == "token_share" and o["input_phase_time_ratio"] is None
    assert o["cost_per_1k_input_tokens_usd"] == o["cost_per_1k_output_tokens_usd"]
