"""DDL of the canonical tables (docs/data-model.md); ingest fills them, analyses read them.

Kept engine-neutral in spirit: plain column types that DuckDB and ClickHouse both map.
"""

from __future__ import annotations

from typing import Any

# Bump when a table's columns or the meaning of a column change: the ingest cache keys on it.
STORE_SCHEMA_VERSION = "2"
# A time-windowed source (--since/--until over object-store partitions) keeps every span read
# in this table and makes ``spans`` a view of the window: coverage then knows the input is partial.
WINDOWED_SPANS_TABLE = "spans_all_partitions"

SPANS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "VARCHAR"),
    ("span_id", "VARCHAR"),
    ("parent_span_id", "VARCHAR"),
    ("name", "VARCHAR"),
    ("kind", "TINYINT"),
    ("start_ns", "BIGINT"),
    ("end_ns", "BIGINT"),
    ("duration_ns", "BIGINT"),
    ("status_code", "TINYINT"),
    ("service_name", "VARCHAR"),
    ("resource_id", "BIGINT"),
    ("scope_name", "VARCHAR"),
    ("role", "VARCHAR"),
    ("operation", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("request_model", "VARCHAR"),
    ("response_model", "VARCHAR"),
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("cache_read_tokens", "BIGINT"),
    ("max_tokens", "BIGINT"),
    ("ttft_ns", "BIGINT"),
    ("tpot_ns", "BIGINT"),
    ("queue_ns", "BIGINT"),
    ("prefill_ns", "BIGINT"),
    ("decode_ns", "BIGINT"),
    ("batch_size", "BIGINT"),
    ("batch_input_tokens", "BIGINT"),
    ("padded_tokens", "BIGINT"),
    ("batch_output_tokens", "BIGINT"),
    ("device_type", "VARCHAR"),
    ("device_time_ns", "BIGINT"),
    ("cpu_time_ns", "BIGINT"),
    ("h2d_bytes", "BIGINT"),
    ("d2h_bytes", "BIGINT"),
    ("copy_time_ns", "BIGINT"),
    ("pageable_bytes", "BIGINT"),
    ("gpu_util", "DOUBLE"),
    ("gpu_energy_j", "DOUBLE"),
    ("prompt_fp", "VARCHAR"),
    ("prompt_simhash", "VARCHAR"),
    ("fp_key_id", "VARCHAR"),
    ("cache_hit", "BOOLEAN"),
    ("route", "VARCHAR"),
    ("model_tier", "VARCHAR"),
    ("error_type", "VARCHAR"),
    ("stream", "BOOLEAN"),
    ("profile_path", "VARCHAR"),
    ("source", "VARCHAR"),
    ("attributes", "VARCHAR"),
)

# Columns with about one distinct value per span. The others hold few distinct values: Parquet
# dictionary-encodes those (for these it would only build a hash table that overflows and falls
# back to plain: 15% of the write time, measured), and the compiled ingest shares one str object
# per distinct value.
UNIQUE_PER_SPAN = frozenset({"trace_id", "span_id", "parent_span_id", "start_ns", "end_ns",
                             "duration_ns", "prompt_fp", "prompt_simhash", "attributes"})

# One-row table (column ``dropped``) the DuckDB store writes when it dropped copies of spans
# read from more than one file; absent otherwise (store._drop_copies, analyses/coverage.py).
SPAN_COPIES_TABLE = "ingest_span_copies"

LINKS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("span_id", "VARCHAR"),
    ("trace_id", "VARCHAR"),
    ("linked_trace_id", "VARCHAR"),
    ("linked_span_id", "VARCHAR"),
)

RESOURCES_COLUMNS: tuple[tuple[str, str], ...] = (
    ("resource_id", "BIGINT"),
    ("service_name", "VARCHAR"),
    ("host_name", "VARCHAR"),
    ("host_type", "VARCHAR"),
    ("cpu_model", "VARCHAR"),
    ("cpu_cores", "BIGINT"),
    ("gpu_model", "VARCHAR"),
    ("gpu_count", "BIGINT"),
    ("price_usd_per_hour", "DOUBLE"),
    ("attributes", "VARCHAR"),
)

METRIC_POINTS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "VARCHAR"),
    ("time_ns", "BIGINT"),
    ("value", "DOUBLE"),
    ("resource_id", "BIGINT"),
    ("attributes", "VARCHAR"),
    ("start_ns", "BIGINT"),
    ("temporality", "TINYINT"),
)

INGEST_ERRORS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("file", "VARCHAR"),
    ("line", "BIGINT"),
    ("message", "VARCHAR"),
    ("byte_offset", "BIGINT"),
)

INPUTS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("file", "VARCHAR"),
    ("format", "VARCHAR"),
    ("compression", "VARCHAR"),
    ("size_bytes", "BIGINT"),
    ("mtime_ns", "BIGINT"),
    ("spans", "BIGINT"),
    ("links", "BIGINT"),
    ("metric_points", "BIGINT"),
    ("errors", "BIGINT"),
    ("cached", "BOOLEAN"),
)

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "spans": SPANS_COLUMNS,
    "links": LINKS_COLUMNS,
    "resources": RESOURCES_COLUMNS,
    "metric_points": METRIC_POINTS_COLUMNS,
    "ingest_errors": INGEST_ERRORS_COLUMNS,
    "inputs": INPUTS_COLUMNS,
}


def create_table_sql(table: str) -> str:
    cols = ",\n    ".join(f"{name} {typ}" for name, typ in TABLES[table])
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {cols}\n)"


def create_all_sql() -> list[str]:
    return [create_table_sql(t) for t in TABLES]


_ARROW_TYPES = {
    "VARCHAR": "string",
    "BIGINT": "int64",
    "TINYINT": "int8",
    "DOUBLE": "float64",
    "BOOLEAN": "bool_",
}


def arrow_schema(table: str) -> Any:
    """The pyarrow schema of a canonical table, for the ingest's Parquet parts."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, _ARROW_TYPES[typ])()) for name, typ in TABLES[table]])
