"""One attribution rule for model calls no request links to, read by utilisation and cost alike.

An unlinked call's device time goes (analyses/utilization.py, BATCH_SHARES_SQL), first that
applies: (a) as the linked calls of its model name served (model and route), (b) to the requested
model of its name, (c) on a host with requests but no link information at all, to that host's
requests, (d) else to a request-less by_model row of its own. Before, every unlinked call was
(d): a server that names its calls after the loaded model ("meta-llama/...") while clients ask
"chat" billed chat $0 per request, and three warm-up calls took 13.5 % of the bill as a row of
their own; the model split also charged them where the route split did not, so a route and a
model holding the same requests read different costs per request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, S
from _otlp_span_builder import on_both_engines, otlp_span, resource
from rich.console import Console

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.report import _fmt
from inferaudit_analyzer.report.markdown import render_markdown
from inferaudit_analyzer.summary_terminal import render as render_terminal
from inferaudit_sdk import semconv as sc

LOADED = "meta-llama/Llama-3-8B"


def _report(db: FixtureDb) -> dict[str, Any]:
    return json.loads(json.dumps(analyze_connection(db.con, AnalyzeParams()), default=str))


def _assert_rows_add_up(rep: dict[str, Any]) -> None:
    """by_model and by_route each add up to overall: cost, busy cost (and by_model utilisation)."""
    b = rep["baseline"]
    o = b["overall"]
    for kind in ("by_model", "by_route"):
        rows = b[kind].values()
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(o["cost_usd"]), kind
        assert sum(r["busy_cost_usd"] for r in rows) == pytest.approx(o["busy_cost_usd"]), kind
    util = sum(r["device_utilization"] or 0 for r in b["by_model"].values())
    assert util == pytest.approx(o["device_utilization"], abs=3e-4)


def _same_cost_per_request(rep: dict[str, Any], model: str, route: str) -> None:
    b = rep["baseline"]
    m, r = b["by_model"][model], b["by_route"][route]
    assert m["requests"] == r["requests"]
    assert m["cost_per_request_usd"] == pytest.approx(r["cost_per_request_usd"])
    assert m["busy_cost_per_request_usd"] == pytest.approx(r["busy_cost_per_request_usd"])


# --- (c) no link information on the host: the host's requests pay, as before -----------------


def _nolink(n: int = 10) -> FixtureDb:
    """``n`` chat requests and ``n`` calls the SDK names after the model's config, none linked."""
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(n):
        st = T0 + i * S
        db.request(st, st + 100 * MS, request_model="chat", input_tokens=50, output_tokens=20,
                   route="/v1/chat")
        db.batch(st, st + 80 * MS, [], request_model=LOADED, device_time_ns=80 * MS,
                 batch_size=1)
    return db


def test_calls_on_a_host_without_links_are_its_requests() -> None:
    rep = _report(_nolink())
    b = rep["baseline"]
    o, chat = b["overall"], b["by_model"]["chat"]
    assert set(b["by_model"]) == {"chat"}  # no request-less row for the loaded model's name
    assert chat["cost_usd"] == pytest.approx(o["cost_usd"]) and chat["cost_usd"] > 0
    assert chat["cost_per_request_usd"] == pytest.approx(o["cost_per_request_usd"])
    assert chat["busy_cost_per_request_usd"] == pytest.approx(o["busy_cost_per_request_usd"])
    assert chat["device_utilization"] == pytest.approx(o["device_utilization"])
    assert chat["batch_size"]["batches"] == 10
    _assert_rows_add_up(rep)
    _same_cost_per_request(rep, "chat", "/v1/chat")


