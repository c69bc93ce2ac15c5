"""Scopes (model, route) as the client sees them: cost host by host, latency of successful
requests, every request in some route, batches of the requests a model served."""

from __future__ import annotations

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, S

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.views import create_views


def _report(db: FixtureDb, **kw) -> dict:
    return analyze_connection(db.con, AnalyzeParams(**kw))


def _two_hosts(gateway: bool = False) -> FixtureDb:
    """Host a at $10/h runs "big" (10 x 10 ms calls); host b at $0.1/h runs "small" (10 x 500
    ms). With ``gateway`` the request spans come from an unpriced third process."""
    db = FixtureDb()
    db.resource(1, host_name="a", gpu_count=1, price_usd_per_hour=10.0)
    db.resource(2, host_name="b", gpu_count=1, price_usd_per_hour=0.1)
    if gateway:
        db.resource(3, host_name="gw")
    for i in range(10):
        st = T0 + i * S
        for model, res, dev_ms, route in (("big", 1, 10, "/big"), ("small", 2, 500, "/small")):
            r = db.request(st, st + (dev_ms + 1) * MS, request_model=model, route=route,
                           resource_id=3 if gateway else res, input_tokens=100,
                           output_tokens=20)
            db.batch(st, st + dev_ms * MS, [r], request_model=model, resource_id=res,
                     device_time_ns=dev_ms * MS)
    return db


@pytest.mark.parametrize("gateway", [False, True])
def test_scope_cost_follows_the_price_of_the_host_it_ran_on(gateway):
    rep = _report(_two_hosts(gateway))
    w_h = rep["window"]["duration_s"] / 3600
    base = rep["baseline"]
    for kind, big, small in (("by_model", "big", "small"), ("by_route", "/big", "/small")):
        b, s = base[kind][big], base[kind][small]
        assert b["cost_usd"] == pytest.approx(10.0 * w_h)  # host a's bill, all of it
        assert s["cost_usd"] == pytest.approx(0.1 * w_h)   # host b's
        assert b["busy_cost_usd"] == pytest.approx(10.0 * 10 * 0.010 / 3600)
        assert s["busy_cost_usd"] == pytest.approx(0.1 * 10 * 0.500 / 3600)
        assert b["cost_usd"] + s["cost_usd"] == pytest.approx(base["overall"]["cost_usd"])


def test_a_host_shared_by_two_models_is_split_by_their_device_time_on_it():
    db = FixtureDb()
    db.resource(1, host_name="a", gpu_count=1, price_usd_per_hour=3.6)
    db.resource(2, host_name="b", gpu_count=1, price_usd_per_hour=0.36)
    for i in range(10):
        st = T0 + i * S
        x = db.request(st, st + 100 * MS, request_model="x", input_tokens=30, output_tokens=0)
        y = db.request(st, st + 100 * MS, request_model="y", input_tokens=10, output_tokens=0)
        db.batch(st, st + 80 * MS, [x, y], request_model="x", device_time_ns=80 * MS)
        z = db.request(st, st + 100 * MS, request_model="y", resource_id=2, input_tokens=10)
        db.batch(st, st + 50 * MS, [z], request_model="y", resource_id=2,
                 device_time_ns=50 * MS)
    rep = _report(db)
    w_h = rep["window"]["duration_s"] / 3600
    bm = rep["baseline"]["by_model"]
    # host a: x holds 3/4 of each shared call's tokens; host b is y's alone
    assert bm["x"]["cost_usd"] == pytest.approx(3.6 * w_h * 0.75)
    assert bm["y"]["cost_usd"] == pytest.approx(3.6 * w_h * 0.25 + 0.36 * w_h)


