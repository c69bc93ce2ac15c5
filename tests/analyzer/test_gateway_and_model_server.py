"""A gateway and a model server, both instrumented: one client request, not two.

The gateway's request span (resource A) calls the model server over HTTP: CLIENT span (A), the
server's SERVER span (B), the model server's request span (B), its batches (B). Only a request
span directly under another folded into it, so each client request counted twice (count doubled,
cost per request halved, the client-visible half with no device time), and the clock check never
paired the gateway's requests with the GPU host's calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb
from _otlp_span_builder import on_both_engines, otlp_span, resource, summary

from inferaudit_analyzer.analyses.concurrency import analyze_concurrency
from inferaudit_analyzer.views import CLIENT_VIEW_HOPS, create_views
from inferaudit_sdk import semconv as sc

GATEWAY, GPU, GPU2 = 1, 2, 3
SERVER, CLIENT = 2, 3


def _db() -> FixtureDb:
    db = FixtureDb()
    db.resource(GATEWAY, host_name="api", service_name="gateway")
    db.resource(GPU, host_name="gpu", service_name="model", gpu_count=1, price_usd_per_hour=1.0)
    db.resource(GPU2, host_name="gpu2", service_name="model", gpu_count=1,
                price_usd_per_hour=1.0)
    return db


def _call(db: FixtureDb, outer: tuple[str, str] | None, tid: str, st: int, *, res: int = GPU,
          skew: int = 0, dur: int = 100 * MS, device_ms: int = 90,
          **inner: Any) -> tuple[str, str]:
    """The gateway's HTTP call ``st`` .. ``st + dur`` (its CLIENT span, only where ``outer`` is
    given) to a model server on ``res`` whose clock reads ``skew`` ahead: SERVER span, request
    span, one batch of ``device_ms``. Returns the model server's request span."""
    parent = None
    if outer is not None:
        parent = db.span(start_ns=st + MS, end_ns=st + dur - MS, trace_id=tid,
                         parent_span_id=outer[1], kind=CLIENT, resource_id=GATEWAY)[1]
    _, srv = db.span(start_ns=st + 2 * MS + skew, end_ns=st + dur - 2 * MS + skew, trace_id=tid,
                     parent_span_id=parent or f"{0xdead:016x}", kind=SERVER, resource_id=res)
    inner.setdefault("input_tokens", 100)
    inner.setdefault("output_tokens", 20)
    r = db.request(st + 3 * MS + skew, st + dur - 3 * MS + skew, trace_id=tid,
                   parent_span_id=srv, resource_id=res, **inner)
    db.batch(st + 5 * MS + skew, st + dur - 5 * MS + skew, [r], parent=r, resource_id=res,
             device_time_ns=device_ms * MS)
    return r


def _two_tier(n: int = 10, *, gateway: bool = True, skew_ms: int = 0,
              outer: dict[str, Any] | None = None,
              inner: dict[str, Any] | None = None) -> FixtureDb:
    """``n`` client requests of 100 ms every 200 ms through the gateway, one call each."""
    db = _db()
    for i in range(n):
        st = T0 + i * 200 * MS
        tid = f"{i + 1:032x}"
        g = None
        if gateway:
            g = db.request(st, st + 100 * MS, trace_id=tid, resource_id=GATEWAY,
                           **(outer if outer is not None
                              else {"input_tokens": 100, "output_tokens": 20}))
        _call(db, g, tid, st, skew=skew_ms * MS, **(inner or {}))
    return db


