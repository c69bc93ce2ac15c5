"""Which spans are requests, and whose interval they take, when request spans share a parent.

Two shapes the requests view read wrong: several request spans under one SERVER span (a retry,
a RAG or agent chain calling the model twice per HTTP request) each took the whole server
interval, and a GenAI client span in the calling app (OpenLLMetry, the openai-v2
instrumentation) around our request span counted as a second request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _analysis_fixtures import MS, T0, FixtureDb, S
from _otlp_span_builder import on_both_engines, otlp_span, resource, summary, write_line

from inferaudit_analyzer.analyze import AnalyzeParams, analyze, analyze_connection
from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv as sc

SERVER, CLIENT = 2, 3


def _requests(db: FixtureDb) -> dict[str, dict[str, Any]]:
    create_views(db.con)
    cur = db.con.execute("SELECT * FROM requests")
    names = [d[0] for d in cur.description]
    return {r[1]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def _report(db: FixtureDb) -> dict[str, Any]:
    return analyze_connection(db.con, AnalyzeParams())


# ---------------------------------------------------------------------------------------------
# several request spans under one SERVER span
# ---------------------------------------------------------------------------------------------
def test_requests_sharing_a_server_span_keep_their_own_intervals():
    db = FixtureDb()
    tid, srv = db.span(start_ns=T0, end_ns=T0 + 160 * MS, kind=SERVER)
    _, first = db.request(T0 + 5 * MS, T0 + 55 * MS, trace_id=tid, parent_span_id=srv,
                          error_type="Timeout", status_code=2)
    _, retry = db.request(T0 + 55 * MS, T0 + 155 * MS, trace_id=tid, parent_span_id=srv)
    tid2, lone_srv = db.span(start_ns=T0 + S, end_ns=T0 + S + 110 * MS, kind=SERVER)
    _, lone = db.request(T0 + S + 5 * MS, T0 + S + 105 * MS, trace_id=tid2,
                         parent_span_id=lone_srv)
    rows = _requests(db)
    assert set(rows) == {first, retry, lone}
    assert (rows[first]["arrival_ns"], rows[first]["end_ns"]) == (T0 + 5 * MS, T0 + 55 * MS)
    assert rows[first]["latency_ns"] == 50 * MS and rows[first]["enclosed"] is False
    assert rows[retry]["arrival_ns"] == T0 + 55 * MS and rows[retry]["latency_ns"] == 100 * MS
    assert rows[retry]["enclosed"] is False
    # a lone request under its SERVER span still takes the server's interval
    assert rows[lone]["arrival_ns"] == T0 + S and rows[lone]["latency_ns"] == 110 * MS
    assert rows[lone]["enclosed"] is True


def test_a_retry_under_one_server_span_is_not_concurrency():
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(20):
        st = T0 + i * S
        tid, srv = db.span(start_ns=st, end_ns=st + 160 * MS, kind=SERVER)
        a = db.request(st + 5 * MS, st + 55 * MS, trace_id=tid, parent_span_id=srv,
                       input_tokens=100, error_type="Timeout", status_code=2)
        db.batch(st + 5 * MS, st + 54 * MS, [a], device_time_ns=49 * MS)
        b = db.request(st + 55 * MS, st + 155 * MS, trace_id=tid, parent_span_id=srv,
                       input_tokens=100, output_tokens=20)
        db.batch(st + 55 * MS, st + 154 * MS, [b], device_time_ns=99 * MS)
    rep = _report(db)
    conc = rep["baseline"]["overall"]["concurrency"]
    assert conc["max"] == 1   # one model request at a time
    assert conc["mean_while_device_busy"] == 1.0
    assert "unbatched_serving" not in {f["id"] for f in rep["findings"]}


# ---------------------------------------------------------------------------------------------
# a GenAI client span around our request span
# ---------------------------------------------------------------------------------------------
def _client_span(db: FixtureDb, st: int, **cols: Any) -> tuple[str, str]:
    return db.span(start_ns=st, end_ns=st + 130 * MS, kind=CLIENT, resource_id=2,
                   service_name="app", operation="chat", request_model="m",
                   input_tokens=100, output_tokens=20, **cols)


def test_a_roleless_genai_client_span_around_our_request_is_not_a_request():
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    db.resource(2)
    ours = []
    for i in range(25):
        st = T0 + i * S
        tid, cli = _client_span(db, st)
        r = db.request(st + 10 * MS, st + 120 * MS, trace_id=tid, parent_span_id=cli,
                       input_tokens=100, output_tokens=20)
        db.batch(st + 15 * MS, st + 115 * MS, [r], device_time_ns=100 * MS)
        ours.append(r[1])
    assert set(_requests(db)) == set(ours)
    rep = _report(db)
    o = rep["baseline"]["overall"]
    assert o["requests"] == 25
    assert o["input_tokens"] == 2500 and o["output_tokens"] == 500
    assert "unbatched_serving" not in {f["id"] for f in rep["findings"]}


def test_an_inferred_foreign_request_around_ours_does_not_swallow_it():
    # what the ingest writes for an OpenLLMetry / openai-v2 client span: role inferred from usage
    db = FixtureDb()
    tid, cli = _client_span(db, T0, role="request", source="genai")
    _, ours = db.request(T0 + 10 * MS, T0 + 120 * MS, trace_id=tid, parent_span_id=cli,
                         input_tokens=100, output_tokens=20, queue_ns=3 * MS, resource_id=1,
                         service_name="llm-server")
    rows = _requests(db)
    assert set(rows) == {ours}
    row = rows[ours]
    # our span is the request with its own interval, resource and queue time, not a model call
    assert row["latency_ns"] == 110 * MS and row["queue_ns"] == 3 * MS
    assert row["resource_id"] == 1 and row["service_name"] == "llm-server"


def test_a_client_span_a_few_hops_up_is_the_callers_view():
    # GenAI client span -> HTTP client span -> SERVER span -> our request span
    db = FixtureDb()
    tid, cli = _client_span(db, T0, role="request", source="openllmetry")
    _, http = db.span(start_ns=T0 + MS, end_ns=T0 + 129 * MS, trace_id=tid, parent_span_id=cli,
                      kind=CLIENT, resource_id=2)
    _, srv = db.span(start_ns=T0 + 5 * MS, end_ns=T0 + 125 * MS, trace_id=tid,
                     parent_span_id=http, kind=SERVER)
    _, ours = db.request(T0 + 10 * MS, T0 + 120 * MS, trace_id=tid, parent_span_id=srv,
                         input_tokens=100, output_tokens=20)
    rows = _requests(db)
    assert set(rows) == {ours}
    assert rows[ours]["enclosed"] is True and rows[ours]["latency_ns"] == 120 * MS


def test_foreign_requests_that_are_not_above_ours_still_count():
    db = FixtureDb()
    # in the same trace as one of ours, but a sibling: a call to another provider
    tid, root = db.span(start_ns=T0, end_ns=T0 + 300 * MS, kind=SERVER, resource_id=2)
    _, ours = db.request(T0 + 10 * MS, T0 + 120 * MS, trace_id=tid, parent_span_id=root,
                         input_tokens=100, output_tokens=20)
    _, sibling = db.span(start_ns=T0 + 150 * MS, end_ns=T0 + 250 * MS, trace_id=tid,
                         parent_span_id=root, kind=CLIENT, role="request", source="genai",
                         operation="chat", request_model="gpt-x", input_tokens=5,
                         output_tokens=5)
    # a foreign span nested in our request span is still that request's model call
    db.span(start_ns=T0 + 20 * MS, end_ns=T0 + 110 * MS, trace_id=tid, parent_span_id=ours,
            role="request", source="genai", operation="chat", request_model="m",
            input_tokens=100, output_tokens=20)
    assert set(_requests(db)) == {ours, sibling}


def test_an_openai_client_instrumentation_in_front_of_our_server_end_to_end(tmp_path: Path):
    """Real OTLP lines: the app's openai-v2 client spans and our server's spans, one trace each."""
    app, server = [], []
    for i in range(25):
        tid, cli, req = f"{i + 1:032x}", f"{1000 + i:016x}", f"{2000 + i:016x}"
        st = T0 + i * S
        app.append(otlp_span(tid, cli, st, st + 130 * MS, {
            sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "m",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 100, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}, kind=CLIENT))
        server.append(otlp_span(tid, req, st + 10 * MS, st + 120 * MS, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "m", sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}, parent=cli))
        server.append(otlp_span(tid, f"{3000 + i:016x}", st + 15 * MS, st + 115 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "m", sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 100 * MS}, parent=req,
            links=((tid, req),)))
    line = {"resourceSpans": [
        resource({sc.SERVICE_NAME: "app"}, "opentelemetry.instrumentation.openai_v2", app),
        resource({sc.SERVICE_NAME: "llm-server", sc.HOST_NAME: "gpu", sc.RES_GPU_COUNT: 1,
                  sc.RES_PRICE_USD_PER_HOUR: 1.0}, sc.INSTRUMENTATION_NAME, server)]}
    path = write_line(tmp_path / "traces-1.jsonl", line)
    rep = analyze([str(path)], AnalyzeParams(cache=False))
    o = rep["baseline"]["overall"]
    assert o["requests"] == 25
    assert o["input_tokens"] == 2500
    assert o["latency_ms"]["p50"] == 110.0   # our request span, not the client's 130 ms
    assert "unbatched_serving" not in {f["id"] for f in rep["findings"]}


def _mixed_shapes() -> dict[str, Any]:
    """One export request: client-instrumented calls, retries under SERVER spans, two replicas."""
    app: list[dict[str, Any]] = []
    hosts: list[list[dict[str, Any]]] = [[], []]
    ids = iter(range(1, 10_000))

    def sid() -> str:
        return f"{next(ids):016x}"

    def ours(host: int, tid: str, st: int, dur: int, parent: str) -> None:
        req = sid()
        hosts[host].append(otlp_span(tid, req, st, st + dur, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "m", sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}, parent=parent))
        hosts[host].append(otlp_span(tid, sid(), st + MS, st + dur - MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "m", sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: dur - 2 * MS}, parent=req,
            links=((tid, req),)))

    for i in range(12):
        st = T0 + i * 400 * MS
        tid = f"{i + 1:032x}"
        cli = sid()   # the app's openai-v2 span around a call to our server on host 0
        app.append(otlp_span(tid, cli, st, st + 130 * MS, {
            sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "m",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 100, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}, kind=CLIENT))
        ours(0, tid, st + 10 * MS, 110 * MS, cli)
        tid = f"{100 + i:032x}"
        srv = sid()   # an HTTP request on host 0 whose first model call is retried
        hosts[0].append(otlp_span(tid, srv, st + 200 * MS, st + 360 * MS, {}, kind=SERVER))
        ours(0, tid, st + 205 * MS, 50 * MS, srv)
        ours(0, tid, st + 255 * MS, 100 * MS, srv)
        tid = f"{200 + i:032x}"
        srv = sid()   # host 1, a replica serving one request at a time beside host 0
        hosts[1].append(otlp_span(tid, srv, st + 20 * MS, st + 140 * MS, {}, kind=SERVER))
        ours(1, tid, st + 25 * MS, 110 * MS, srv)
    gpu = {sc.SERVICE_NAME: "llm-server", sc.RES_GPU_COUNT: 1, sc.RES_PRICE_USD_PER_HOUR: 1.0}
    return {"resourceSpans": [
        resource({sc.SERVICE_NAME: "app"}, "opentelemetry.instrumentation.openai_v2", app),
        *(resource({**gpu, sc.HOST_NAME: f"gpu{h}"}, sc.INSTRUMENTATION_NAME, spans)
          for h, spans in enumerate(hosts))]}


def test_the_same_requests_and_concurrency_on_duckdb_and_clickhouse(tmp_path: Path):
    duck, ch = (summary(rep) for rep in on_both_engines(tmp_path, _mixed_shapes()))
    assert duck["requests"] == 12 + 24 + 12      # the client spans are not requests
    assert duck["input_tokens"] == 4800
    assert duck["concurrency"]["mean_while_device_busy"] == 1.0
    assert "unbatched_serving" not in duck["findings"]
    assert ch == duck


def test_a_foreign_call_beside_the_client_view_of_our_request_is_still_a_request():
    """The calling app's GenAI span P (usage: a foreign request) makes two calls: F to another
    provider, and an HTTP call to our server. P is our request's client view and is dropped; F
    was counted as P's nested model call and vanished with it, tokens and all."""
    db = FixtureDb()
    tid = f"{1:032x}"
    foreign = {"role": "request", "source": "openllmetry", "operation": "chat", "kind": CLIENT}
    _, p = db.span(start_ns=T0, end_ns=T0 + 500 * MS, trace_id=tid, request_model="gpt-4o",
                   input_tokens=300, output_tokens=60, **foreign)
    _, f = db.span(start_ns=T0 + 10 * MS, end_ns=T0 + 100 * MS, trace_id=tid, parent_span_id=p,
                   request_model="claude", input_tokens=200, output_tokens=40, **foreign)
    _, http = db.span(start_ns=T0 + 110 * MS, end_ns=T0 + 490 * MS, trace_id=tid,
                      parent_span_id=p, kind=CLIENT)
    _, srv = db.span(start_ns=T0 + 120 * MS, end_ns=T0 + 480 * MS, trace_id=tid,
                     parent_span_id=http, kind=SERVER, resource_id=2)
    _, ours = db.request(T0 + 130 * MS, T0 + 470 * MS, trace_id=tid, parent_span_id=srv,
                         request_model="llama", input_tokens=100, output_tokens=20,
                         resource_id=2)
    rows = _requests(db)
    assert set(rows) == {f, ours}
    assert rows[f]["request_model"] == "claude" and rows[f]["input_tokens"] == 200
    assert rows[ours]["input_tokens"] == 100 and rows[ours]["enclosed"] is True
