"""The canonical tables as ClickHouse SQL over the ClickHouse exporter's ``otel_traces`` table.

The exporter stores every attribute as a string in ``Map(LowCardinality(String), String)``
(``pcommon.Value.AsString``), span kind and status as enum-name strings, ``Timestamp`` as the
span start (``DateTime64(9)``) and ``Duration`` in ns, links as a ``Nested`` column. This module
turns that back into the typed canonical ``spans`` / ``links`` / ``resources`` columns
(docs/data-model.md) inside the cluster, so the analyses' SQL runs unchanged and only their
aggregates travel. The attribute → column rules are not repeated here: the SQL is generated from
the file ingest's own tables (``ingest.foreign.PRIMARY`` / ``FALLBACK``), so both engines promote
the same keys with the same precedence.

``OTEL_TRACES_DDL`` is the exporter's ``internal/sqltemplates/traces_table.sql``
(opentelemetry-collector-contrib commit f92a5763, the post-#34245 schema with ``ScopeName`` /
``ScopeVersion`` columns and ``Duration UInt64``), with its ``%s`` placeholders filled for a
MergeTree table; tests create the fixture table from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import schema
from inferaudit_analyzer.ingest import foreign
from inferaudit_sdk import semconv as sc

EXPORTER_DDL_SOURCE = (
    "open-telemetry/opentelemetry-collector-contrib "
    "exporter/clickhouseexporter/internal/sqltemplates/traces_table.sql @ f92a5763"
)

OTEL_TRACES_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity=8192, ttl_only_drop_parts = 1
"""

# traceutil.SpanKindStr / StatusCodeStr spellings, and pdata's String() ones (newer exporters)
_KINDS = {1: ("SPAN_KIND_INTERNAL", "Internal"), 2: ("SPAN_KIND_SERVER", "Server"),
          3: ("SPAN_KIND_CLIENT", "Client"), 4: ("SPAN_KIND_PRODUCER", "Producer"),
          5: ("SPAN_KIND_CONSUMER", "Consumer")}
_STATUSES = {1: ("STATUS_CODE_OK", "Ok"), 2: ("STATUS_CODE_ERROR", "Error")}


