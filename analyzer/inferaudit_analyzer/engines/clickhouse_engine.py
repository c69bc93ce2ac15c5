"""A DuckDB-shaped connection onto ClickHouse, so every analysis runs there unchanged.

The analyses call ``con.execute(sql, params)`` and read ``fetchone`` / ``fetchall`` /
``fetchnumpy`` / ``description``. :class:`ClickHouseConnection` offers exactly that: each statement
is translated (``dialect.to_clickhouse``), the canonical tables are supplied as CTEs over the
exporter's ``otel_traces`` (``clickhouse_source``), and the result comes back as one Arrow stream
whose size is counted in ``bytes_pulled``: what left the cluster. Nothing is written to the user's
database: ``CREATE VIEW`` statements are kept client-side and snapshotted into session
``TEMPORARY`` tables (Memory engine) when first read, as the analyzer's ``materialize_views``
does anyway; ClickHouse resolves those before same-named tables and drops them with the session.
The canonical tables are CTEs (or, with :meth:`ClickHouseConnection.materialize`, snapshots too).

Two backends: :class:`ChdbBackend` (the ClickHouse engine in-process, for tests and local
partitions) and :class:`HttpBackend` (``clickhouse-connect`` against a server). Both raise the
driver's own exception on a failed query, with the translated SQL in the message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferaudit_analyzer.engines.dialect import CLICKHOUSE_SETTINGS, to_clickhouse

__all__ = ["ChdbBackend", "ClickHouseBackend", "ClickHouseConnection", "ClickHouseCursor",
           "ClickHouseQueryError",            "HttpBackend"]


class ClickHouseQueryError(RuntimeError):
    """A statement failed on ClickHouse; the message carries the translated SQL."""


class ClickHouseBackend(Protocol):
    """Runs ClickHouse SQL; ``query_arrow`` returns the raw ArrowStream bytes."""

    def query_arrow(self, sql: str) -> bytes: ...

    def command(self, sql: str) -> None: ...

    def close(self) -> None: ...


class ChdbBackend:
    """In-process ClickHouse (chDB). ``path`` None: a temporary, in-memory session."""

    def __init__(self, path: str | None = None) -> None:
        from chdb import session

        try:
            self.session = session.Session(path) if path else session.Session()
        except RuntimeError as exc:
            raise RuntimeError(f"chDB could not open {path or 'an in-memory session'}: {exc} "
                               "(chDB runs one engine per process, bound to the first data "
                               "path opened)") from exc
        for k, v in CLICKHOUSE_SETTINGS.items():
            self.session.query(f"SET {k} = {v!r}" if isinstance(v, str) else f"SET {k} = {v}")

    def query_arrow(self, sql: str) -> bytes:
        return self.session.query(sql, "ArrowStream").bytes()

    def command(self, sql: str) -> None:
        self.session.query(sql)

    def close(self) -> None:
        self.session.close()


# The views use correlated EXISTS / scalar subqueries: ClickHouse >= 25.4 with this setting
# (later releases keep it as an accepted no-op). Older servers reject it, and the views with it.
SERVER_SETTINGS: dict[str, int] = {"allow_experimental_correlated_subqueries": 1}


class HttpBackend:
    """A ClickHouse server over HTTP(S) via ``clickhouse-connect`` (one session per backend)."""

    def __init__(self, host: str, port: int | None = None, username: str | None = None,
                 password: str | None = None, database: str | None = None,
                 secure: bool = False, **kwargs: Any) -> None:
        import clickhouse_connect

        self.client = clickhouse_connect.get_client(
            host=host, port=port or (8443 if secure else 8123), username=username or "default",
            password=password or "", database=database or "default", secure=secure,
            settings={**CLICKHOUSE_SETTINGS, **SERVER_SETTINGS}, **kwargs)

    def query_arrow(self, sql: str) -> bytes:
        return self.client.raw_query(sql, fmt="ArrowStream")

    def command(self, sql: str) -> None:
        self.client.command(sql)

    def close(self) -> None:
        self.client.close()


@dataclass
class ClickHouseCursor:
    """One result, read like a DuckDB result; ``nbytes`` is the Arrow stream's size."""

    table: Any
    nbytes: int

    @property
    def description(self) -> list[tuple[Any, ...]]:
        if self.table is None:
            return []
        return [(f.name, str(f.type), None, None, None, None, None) for f in self.table.schema]

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self.table is None or self.table.num_columns == 0:
            return []
        cols = [c.to_pylist() for c in self.table.columns]
        return list(zip(*cols, strict=True))

    def fetchone(self) -> tuple[Any, ...] | None:
        if self.table is None or self.table.num_rows == 0:
            return None
        return tuple(c[0].as_py() for c in self.table.slice(0, 1).columns)

    def fetchnumpy(self) -> dict[str, Any]:
        import numpy as np

        out: dict[str, Any] = {}
        if self.table is None:
            return out
        for name, col in zip(self.table.column_names, self.table.columns, strict=True):
            values = col.to_pylist()
            out[name] = np.array(values, dtype=object) if any(v is None for v in values) \
                else col.to_numpy(zero_copy_only=False)
        return out


_VIEW = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(\w+)\s+AS\s+(.*)$",
                   re.IGNORECASE | re.DOTALL)
_TEMP = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TEMP(?:ORARY)?\s+TABLE\s+(\w+)\s+AS\s+(.*)$",
                   re.IGNORECASE | re.DOTALL)
_DROP = re.compile(r"^\s*DROP\s+(?:TABLE|VIEW)\s+IF\s+EXISTS\s+(?:temp\.)?(\w+)\s*;?\s*$",
                   re.IGNORECASE)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)


