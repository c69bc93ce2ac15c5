"""`inferaudit analyze` end to end: OTLP written by the official Python exporter's encoder, corrupt
input, exit codes, Kineto traces, never a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_analyzer.cli import analyze_main
from inferaudit_sdk import semconv as sc

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
MS = 1_000_000


def _write_otlp(path: Path, n: int = 30, batched: bool = False) -> None:
    """Spans made by the real OTel SDK, encoded by the OTLP exporter's own encoder, as JSON lines.

    Each request: a SERVER span (HTTP handler) enclosing the request span; model calls are
    batch spans linking their member requests. Timestamps are explicit so numbers are known.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({
        sc.SERVICE_NAME: "svc", sc.RES_GPU_MODEL: "NVIDIA L4", sc.RES_GPU_COUNT: 1}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(sc.INSTRUMENTATION_NAME)
    t0 = 1_700_000_000_000_000_000
    pending = []
    for i in range(n):
        arrival = t0 + i * 20 * MS
        server = tracer.start_span("POST /generate", kind=trace.SpanKind.SERVER,
                                   start_time=arrival)
        ctx = trace.set_span_in_context(server)
        req = tracer.start_span("text_completion tiny", context=ctx, start_time=arrival + MS,
                                attributes={sc.SPAN_ROLE: sc.ROLE_REQUEST,
                                            sc.GEN_AI_OPERATION_NAME: "text_completion",
                                            sc.GEN_AI_REQUEST_MODEL: "tiny",
                                            sc.GEN_AI_USAGE_INPUT_TOKENS: 50,
                                            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 10,
                                            sc.PROMPT_FINGERPRINT: f"{i % 5:032x}",
                                            sc.PROMPT_FINGERPRINT_KEY_ID: "k"})
        pending.append((server, req, arrival))
    # serve sequentially, one model call per request (or 5 per call when batched)
    size = 5 if batched else 1
    free = t0
    for k in range(0, n, size):
        group = pending[k:k + size]
        start = max(free, group[-1][2] + 2 * MS)
        links = [trace.Link(req.get_span_context()) for _, req, _ in group]
        b = tracer.start_span("batch tiny", links=links, start_time=start,
                              attributes={sc.SPAN_ROLE: sc.ROLE_BATCH,
                                          sc.GEN_AI_REQUEST_MODEL: "tiny",
                                          sc.BATCH_SIZE: len(group),
                                          sc.DEVICE_TYPE: "cuda",
                                          sc.DEVICE_TIME_NS: 25 * MS})
        b.end(end_time=start + 30 * MS)
        free = start + 30 * MS
        for server, req, _ in group:
            req.end(end_time=free + MS)
            server.end(end_time=free + 2 * MS)
    spans = exporter.get_finished_spans()
    with path.open("w") as f:
        for i in range(0, len(spans), 16):
            f.write(json.dumps(MessageToDict(encode_spans(spans[i:i + 16]))) + "\n")


def _run(args: list[str], tmp_path: Path, capsys) -> tuple[int, dict | None, str]:
    out = tmp_path / "report.json"
    code = analyze_main([*args, "--format", "json", "--out", str(out), "--no-cache"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, (json.loads(out.read_text()) if code == 0 else None), err


def test_otlp_from_official_encoder(tmp_path, capsys):
    _write_otlp(tmp_path / "traces-1.jsonl", n=30)
    code, rep, err = _run([str(tmp_path / "traces-1.jsonl")], tmp_path, capsys)
    assert code == 0, err
    assert rep["schema"] == "inferaudit.report/1"
    o = rep["baseline"]["overall"]
    assert rep["input"]["requests"] == 30 and rep["input"]["batches"] == 30
    # latency is the SERVER span: 2 ms longer than the request span it encloses... at least
    assert o["latency_ms"]["p50"] > o["model_ms"]["p50"]
    assert 0 < o["device_utilization"] <= 1
    assert o["cost_per_request_usd"] > o["busy_cost_per_request_usd"] > 0
    assert rep["price"]["usd_per_hour"] == pytest.approx(0.8048)
    ids = {f["id"] for f in rep["findings"]}
    assert "unbatched_serving" in ids and "redundant_compute" in ids
    assert rep["bottleneck"]["layer"] == "runtime"
    for f in rep["findings"]:
        assert {"id", "layer", "evidence"} <= set(f)


def test_price_override_and_text_output(tmp_path, capsys):
    _write_otlp(tmp_path / "t.jsonl", n=10, batched=True)
    code, rep, _ = _run([str(tmp_path), "--price-per-hour", "7.2"], tmp_path, capsys)
    assert code == 0
    assert rep["price"]["source"] == "--price-per-hour"
    w = rep["window"]["duration_s"]
    assert rep["baseline"]["overall"]["cost_per_request_usd"] == pytest.approx(7.2 / 3600 * w / 10)
    code = analyze_main([str(tmp_path / "t.jsonl"), "--no-cache"])
    out = capsys.readouterr().out
    assert code == 0 and "bottleneck" in out and "cost/request" in out


def test_corrupt_lines_give_partial_results(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    _write_otlp(good, n=10)
    lines = good.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        lines[0],
        lines[1][: len(lines[1]) // 2],                      # truncated line
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "startTimeUnixNano": "x"}]}]}]}',
        '{"resourceSpans": "not a list"}',                    # wrong type
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}',  # missing fields
        *lines[2:],
    ]) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    code, rep, err = _run([str(bad), str(tmp_path / "empty.jsonl")], tmp_path, capsys)
    assert code == 0, err
    assert rep["input"]["errors"], "unreadable parts must be listed"
    assert any("bad.jsonl" in (e["file"] or "") for e in rep["input"]["errors"])
    assert rep["input"]["requests"] > 0