def test_a_host_without_links_splits_its_calls_by_its_requests() -> None:
    db = _nolink()
    for i in range(30):  # three times as many "small" requests on the same host
        st = T0 + i * S // 3 + 500 * MS
        db.request(st, st + 50 * MS, request_model="small", input_tokens=5, output_tokens=5,
                   route="/v1/small")
    b = _report(db)["baseline"]
    o, bm = b["overall"], b["by_model"]
    assert set(bm) == {"chat", "small"}
    assert bm["chat"]["cost_usd"] == pytest.approx(o["cost_usd"] / 4)
    assert bm["small"]["cost_usd"] == pytest.approx(o["cost_usd"] * 3 / 4)
    assert bm["chat"]["cost_per_request_usd"] == pytest.approx(
        bm["small"]["cost_per_request_usd"])
    assert bm["small"]["device_utilization"] == pytest.approx(
        3 * bm["chat"]["device_utilization"], abs=2e-4)
    _assert_rows_add_up({"baseline": b})
    _same_cost_per_request({"baseline": b}, "small", "/v1/small")


def _gateway_and_worker() -> FixtureDb:
    """Requests on a gateway machine, the model calls on a GPU machine, nothing linked."""
    db = FixtureDb()
    db.resource(1, cpu_cores=4, price_usd_per_hour=0.1, host_name="gateway")
    db.resource(2, gpu_count=1, price_usd_per_hour=2.0, host_name="gpu")
    for i in range(10):
        st = T0 + i * S
        for model, route in (("chat", "/v1/chat"), ("small", "/v1/small")):
            db.request(st, st + 100 * MS, request_model=model, input_tokens=50,
                       output_tokens=20, route=route)
        db.batch(st, st + 80 * MS, [], request_model=LOADED, device_time_ns=80 * MS,
                 batch_size=2, resource_id=2)
    return db


def test_without_any_link_a_worker_machine_is_the_requests() -> None:
    rep = _report(_gateway_and_worker())
    b = rep["baseline"]
    o, bm = b["overall"], b["by_model"]
    assert set(bm) == {"chat", "small"} and o["cost_usd"] > 0
    for model in ("chat", "small"):
        assert bm[model]["cost_usd"] == pytest.approx(o["cost_usd"] / 2)
        assert bm[model]["device_utilization"] == pytest.approx(o["device_utilization"] / 2,
                                                                abs=1e-4)
    _assert_rows_add_up(rep)
    _same_cost_per_request(rep, "chat", "/v1/chat")


# --- (a) the call's name is on linked calls: split like them -----------------------------------


def _warm_up(n: int = 120, warm: int = 3) -> FixtureDb:
    """``default`` requests served by linked calls named after the loaded model, and ``warm``
    unlinked warm-up calls of that name (500 ms each) before the first request."""
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(n):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, request_model="default", input_tokens=50,
                       output_tokens=20, route="/v1/chat")
        db.batch(st, st + 80 * MS, [r], request_model=LOADED, device_time_ns=80 * MS)
    for i in range(warm):
        st = T0 - (warm - i) * S
        db.batch(st, st + 500 * MS, [], request_model=LOADED, batch_size=1,
                 device_time_ns=500 * MS)
    return db


@pytest.mark.parametrize("n", [120, 5])
def test_warm_up_calls_go_to_the_requests_their_name_serves(n: int) -> None:
    rep = _report(_warm_up(n))
    b = rep["baseline"]
    o, bm = b["overall"], b["by_model"]
    assert set(bm) == {"default"}
    assert bm["default"]["cost_usd"] == pytest.approx(o["cost_usd"])
    assert bm["default"]["cost_per_request_usd"] == pytest.approx(o["cost_per_request_usd"])
    assert bm["default"]["device_utilization"] == pytest.approx(o["device_utilization"])
    assert bm["default"]["batch_size"]["batches"] == n + 3
    _assert_rows_add_up(rep)
    _same_cost_per_request(rep, "default", "/v1/chat")