@dataclass
class ClickHouseConnection:
    """DuckDB-connection look-alike over a backend and the canonical relations (CH SELECTs).

    Not thread-safe (one ClickHouse session); use one per thread.
    """

    backend: ClickHouseBackend
    relations: dict[str, str]
    dialect: str = "clickhouse"
    views: dict[str, str] = field(default_factory=dict)  # name -> translated SELECT
    materialized: set[str] = field(default_factory=set)
    bytes_pulled: int = 0
    queries: int = 0
    query_log: list[tuple[str, int]] = field(default_factory=list)  # (statement head, bytes)
    windowed: bool = False  # the relations hold a --since/--until window of the table

    def _with_ctes(self, sql: str) -> str:
        """Prefix the CTEs (canonical tables, then client-side views) the statement uses."""
        named = [(n, s) for n, s in self.relations.items() if n not in self.materialized]
        named += [(n, s) for n, s in self.views.items() if n not in self.materialized]
        needed: set[str] = set()
        text = sql
        changed = True
        while changed:
            changed = False
            for name, body in named:
                if name not in needed and re.search(rf"\b{name}\b", text):
                    needed.add(name)
                    text += " " + body
                    changed = True
        if not needed:
            return sql
        ctes = ", ".join(f"{n} AS ({s})" for n, s in named if n in needed)
        stripped = sql.lstrip()
        if stripped[:5].upper() == "WITH ":
            return f"WITH {ctes}, {stripped[5:]}"
        return f"WITH {ctes} {stripped}"

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> ClickHouseCursor:
        """Run one DuckDB-dialect statement; DDL on views/temp tables is handled client-side."""
        params = list(params or ())
        m = _VIEW.match(sql)
        if m:
            name = m.group(1)
            self.views[name] = to_clickhouse(m.group(2), params)
            if name in self.materialized:  # replaced: the old snapshot is stale
                self.backend.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
                self.materialized.discard(name)
            return ClickHouseCursor(None, 0)
        m = _TEMP.match(sql)
        if m:
            name = m.group(1)
            translated = to_clickhouse(m.group(2), params)
            self.materialized.add(name)
            self._ensure_views(translated)
            self.materialized.discard(name)
            body = self._with_ctes(translated)
            self.backend.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
            self.backend.command(f"CREATE TEMPORARY TABLE {name} ENGINE = Memory AS {body}")
            self.materialized.add(name)
            return ClickHouseCursor(None, 0)
        m = _DROP.match(sql)
        if m:
            name = m.group(1)
            if name in self.materialized:  # a view's snapshot: re-made when next read
                self.backend.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
                self.materialized.discard(name)
            else:
                self.views.pop(name, None)
            return ClickHouseCursor(None, 0)
        m = _CREATE_TABLE.match(sql)
        if m and m.group(1) in self.relations:
            return ClickHouseCursor(None, 0)  # the canonical tables already stand in
        ch_sql = to_clickhouse(sql, params)
        self._ensure_views(ch_sql)
        return self.query(self._with_ctes(ch_sql))

    def _ensure_views(self, ch_sql: str) -> None:
        """Snapshot each view the statement reads into a temporary table first.

        ClickHouse does not resolve every view body as a CTE (a nested WITH whose joins reuse
        an alias, a correlated subquery inside a CTE), and the data does not change within a
        session, so a view is always read from its snapshot.
        """
        for name, body in list(self.views.items()):
            if name not in self.materialized and re.search(rf"\b{name}\b", ch_sql):
                self.materialized.add(name)  # a view never reads itself; stops the recursion
                self._ensure_views(body)
                self.materialized.discard(name)
                self.backend.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
                self.backend.command(f"CREATE TEMPORARY TABLE {name} ENGINE = Memory AS "
                                     f"{self._with_ctes(body)}")
                self.materialized.add(name)

    def materialize(self, names: Sequence[str] = ("spans", "links", "resources")) -> None:
        """Snapshot canonical relations into session TEMPORARY tables (Memory engine).

        The canonical ``spans`` parse every attribute Map; the ``requests`` view reads ``spans``
        several times and the analyses dozens. Parsing once is what keeps the audit linear. The
        copy lives on the server (the initiator node), never on the client; it costs server
        memory of the window's canonical columns and goes with the session.
        """
        for name in names:
            body = self._with_ctes(self.relations[name])
            self.backend.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
            self.backend.command(f"CREATE TEMPORARY TABLE {name} ENGINE = Memory AS {body}")
            self.materialized.add(name)

    def query(self, ch_sql: str) -> ClickHouseCursor:
        """Run ClickHouse SQL as is and count the bytes that came back."""
        import pyarrow as pa

        try:
            raw = self.backend.query_arrow(ch_sql)
        except Exception as exc:
            raise ClickHouseQueryError(f"{exc}\n-- while running:\n{ch_sql[:4000]}") from exc
        self.queries += 1
        self.bytes_pulled += len(raw)
        self.query_log.append((self._head(ch_sql), len(raw)))
        if not raw:
            return ClickHouseCursor(None, 0)
        return ClickHouseCursor(pa.ipc.open_stream(raw).read_all(), len(raw))

    def _head(self, ch_sql: str) -> str:
        """The statement without the injected CTEs, shortened: for the bench's byte table."""
        text = ch_sql
        for name in (*self.relations, *self.views):
            text = text.replace(f"{name} AS ({self.relations.get(name) or self.views.get(name)})",
                                f"{name} AS (...)")
        return " ".join(text.split())[:160]

    def cursor(self) -> ClickHouseConnection:
        return self

    def close(self) -> None:
        for name in list(self.materialized):
            # closing must not mask the caller's outcome
            with contextlib.suppress(Exception):
                self.backend.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
        self.materialized.clear()
        self.backend.close()