@pytest.mark.parametrize("content", ["", "{not json\n", '{"resourceSpans": []}\n', "\x00\x01"])
def test_unusable_input_exits_2_naming_the_file(tmp_path, capsys, content):
    f = tmp_path / "traces.jsonl"
    f.write_text(content)
    code = analyze_main([str(f), "--format", "json", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and "traces.jsonl" in err and "Traceback" not in err


def test_missing_path_and_bad_flags_exit_2(tmp_path, capsys):
    assert analyze_main([str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    _write_otlp(tmp_path / "t.jsonl", n=3)
    assert analyze_main([str(tmp_path / "t.jsonl"), "--bucket-s", "-1"]) == 2
    assert analyze_main([str(tmp_path / "t.jsonl"), "--format", "xml"]) == 2
    pf = tmp_path / "prices.json"
    pf.write_text('{"gpus": [{"gpu": "L4"}]}')
    assert analyze_main([str(tmp_path / "t.jsonl"), "--price-file", str(pf)]) == 2
    assert "usd_per_hour" in capsys.readouterr().err


def test_output_and_source_problems_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    """A typo in an output path, an unreachable server or a missing optional package is the
    user's to fix: exit 2 with one line, not an internal error after a long read."""
    from inferaudit_analyzer.cli_report import calibrate_main, report_main

    _write_otlp(tmp_path / "t.jsonl", n=3)
    t = str(tmp_path / "t.jsonl")
    import inferaudit_analyzer.analyze as facade

    def must_not_run(*a, **k):
        raise AssertionError("analysed although the output cannot be written")

    with monkeypatch.context() as m:
        m.setattr(facade, "analyze", must_not_run)
        assert analyze_main([t, "--out", str(tmp_path / "no" / "x.json")]) == 2
        assert "does not exist" in capsys.readouterr().err
        assert analyze_main([t, "--out", str(tmp_path)]) == 2
        assert "is a directory" in capsys.readouterr().err
        assert report_main([t, "--md", str(tmp_path / "no" / "r.md")]) == 2
        assert "--md" in capsys.readouterr().err
    assert calibrate_main(["--out", str(tmp_path / "no" / "c.json")]) == 2
    assert analyze_main([t, "--bucket-s", "1e300"]) == 2
    assert analyze_main(["clickhouse://127.0.0.1:1/db?table=otel_traces"]) == 2
    err = capsys.readouterr().err
    assert "cannot query the server" in err and "internal error" not in err


def test_internal_error_exits_1_without_traceback(tmp_path, capsys, monkeypatch):
    _write_otlp(tmp_path / "t.jsonl", n=3)
    import inferaudit_analyzer.analyze as facade

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(facade, "analyze_connection", boom)
    assert analyze_main([str(tmp_path / "t.jsonl"), "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "boom" in err and "Traceback" not in err


def _small_kineto() -> Path:
    p = SHARED / "traces" / "hta" / "simple_add.json.gz"
    if not p.is_file():
        pytest.skip(f"real Kineto traces absent ({p}); see /work/shared/README.md")
    return p


def test_kineto_trace_alone(tmp_path, capsys):
    code, rep, err = _run([str(_small_kineto())], tmp_path, capsys)
    assert code == 0, err
    tb = rep["kernels"]["temporal_breakdown"]
    assert {"idle_pct", "compute_pct", "non_compute_pct"} <= set(tb)
    assert tb["idle_pct"] > 50  # "mostly idle" per the shared README
    assert rep["bottleneck"]["layer"] in {"runtime", "model", "hardware"}


def test_kineto_referenced_from_a_span_and_mixed_in(tmp_path, capsys):
    src = _small_kineto()
    prof = tmp_path / "profiles"
    prof.mkdir()
    (prof / "p.json.gz").write_bytes(src.read_bytes())
    _write_otlp(tmp_path / "traces.jsonl", n=10)
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    obj = json.loads(lines[0])
    span = obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span.setdefault("attributes", []).append(
        {"key": sc.PROFILE_TRACE_PATH, "value": {"stringValue": "profiles/p.json.gz"}})
    lines[0] = json.dumps(obj)
    (tmp_path / "traces.jsonl").write_text("\n".join(lines) + "\n")
    code, rep, err = _run([str(tmp_path / "traces.jsonl")], tmp_path, capsys)
    assert code == 0, err
    assert rep["kernels"] is not None, rep["input"]["errors"]
    assert rep["input"]["kineto_files"]


def test_gzip_kineto_is_detected_by_content(tmp_path, capsys):
    src = _small_kineto()
    renamed = tmp_path / "trace.jsonl.gz"  # a misleading name: content decides
    renamed.write_bytes(src.read_bytes())
    with gzip.open(renamed, "rt") as f:
        assert "traceEvents" in f.read(1 << 20)
    code, rep, err = _run([str(renamed)], tmp_path, capsys)
    assert code == 0, err
    assert rep["kernels"]["temporal_breakdown"] is not None


def test_progress_callback_takes_the_store_progress_and_never_raises():
    from inferaudit_analyzer.cli import _progress
    from inferaudit_analyzer.store import Progress

    with _progress(True) as cb:
        cb(Progress(file="/x/traces-1.jsonl", bytes_done=10, bytes_total=100, spans=3,
                    files_done=1, files_total=2, cached=False))
        cb(object())  # anything else is ignored, not raised
    with _progress(False) as cb:
        assert cb is None


def test_own_report_beside_the_traces_is_skipped_not_counted_as_errors(tmp_path, capsys):
    _write_otlp(tmp_path / "t.jsonl", n=5)
    first = tmp_path / "first.json"
    assert analyze_main([str(tmp_path), "--format", "json", "--out", str(first), "--no-cache"]) == 0
    rep1 = json.loads(first.read_text())
    assert analyze_main([str(tmp_path), "--format", "json", "--no-cache"]) == 0
    rep2 = json.loads(capsys.readouterr().out)
    assert rep2["input"]["errors_total"] == rep1["input"]["errors_total"] == 0
    assert rep2["input"]["coverage"] == rep1["input"]["coverage"]
    (sk,) = rep2["input"]["skipped"]
    assert sk["file"].endswith("first.json") and "inferaudit.report/" in sk["reason"]
    only = tmp_path / "only"
    only.mkdir()
    first.rename(only / "first.json")
    assert analyze_main([str(only)]) == 2
    assert "no traces here" in capsys.readouterr().err


def test_a_copy_of_the_same_export_is_counted_once_and_flagged(tmp_path, capsys):
    _write_otlp(tmp_path / "a.jsonl", n=6)
    assert analyze_main([str(tmp_path), "--format", "json", "--no-cache"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["input"]["coverage"]["duplicate_requests"] == 0
    assert one["input"]["coverage"]["duplicate_spans_dropped"] == 0
    assert "duplicate_spans" not in {f["id"] for f in one["findings"]}
    (tmp_path / "b.jsonl").write_bytes((tmp_path / "a.jsonl").read_bytes())
    assert analyze_main([str(tmp_path), "--format", "json", "--no-cache"]) == 0
    two = json.loads(capsys.readouterr().out)
    dup = next(f for f in two["findings"] if f["id"] == "duplicate_spans")
    assert dup["severity"] == "low"
    assert dup["evidence"]["duplicate_spans_dropped"] == one["input"]["coverage"]["spans"]
    # the copy changes none of the numbers
    assert two["input"]["coverage"]["duplicate_requests"] == 0
    assert two["input"]["requests"] == one["input"]["requests"]
    assert two["baseline"]["overall"] == one["baseline"]["overall"]


def test_a_missing_optional_library_is_named_with_the_install_hint(tmp_path, capsys, monkeypatch):
    _write_otlp(tmp_path / "t.jsonl", n=3)
    import inferaudit_analyzer.analyze as facade

    def no_duckdb(*a, **k):
        raise ModuleNotFoundError("No module named 'duckdb'", name="duckdb")

    monkeypatch.setattr(facade, "analyze", no_duckdb)
    assert analyze_main([str(tmp_path / "t.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "optional part" in err and "duckdb" in err and ".[analyzer]" in err
    assert "internal error" not in err