def _mapped() -> FixtureDb:
    """One loaded model ``llama`` serves two requested models: ``a`` (route /a, 60 ms calls) and
    ``b`` (route /b, 20 ms calls), linked; 10 unlinked ``llama`` calls of 40 ms run on a second,
    dearer host that serves no request."""
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0, host_name="h1")
    db.resource(2, gpu_count=1, price_usd_per_hour=5.0, host_name="h2")
    for i in range(10):
        st = T0 + i * S
        ra = db.request(st, st + 100 * MS, request_model="a", input_tokens=10, output_tokens=10,
                        route="/a")
        db.batch(st, st + 60 * MS, [ra], request_model="llama", device_time_ns=60 * MS)
        rb = db.request(st + 300 * MS, st + 400 * MS, request_model="b", input_tokens=10,
                        output_tokens=10, route="/b")
        db.batch(st + 300 * MS, st + 320 * MS, [rb], request_model="llama",
                 device_time_ns=20 * MS)
        db.batch(st + 500 * MS, st + 540 * MS, [], request_model="llama", resource_id=2,
                 device_time_ns=40 * MS, batch_size=2)
    return db


def test_calls_of_a_mapped_name_split_by_what_its_linked_calls_served() -> None:
    rep = _report(_mapped())
    b = rep["baseline"]
    bm = b["by_model"]
    assert set(bm) == {"a", "b"}  # no request-less "llama" row
    window_h = rep["window"]["duration_s"] / 3600
    # h1 by the linked device time (a 60 : b 20); h2 (no requests there) by the linked calls
    # of the name, across hosts: a 3/4, b 1/4
    assert bm["a"]["cost_usd"] == pytest.approx(window_h * (1.0 * 0.75 + 5.0 * 0.75))
    assert bm["b"]["cost_usd"] == pytest.approx(window_h * (1.0 * 0.25 + 5.0 * 0.25))
    assert bm["a"]["batch_size"]["batches"] == bm["b"]["batch_size"]["batches"] == 20
    _assert_rows_add_up(rep)
    _same_cost_per_request(rep, "a", "/a")
    _same_cost_per_request(rep, "b", "/b")


# --- (b) a requested model has the call's name ------------------------------------------------


def test_calls_named_after_a_requested_model_go_to_it_and_its_routes() -> None:
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(10):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, request_model="chat", input_tokens=50,
                       output_tokens=20, route="/v1/chat")
        db.batch(st, st + 80 * MS, [r], request_model="chat", device_time_ns=80 * MS)
        # embedding requests the server answers with calls it does not link to them
        db.request(st + 300 * MS, st + 400 * MS, request_model="emb", input_tokens=30,
                   output_tokens=0, route="/v1/embed")
        db.batch(st + 300 * MS, st + 340 * MS, [], request_model="emb", device_time_ns=40 * MS)
    rep = _report(db)
    b = rep["baseline"]
    o, bm = b["overall"], b["by_model"]
    assert set(bm) == {"chat", "emb"} and bm["emb"]["requests_observed"] is True
    assert bm["emb"]["cost_usd"] == pytest.approx(o["cost_usd"] * 40 / 120)
    assert bm["emb"]["batch_size"]["batches"] == 10
    _assert_rows_add_up(rep)
    _same_cost_per_request(rep, "emb", "/v1/embed")
    _same_cost_per_request(rep, "chat", "/v1/chat")


# --- (d) a workload of its own keeps its row and its cost ---------------------------------------


def _separate() -> FixtureDb:
    """Linked chat calls (80 ms) and, on the same host, unlinked ``emb`` calls (40 ms) that no
    name or host ties to a request: an embedder the server runs for itself."""
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(10):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, request_model="chat", input_tokens=50,
                       output_tokens=20, route="/v1/chat")
        db.batch(st, st + 80 * MS, [r], request_model="chat", device_time_ns=80 * MS)
        db.batch(st + 300 * MS, st + 340 * MS, [], request_model="emb", batch_size=4,
                 device_time_ns=40 * MS)
    return db