def test_usage_gives_each_request_the_device_time_of_the_requests_view():
    """The cost usage and the requests view read one membership rule (links, else the parent; a
    link to a nested model-call span, or to a role-less span inside a request, counts for the
    request): both share device time alike, and a request with a call counts its batches."""
    from inferaudit_analyzer.cost import measure_usage
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    st = T0
    a = db.request(st, st + 100 * MS, route="a", input_tokens=30, output_tokens=10)
    b = db.request(st, st + 100 * MS, route="b", input_tokens=10, output_tokens=0)
    db.batch(st, st + 60 * MS, [a, b], device_time_ns=60 * MS)            # linked, shared
    c = db.request(st + S, st + S + 100 * MS, route="c", input_tokens=5, output_tokens=5)
    db.batch(st + S, st + S + 70 * MS, [], parent=c, device_time_ns=70 * MS)  # no link: parent
    d = db.request(st + 2 * S, st + 2 * S + 100 * MS, route="d", input_tokens=5)
    inner = db.request(st + 2 * S, st + 2 * S + 90 * MS, trace_id=d[0], parent_span_id=d[1],
                       route="inner", input_tokens=5)
    db.batch(st + 2 * S, st + 2 * S + 40 * MS, [inner], device_time_ns=40 * MS)  # nested
    db.request(st + 3 * S, st + 3 * S + 10 * MS, route="e", device_time_ns=7 * MS)  # own time
    db.batch(st + 4 * S, st + 4 * S + 9 * MS, [], device_time_ns=9 * MS)  # serves no request
    # a span of the serving code between the request and its model call ("generate", no role):
    # the call's parent, or its link target, is that span, and counts for the request above it
    f = db.request(st + 5 * S, st + 5 * S + 100 * MS, route="f", input_tokens=5,
                   device_time_ns=3 * MS)
    gen = db.span(start_ns=st + 5 * S, end_ns=st + 5 * S + 90 * MS, trace_id=f[0],
                  parent_span_id=f[1], name="generate", device_time_ns=5 * MS)
    db.batch(st + 5 * S, st + 5 * S + 30 * MS, [], parent=gen, device_time_ns=30 * MS)
    g = db.request(st + 6 * S, st + 6 * S + 100 * MS, route="g", input_tokens=5)
    fwd = db.span(start_ns=st + 6 * S, end_ns=st + 6 * S + 90 * MS, trace_id=g[0],
                  parent_span_id=db.span(start_ns=st + 6 * S, end_ns=st + 6 * S + 95 * MS,
                                         trace_id=g[0], parent_span_id=g[1])[1])
    db.batch(st + 6 * S, st + 6 * S + 20 * MS, [fwd], device_time_ns=20 * MS)  # two hops up
    con = db.con
    create_views(con)
    view = dict(con.execute("SELECT route, device_ns FROM requests").fetchall())
    batches = dict(con.execute("SELECT route, batches FROM requests").fetchall())
    usage = {u.route: u.device_ns for u in measure_usage(con)[0]}
    assert view == {"a": 48 * MS, "b": 12 * MS, "c": 70 * MS, "d": 40 * MS, "e": 7 * MS,
                    "f": 30 * MS, "g": 20 * MS}
    assert usage == view
    assert batches == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 0, "f": 1, "g": 1}


def _errors_db() -> FixtureDb:
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(40):
        st = T0 + i * S
        r = db.request(st, st + (200 + 5 * i) * MS, input_tokens=50, output_tokens=20,
                       route="/chat", ttft_ns=(30 + i) * MS)
        db.batch(st, st + 150 * MS, [r], device_time_ns=150 * MS)
    for i in range(20):  # fast timeouts, no model call; half say so only by their status
        st = T0 + i * S + 500 * MS
        db.request(st, st + 2 * MS, input_tokens=50, route="/chat", status_code=2,
                   error_type="Timeout" if i % 2 else None, ttft_ns=1 * MS)
    return db


def test_latency_percentiles_are_over_successful_requests_and_errors_apart():
    rep = _report(_errors_db(), bucket_s=100.0)
    base = rep["baseline"]
    for scope in (base["overall"], base["by_route"]["/chat"], base["by_model"]["m"]):
        assert scope["requests"] == 60 and scope["errors"] == 20
        lat = scope["latency_ms"]
        assert lat["n"] == 40
        assert lat["p50"] == pytest.approx(295.0)  # the 20th of 200, 205, ... ms
        assert lat["sketch"]["p50"] == pytest.approx(295.0, rel=0.02)
        assert scope["ttft_ms"]["n"] == 40 and scope["ttft_ms"]["p50"] == pytest.approx(49.0)
        err = scope["error_latency_ms"]
        assert err["n"] == 20 and err["p50"] == pytest.approx(2.0) and err["max"] == 2.0
    rows = base["time_buckets"]["rows"]
    assert len(rows) == 1 and rows[0]["requests"] == 60
    assert rows[0]["latency_ms"]["p50"] == pytest.approx(295.0)
    assert rows[0]["ttft_ms_p50"] == pytest.approx(49.0)
    assert base["time_buckets"]["sketch_merge_check"]["merged_equals_whole"]


def test_by_route_keeps_requests_without_a_route():
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(10):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, input_tokens=50, output_tokens=20,
                       route="/a" if i < 4 else None)
        db.batch(st, st + 90 * MS, [r], device_time_ns=90 * MS)
    b = _report(db)["baseline"]
    routes = b["by_route"]
    assert set(routes) == {"/a", "(none)"}
    assert routes["(none)"]["requests"] == 6
    assert sum(v["requests"] for v in routes.values()) == b["overall"]["requests"]
    assert sum(v["cost_usd"] for v in routes.values()) == pytest.approx(b["overall"]["cost_usd"])


