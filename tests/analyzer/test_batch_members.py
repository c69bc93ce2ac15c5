"""One batch-membership rule (the ``batch_members`` view) for every reader, on both engines.

The requests view resolved a model call's link target (or parent) only through nested
request-like spans, while the cost and utilisation shares also credited the request above a
role-less span ("generate"): a request whose call hung off such a span had its batches counted
per model but no device time, no batches and no device in the requests view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, S
from _otlp_span_builder import on_both_engines, otlp_span, resource, summary

from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv as sc

SERVER, CLIENT = 2, 3


def _members(db: FixtureDb) -> set[tuple[str, str]]:
    create_views(db.con)
    return {(b, r) for b, r in db.con.execute(
        "SELECT batch_span_id, req_span_id FROM batch_members").fetchall()}


def test_a_call_resolves_to_the_first_request_above_its_target():
    db = FixtureDb()
    r = db.request(T0, T0 + 100 * MS, input_tokens=10)
    gen = db.span(start_ns=T0, end_ns=T0 + 90 * MS, trace_id=r[0], parent_span_id=r[1])
    fwd = db.span(start_ns=T0, end_ns=T0 + 80 * MS, trace_id=r[0], parent_span_id=gen[1])
    deep = db.span(start_ns=T0, end_ns=T0 + 70 * MS, trace_id=r[0], parent_span_id=fwd[1])
    deeper = db.span(start_ns=T0, end_ns=T0 + 60 * MS, trace_id=r[0], parent_span_id=deep[1])
    _, by_parent = db.batch(T0, T0 + 10 * MS, [], parent=gen)
    _, by_link = db.batch(T0, T0 + 10 * MS, [fwd])
    _, three_up = db.batch(T0, T0 + 10 * MS, [], parent=deep)  # MEMBER_HOPS parents up
    _, too_deep = db.batch(T0, T0 + 10 * MS, [deeper])  # one more: not resolved
    # a SERVER span of no request is another service's entry: the walk does not pass it
    srv = db.span(start_ns=T0 + S, end_ns=T0 + S + 90 * MS, trace_id=r[0], parent_span_id=r[1],
                  kind=SERVER)
    _, past_server = db.batch(T0 + S, T0 + S + 10 * MS, [srv])
    members = _members(db)
    assert members == {(by_parent, r[1]), (by_link, r[1]), (three_up, r[1])}
    assert not {too_deep, past_server} & {b for b, _ in members}


def _shapes() -> dict[str, Any]:
    """One export request: calls under a role-less span, tensor-parallel ranks, warm-up calls on
    a device that serves no request, and a foreign call beside the client view of ours."""
    app: list[dict[str, Any]] = []
    srv: list[dict[str, Any]] = []
    ids = iter(range(1, 100_000))

    def sid() -> str:
        return f"{next(ids):016x}"

    def req(tid: str, st: int, dur: int, parent: str | None = None) -> str:
        s = sid()
        srv.append(otlp_span(tid, s, st, st + dur, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "m", sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}, parent=parent))
        return s

    def call(tid: str, st: int, dur: int, parent: str | None, links: tuple[str, ...],
             device: str = "0", linked_tid: str | None = None) -> None:
        srv.append(otlp_span(tid, sid(), st, st + dur, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "m", sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: dur, sc.DEVICE_ID: device},
            parent=parent, links=tuple((linked_tid or tid, x) for x in links)))

    for i in range(20):
        tid, arrival, st = f"{i + 1:032x}", T0 + i * 10 * MS, T0 + i * 50 * MS
        r = req(tid, arrival, st + 50 * MS - arrival)
        gen = sid()
        srv.append(otlp_span(tid, gen, st, st + 45 * MS, {}, parent=r))
        if i % 2:
            call(tid, st, 40 * MS, gen, ())                  # unlinked, under "generate"
        else:
            for rank in ("0", "1"):                          # linked to "generate", 2 ranks
                call(f"{900 + i:032x}", st, 40 * MS, None, (gen,), rank, linked_tid=tid)
        call(f"{800 + i:032x}", st + 5 * S, 30 * MS, None, (), "2")  # warm-up, serves nobody
    for i in range(5):  # the app's agent span: a foreign call, and a call to our server
        tid, st = f"{500 + i:032x}", T0 + 3 * S + i * S
        agent, http, server = sid(), sid(), sid()
        foreign = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_USAGE_INPUT_TOKENS: 300,
                   sc.GEN_AI_USAGE_OUTPUT_TOKENS: 60}
        app.append(otlp_span(tid, agent, st, st + 500 * MS,
                             {**foreign, sc.GEN_AI_REQUEST_MODEL: "gpt-4o"}, kind=CLIENT))
        app.append(otlp_span(tid, sid(), st + 10 * MS, st + 100 * MS,
                             {**foreign, sc.GEN_AI_REQUEST_MODEL: "claude"}, parent=agent,
                             kind=CLIENT))
        app.append(otlp_span(tid, http, st + 110 * MS, st + 490 * MS, {}, parent=agent,
                             kind=CLIENT))
        srv.append(otlp_span(tid, server, st + 120 * MS, st + 480 * MS, {}, parent=http,
                             kind=SERVER))
        r = req(tid, st + 130 * MS, 340 * MS, server)
        call(tid, st + 140 * MS, 300 * MS, r, (r,))
    gpu = {sc.SERVICE_NAME: "llm-server", sc.RES_GPU_COUNT: 3, sc.RES_PRICE_USD_PER_HOUR: 1.0}
    return {"resourceSpans": [
        resource({sc.SERVICE_NAME: "app"}, "opentelemetry.instrumentation.openai_v2", app),
        resource(gpu, sc.INSTRUMENTATION_NAME, srv)]}


def _figures(rep: dict[str, Any]) -> dict[str, Any]:
    b = rep["baseline"]
    return {**summary(rep), "device_s": b["overall"]["device_s"],
            "models": {m: (s["requests"], s["device_s"], s["batch_size"]["batches"])
                       for m, s in b["by_model"].items()}}


def test_the_same_members_on_duckdb_and_clickhouse(tmp_path: Path) -> None:
    duck, ch = (_figures(rep) for rep in on_both_engines(tmp_path, _shapes()))
    # 20 + 5 of ours, and the 5 foreign calls beside the client views (which are dropped)
    assert duck["requests"] == 30
    assert duck["models"]["claude"] == (5, 0.0, 0)
    # every call but the warm-ups is in some request's device time: 20 x 40 ms (+ a second
    # rank on half of them) + 5 x 300 ms
    assert duck["device_s"] == pytest.approx(10 * 0.04 + 10 * 0.08 + 5 * 0.3)
    # the warm-ups, which serve no request, count under their own model name ("m" too)
    assert duck["models"]["m"][2] == 10 + 20 + 5 + 20
    # queued requests behind size-1 calls, each rank busy while they wait; the warm-up device
    # (no request) is not swept
    assert duck["concurrency"]["mean_while_device_busy"] > 2.0
    assert "unbatched_serving" in duck["findings"]
    assert ch == duck
