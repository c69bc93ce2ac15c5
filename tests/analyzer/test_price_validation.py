"""Prices are checked where they enter: a bad price file fails up front naming the row, and a
negative or NaN price on a resource is ignored (and said so) rather than making costs negative.
"""

from __future__ import annotations

import json

import pytest
from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.cli import analyze_main
from inferaudit_analyzer.cost import PriceFileError, _match_gpu, load_price_table
from inferaudit_sdk import semconv as sc


def _write(tmp_path, data) -> str:
    p = tmp_path / "prices.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


GOOD_GPU = {"gpu": "L4", "usd_per_hour": 0.8}


@pytest.mark.parametrize("price", [-5, -0.01, True, "3", None])
@pytest.mark.parametrize("key", ["gpus", "instances"])
def test_bad_usd_per_hour_names_file_and_row(tmp_path, key, price):
    good = GOOD_GPU if key == "gpus" else {"host_type": "g5.xlarge", "usd_per_hour": 1.0}
    bad = dict(good, usd_per_hour=price)
    path = _write(tmp_path, {key: [good, bad]})
    with pytest.raises(PriceFileError) as ei:
        load_price_table(path)
    msg = str(ei.value)
    assert msg.startswith(path) and f"{key}[1]" in msg and "finite number >= 0" in msg


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_price_is_rejected(tmp_path, literal):
    # Python's json reads these non-standard literals; they must not become a price
    path = _write(tmp_path, '{"gpus": [{"gpu": "L4", "usd_per_hour": ' + literal + "}]}")
    with pytest.raises(PriceFileError, match=r"gpus\[0\]"):
        load_price_table(path)


def test_bad_cpu_fallback_rate_is_rejected(tmp_path):
    path = _write(tmp_path, {"gpus": [GOOD_GPU], "cpu_fallback": {"usd_per_vcpu_hour": -1}})
    with pytest.raises(PriceFileError, match="cpu_fallback"):
        load_price_table(path)


def test_bad_pattern_fails_at_load_naming_the_row(tmp_path):
    path = _write(tmp_path, {"gpus": [GOOD_GPU, {"gpu": "X", "pattern": "(",
                                                 "usd_per_hour": 1}]})
    with pytest.raises(PriceFileError) as ei:
        load_price_table(path)
    msg = str(ei.value)
    assert msg.startswith(path) and "gpus[1]: bad pattern '('" in msg


def test_non_string_pattern_is_rejected(tmp_path):
    path = _write(tmp_path, {"gpus": [{"gpu": "L4", "pattern": 5, "usd_per_hour": 1}]})
    with pytest.raises(PriceFileError, match=r"gpus\[0\] needs a 'pattern' or 'gpu' string"):
        load_price_table(path)


def test_zero_price_and_compiled_patterns_still_match(tmp_path):
    path = _write(tmp_path, {"gpus": [
        {"gpu": "free", "pattern": r"^acme\s+x1$", "usd_per_hour": 0},
        {"gpu": "L4", "usd_per_hour": 0.8}]})
    table = load_price_table(path)
    assert _match_gpu(table, "ACME  X1")["gpu"] == "free"
    assert _match_gpu(table, "NVIDIA L4")["gpu"] == "L4"
    assert _match_gpu(table, "NVIDIA L40S") is None


def test_cli_bad_pattern_is_unusable_input_not_internal_error(tmp_path, capsys):
    path = _write(tmp_path, {"gpus": [{"gpu": "X", "pattern": "(", "usd_per_hour": 1}]})
    rc = analyze_main([str(tmp_path / "none.jsonl"), "--no-cache", "--price-file", path])
    err = capsys.readouterr().err
    assert "internal error" not in err and "gpus[0]: bad pattern" in err
    assert rc == 2  # EXIT_UNUSABLE


def _db(**resource) -> FixtureDb:
    db = FixtureDb()
    db.resource(1, gpu_count=2, **resource)
    for i in range(5):
        r = db.request(T0 + i * MS, T0 + (i + 1) * MS, input_tokens=10, output_tokens=5)
        db.batch(T0 + i * MS, T0 + (i + 1) * MS, [r], device_time_ns=MS)
    return db


@pytest.mark.parametrize("bad", ["-2.5", "nan", "inf"])
def test_bad_resource_price_is_ignored_and_reported(bad):
    db = _db(gpu_model="NVIDIA L4")
    db.con.execute(f"UPDATE resources SET price_usd_per_hour = '{bad}'::DOUBLE")
    rep = analyze_connection(db.con, AnalyzeParams())
    res = rep["price"]["resources"][0]
    bundled_l4 = next(r for r in load_price_table().gpus if r["gpu"] == "L4")["usd_per_hour"]
    assert res["usd_per_hour"] == pytest.approx(bundled_l4 * 2)  # the next source applies
    assert sc.RES_PRICE_USD_PER_HOUR in res["basis"] and "ignored" in res["basis"]
    cost = rep["baseline"]["overall"]["cost_per_request_usd"]
    assert cost is not None and cost > 0


def test_bad_resource_price_without_another_source_is_unpriced():
    rep = analyze_connection(_db(price_usd_per_hour=-2.5).con, AnalyzeParams())
    res = rep["price"]["resources"][0]
    assert res["source"] == "unpriced" and "ignored" in res["basis"]
    assert rep["baseline"]["overall"]["cost_per_request_usd"] is None


def test_good_resource_price_is_used_without_a_note():
    rep = analyze_connection(_db(gpu_model="NVIDIA L4", price_usd_per_hour=0.5).con,
                             AnalyzeParams())
    res = rep["price"]["resources"][0]
    assert res["usd_per_hour"] == pytest.approx(1.0) and "ignored" not in res["basis"]