def _rows(db: FixtureDb) -> list[dict[str, Any]]:
    create_views(db.con)
    cur = db.con.execute("SELECT * FROM requests ORDER BY arrival_ns")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_a_gateway_and_its_model_server_are_one_client_request():
    db = _two_tier(outer={"input_tokens": 100, "output_tokens": 20, "route": "chat",
                          "request_model": "gateway-model"},
                   inner={"input_tokens": 130, "output_tokens": 25, "route": "internal",
                          "request_model": "llama"})
    rows = _rows(db)
    assert len(rows) == 10
    for r in rows:
        # the client-visible request: the gateway's span, latency, route and model
        assert r["resource_id"] == GATEWAY
        assert r["latency_ns"] == 100 * MS and r["enclosed"] is False
        assert (r["route"], r["request_model"]) == ("chat", "gateway-model")
        # the gateway's own tokens stand; the model server's call gives the device time
        assert (r["input_tokens"], r["output_tokens"]) == (100, 20)
        assert r["device_ns"] == 90 * MS and r["batches"] == 1
    assert sum(r["device_ns"] for r in rows) == 900 * MS
    # every batch serves the gateway's request
    members = db.con.execute("SELECT m.req_span_id, r.resource_id FROM batch_members m "
                             "JOIN request_spans r ON r.trace_id = m.req_trace_id "
                             "AND r.span_id = m.req_span_id").fetchall()
    assert len(members) == 10 and {res for _, res in members} == {GATEWAY}


def test_the_model_servers_tokens_fill_the_gateways_gaps():
    rows = _rows(_two_tier(outer={}, inner={"input_tokens": 130, "output_tokens": 25}))
    assert len(rows) == 10
    assert {(r["input_tokens"], r["output_tokens"]) for r in rows} == {(130, 25)}
    # no model named at the gateway: none is taken from the call (as for a directly nested one)
    assert {r["request_model"] for r in rows} == {"m"}


def test_a_chain_below_the_model_servers_request_reaches_the_gateway():
    """Gateway -> model server request (no usage) -> a foreign GenAI span with the usage; the
    model call hangs off a "generate" span under the model server's request."""
    db = _db()
    tid = f"{1:032x}"
    g = db.request(T0, T0 + 100 * MS, trace_id=tid, resource_id=GATEWAY)
    _, cli = db.span(start_ns=T0 + MS, end_ns=T0 + 99 * MS, trace_id=tid, parent_span_id=g[1],
                     kind=CLIENT, resource_id=GATEWAY)
    _, srv = db.span(start_ns=T0 + 2 * MS, end_ns=T0 + 98 * MS, trace_id=tid,
                     parent_span_id=cli, kind=SERVER, resource_id=GPU)
    m = db.request(T0 + 3 * MS, T0 + 97 * MS, trace_id=tid, parent_span_id=srv, resource_id=GPU)
    db.span(start_ns=T0 + 4 * MS, end_ns=T0 + 96 * MS, trace_id=tid, parent_span_id=m[1],
            resource_id=GPU, role="request", source="openllmetry", operation="chat",
            request_model="m", input_tokens=70, output_tokens=7)
    gen = db.span(start_ns=T0 + 4 * MS, end_ns=T0 + 96 * MS, trace_id=tid, parent_span_id=m[1],
                  resource_id=GPU)
    db.batch(T0 + 5 * MS, T0 + 95 * MS, [], parent=gen, resource_id=GPU,
             device_time_ns=90 * MS)
    (row,) = _rows(db)
    assert row["span_id"] == g[1]
    assert (row["input_tokens"], row["output_tokens"]) == (70, 7)
    assert row["device_ns"] == 90 * MS and row["batches"] == 1


def test_a_fan_out_is_one_request_with_summed_tokens_and_device_time():
    db = _db()
    for i, servers in enumerate(((GPU, GPU), (GPU, GPU2))):   # one server twice, two servers
        st, tid = T0 + i * 500 * MS, f"{i + 1:032x}"
        g = db.request(st, st + 300 * MS, trace_id=tid, resource_id=GATEWAY)
        for k, res in enumerate(servers):
            _call(db, g, tid, st + k * 150 * MS, res=res, dur=140 * MS, device_ms=60 + 10 * k,
                  input_tokens=100 + k, output_tokens=20 + k)
    rows = _rows(db)
    assert len(rows) == 2
    for r in rows:
        assert r["resource_id"] == GATEWAY and r["latency_ns"] == 300 * MS
        assert (r["input_tokens"], r["output_tokens"]) == (201, 41)
        assert r["device_ns"] == 130 * MS and r["batches"] == 2


