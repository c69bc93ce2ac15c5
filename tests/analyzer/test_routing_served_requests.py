"""Routing: only served requests count, and "short" needs a real spread and a real time share."""

from __future__ import annotations

from _analysis_fixtures import MS, T0, FixtureDb, S

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection


def _report(db: FixtureDb) -> dict:
    return analyze_connection(db.con, AnalyzeParams())


def _routing_finding(rep: dict) -> dict | None:
    return next((f for f in rep["findings"] if f["id"] == "routing_opportunity"), None)


def _served(db: FixtureDb, st: int, model: str, tokens: tuple[int, int], device_ms: int,
            **cols) -> None:
    r = db.request(st, st + (device_ms + 1) * MS, request_model=model, input_tokens=tokens[0],
                   output_tokens=tokens[1], **cols)
    db.batch(st, st + device_ms * MS, [r], request_model=model, device_time_ns=device_ms * MS)


def _two_models(db: FixtureDb) -> None:
    db.resource(1, gpu_count=1)
    for i in range(30):
        st = T0 + i * 100 * MS
        _served(db, st, "big", (400, 100), 299, model_tier="large")
        _served(db, st, "small", (60, 20), 39, model_tier="small")


def test_failed_requests_are_not_short_requests_to_reroute():
    db = FixtureDb()
    _two_models(db)
    for i in range(10):  # timeouts on the big model: no output tokens, no model call
        st = T0 + i * 100 * MS + 50 * MS
        db.request(st, st + 5 * MS, request_model="big", model_tier="large", input_tokens=20,
                   error_type="Timeout", status_code=2)
    rep = _report(db)
    assert _routing_finding(rep) is None
    assert rep["routing"]["requests_served"] == 60
    assert rep["routing"]["failed_excluded"] == 10
    assert rep["routing"]["short_on_largest_ratio"] == 0.0


def test_cache_hits_are_not_short_requests_to_reroute():
    db = FixtureDb()
    _two_models(db)
    for i in range(10):  # answered from a cache on the big model's route: nothing computed
        st = T0 + i * 100 * MS + 50 * MS
        db.request(st, st + 2 * MS, request_model="big", model_tier="large", input_tokens=20,
                   output_tokens=5, cache_hit=True)
    rep = _report(db)
    assert _routing_finding(rep) is None
    assert rep["routing"]["cache_hits_excluded"] == 10


def test_short_requests_on_the_largest_model_still_fire_with_failures_around():
    db = FixtureDb()
    _two_models(db)
    for i in range(15):  # served short requests on big: these are the ones to move
        _served(db, T0 + i * 100 * MS + 60 * MS, "big", (20, 10), 120, model_tier="large")
    for i in range(10):
        st = T0 + i * 100 * MS + 50 * MS
        db.request(st, st + 5 * MS, request_model="big", model_tier="large", input_tokens=20,
                   status_code=2)
    f = _routing_finding(_report(db))
    assert f is not None and f["severity"] == "medium"
    assert f["evidence"]["short_on_largest_requests"] == 15
    assert f["evidence"]["requests"] == 75
    assert f["evidence"]["failed_excluded"] == 10


def _single_model(short: tuple[int, int], short_ms: int, long: tuple[int, int], long_ms: int,
                  n_short: int, n_long: int) -> FixtureDb:
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(n_short + n_long):
        tokens, ms = (short, short_ms) if i < n_short else (long, long_ms)
        _served(db, T0 + i * S, "m", tokens, ms)
    return db


def test_single_model_with_alike_requests_stays_quiet():
    # every request alike: the p25 takes them all, nothing makes them "short"
    rep = _report(_single_model((100, 20), 90, (100, 20), 90, 0, 30))
    assert _routing_finding(rep) is None
    assert rep["routing"]["short_ratio"] == 1.0 and rep["routing"]["spread"] is False


def test_single_model_with_nearly_alike_requests_stays_quiet():
    # token counts within a few percent of each other: the p25 is no class of its own
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(40):
        _served(db, T0 + i * S, "m", (100 + i % 7, 20 + i % 3), 90)
    rep = _report(db)
    assert _routing_finding(rep) is None
    assert rep["routing"]["spread"] is False


def test_single_model_short_requests_with_a_negligible_time_share_stay_quiet():
    # a quarter of the requests are tiny, but take ~1 % of the device time: not worth a model
    rep = _report(_single_model((10, 5), 4, (600, 200), 120, 10, 30))
    assert rep["routing"]["spread"] is True
    assert _routing_finding(rep) is None


def test_single_model_short_class_with_weight_fires_info_and_states_the_bound():
    # a quarter of the requests are short (30 vs 620 tokens) and take 10 % of the device time
    rep = _report(_single_model((20, 10), 40, (500, 120), 120, 10, 30))
    f = _routing_finding(rep)
    assert f is not None and f["severity"] == "info"
    ev = f["evidence"]
    assert ev["cutoff_tokens"] == 30 and ev["other_mean_tokens"] == 620
    assert ev["short_on_largest_time_ratio"] == round(10 * 40 / (10 * 40 + 30 * 120), 4)
    assert ev["time_basis"] == "device"
    assert "(1 - 1/k)" in f["detail"] and "10.0 %" in f["detail"]


def test_two_models_with_alike_requests_stay_quiet():
    # the big model serves most requests, all alike: there is no short class to move
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(30):
        _served(db, T0 + i * S, "big" if i % 3 else "small", (100, 20), 90,
                model_tier="large" if i % 3 else "small")
    assert _routing_finding(_report(db)) is None