def test_a_separate_workload_keeps_its_row_and_the_route_table_says_where_it_went() -> None:
    rep = _report(_separate())
    b = rep["baseline"]
    o, bm = b["overall"], b["by_model"]
    assert bm["emb"]["requests_observed"] is False
    assert bm["emb"]["cost_usd"] == pytest.approx(o["cost_usd"] / 3)
    _assert_rows_add_up(rep)
    # the route has no row for it: it holds chat's requests and the whole bill
    assert b["by_route"]["/v1/chat"]["cost_usd"] == pytest.approx(o["cost_usd"])
    md = render_markdown(rep)
    section = md.split("### By route", 1)[1]
    assert "ran a workload of their own (emb" in section
    assert f"{_fmt.usd(bm['emb']['cost_usd'])}, {_fmt.pct(1 / 3)} of the bill" in section
    model_rows = md.split("### By model", 1)[1].split("### By route", 1)[0]
    emb_row = next(ln for ln in model_rows.splitlines() if ln.startswith("| emb |"))
    assert f"{_fmt.usd(bm['emb']['cost_usd'])} in all ({_fmt.pct(1 / 3)} of the bill)" in emb_row


# --- the same on ClickHouse -----------------------------------------------------------------


def _engine_line() -> dict[str, Any]:
    """Host a: default requests linked to calls named after the loaded model, 3 warm-up calls of
    that name (a), and embedder calls of their own (d). Host b: chat requests and calls that
    nothing links (c)."""
    a_spans, b_spans = [], []
    for i in range(10):
        tid, st = f"{i + 1:032x}", T0 + i * S
        req, call, emb = f"{4 * i + 1:016x}", f"{4 * i + 2:016x}", f"{4 * i + 3:016x}"
        a_spans.append(otlp_span(tid, req, st, st + 100 * MS, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "default", sc.ROUTE: "/v1/chat",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 50, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}))
        a_spans.append(otlp_span(tid, call, st, st + 80 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: LOADED, sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 80 * MS}, links=((tid, req),)))
        a_spans.append(otlp_span(f"{700 + i:032x}", emb, st + 300 * MS, st + 340 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "emb", sc.BATCH_SIZE: 4,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 40 * MS}))
        btid = f"{900 + i:032x}"
        b_spans.append(otlp_span(btid, f"{4 * i + 4:016x}", st, st + 100 * MS, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "chat", sc.ROUTE: "/v1/other",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 50, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}))
        b_spans.append(otlp_span(f"{1100 + i:032x}", f"{500 + i:016x}", st, st + 60 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "qwen", sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 60 * MS}))
    for i in range(3):
        st = T0 - (3 - i) * S
        a_spans.append(otlp_span(f"{800 + i:032x}", f"{600 + i:016x}", st, st + 500 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: LOADED, sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 500 * MS}))
    host = {sc.SERVICE_NAME: "llm-server", sc.RES_GPU_COUNT: 1}
    return {"resourceSpans": [
        resource({**host, sc.HOST_NAME: "a", sc.RES_PRICE_USD_PER_HOUR: 1.0},
                 sc.INSTRUMENTATION_NAME, a_spans),
        resource({**host, sc.HOST_NAME: "b", sc.RES_PRICE_USD_PER_HOUR: 3.0},
                 sc.INSTRUMENTATION_NAME, b_spans)]}


def test_the_attribution_is_the_same_on_duckdb_and_clickhouse(tmp_path: Path) -> None:
    duck, ch = on_both_engines(tmp_path, _engine_line())

    def rows(r: dict[str, Any]) -> dict[str, Any]:
        b = r["baseline"]
        return {(kind, k): (s.get("requests_observed"), s["requests"],
                            (s.get("batch_size") or {}).get("batches"),
                            s.get("device_utilization"), round(s["cost_usd"], 12))
                for kind in ("by_model", "by_route") for k, s in b[kind].items()}

    got = rows(duck)
    assert set(got) == {("by_model", "default"), ("by_model", "chat"), ("by_model", "emb"),
                        ("by_route", "/v1/chat"), ("by_route", "/v1/other")}
    assert got[("by_model", "default")][2] == 13  # its 10 calls and the 3 warm-up calls
    assert got[("by_model", "chat")][2] == 10  # host b's unlinked calls (c)
    assert got[("by_model", "emb")][:2] == (False, 0)
    _assert_rows_add_up(duck)
    _same_cost_per_request(duck, "chat", "/v1/other")  # host b holds no calls of its own
    assert rows(ch) == got