def test_the_model_servers_spans_alone_are_read_as_before():
    """The gateway's files not given: the model server's request span is the request, with its
    SERVER span's interval (its parent, the gateway's CLIENT span, is not in the input)."""
    rows = _rows(_two_tier(gateway=False))
    assert len(rows) == 10
    for r in rows:
        assert r["resource_id"] == GPU and r["enclosed"] is True
        assert r["latency_ns"] == 96 * MS and r["model_ns"] == 94 * MS
        assert (r["input_tokens"], r["output_tokens"]) == (100, 20)
        assert r["device_ns"] == 90 * MS and r["batches"] == 1


def test_the_gateways_genai_client_span_between_is_the_client_view_and_passed():
    """Gateway request -> its openai-v2 span (usage: a client view of the server's request,
    dropped) -> HTTP CLIENT -> SERVER -> the model server's request: one request."""
    db = _db()
    tid = f"{1:032x}"
    g = db.request(T0, T0 + 100 * MS, trace_id=tid, resource_id=GATEWAY)
    _, view = db.span(start_ns=T0 + MS, end_ns=T0 + 99 * MS, trace_id=tid, parent_span_id=g[1],
                      kind=CLIENT, resource_id=GATEWAY, role="request", source="genai",
                      operation="chat", request_model="m", input_tokens=100, output_tokens=20)
    _call(db, (tid, view), tid, T0)
    (row,) = _rows(db)
    assert row["span_id"] == g[1] and row["device_ns"] == 90 * MS
    assert (row["input_tokens"], row["output_tokens"]) == (100, 20)


@pytest.mark.parametrize("shape", ["too_far", "consumer", "other_role"])
def test_where_the_walk_stops_both_stay_requests(shape: str):
    """Ours above ours beyond CLIENT_VIEW_HOPS parents, across a queued hand-off (a CONSUMER
    span), or past a span of another role: two requests, as before."""
    db = _db()
    tid = f"{1:032x}"
    g = db.request(T0, T0 + 100 * MS, trace_id=tid, resource_id=GATEWAY,
                   input_tokens=100, output_tokens=20)
    parent = g[1]
    kinds = {"too_far": [CLIENT] * CLIENT_VIEW_HOPS, "consumer": [5],
             "other_role": [CLIENT]}[shape]
    for kind in kinds:
        parent = db.span(start_ns=T0 + MS, end_ns=T0 + 99 * MS, trace_id=tid,
                         parent_span_id=parent, kind=kind, resource_id=GATEWAY)[1]
    if shape == "other_role":
        parent = db.span(start_ns=T0 + MS, end_ns=T0 + 99 * MS, trace_id=tid,
                         parent_span_id=parent, role="tool", resource_id=GATEWAY)[1]
    m = db.request(T0 + 3 * MS, T0 + 97 * MS, trace_id=tid, parent_span_id=parent,
                   resource_id=GPU, input_tokens=100, output_tokens=20)
    assert {r["span_id"] for r in _rows(db)} == {g[1], m[1]}


def test_a_clock_skew_between_the_gateway_and_the_gpu_host_is_found():
    create_views((db := _two_tier(n=40, skew_ms=300)).con)
    conc = analyze_concurrency(db.con, 8 * 10**9)
    (skew,) = conc.clock_skews
    assert (skew.batch_resource_id, skew.request_resource_id) == (GPU, GATEWAY)
    assert 295 * MS <= skew.offset_ns <= 300 * MS
    assert conc.idle_while_waiting_ratio is None
    create_views((agree := _two_tier(n=40)).con)
    conc = analyze_concurrency(agree.con, 8 * 10**9)
    assert conc.clock_skews == () and conc.mean_while_busy == 1.0


