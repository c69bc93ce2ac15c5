"""Scale benchmark of the analyzer: synthetic OTLP JSON lines → store → analysis.

    .venv/bin/python bench/analyzer_scale.py --spans 1000000 --seed 1 [--keep] [--json out.json]

Generates ``--spans`` realistic spans (bench/synthetic_spans.py: request + batch spans with
links, several models / routes, 512 spans per line, rotated files like the SDK file sink),
then times separately:

- parse: ``load_store(..., cache=True)`` into a fresh cache dir (parsing + Parquet parts);
- reload: the same call again, served from the cache;
- analysis: H7b's ``analyze_connection`` over the loaded store when it exists, and always a
  representative query set (p50/p99 latency per model, token-weighted device cost per request
  via links, cost share per route) so the number is comparable across versions.

Peak RSS is ``getrusage`` of this process and, separately, of the largest parser child.
Data is generated into ``--dir`` (default a temp dir) and reused with ``--keep`` when the
span count and seed match.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_spans import write_traces

from inferaudit_analyzer.ingest import fastjson

SPANS_PER_FILE = 250_000

QUERIES = {
    "latency_percentiles_per_model": """
        SELECT request_model, count(*), quantile_cont(duration_ns, 0.5),
               quantile_cont(duration_ns, 0.99), avg(ttft_ns)
        FROM spans WHERE role = 'request' GROUP BY 1""",
    "device_cost_share_via_links": """
        WITH b AS (SELECT span_id, device_time_ns FROM spans WHERE role = 'batch'),
        m AS (SELECT l.span_id AS batch_id, r.span_id, r.route,
                     coalesce(r.input_tokens, 0) + coalesce(r.output_tokens, 0) AS tok
              FROM links l JOIN spans r ON r.span_id = l.linked_span_id
                                        AND r.trace_id = l.linked_trace_id
              WHERE r.role = 'request'),
        w AS (SELECT m.*, b.device_time_ns * tok / sum(tok) OVER (PARTITION BY batch_id) AS dev
              FROM m JOIN b ON b.span_id = m.batch_id)
        SELECT route, sum(dev) / (SELECT sum(dev) FROM w) AS share FROM w GROUP BY 1""",
    "batch_efficiency_per_model": """
        SELECT request_model, avg(batch_size), sum(batch_input_tokens) / sum(padded_tokens)
        FROM spans WHERE role = 'batch' GROUP BY 1""",
    "duplicate_prompts": """
        SELECT count(*) - count(DISTINCT prompt_fp) FROM spans WHERE role = 'request'""",
}


def _gen_one(args: tuple[str, int, int, int]) -> int:
    out, n, seed, idx = args
    tmp = Path(out) / f".part-{idx}"
    (path,) = write_traces(tmp, n, seed * 100_003 + idx, spans_per_file=n + 1)
    path.rename(Path(out) / f"traces-20260101T000000-{idx:04d}.jsonl")
    shutil.rmtree(tmp)
    return n


def generate(out: Path, spans: int, seed: int, jobs: int) -> None:
    marker = out / "bench.json"
    want = {"spans": spans, "seed": seed, "per_file": SPANS_PER_FILE}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    chunks = [(str(out), min(SPANS_PER_FILE, spans - i), seed, k)
              for k, i in enumerate(range(0, spans, SPANS_PER_FILE))]
    with ProcessPoolExecutor(jobs) as ex:
        list(ex.map(_gen_one, chunks))
    marker.write_text(json.dumps(want))


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children: unlike wall time, it does not
    grow when other jobs share the cores, so it bounds the wall time on an idle machine."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to generate (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the generated data")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from inferaudit_analyzer.store import load_store

    data = Path(args.dir or os.path.join(tempfile.gettempdir(),
                                         f"inferaudit-bench-{args.spans}-{args.seed}"))
    t = time.perf_counter()
    generate(data, args.spans, args.seed, args.workers or os.cpu_count() or 1)
    gen_s = time.perf_counter() - t
    in_bytes = sum(p.stat().st_size for p in data.glob("*.jsonl"))
    cache_root = Path(tempfile.mkdtemp(prefix="inferaudit-bench-cache-"))
    try:
        t, c = time.perf_counter(), _cpu_s()
        store = load_store([data], cache_root=cache_root, workers=args.workers,
                           memory_limit=args.memory_limit)
        parse_s, parse_cpu_s = time.perf_counter() - t, _cpu_s() - c
        n = store.spans
        store.close()
        t = time.perf_counter()
        store = load_store([data], cache_root=cache_root, memory_limit=args.memory_limit)
        reload_s = time.perf_counter() - t
        assert store.stats["files_parsed"] == 0, "second load did not come from the cache"
        c = _cpu_s()
        analysis_s, analysis_what = _analysis(store)
        analysis_cpu_s = _cpu_s() - c
        t, c = time.perf_counter(), _cpu_s()
        for sql in QUERIES.values():
            store.con.execute(sql).fetchall()
        queries_s, queries_cpu_s = time.perf_counter() - t, _cpu_s() - c
        store.close()
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
        if not args.keep and args.dir is None:
            shutil.rmtree(data, ignore_errors=True)

    res = {
        "spans": n, "input_mb": round(in_bytes / 1e6, 1), "generate_s": round(gen_s, 2),
        "parse_s": round(parse_s, 2), "parse_spans_per_s": round(n / parse_s),
        "parse_cpu_s": round(parse_cpu_s, 2),
        "reload_cached_s": round(reload_s, 2),
        "analysis_s": None if analysis_s is None else round(analysis_s, 2),
        "analysis_spans_per_s": None if not analysis_s else round(n / analysis_s),
        "analysis_cpu_s": round(analysis_cpu_s, 2), "analysis": analysis_what,
        "queries_s": round(queries_s, 2), "queries_spans_per_s": round(n / queries_s),
        "queries_cpu_s": round(queries_cpu_s, 2),
        "end_to_end_s": round(parse_s + (analysis_s or queries_s), 2),
        # what an idle machine with these cores would need at best: CPU time / cores
        "end_to_end_idle_estimate_s": round(
            (parse_cpu_s + (analysis_cpu_s if analysis_s else queries_cpu_s))
            / (os.cpu_count() or 1), 2),
        "peak_rss_main_mb": round(_rss_mb(resource.RUSAGE_SELF)),
        "peak_rss_largest_child_mb": round(_rss_mb(resource.RUSAGE_CHILDREN)),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        # which OTLP/JSON reader parsed (ingest/fastjson.py): "compiled" or "python"
        "json_reader": "compiled" if fastjson.enabled() else "python",
    }
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def _analysis(store: object) -> tuple[float | None, str]:
    try:
        from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
    except ImportError:
        return None, "representative queries only (no inferaudit_analyzer.analyze)"
    t = time.perf_counter()
    analyze_connection(store.con, AnalyzeParams(), [],  # type: ignore[attr-defined]
                       {"paths": [], "files": [], "errors": []})
    return time.perf_counter() - t, "inferaudit_analyzer.analyze.analyze_connection"


if __name__ == "__main__":
    raise SystemExit(main())