def test_the_no_link_fallbacks_are_the_same_on_duckdb_and_clickhouse(tmp_path: Path) -> None:
    """Host a: chat requests and config-named calls, unlinked (c); host b: calls only (c')."""
    a_spans, b_spans = [], []
    for i in range(10):
        st = T0 + i * S
        a_spans.append(otlp_span(f"{i + 1:032x}", f"{2 * i + 1:016x}", st, st + 100 * MS, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "chat", sc.ROUTE: "/v1/chat",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 50, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}))
        a_spans.append(otlp_span(f"{300 + i:032x}", f"{2 * i + 2:016x}", st, st + 80 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: LOADED, sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 80 * MS}))
        b_spans.append(otlp_span(f"{600 + i:032x}", f"{100 + i:016x}", st, st + 40 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "emb", sc.BATCH_SIZE: 4,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 40 * MS}))
    host = {sc.SERVICE_NAME: "llm-server", sc.RES_GPU_COUNT: 1}
    line = {"resourceSpans": [
        resource({**host, sc.HOST_NAME: "a", sc.RES_PRICE_USD_PER_HOUR: 1.0},
                 sc.INSTRUMENTATION_NAME, a_spans),
        resource({**host, sc.HOST_NAME: "b", sc.RES_PRICE_USD_PER_HOUR: 3.0},
                 sc.INSTRUMENTATION_NAME, b_spans)]}
    duck, ch = on_both_engines(tmp_path, line)
    for rep in (duck, ch):
        b = rep["baseline"]
        assert set(b["by_model"]) == {"chat"}
        assert b["by_model"]["chat"]["cost_usd"] == pytest.approx(b["overall"]["cost_usd"])
        assert b["by_model"]["chat"]["batch_size"]["batches"] == 20
        _assert_rows_add_up(rep)
    assert ch["baseline"]["by_model"]["chat"]["device_utilization"] == (
        duck["baseline"]["by_model"]["chat"]["device_utilization"])


# --- the terminal title and the order of the scope tables -------------------------------------


def _terminal(rep: dict[str, Any]) -> str:
    console = Console(record=True, width=200, color_system=None)
    render_terminal(rep, console)
    return console.export_text()


def test_the_title_names_the_one_requested_model_beside_a_request_less_row() -> None:
    text = _terminal(_report(_separate()))
    assert "baseline (overall: model chat)" in text


def test_a_busy_request_less_row_sorts_by_utilisation_and_is_never_cut() -> None:
    rep = _report(_separate())
    bm = rep["baseline"]["by_model"]
    chat, emb = bm.pop("chat"), bm.pop("emb")
    n = _fmt.MAX_SCOPE_ROWS + 3
    for i in range(n):  # many requested models, each using little of the device
        bm[f"m{i:02d}"] = {**chat, "requests": 100 - i, "device_utilization": 0.01}
    bm["emb"] = {**emb, "device_utilization": 0.4}  # the busiest model of all
    _, rows, notes = _fmt.scope_table(rep, "model")
    names = [r[0] for r in rows]
    assert names[0] == "emb" and len(names) == _fmt.MAX_SCOPE_ROWS + 1
    assert "3 more models (" in " ".join(notes)
    bm["emb"]["device_utilization"] = 0.0  # the least busy: last, still shown
    names = [r[0] for r in _fmt.scope_table(rep, "model")[1]]
    assert names[-1] == "emb" and names[0] == "m00"
    bm["emb"]["device_utilization"] = 0.4
    lines = [ln for ln in _terminal(rep).splitlines() if re.match(r"│ (m\d\d|emb) ", ln)]
    assert lines[0].startswith("│ emb") and len(lines) == _fmt.MAX_SCOPE_ROWS + 1