def test_a_route_or_model_spelled_like_the_placeholder_merges_with_it():
    # a literal "(none)" route / "(unknown)" model shares the key of the missing one: one scope
    # holding both, not one overwriting the other
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(9):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, input_tokens=50, output_tokens=20,
                       route=("/a", "(none)", None)[i % 3],
                       request_model=("m", "(unknown)", None)[i % 3])
        db.batch(st, st + 90 * MS, [r], device_time_ns=90 * MS)
    b = _report(db)["baseline"]
    for kind, key in (("by_route", "(none)"), ("by_model", "(unknown)")):
        scopes = b[kind]
        assert len(scopes) == 2 and scopes[key]["requests"] == 6
        assert scopes[key]["device_s"] == pytest.approx(6 * 0.09)
        assert sum(v["cost_usd"] for v in scopes.values()) == pytest.approx(
            b["overall"]["cost_usd"])
    assert b["by_model"]["(unknown)"]["batch_size"]["batches"] == 6


def test_model_batches_and_utilisation_follow_the_requested_model():
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(20):  # the client asks for an alias; the call names the loaded model
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, request_model="default", input_tokens=100,
                       output_tokens=20)
        db.batch(st, st + 90 * MS, [r], request_model="llama-3-8b", device_time_ns=90 * MS)
    rep = _report(db)
    o, bm = rep["baseline"]["overall"], rep["baseline"]["by_model"]
    assert set(bm) == {"default"}
    assert bm["default"]["batch_size"]["batches"] == 20
    assert bm["default"]["device_utilization"] == pytest.approx(o["device_utilization"])


def test_a_call_serving_two_models_counts_for_each_and_an_unlinked_call_keeps_its_name():
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(10):
        st = T0 + i * S
        x = db.request(st, st + 100 * MS, request_model="x", input_tokens=30, output_tokens=0)
        y = db.request(st, st + 100 * MS, request_model="y", input_tokens=10, output_tokens=0)
        db.batch(st, st + 80 * MS, [x, y], request_model="x", device_time_ns=80 * MS)
        db.batch(st + 500 * MS, st + 540 * MS, [], request_model="x", device_time_ns=40 * MS)
    rep = _report(db)
    o, bm = rep["baseline"]["overall"], rep["baseline"]["by_model"]
    assert bm["y"]["batch_size"]["batches"] == 10
    assert bm["x"]["batch_size"]["batches"] == 20  # the shared calls and its own unlinked ones
    # busy: x 3/4 of 80 ms + 40 ms, y 1/4 of 80 ms, ten times over the window
    window_s = rep["window"]["duration_s"]
    assert bm["x"]["device_utilization"] == pytest.approx(10 * 0.100 / window_s, abs=1e-4)
    assert bm["y"]["device_utilization"] == pytest.approx(10 * 0.020 / window_s, abs=1e-4)
    assert bm["x"]["device_utilization"] + bm["y"]["device_utilization"] == pytest.approx(
        o["device_utilization"], abs=2e-4)


def test_cost_per_1k_tokens_is_one_price_for_input_and_output():
    rep = _report(_two_hosts())
    for scope in (rep["baseline"]["overall"], *rep["baseline"]["by_model"].values()):
        per_1k = scope["cost_usd"] / ((scope["input_tokens"] + scope["output_tokens"]) / 1000)
        assert scope["cost_per_1k_tokens_usd"] == pytest.approx(per_1k)
        assert scope["cost_per_1k_input_tokens_usd"] == scope["cost_per_1k_tokens_usd"]
        assert scope["cost_per_1k_output_tokens_usd"] == scope["cost_per_1k_tokens_usd"]


class _CountedRows(tuple):
    """Usage rows that count how often they are read through."""

    reads = 0

    def __iter__(self):
        type(self).reads += 1
        return super().__iter__()


def test_splitting_many_scopes_over_many_hosts_reads_the_usage_once():
    # 2,000 routes x 16 hosts: every scope used to walk all usage rows once per host (58 s)
    from inferaudit_analyzer.cost import CostModel, ResourcePrice, Usage
    hosts, routes = 16, 2000
    prices = tuple(ResourcePrice(h, "cuda", 1, 1.0 + h, 10**9, "x", "y") for h in range(hosts))
    rows = [Usage(f"resource:{h}", m, f"/r{r}", (r % 7 + 1) * (h + 1) * 10**6, 3)
            for h in range(hosts) for m in ("a", "b", "c") for r in range(routes)]
    usage = _CountedRows(rows)
    cm = CostModel(prices, 3600 * 10**9, 10**12, 10**6, usage=usage,
                   resource_hosts={h: f"resource:{h}" for h in range(hosts)})
    got = {r: cm.scope_cost(1, 1, 1, 1, ("route", (f"/r{r}",)))["cost_usd"]
           for r in range(routes)}
    assert _CountedRows.reads <= 2
    for r in (0, 3, 1999):  # each host's bill by the route's share of its device time
        want = sum((1.0 + h) * sum(u.device_ns for u in rows
                                   if u.host_key == f"resource:{h}" and u.route == f"/r{r}")
                   / sum(u.device_ns for u in rows if u.host_key == f"resource:{h}")
                   for h in range(hosts))
        assert got[r] == pytest.approx(want)
    assert sum(got.values()) == pytest.approx(cm.window_cost_usd)
