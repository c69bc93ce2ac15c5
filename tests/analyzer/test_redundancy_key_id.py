"""Exact duplicates are compared per fingerprint key; a missing key id is one key, not NULL."""

from __future__ import annotations

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, S

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection


def _report(db: FixtureDb) -> dict:
    return analyze_connection(db.con, AnalyzeParams())


def _prompts(db: FixtureDb, fps: list[str], key_ids: list[str | None]) -> None:
    db.resource(1, gpu_count=1)
    for i, (fp, key) in enumerate(zip(fps, key_ids, strict=True)):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, input_tokens=100, output_tokens=20, prompt_fp=fp,
                       fp_key_id=key)
        db.batch(st, st + 90 * MS, [r], device_time_ns=90 * MS)


def test_distinct_fingerprints_without_a_key_id_are_not_duplicates():
    db = FixtureDb()
    _prompts(db, [f"{i:032x}" for i in range(30)], [None] * 30)
    rep = _report(db)
    assert rep["redundancy"]["exact_duplicate_ratio"] == 0.0
    assert rep["redundancy"]["redundant_device_s"] == 0.0
    assert "redundant_compute" not in {f["id"] for f in rep["findings"]}


def test_repeats_without_a_key_id_are_counted_like_keyed_ones():
    # 10 distinct prompts, each sent 3 times: 20 of 30 requests repeat one already seen,
    # whether or not the fingerprints carry a key id
    fps = [f"{i % 10:032x}" for i in range(30)]
    for keys in ([None] * 30, ["k1"] * 30):
        db = FixtureDb()
        _prompts(db, fps, keys)
        rep = _report(db)
        assert rep["redundancy"]["exact_duplicate_ratio"] == round(20 / 30, 4), keys[0]
        assert rep["redundancy"]["redundant_device_s"] == pytest.approx(20 * 0.09), keys[0]
        f = {x["id"]: x for x in rep["findings"]}
        assert f["redundant_compute"]["evidence"]["exact_duplicate_requests"] == 20


def test_the_same_fingerprint_under_different_keys_is_not_a_repeat():
    # one fingerprint value under no key, key "a" and key "b": three unrelated prompts
    db = FixtureDb()
    _prompts(db, ["ab" * 16] * 3 + [f"{i:032x}" for i in range(27)],
             [None, "a", "b"] + [None] * 27)
    assert _report(db)["redundancy"]["exact_duplicate_ratio"] == 0.0