def _q(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _enum_sql(col: str, names: dict[int, tuple[str, ...]]) -> str:
    arms = ", ".join(f"{col} IN ({', '.join(_q(n) for n in spell)}), {code}"
                     for code, spell in names.items())
    return f"toInt8(multiIf({arms}, 0))"


def _attr(key: str, col: str = "SpanAttributes") -> str:
    return f"if(mapContains({col}, {_q(key)}), {col}[{_q(key)}], NULL)"


def _int(v: str) -> str:
    # the exporter writes a double attribute as "12.0"; to_int rounds such values too
    return f"coalesce(toInt64OrNull({v}), CAST(round(toFloat64OrNull({v})) AS Nullable(Int64)))"


def _count(v: str) -> str:
    """:func:`_int`, NULL where negative (a count or duration, as the file ingest's to_count)."""
    x = _int(v)
    return f"if({x} < 0, NULL, {x})"


def _bool(v: str) -> str:
    return (f"CAST(multiIf(lower({v}) = 'true', 1, lower({v}) = 'false', 0, NULL) "
            "AS Nullable(Bool))")


def _seconds_ns(v: str) -> str:
    ns = f"CAST(round(toFloat64OrNull({v}) * 1e9) AS Nullable(Int64))"
    return f"if({ns} < 0, NULL, {ns})"  # a duration, as seconds_to_ns


def _operation(v: str) -> str:
    src = {"completion": sc.OPERATION_TEXT_COMPLETION, "chat": sc.OPERATION_CHAT,
           "embedding": sc.OPERATION_EMBEDDINGS}
    keys = ", ".join(_q(k) for k in src)
    vals = ", ".join(_q(x) for x in src.values())
    return f"if({v} IS NULL, NULL, transform(assumeNotNull({v}), [{keys}], [{vals}], " \
           f"assumeNotNull({v})))"


# The ingest's converters → SQL over a Nullable(String) attribute value.
CONVERTERS: dict[Callable[[Any], Any], Callable[[str], str]] = {
    foreign.to_str: lambda v: v,
    foreign.to_int: _int,
    foreign.to_count: _count,
    foreign.to_float: lambda v: f"toFloat64OrNull({v})",
    foreign.to_bool: _bool,
    foreign.seconds_to_ns: _seconds_ns,
    foreign.operation_of_request_type: _operation,
}


def promoted_columns() -> dict[str, str]:
    """Canonical column (or scratch slot) → SQL: the primary key first, then each fallback."""
    parts: dict[str, list[str]] = {}
    for key, (col, conv) in foreign.PRIMARY.items():
        parts.setdefault(col, []).append(CONVERTERS[conv](_attr(key)))
    for key, (col, conv, _src) in foreign.FALLBACK.items():
        if col:
            parts.setdefault(col, []).append(CONVERTERS[conv](_attr(key)))
    return {col: (exprs[0] if len(exprs) == 1 else f"coalesce({', '.join(exprs)})")
            for col, exprs in parts.items()}


def _primary_sql(col: str) -> str:
    exprs = [CONVERTERS[conv](_attr(k)) for k, (c, conv) in foreign.PRIMARY.items() if c == col]
    return exprs[0] if len(exprs) == 1 else f"coalesce({', '.join(exprs)})"


def _dialect_sql() -> str:
    arms = [f"mapContains(SpanAttributes, {_q(k)}), {_q(src)}"
            for k, (_c, _conv, src) in reversed(foreign.FALLBACK.items()) if src is not None]
    return f"multiIf({', '.join(arms)}, NULL)"


def resource_id_sql(col: str = "ResourceAttributes") -> str:
    """A 63-bit id of a resource from its attribute map (stable across shards and parts)."""
    return f"toInt64(bitShiftRight(cityHash64(mapSort({col})), 1))"


@dataclass(frozen=True)
class TimeRange:
    """Span-start bounds in epoch ns; either may be None (unbounded)."""

    since_ns: int | None = None
    until_ns: int | None = None

    def where(self, col: str = "Timestamp") -> str:
        conds = ["1"]
        if self.since_ns is not None:
            conds.append(f"{col} >= fromUnixTimestamp64Nano(toInt64({int(self.since_ns)}))")
        if self.until_ns is not None:
            conds.append(f"{col} < fromUnixTimestamp64Nano(toInt64({int(self.until_ns)}))")
        return " AND ".join(conds)


def spans_sql(table: str, time_range: TimeRange = TimeRange()) -> str:
    """SELECT producing exactly the canonical ``spans`` columns, in schema order."""
    promoted = promoted_columns()
    primary_keys = ", ".join(_q(k) for k in foreign.PRIMARY)
    inner = [
        "TraceId AS trace_id", "SpanId AS span_id",
        "nullIf(ParentSpanId, '') AS parent_span_id", "toString(SpanName) AS name",
        f"{_enum_sql('SpanKind', _KINDS)} AS kind",
        "toUnixTimestamp64Nano(Timestamp) AS start_ns", "toInt64(Duration) AS duration_ns",
        f"{_enum_sql('StatusCode', _STATUSES)} AS status_code",
        "nullIf(toString(ServiceName), '') AS service_name",
        f"{resource_id_sql()} AS resource_id", "nullIf(ScopeName, '') AS scope_name",
        f"{_primary_sql('role')} AS role_primary",
        f"{_primary_sql('request_model')} AS request_model_primary",
        f"{_dialect_sql()} AS dialect",
        "arrayExists(k -> (startsWith(k, 'gen_ai.') OR startsWith(k, 'llm.')) AND "
        f"NOT has([{primary_keys}], k), mapKeys(SpanAttributes)) AS genai_keys",
        "toJSONString(SpanAttributes) AS attributes",
    ]
    for col, expr in promoted.items():
        if col in ("role", "request_model"):
            continue
        inner.append(f"{expr} AS `{col}`")
    inferaudit = _q(foreign.SOURCE_INFERAUDIT)
    source = (
        f"multiIf(role_primary IS NOT NULL OR scope_name = {_q(sc.INSTRUMENTATION_NAME)}, "
        f"{inferaudit}, dialect IS NOT NULL, dialect, "
        f"startsWith(lower(coalesce(scope_name, '')), 'openlit'), {_q(foreign.SOURCE_OPENLIT)}, "
        f"startsWith(lower(coalesce(scope_name, '')), 'vllm'), {_q(foreign.SOURCE_VLLM)}, "
        f"startsWith(lower(coalesce(scope_name, '')), 'traceloop'), "
        f"{_q(foreign.SOURCE_OPENLLMETRY)}, genai_keys OR request_model_primary IS NOT NULL "
        f"OR input_tokens IS NOT NULL, {_q(foreign.SOURCE_GENAI)}, NULL)"
    )
    seqs = "coalesce({}, 1)".format(", ".join(
        f"if(`{slot}` >= 1, `{slot}`, NULL)" for slot in foreign.SEQUENCE_COUNT_SLOTS))
    derived = {
        "end_ns": "start_ns + duration_ns",
        "source": "source_",
        "role": (f"multiIf(role_primary IS NOT NULL, role_primary, source_ != {inferaudit} AND "
                 "(input_tokens IS NOT NULL OR output_tokens IS NOT NULL), "
                 f"{_q(sc.ROLE_REQUEST)}, NULL)"),
        "request_model": ("if(role_primary IS NULL, coalesce(request_model_primary, "
                          "response_model), request_model_primary)"),
        # otlp_json.derived_tpot: decode / (output tokens per sequence - 1)
        "tpot_ns": (f"coalesce(tpot_ns, if(decode_ns IS NOT NULL AND output_tokens >= 2 * {seqs}, "
                    f"intDiv(toInt128(decode_ns) * {seqs}, output_tokens - {seqs}), NULL))"),
        "copy_time_ns": (f"if(`{foreign.SCRATCH_H2D_TIME}` IS NULL AND "
                         f"`{foreign.SCRATCH_D2H_TIME}` IS NULL, NULL, "
                         f"coalesce(`{foreign.SCRATCH_H2D_TIME}`, 0) + "
                         f"coalesce(`{foreign.SCRATCH_D2H_TIME}`, 0))"),
    }
    types = {"BIGINT": "Nullable(Int64)", "TINYINT": "Nullable(Int8)",
             "VARCHAR": "Nullable(String)", "DOUBLE": "Nullable(Float64)",
             "BOOLEAN": "Nullable(Bool)"}
    outer = []
    for col, typ in schema.SPANS_COLUMNS:
        expr = derived.get(col, f"`{col}`" if col in promoted or col in _INNER_NAMES
                           else "NULL")
        outer.append(f"CAST({expr} AS {types[typ]}) AS {col}")
    return (f"SELECT {', '.join(outer)} FROM (SELECT *, {source} AS source_ FROM "
            f"(SELECT {', '.join(inner)} FROM {table} WHERE {time_range.where()}))")


_INNER_NAMES = frozenset({
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "duration_ns",
    "status_code", "service_name", "resource_id", "scope_name", "attributes",
})


def links_sql(table: str, time_range: TimeRange = TimeRange()) -> str:
    return ("SELECT CAST(SpanId AS Nullable(String)) AS span_id, "
            "CAST(TraceId AS Nullable(String)) AS trace_id, "
            "CAST(lower(lt) AS Nullable(String)) AS linked_trace_id, "
            "CAST(lower(ls) AS Nullable(String)) AS linked_span_id "
            f"FROM {table} ARRAY JOIN Links.TraceId AS lt, Links.SpanId AS ls "
            f"WHERE {time_range.where()}")


def resources_sql(table: str, time_range: TimeRange = TimeRange()) -> str:
    r = "ResourceAttributes"
    return (
        f"SELECT {resource_id_sql()} AS resource_id, "
        f"any(CAST({_attr(sc.SERVICE_NAME, r)} AS Nullable(String))) AS service_name, "
        f"any(CAST({_attr(sc.HOST_NAME, r)} AS Nullable(String))) AS host_name, "
        f"any(CAST({_attr(sc.HOST_TYPE, r)} AS Nullable(String))) AS host_type, "
        f"any(CAST({_attr(sc.HOST_CPU_MODEL_NAME, r)} AS Nullable(String))) AS cpu_model, "
        f"any({_int(_attr(sc.RES_HOST_CPU_CORES, r))}) AS cpu_cores, "
        f"any(CAST({_attr(sc.RES_GPU_MODEL, r)} AS Nullable(String))) AS gpu_model, "
        f"any({_int(_attr(sc.RES_GPU_COUNT, r))}) AS gpu_count, "
        f"any(toFloat64OrNull({_attr(sc.RES_PRICE_USD_PER_HOUR, r)})) AS price_usd_per_hour, "
        f"any(toJSONString({r})) AS attributes "
        f"FROM {table} WHERE {time_range.where()} GROUP BY resource_id"
    )


def empty_sql(table: str) -> str:
    """A typed, empty relation with a canonical table's columns (metric_points, errors, ...)."""
    types = {"BIGINT": "Nullable(Int64)", "TINYINT": "Nullable(Int8)",
             "VARCHAR": "Nullable(String)", "DOUBLE": "Nullable(Float64)",
             "BOOLEAN": "Nullable(Bool)"}
    cols = ", ".join(f"CAST(NULL AS {types[t]}) AS {n}" for n, t in schema.TABLES[table])
    return f"SELECT {cols} WHERE 0"


# The exporter's gauge and sum tables (internal/sqltemplates/metrics_{gauge,sum}_table.sql,
# same commit), reduced to the columns read here; tests create them from this DDL.
OTEL_METRICS_GAUGE_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl String CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    MetricName String CODEC(ZSTD(1)),
    MetricDescription String CODEC(ZSTD(1)),
    MetricUnit String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    TimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)){extra}
) ENGINE = MergeTree()
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, toUnixTimestamp64Nano(TimeUnix))
"""
OTEL_METRICS_SUM_EXTRA = (",\n    AggregationTemporality Int32 CODEC(ZSTD(1)),"
                          "\n    IsMonotonic Boolean CODEC(Delta, ZSTD(1))")


def metric_points_sql(gauge_table: str | None, sum_table: str | None,
                      time_range: TimeRange = TimeRange()) -> str:
    """``metric_points`` from the exporter's gauge and sum tables (histograms: not yet).

    ``TimeUnix`` is ``DateTime64(9)`` in current exporters and ``DateTime`` in some older sum
    tables; ``toDateTime64(.., 9)`` reads both. A point without a start time is stored at the
    epoch; read back as NULL, as the file ingest has it.
    """
    def part(table: str, temporality: str) -> str:
        t = "toDateTime64(TimeUnix, 9)"
        return (f"SELECT CAST(toString(MetricName) AS Nullable(String)) AS name, "
                f"CAST(toUnixTimestamp64Nano({t}) AS Nullable(Int64)) AS time_ns, "
                "CAST(Value AS Nullable(Float64)) AS value, "
                f"CAST({resource_id_sql()} AS Nullable(Int64)) AS resource_id, "
                "CAST(toJSONString(Attributes) AS Nullable(String)) AS attributes, "
                "CAST(nullIf(toUnixTimestamp64Nano(toDateTime64(StartTimeUnix, 9)), 0) "
                "AS Nullable(Int64)) AS start_ns, "
                f"CAST({temporality} AS Nullable(Int8)) AS temporality "
                f"FROM {table} WHERE {time_range.where(t)}")

    parts = []
    if gauge_table:
        parts.append(part(gauge_table, "NULL"))
    if sum_table:
        parts.append(part(sum_table, "AggregationTemporality"))
    return " UNION ALL ".join(parts) if parts else empty_sql("metric_points")


def canonical_relations(table: str, time_range: TimeRange = TimeRange(), *,
                        gauge_table: str | None = None,
                        sum_table: str | None = None) -> dict[str, str]:
    """Every canonical table name → the ClickHouse SELECT that stands in for it."""
    out = {"spans": spans_sql(table, time_range), "links": links_sql(table, time_range),
           "resources": resources_sql(table, time_range),
           "metric_points": metric_points_sql(gauge_table, sum_table, time_range)}
    for name in ("ingest_errors", "inputs"):
        out[name] = empty_sql(name)
    return out
