"""DuckDB SQL → ClickHouse SQL: sqlglot's transpiler plus the few semantics it does not carry.

The analyses are written once, in DuckDB's dialect, against the canonical tables. sqlglot maps the
syntax; what follows fixes the places where the same syntax means something else on ClickHouse:

- ``quantile_disc(x, q)`` is the ``ceil(q * n)``-th smallest value. No ClickHouse ``quantileExact*``
  variant uses that rank (``quantileExact`` takes ``floor(q * n) + 1``, ``quantileExactLow`` the
  lower median), so it becomes the same rank read off ``arraySort(groupArray(x))``: exact, equal
  to DuckDB's on every input, computed in the cluster.
- ``json_extract_string(j, '$."k"')``: ClickHouse's ``JSONExtractString`` returns ``''`` for a
  missing key where DuckDB returns NULL, which a ``COALESCE`` around it relies on.
- ``TRY_CAST``: ``accurateCastOrNull`` (sqlglot emits a plain CAST, which throws on bad text).
- ``x IS TRUE`` / ``IS FALSE``: ``ifNull`` forms (not ClickHouse syntax).
- ``bool_and`` / ``bool_or``: ``min`` / ``max`` over 0/1 (NULLs skipped, as in DuckDB).
- a correlated scalar ``(SELECT COUNT(*) ...)`` yields NULL on ClickHouse when nothing matches;
  DuckDB (and SQL) say 0.
- ``SELECT c.x`` after a join is named ``c.x`` by ClickHouse, ``x`` by SQL: aliased explicitly.
- ``CAST(x AS BIGINT)`` rounds (DuckDB) where ClickHouse truncates, and ``COALESCE(double,
  bigint)`` has no ClickHouse type: the cast is applied per argument, after ``round``.
- ``COUNT`` is wrapped in ``toInt64``: DuckDB's is signed, and ClickHouse finds no common type for
  ``UInt64`` and ``Int64`` (``COALESCE(batch_size, members, 1)``).
- ``?`` parameters are bound by value into literals (ClickHouse's HTTP interface has no
  positional binding): numbers as numbers, strings quoted and escaped by sqlglot.

Session settings the translation assumes (``CLICKHOUSE_SETTINGS``): ``join_use_nulls`` (an
unmatched LEFT JOIN side is NULL, not the type's default) and ``aggregate_functions_null_for_empty``
(``SUM``/``MAX`` over no rows is NULL, as in DuckDB), ``prefer_column_name_to_alias`` (in
``SUM(padded_tokens) AS padded_tokens`` the argument is the column, as in SQL, not the alias).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlglot
from sqlglot import exp

__all__ = ["CLICKHOUSE_SETTINGS", "to_clickhouse"]

CLICKHOUSE_SETTINGS: dict[str, Any] = {
    "join_use_nulls": 1,
    "aggregate_functions_null_for_empty": 1,
    "union_default_mode": "DISTINCT",
    "use_variant_as_common_type": 0,
    "prefer_column_name_to_alias": 1,
}


def _literal(v: Any) -> exp.Expression:
    if v is None:
        return exp.Null()
    if isinstance(v, bool):
        return exp.Boolean(this=v)
    if isinstance(v, int):
        return exp.Literal.number(int(v))
    if isinstance(v, float):
        return exp.Literal.number(repr(float(v)))
    return exp.Literal.string(str(v))


def _bind(tree: exp.Expression, params: Sequence[Any]) -> exp.Expression:
    holders = list(tree.find_all(exp.Placeholder, bfs=False))  # depth-first: textual order
    if len(holders) != len(params):
        raise ValueError(f"SQL has {len(holders)} parameter(s), {len(params)} given")
    for node, value in zip(holders, params, strict=True):
        node.replace(_literal(value))
    return tree


def _exact_quantile(node: exp.PercentileDisc) -> exp.Expression:
    x = node.this.sql("clickhouse")
    q = node.expression.sql("clickhouse")
    n = f"count({x})"
    return sqlglot.parse_one(
        f"if({n} = 0, NULL, arrayElement(arraySort(groupArray({x})), "
        f"toUInt64(greatest(1, ceil(({q}) * {n})))))", read="clickhouse")


def _json_string(node: exp.JSONExtractScalar) -> exp.Expression:
    path = node.expression
    keys = [k for k in getattr(path, "expressions", []) if isinstance(k, exp.JSONPathKey)]
    if len(keys) != 1:
        return node
    doc = node.this.sql("clickhouse")
    key = exp.Literal.string(str(keys[0].this)).sql("clickhouse")
    return sqlglot.parse_one(f"if(JSONHas({doc}, {key}), JSONExtractString({doc}, {key}), NULL)",
                             read="clickhouse")


def _try_cast(node: exp.TryCast) -> exp.Expression:
    typ = node.to.sql("clickhouse")
    if typ.startswith("Nullable(") and typ.endswith(")"):
        typ = typ[len("Nullable("):-1]
    return exp.Anonymous(this="accurateCastOrNull",
                         expressions=[node.this, exp.Literal.string(typ)])


def _is_bool(node: exp.Is) -> exp.Expression:
    target = node.expression
    if not isinstance(target, exp.Boolean):
        return node
    inner = node.this if target.this else exp.Not(this=exp.Paren(this=node.this))
    return exp.Anonymous(this="ifNull", expressions=[inner, exp.Boolean(this=False)])


def _scalar_count(node: exp.Subquery) -> exp.Expression:
    sel = node.this
    if not isinstance(sel, exp.Select) or len(sel.expressions) != 1:
        return node
    proj = sel.expressions[0]
    proj = proj.this if isinstance(proj, exp.Alias) else proj
    if not isinstance(proj, exp.Count) or sel.args.get("group"):
        return node
    parent = node.parent
    if isinstance(parent, (exp.From, exp.Join, exp.In, exp.Exists)) or node.alias:
        return node
    return exp.Coalesce(this=node.copy(), expressions=[exp.Literal.number(0)])


def _bool_agg(node: exp.Expression, func: str) -> exp.Expression:
    arg = node.this.sql("clickhouse")
    return sqlglot.parse_one(f"CAST({func}(toUInt8({arg})) AS Nullable(Bool))", read="clickhouse")


def _name_projections(node: exp.Select) -> exp.Expression:
    """``SELECT c.x`` is named ``x`` in SQL; ClickHouse may name it ``c.x`` after a join."""
    for proj in node.expressions:
        if isinstance(proj, exp.Column) and proj.table and not isinstance(proj.this, exp.Star):
            proj.replace(exp.Alias(this=proj.copy(), alias=exp.to_identifier(proj.name)))
    return node


_INT_TYPES = {exp.DataType.Type.BIGINT, exp.DataType.Type.INT, exp.DataType.Type.SMALLINT,
              exp.DataType.Type.TINYINT, exp.DataType.Type.UBIGINT, exp.DataType.Type.UINT}


def _int_casts(tree: exp.Expression) -> exp.Expression:
    """``CAST(x AS BIGINT)``: DuckDB rounds a double, ClickHouse truncates; and ClickHouse has no
    common type for ``COALESCE(double, bigint)``. So round, and cast each COALESCE argument."""
    for node in list(tree.find_all(exp.Cast)):
        if not isinstance(node.to, exp.DataType) or node.to.this not in _INT_TYPES:
            continue
        arg = node.this
        if isinstance(arg, (exp.Column, exp.Literal)):
            continue

        def rounded(e: exp.Expression, to: exp.DataType = node.to) -> exp.Expression:
            if isinstance(e, exp.Literal):
                return exp.Cast(this=e.copy(), to=to.copy())
            return exp.Cast(this=exp.Anonymous(this="round", expressions=[e.copy()]),
                            to=to.copy())

        if isinstance(arg, exp.Coalesce):
            args = [arg.this, *arg.expressions]
            new: exp.Expression = exp.Coalesce(this=rounded(args[0]),
                                               expressions=[rounded(a) for a in args[1:]])
        else:
            new = rounded(arg)
        if node is tree:
            return new
        node.replace(new)
    return tree


def _signed_counts(tree: exp.Expression) -> exp.Expression:
    """DuckDB's COUNT is a signed BIGINT; ClickHouse's UInt64 has no common type with Int64."""
    for node in list(tree.find_all(exp.Count)):
        target: exp.Expression = node
        while isinstance(target.parent, (exp.Filter, exp.Window)) and target.parent.this is target:
            target = target.parent
        wrapped = exp.Anonymous(this="toInt64", expressions=[target.copy()])
        if target is tree:
            return wrapped
        target.replace(wrapped)
    return tree


def _transform(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Select):
        return _name_projections(node)
    if isinstance(node, exp.LogicalAnd):
        return _bool_agg(node, "min")
    if isinstance(node, exp.LogicalOr):
        return _bool_agg(node, "max")
    if isinstance(node, exp.PercentileDisc):
        return _exact_quantile(node)
    if isinstance(node, exp.JSONExtractScalar):
        return _json_string(node)
    if isinstance(node, exp.TryCast):
        return _try_cast(node)
    if isinstance(node, exp.Is):
        return _is_bool(node)
    if isinstance(node, exp.Subquery):
        return _scalar_count(node)
    return node


@functools.lru_cache(maxsize=512)
def _parsed(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


def to_clickhouse(sql: str, params: Sequence[Any] = ()) -> str:
    """Translate one DuckDB statement (with ``?`` parameters bound to ``params``) to ClickHouse.

    Raises:
        ValueError: the number of ``?`` differs from ``len(params)``.
        sqlglot.errors.ParseError: the text is not valid DuckDB SQL.
    """
    tree = _parsed(sql).copy()
    tree = _bind(tree, list(params))
    tree = tree.transform(_transform)
    tree = _signed_counts(_int_casts(tree))
    return tree.sql(dialect="clickhouse")
