"""Exact vs sketch percentiles: within alpha, mergeable, the same in SQL and in Python."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest

from inferaudit_analyzer.analyses import percentiles as pct


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect(":memory:")
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.lognormal(mean=17.0, sigma=1.2, size=4000),  # ns-scale latencies
        rng.uniform(1.0, 50.0, size=500),
        [0.0] * 10,
    ])
    groups = rng.integers(0, 7, size=len(values))
    rows = ", ".join(f"({int(g)}, {float(v)!r})" for g, v in zip(groups, values, strict=True))
    c.execute("CREATE TABLE t AS SELECT CAST(g AS INTEGER) AS g, CAST(v AS DOUBLE) AS v "
              f"FROM (VALUES {rows}) AS x(g, v)")
    yield c
    c.close()


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_sketch_agrees_with_exact_within_alpha(con, alpha):
    qs = (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999)
    s = pct.summarize(con, "SELECT v FROM t", "v", quantiles=qs, alpha=alpha)
    for name in pct.quantile_names(qs):
        exact, sketch = s[name], s["sketch"][name]
        assert pct.relative_error(sketch, exact) <= alpha * (1 + 1e-9), (name, exact, sketch)


def test_exact_matches_numpy_inverted_cdf(con):
    values = np.array([r[0] for r in con.execute("SELECT v FROM t").fetchall()])
    s = pct.summarize(con, "SELECT v FROM t", "v")
    for q, name in zip(pct.DEFAULT_QUANTILES, pct.quantile_names(), strict=True):
        assert s[name] == pytest.approx(np.quantile(values, q, method="inverted_cdf"))
    assert s["n"] == len(values)


def test_merge_of_group_sketches_equals_whole(con):
    parts = pct.sketch_from_sql(con, "SELECT g, v FROM t", "v", group_cols=("g",))
    assert len(parts) == 7
    whole = pct.sketch_from_sql(con, "SELECT v FROM t", "v")[()]
    merged = pct.merge_all(parts.values())
    assert merged.counts == whole.counts
    for q in (0.5, 0.99):
        assert merged.quantile(q) == whole.quantile(q)


def test_sql_buckets_equal_python_buckets(con):
    values = [r[0] for r in con.execute("SELECT v FROM t").fetchall()]
    py = pct.LogHistogram(0.01)
    for v in values:
        py.add(v)
    sql = pct.sketch_from_sql(con, "SELECT v FROM t", "v", alpha=0.01)[()]
    differing = {k for k in set(py.counts) | set(sql.counts)
                 if py.counts.get(k) != sql.counts.get(k)}
    # floating log may put a value exactly on a boundary one bucket over; allow a handful
    assert sum(abs(py.counts.get(k, 0) - sql.counts.get(k, 0)) for k in differing) <= 4


def test_zeros_read_as_zero_and_empty_is_none():
    h = pct.LogHistogram(0.01)
    assert h.quantile(0.5) is None
    h.add(0.0, 3)
    h.add(10.0)
    assert h.quantile(0.5) == 0.0
    assert h.quantile(1.0) == pytest.approx(10.0, rel=0.01)


def test_merge_refuses_different_alpha():
    with pytest.raises(ValueError):
        pct.LogHistogram(0.01).merge(pct.LogHistogram(0.02))
    with pytest.raises(ValueError):
        pct.gamma_for(1.5)


def test_params_bind_through_the_source_query(con):
    s = pct.summarize(con, "SELECT v FROM t WHERE g = ?", "v", params=(3,))
    n = con.execute("SELECT COUNT(*) FROM t WHERE g = 3").fetchone()[0]
    assert s["n"] == n and not math.isnan(s["p50"])