def _two_tier_otlp(skew_ms: int, n: int = 40) -> dict[str, Any]:
    """The same two tiers as OTLP lines: the gateway's request and HTTP client spans; the model
    server's SERVER, request and batch spans, its clock ``skew_ms`` ahead; every fifth client
    request fans out to a second call."""
    gw: list[dict[str, Any]] = []
    ms: list[dict[str, Any]] = []
    ids = iter(range(1, 100_000))

    def sid() -> str:
        return f"{next(ids):016x}"

    usage = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "m",
             sc.GEN_AI_USAGE_INPUT_TOKENS: 100, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}
    for i in range(n):
        tid, g, st = f"{i + 1:032x}", sid(), T0 + i * 300 * MS
        gw.append(otlp_span(tid, g, st, st + 200 * MS, {sc.SPAN_ROLE: sc.ROLE_REQUEST, **usage}))
        for k in range(2 if i % 5 == 0 else 1):
            at, cli, srv, req = st + k * 100 * MS, sid(), sid(), sid()
            on_gpu = at + skew_ms * MS
            gw.append(otlp_span(tid, cli, at + MS, at + 99 * MS, {}, parent=g, kind=CLIENT))
            ms.append(otlp_span(tid, srv, on_gpu + 2 * MS, on_gpu + 98 * MS, {}, parent=cli,
                                kind=SERVER))
            ms.append(otlp_span(tid, req, on_gpu + 3 * MS, on_gpu + 97 * MS,
                                {sc.SPAN_ROLE: sc.ROLE_REQUEST, **usage}, parent=srv))
            ms.append(otlp_span(tid, sid(), on_gpu + 5 * MS, on_gpu + 95 * MS, {
                sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "m", sc.BATCH_SIZE: 1,
                sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 90 * MS}, parent=req,
                links=((tid, req),)))
    return {"resourceSpans": [
        resource({sc.SERVICE_NAME: "gateway", sc.HOST_NAME: "api"}, sc.INSTRUMENTATION_NAME, gw),
        resource({sc.SERVICE_NAME: "model", sc.HOST_NAME: "gpu", sc.RES_GPU_COUNT: 1,
                  sc.RES_PRICE_USD_PER_HOUR: 1.0}, sc.INSTRUMENTATION_NAME, ms)]}


@pytest.mark.parametrize("skew_ms", [0, 300])
def test_the_same_two_tier_reading_on_duckdb_and_clickhouse(tmp_path: Path, skew_ms: int):
    reps = on_both_engines(tmp_path, _two_tier_otlp(skew_ms))
    duck, ch = ({**summary(r), "device_s": r["baseline"]["overall"]["device_s"],
                 "skew": "clock_skew" in {f["id"] for f in r["findings"]}} for r in reps)
    assert duck["requests"] == 40 and duck["input_tokens"] == 4000
    assert duck["latency_p50"] == 200.0                      # the gateway's latency
    assert duck["device_s"] == pytest.approx(48 * 0.09)     # 40 calls + 8 fan-out calls
    assert duck["skew"] is (skew_ms > 0)
    assert ch == duck


def test_three_tiers_of_ours_are_one_request():
    """Gateway -> router -> model server, each with ``@audited``; only the model server knows
    the usage and runs the call."""
    db = _db()
    tid = f"{1:032x}"
    g = db.request(T0, T0 + 100 * MS, trace_id=tid, resource_id=GATEWAY)
    _, cli = db.span(start_ns=T0 + MS, end_ns=T0 + 99 * MS, trace_id=tid, parent_span_id=g[1],
                     kind=CLIENT, resource_id=GATEWAY)
    _, srv = db.span(start_ns=T0 + MS, end_ns=T0 + 99 * MS, trace_id=tid, parent_span_id=cli,
                     kind=SERVER, resource_id=GPU2)
    router = db.request(T0 + MS, T0 + 99 * MS, trace_id=tid, parent_span_id=srv,
                        resource_id=GPU2)
    _call(db, router, tid, T0, input_tokens=40, output_tokens=4)
    (row,) = _rows(db)
    assert row["span_id"] == g[1] and row["latency_ns"] == 100 * MS
    assert (row["input_tokens"], row["output_tokens"]) == (40, 4)
    assert row["device_ns"] == 90 * MS and row["batches"] == 1
