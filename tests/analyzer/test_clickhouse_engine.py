"""The dialect layer on the real ClickHouse engine (chDB): each fix-up is checked against DuckDB.

Every case runs the same DuckDB-dialect SQL on DuckDB and, translated, on chDB, over the same
rows, and demands the same answer. Then: sketches computed per shard on ClickHouse merge into the
file path's sketch exactly; the CLI takes a ``chdb://`` URL; URLs and times parse.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from _engine_fixtures import T0, chdb_with, workload_requests, write_workload

pytest.importorskip("chdb")

from inferaudit_analyzer.analyses import percentiles as pct
from inferaudit_analyzer.analyze import AnalyzeParams, analyze
from inferaudit_analyzer.cli import analyze_main
from inferaudit_analyzer.engines.clickhouse_analyze import (
    BadClickHouseURL,
    analyze_clickhouse,
    connect,
    parse_url,
)
from inferaudit_analyzer.engines.clickhouse_engine import ChdbBackend, ClickHouseConnection
from inferaudit_analyzer.engines.dialect import to_clickhouse
from inferaudit_analyzer.engines.otel_rows import as_string
from inferaudit_analyzer.engines.timespec import parse_time_ns
from inferaudit_analyzer.store import load_store
from inferaudit_analyzer.views import create_views

ROWS_SQL = "SELECT * FROM (VALUES {rows}) AS t(g, x, j, flag)"


def _pair(rows: list[tuple[Any, ...]]) -> tuple[Any, ClickHouseConnection]:
    """The same relation ``t(g, x, j, flag)`` on DuckDB and (as a CTE-backed view) on chDB."""
    def lit(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return repr(v)

    body = ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)
    duck = duckdb.connect()
    duck.execute(f"CREATE TABLE t AS {ROWS_SQL.format(rows=body)}")
    ch_sql = ("SELECT CAST(g AS Nullable(String)) AS g, CAST(x AS Nullable(Int64)) AS x, "
              "CAST(j AS Nullable(String)) AS j, CAST(flag AS Nullable(Bool)) AS flag FROM "
              "format(JSONCompactEachRow, 'g Nullable(String), x Nullable(Int64), "
              "j Nullable(String), flag Nullable(Bool)', $$"
              + "\n".join(json.dumps(list(r)) for r in rows) + "$$)")
    return duck, ClickHouseConnection(ChdbBackend(), {"t": ch_sql})


@pytest.fixture(scope="module")
def pair() -> Any:
    rng = random.Random(3)
    rows = []
    for i in range(400):
        x = None if rng.random() < 0.1 else rng.randint(0, 10_000)
        j = json.dumps({"k.dotted": str(i % 7)}) if i % 3 else json.dumps({})
        rows.append((rng.choice("abcd"), x, j, None if i % 5 == 0 else bool(i % 2)))
    rows.append(("empty", None, "{}", None))  # a group whose x is all NULL
    duck, ch = _pair(rows)
    yield duck, ch
    ch.close()


CASES = [
    # quantile_disc: the ceil(q*n)-th smallest, per group, NULLs skipped, all-NULL group NULL
    "SELECT g, quantile_disc(x, 0.5), quantile_disc(x, 0.95), quantile_disc(x, 0.99) "
    "FROM t GROUP BY g ORDER BY g",
    # a missing JSON key is NULL, so COALESCE sees it
    """SELECT COALESCE(json_extract_string(j, '$."k.dotted"'), 'none') AS v, COUNT(*) FROM t
       GROUP BY v ORDER BY v""",
    # IS TRUE / IS NOT TRUE over NULLs; FILTER; bool_and / bool_or
    "SELECT COUNT(*) FILTER (WHERE flag IS TRUE), COUNT(*) FILTER (WHERE flag IS NOT TRUE), "
    "bool_and(flag), bool_or(flag) FROM t",
    # a correlated COUNT that matches nothing is 0, not NULL; COUNT mixes with BIGINT
    "SELECT g, (SELECT COUNT(*) FROM t u WHERE u.g = t.g AND u.x > 100000) AS none, "
    "COALESCE(MAX(x), COUNT(*), 1) FROM t GROUP BY g ORDER BY g",
    # SUM/MAX over no rows is NULL; CAST of a double to BIGINT rounds
    "SELECT SUM(x), MAX(x), CAST(COALESCE(AVG(x) / 3.0, 0) AS BIGINT) FROM t WHERE x < 0",
    "SELECT g, CAST(COALESCE(SUM(x) / 7.0, MIN(x)) AS BIGINT) FROM t GROUP BY g ORDER BY g",
    # an aggregate aliased like its own argument column reads the column
    "SELECT SUM(x) AS x, COUNT(x) AS n FROM t",
    # TRY_CAST of non-numeric text is NULL
    """SELECT COUNT(TRY_CAST(json_extract_string(j, '$."k.dotted"') AS DOUBLE)) FROM t""",
]


@pytest.mark.parametrize("sql", CASES)
def test_same_answer_on_both_engines(pair: Any, sql: str) -> None:
    duck, ch = pair
    want = duck.execute(sql).fetchall()
    got = ch.execute(sql).fetchall()
    assert got == [tuple(r) for r in want], to_clickhouse(sql)


def test_parameters_bind_in_order_and_count(pair: Any) -> None:
    duck, ch = pair
    sql = "SELECT COUNT(*) FROM t WHERE x BETWEEN ? AND ? AND g = ?"
    args = [100, 5000, "b"]
    assert ch.execute(sql, args).fetchall() == duck.execute(sql, args).fetchall()
    assert "'o''k'" in to_clickhouse("SELECT ?", ["o'k"])  # quoted, not spliced
    with pytest.raises(ValueError, match="2 given"):
        to_clickhouse("SELECT ?", [1, 2])


def test_sketches_from_shards_merge_into_the_whole(tmp_path: Path) -> None:
    """Per-shard partial aggregates (bucket counts) merge exactly: the point of the sketch."""
    reqs = workload_requests(n_batches=15)
    store = load_store([write_workload(tmp_path, reqs)], cache=False)
    create_views(store.con)
    src, alpha = "SELECT latency_ns FROM requests", 0.01
    whole = pct.sketch_from_sql(store.con, src, "latency_ns", alpha=alpha)[()]
    exact = store.con.execute(pct.exact_sql(src, "latency_ns", (0.5, 0.99))).fetchone()
    store.close()
    parts = []
    for i, shard in enumerate(reqs):  # one shard per host, as sharding by trace keeps traces
        con = connect("chdb://?table=otel_traces", backend=chdb_with([shard], tmp_path),
                      materialize=True)
        create_views(con)
        parts.append(pct.sketch_from_sql(con, src, "latency_ns", alpha=alpha)[()])
        assert parts[i].count > 0
        con.close()
    merged = pct.merge_all(parts, alpha)
    assert merged.counts == whole.counts
    for q, ex in zip((0.5, 0.99), exact[3:], strict=True):
        assert abs(merged.quantile(q) - ex) <= alpha * ex


def test_cli_runs_on_a_chdb_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chdb_with(workload_requests(n_batches=8), tmp_path)  # chDB: one engine per process
    url = "chdb://?table=otel_traces"
    assert analyze_main([url, "--format", "json", "--since", str(T0 / 1e9)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["engine"]["since_ns"] == T0
    assert report["input"]["requests"] > 0
    assert analyze_main([url, "--until", str(T0 / 1e9)]) == 2  # empty window: unusable input
    assert "no spans" in capsys.readouterr().err
    assert analyze_main([str(tmp_path), "--since", "1h"]) == 2  # files take no window
    assert analyze_main(["clickhouse://h/db?table=drop table"]) == 2


def test_cli_on_an_on_disk_chdb_database(tmp_path: Path) -> None:
    """``chdb:///path``: a fresh process (chDB binds one data path per process)."""
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _engine_fixtures import workload_requests
from inferaudit_analyzer.engines.clickhouse_engine import ChdbBackend
from inferaudit_analyzer.engines.clickhouse_source import OTEL_TRACES_DDL
from inferaudit_analyzer.engines.otel_rows import insert_rows, otel_rows
from inferaudit_analyzer.cli import analyze_main
be = ChdbBackend({str(tmp_path / "db")!r})
be.command(OTEL_TRACES_DDL.format(table="spans_raw"))
insert_rows(be, "spans_raw", otel_rows(workload_requests(n_batches=5)), {str(tmp_path)!r})
be.close()
sys.exit(analyze_main(["chdb://{tmp_path / "db"}?table=spans_raw", "--format", "json",
                       "--out", {str(tmp_path / "r.json")!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["input"]["engine"]["table"] == "spans_raw"
    assert report["input"]["requests"] > 0


def test_urls_and_times_parse() -> None:
    t = parse_url("clickhouse://ro:s%40cret@ch.example:9440/obs?table=otel_traces&secure=1")
    assert (t.host, t.port, t.database, t.table, t.username, t.password, t.secure) == (
        "ch.example", 9440, "obs", "otel_traces", "ro", "s@cret", True)
    assert "s@cret" not in t.redacted() and t.qualified_table == "`obs`.`otel_traces`"
    assert parse_url("chdb:///var/lib/ch?table=spans").path == "/var/lib/ch"
    with pytest.raises(BadClickHouseURL, match="no host"):
        parse_url("clickhouse:///db")
    with pytest.raises(BadClickHouseURL, match="identifier"):
        parse_url("clickhouse://h/db?table=x;drop")
    assert parse_time_ns("2026-01-01T00:00:00Z") == T0
    assert parse_time_ns("1767225600.5") == T0 + 500_000_000
    assert parse_time_ns("2h", now_ns=T0) == T0 - 7_200 * 10**9
    with pytest.raises(ValueError, match="not a time"):
        parse_time_ns("yesterday")


def test_attribute_strings_are_what_the_exporter_writes() -> None:
    assert [as_string(v) for v in (True, 12, 0.5, 1e-05, 3.0, ["a", 1], "x")] == [
        "true", "12", "0.5", "0.00001", "3.0", '["a",1]', "x"]


def test_unmaterialized_path_gives_the_same_report(tmp_path: Path) -> None:
    """Without the span snapshot every statement re-reads otel_traces through the CTEs."""
    reqs = workload_requests(n_batches=5, seed=5)
    params = AnalyzeParams(cache=False, price_per_hour=2.0)
    duck = analyze([write_workload(tmp_path, reqs)], params)
    ch = analyze_clickhouse("chdb://?table=otel_traces", params, materialize=False,
                            backend=chdb_with(reqs, tmp_path))
    d, c = duck["baseline"]["overall"], ch["baseline"]["overall"]
    d.pop("device_utilization_detail")
    c.pop("device_utilization_detail")
    assert c == d
    assert [f["id"] for f in ch["findings"]] == [f["id"] for f in duck["findings"]]
    assert ch["cost"]["window_cost_usd"] == duck["cost"]["window_cost_usd"] is not None
