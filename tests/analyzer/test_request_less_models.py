"""A model that only model calls no request links to carry has its own ``by_model`` row.

``by_model`` was keyed by the requested models alone, so an embedding model the server calls
internally (or an offline batch job, or a second model whose requests are not traced) was in
``overall`` (its batches, its device time) and in no row: the rows' utilisations did not add up to
the overall one, and its device time was billed to the requested models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, S
from _otlp_span_builder import on_both_engines, otlp_span, resource
from rich.console import Console

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.report import _fmt
from inferaudit_analyzer.report.html import render_html
from inferaudit_analyzer.report.markdown import render_markdown
from inferaudit_analyzer.summary_terminal import render as render_terminal
from inferaudit_sdk import semconv as sc

N = 12
CHAT_MS, EMB_MS, EMB_BATCH = 80, 40, 4


def _chat_plus_embedder(emb_model: str | None = "emb") -> FixtureDb:
    """Requests for "chat", each served by a linked call of 80 ms; between them the server runs
    calls of ``emb_model`` (40 ms, 4 inputs each) that no request links to. One priced GPU."""
    db = FixtureDb()
    db.resource(1, gpu_count=1, price_usd_per_hour=1.0)
    for i in range(N):
        st = T0 + i * S
        r = db.request(st, st + 100 * MS, request_model="chat", input_tokens=50,
                       output_tokens=20, route="/v1/chat")
        db.batch(st, st + CHAT_MS * MS, [r], request_model="chat", device_time_ns=CHAT_MS * MS)
        db.batch(st + 300 * MS, st + (300 + EMB_MS) * MS, [], request_model=emb_model,
                 batch_size=EMB_BATCH, device_time_ns=EMB_MS * MS)
    return db


def _report(db: FixtureDb) -> dict[str, Any]:
    return json.loads(json.dumps(analyze_connection(db.con, AnalyzeParams()), default=str))


@pytest.fixture(scope="module")
def rep() -> dict[str, Any]:
    return _report(_chat_plus_embedder())


def test_the_request_less_model_has_its_batches_and_utilisation_share(rep) -> None:
    b = rep["baseline"]
    o, bm = b["overall"], b["by_model"]
    assert set(bm) == {"chat", "emb"}
    assert bm["chat"]["requests_observed"] is True and bm["emb"]["requests_observed"] is False
    assert bm["emb"]["batch_size"]["batches"] == N
    assert bm["emb"]["batch_size"]["mean"] == pytest.approx(EMB_BATCH)
    assert bm["chat"]["batch_size"]["batches"] == N  # not the embedder's calls
    window_s = rep["window"]["duration_s"]
    assert bm["emb"]["device_utilization"] == pytest.approx(N * EMB_MS / 1000 / window_s,
                                                            abs=1e-4)
    assert bm["chat"]["device_utilization"] == pytest.approx(N * CHAT_MS / 1000 / window_s,
                                                             abs=1e-4)
    assert bm["chat"]["device_utilization"] + bm["emb"]["device_utilization"] == pytest.approx(
        o["device_utilization"], abs=2e-4)


def test_the_request_less_model_has_empty_request_figures(rep) -> None:
    emb = rep["baseline"]["by_model"]["emb"]
    assert emb["requests"] == emb["errors"] == 0
    assert emb["input_tokens"] == emb["output_tokens"] == 0 and emb["device_s"] == 0
    assert emb["error_ratio"] is None and emb["cache_hit_ratio"] is None
    for metric in ("latency_ms", "ttft_ms", "queue_ms", "error_latency_ms"):
        assert emb[metric]["n"] == 0 and emb[metric]["p95"] is None
    for key in ("cost_per_request_usd", "busy_cost_per_request_usd", "cost_per_1k_tokens_usd"):
        assert emb[key] is None, key


def test_the_request_less_model_pays_its_calls_share_of_the_bill(rep) -> None:
    b = rep["baseline"]
    o, bm = b["overall"], b["by_model"]
    share = EMB_MS / (EMB_MS + CHAT_MS)  # of the one host's device time
    assert bm["emb"]["cost_usd"] == pytest.approx(o["cost_usd"] * share)
    assert bm["chat"]["cost_usd"] == pytest.approx(o["cost_usd"] * (1 - share))
    assert bm["chat"]["cost_per_request_usd"] == pytest.approx(o["cost_usd"] * (1 - share) / N)
    assert sum(s["busy_cost_usd"] for s in bm.values()) == pytest.approx(o["busy_cost_usd"])
    # routes have no request-less row: they still share the whole bill
    assert sum(s["cost_usd"] for s in b["by_route"].values()) == pytest.approx(o["cost_usd"])


def test_calls_without_a_model_name_are_an_unknown_row_without_requests() -> None:
    bm = _report(_chat_plus_embedder(emb_model=None))["baseline"]["by_model"]
    assert set(bm) == {"chat", "(unknown)"}
    assert bm["(unknown)"]["requests_observed"] is False
    assert bm["(unknown)"]["batch_size"]["batches"] == N


def test_the_reports_render_the_request_less_row(rep) -> None:
    emb = rep["baseline"]["by_model"]["emb"]
    util = _fmt.pct(emb["device_utilization"])
    md = render_markdown(rep)
    section = md.split("### By model", 1)[1].split("### By route", 1)[0]
    row = next(ln for ln in section.splitlines() if ln.startswith("| emb |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in section.strip().splitlines()[0].strip("|").split("|")]
    by = dict(zip(header, cells, strict=True))
    for col in ("requests", "errors", "throughput", "latency p95"):
        assert by[col] == _fmt.NO_REQUESTS, col
    # no cost per request, but its calls' cost and bill share: the per-model costs reconcile
    share = emb["cost_usd"] / rep["baseline"]["overall"]["cost_usd"]
    assert by["cost/req (bill)"] == (f"{_fmt.usd(emb['cost_usd'])} in all "
                                     f"({_fmt.pct(share)} of the bill)")
    assert by["device utilisation"] == util and by["batch size mean"] == _fmt.num(4.0)
    assert "has no requests in the input" in section
    html = render_html(rep)
    assert "<td>emb</td>" in html and f"<td>{util}</td>" in html
    console = Console(record=True, width=160, color_system=None)
    render_terminal(rep, console)
    line = next(ln for ln in console.export_text().splitlines() if ln.startswith("│ emb"))
    assert _fmt.NO_REQUESTS in line and util in line


def _engine_shapes() -> dict[str, Any]:
    """The same shape as OTLP: linked chat calls, unlinked embedder calls, one priced GPU."""
    spans = []
    for i in range(N):
        tid, st = f"{i + 1:032x}", T0 + i * S
        req, call, emb = f"{3 * i + 1:016x}", f"{3 * i + 2:016x}", f"{3 * i + 3:016x}"
        spans.append(otlp_span(tid, req, st, st + 100 * MS, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "chat", sc.GEN_AI_USAGE_INPUT_TOKENS: 50,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}))
        spans.append(otlp_span(tid, call, st, st + CHAT_MS * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "chat", sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: CHAT_MS * MS}, links=((tid, req),)))
        spans.append(otlp_span(f"{700 + i:032x}", emb, st + 300 * MS, st + (300 + EMB_MS) * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "emb", sc.BATCH_SIZE: EMB_BATCH,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: EMB_MS * MS}))
    gpu = {sc.SERVICE_NAME: "llm-server", sc.RES_GPU_COUNT: 1, sc.RES_PRICE_USD_PER_HOUR: 1.0}
    return {"resourceSpans": [resource(gpu, sc.INSTRUMENTATION_NAME, spans)]}


def test_the_same_request_less_row_on_duckdb_and_clickhouse(tmp_path: Path) -> None:
    duck, ch = on_both_engines(tmp_path, _engine_shapes())

    def rows(r: dict[str, Any]) -> dict[str, Any]:
        return {m: (s["requests_observed"], s["requests"], s["batch_size"]["batches"],
                    s["device_utilization"], round(s["cost_usd"], 12))
                for m, s in r["baseline"]["by_model"].items()}

    assert rows(duck)["emb"][:3] == (False, 0, N)
    assert rows(ch) == rows(duck)
