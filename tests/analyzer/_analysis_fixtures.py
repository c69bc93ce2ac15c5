"""Tiny fixture databases for the analysis tests: canonical tables, rows inserted by name."""

from __future__ import annotations

import itertools
import json
from typing import Any

import duckdb

from inferaudit_analyzer.schema import TABLES, create_all_sql

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S


def _literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


class FixtureDb:
    """An in-memory DuckDB with the canonical tables; helpers add requests, batches, links."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:")
        for sql in create_all_sql():
            self._con.execute(sql)
        self._ids = itertools.count(1)
        self._pending: dict[str, list[str]] = {}

    @property
    def con(self) -> Any:
        """The connection, with every buffered row inserted (one INSERT per table: fast)."""
        for table, rows in self._pending.items():
            if rows:
                self._con.execute(f"INSERT INTO {table} VALUES {', '.join(rows)}")
        self._pending = {}
        return self._con

    def insert(self, table: str, **cols: Any) -> None:
        names = [c for c, _ in TABLES[table]]
        unknown = set(cols) - set(names)
        assert not unknown, f"unknown columns {unknown}"
        if "attributes" in names and isinstance(cols.get("attributes"), dict):
            cols["attributes"] = json.dumps(cols["attributes"])
        values = ", ".join(_literal(cols.get(n)) for n in names)
        self._pending.setdefault(table, []).append(f"({values})")

    def span(self, *, start_ns: int, end_ns: int, trace_id: str | None = None,
             span_id: str | None = None, **cols: Any) -> tuple[str, str]:
        trace_id = trace_id or f"{next(self._ids):032x}"
        span_id = span_id or f"{next(self._ids):016x}"
        cols.setdefault("kind", 1)
        cols.setdefault("status_code", 0)
        self.insert("spans", trace_id=trace_id, span_id=span_id, start_ns=start_ns,
                    end_ns=end_ns, duration_ns=end_ns - start_ns, **cols)
        return trace_id, span_id

    def request(self, start_ns: int, end_ns: int, **cols: Any) -> tuple[str, str]:
        cols.setdefault("role", "request")
        cols.setdefault("request_model", "m")
        cols.setdefault("resource_id", 1)
        return self.span(start_ns=start_ns, end_ns=end_ns, **cols)

    def batch(self, start_ns: int, end_ns: int, members: list[tuple[str, str]],
              parent: tuple[str, str] | None = None, **cols: Any) -> tuple[str, str]:
        cols.setdefault("role", "batch")
        cols.setdefault("request_model", "m")
        cols.setdefault("resource_id", 1)
        cols.setdefault("batch_size", len(members))
        cols.setdefault("device_type", "cuda")
        trace_id = parent[0] if parent else None
        tid, sid = self.span(start_ns=start_ns, end_ns=end_ns, trace_id=trace_id,
                             parent_span_id=parent[1] if parent else None, **cols)
        for mt, ms in members:
            self.insert("links", span_id=sid, trace_id=tid, linked_trace_id=mt, linked_span_id=ms)
        return tid, sid

    def resource(self, resource_id: int = 1, **cols: Any) -> None:
        self.insert("resources", resource_id=resource_id, **cols)

    def metric(self, name: str, time_ns: int, value: float, resource_id: int = 1,
               **attrs: Any) -> None:
        self.insert("metric_points", name=name, time_ns=time_ns, value=value,
                    resource_id=resource_id, attributes=json.dumps(attrs))


def fifo_schedule(n: int, gap_ms: int, service_ms: int):
    """(i, arrival, start, end) of ``n`` requests arriving every ``gap_ms`` at a server that
    takes one at a time, ``service_ms`` each, first come first served."""
    free_at = T0
    for i in range(n):
        arrival = T0 + i * gap_ms * MS
        start = max(arrival, free_at)
        free_at = end = start + service_ms * MS
        yield i, arrival, start, end


def unbatched_db(n: int = 40, gap_ms: int = 10, service_ms: int = 50,
                 device_ms: int = 40) -> FixtureDb:
    """A server taking one request at a time while arrivals come faster: requests queue.

    Request i arrives at i*gap, is served by a size-1 batch in FIFO order; requests wait.
    """
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc")
    for _, arrival, start, end in fifo_schedule(n, gap_ms, service_ms):
        req = db.request(arrival, end, input_tokens=100, output_tokens=20,
                         queue_ns=start - arrival)
        db.batch(start, start + device_ms * MS, [req], parent=req,
                 device_time_ns=device_ms * MS, batch_input_tokens=100, batch_output_tokens=20)
    return db


def batched_db(n_batches: int = 30, size: int = 8, step_ms: int = 100,
               busy_ms: int = 95, gpu_model: str = "NVIDIA H100 80GB HBM3") -> FixtureDb:
    """A saturated, well-batched server: back-to-back batches of ``size`` requests each.

    Requests of batch k arrive just before it starts and end with it; the device is busy
    ``busy_ms`` of every ``step_ms``.
    """
    db = FixtureDb()
    db.resource(1, gpu_model=gpu_model, gpu_count=1, service_name="svc")
    for k in range(n_batches):
        start = T0 + k * step_ms * MS
        members = [db.request(start - MS, start + busy_ms * MS, input_tokens=200 + 10 * j,
                              output_tokens=50, request_model="big")
                   for j in range(size)]
        db.batch(start, start + busy_ms * MS, members, request_model="big",
                 device_time_ns=busy_ms * MS, batch_input_tokens=sum(200 + 10 * j
                                                                     for j in range(size)),
                 batch_output_tokens=50 * size)
    return db
