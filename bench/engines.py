"""The same audit on DuckDB (file path) and on ClickHouse (chDB), side by side.

    .venv/bin/python bench/engines.py --spans 1000000 --seed 1 [--json out.json]

Generates ``--spans`` spans with ``bench/synthetic_spans.py`` as OTLP/JSON lines, then:

- DuckDB: ``load_store`` (parse, no cache) and ``analyze_connection``, timed apart;
- ClickHouse: the same lines loaded into an exporter-DDL ``otel_traces`` in chDB the way the
  Collector's ClickHouse exporter writes them (timed, but not part of the audit: in production
  the data is already there), then ``analyze_connection`` on the ClickHouse connection (what
  ``analyze_clickhouse`` runs), timed.

It reports both timings, whether the two reports agree (counts exact, exact percentiles equal,
sketch percentiles within alpha, costs to the cent), and the bytes the audit pulled back from the
engine against the raw span bytes (uncompressed ``otel_traces`` columns, and the OTLP/JSON size),
with the largest queries by bytes. Target: pulled-back bytes <= 1 % of the raw span bytes.
Times are of this machine only; compare the two engines side by side, not across machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_spans import write_traces

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.engines.clickhouse_engine import ChdbBackend, ClickHouseConnection
from inferaudit_analyzer.engines.clickhouse_source import (
    EXPORTER_DDL_SOURCE,
    OTEL_TRACES_DDL,
    TimeRange,
    canonical_relations,
)
from inferaudit_analyzer.engines.otel_rows import insert_rows, otel_rows
from inferaudit_analyzer.store import load_store

TARGET_RATIO = 0.01


def _lines(paths: list[Path]) -> Any:
    for p in paths:
        with open(p, "rb") as f:
            for line in f:
                obj = json.loads(line)
                if "resourceSpans" in obj:
                    yield obj


def _agree(duck: dict[str, Any], ch: dict[str, Any], alpha: float) -> dict[str, Any]:
    d, c = duck["baseline"]["overall"], ch["baseline"]["overall"]
    checks = {
        "counts_exact": all(d[k] == c[k] for k in ("requests", "errors", "input_tokens",
                                                    "output_tokens"))
        and all(duck["input"][k] == ch["input"][k] for k in ("spans", "requests", "batches")),
        "exact_percentiles_equal": all(d[m][q] == c[m][q] for m in ("latency_ms", "ttft_ms")
                                       for q in ("p50", "p95", "p99")),
        "sketch_within_alpha": all(
            d[m][q] is None or abs(c[m]["sketch"][q] - d[m][q]) <= alpha * d[m][q] + 1e-4
            for m in ("latency_ms", "ttft_ms") for q in ("p50", "p95", "p99")),
        "cost_to_the_cent": all(
            (duck["cost"].get(k) is None and ch["cost"].get(k) is None)
            or round(duck["cost"][k], 2) == round(ch["cost"][k], 2)
            for k in duck["cost"] if isinstance(duck["cost"][k], float)),
    }
    checks["all"] = all(checks.values())
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the spans")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="inferaudit-engines-"))
    params = AnalyzeParams(cache=False)

    t = time.perf_counter()
    paths = write_traces(work / "otlp", args.spans, args.seed)
    gen_s = time.perf_counter() - t
    json_bytes = sum(p.stat().st_size for p in paths)

    t = time.perf_counter()
    store = load_store(paths, cache=False)
    duck_parse_s = time.perf_counter() - t
    t = time.perf_counter()
    duck = analyze_connection(store.con, params, (), {"paths": [str(work)]})
    duck_analyze_s = time.perf_counter() - t
    n_spans = store.spans
    store.close()

    be = ChdbBackend()
    be.command("DROP TABLE IF EXISTS otel_traces")
    be.command(OTEL_TRACES_DDL.format(table="otel_traces"))
    t = time.perf_counter()
    insert_rows(be, "otel_traces", otel_rows(_lines(paths)), str(work))
    ch_load_s = time.perf_counter() - t
    con = ClickHouseConnection(be, canonical_relations("otel_traces", TimeRange()))
    raw = con.query("SELECT sum(data_uncompressed_bytes), sum(data_compressed_bytes) "
                    "FROM system.parts WHERE active AND table = 'otel_traces'").fetchone()
    raw_bytes, raw_compressed = int(raw[0]), int(raw[1])
    before = con.bytes_pulled
    t = time.perf_counter()
    con.materialize()
    ch = analyze_connection(con, params, (), {"paths": ["chdb://?table=otel_traces"]})
    ch_analyze_s = time.perf_counter() - t
    pulled = con.bytes_pulled - before
    log = con.query_log[1:]
    be.close()

    out = {
        "bench": "engines",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "exporter_ddl": EXPORTER_DDL_SOURCE,
        "spans": n_spans,
        "generate_s": round(gen_s, 2),
        "duckdb": {"parse_s": round(duck_parse_s, 2), "analyze_s": round(duck_analyze_s, 2)},
        "chdb": {"load_s": round(ch_load_s, 2), "analyze_s": round(ch_analyze_s, 2),
                 "queries": len(log)},
        "raw_span_bytes": {"otel_traces_uncompressed": raw_bytes,
                           "otel_traces_compressed": raw_compressed, "otlp_json": json_bytes},
        "bytes_pulled": pulled,
        "pulled_ratio_of_raw": round(pulled / raw_bytes, 6) if raw_bytes else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(raw_bytes and pulled / raw_bytes <= TARGET_RATIO),
        "largest_queries": sorted(({"bytes": b, "sql": q} for q, b in log),
                                  key=lambda r: -r["bytes"])[:5],
        "agree": _agree(duck, ch, params.sketch_alpha),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if out["agree"]["all"] else 1


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
