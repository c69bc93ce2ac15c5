"""``inferaudit analyze clickhouse://host:port/db?table=otel_traces``: the audit, in the cluster.

URL forms (``parse_url``):

- ``clickhouse://[user[:password]@]host[:port]/db?table=otel_traces[&secure=1]
  [&metrics_table=otel_metrics]`` — a server
  over HTTP(S) with ``clickhouse-connect`` (default port 8123, 8443 with ``secure``). The
  password may also come from ``CLICKHOUSE_PASSWORD`` so it stays out of shell history.
- ``chdb:///path/to/dir?table=otel_traces`` — an on-disk chDB database in-process;
  ``chdb://`` alone is an empty in-memory session (tests fill it).

Only aggregates come back: the report's ``input.engine`` says how many bytes and queries.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from inferaudit_analyzer.engines import BadClickHouseURL, SourceUnavailable
from inferaudit_analyzer.engines.clickhouse_engine import (
    ChdbBackend,
    ClickHouseBackend,
    ClickHouseConnection,
    HttpBackend,
)
from inferaudit_analyzer.engines.clickhouse_source import TimeRange, canonical_relations

__all__ = ["BadClickHouseURL", "ClickHouseTarget", "analyze_clickhouse", "connect",
           "is_clickhouse_url", "parse_url"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where the spans are. ``path`` is set for chDB; host/port/... for a server."""

    scheme: str
    table: str
    database: str | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = None
    secure: bool = False
    path: str | None = None
    metrics_table: str = "otel_metrics"  # the exporter's prefix: {prefix}_gauge, {prefix}_sum

    def qualified(self, name: str) -> str:
        return f"`{self.database}`.`{name}`" if self.database else f"`{name}`"

    @property
    def qualified_table(self) -> str:
        return self.qualified(self.table)

    def redacted(self) -> str:
        """The URL with no password, for the report."""
        if self.scheme == "chdb":
            return f"chdb://{self.path or ''}?table={self.table}"
        user = f"{self.username}@" if self.username else ""
        port = f":{self.port}" if self.port else ""
        return f"clickhouse://{user}{self.host}{port}/{self.database or ''}?table={self.table}"


def is_clickhouse_url(text: str) -> bool:
    return text.startswith(("clickhouse://", "chdb://"))


def parse_url(url: str) -> ClickHouseTarget:
    """Parse a ``clickhouse://`` / ``chdb://`` URL; raises :class:`BadClickHouseURL`."""
    parts = urlsplit(url)
    if parts.scheme not in ("clickhouse", "chdb"):
        raise BadClickHouseURL(f"{url}: scheme must be clickhouse:// or chdb://")
    query = parse_qs(parts.query)
    table = query.get("table", ["otel_traces"])[0]
    metrics = query.get("metrics_table", ["otel_metrics"])[0]
    for what, name in (("table", table), ("metrics_table", metrics)):
        if not _IDENT.match(name):
            raise BadClickHouseURL(f"{url}: {what} {name!r} is not a plain identifier")
    if parts.scheme == "chdb":
        path = unquote(parts.path) or None
        return ClickHouseTarget("chdb", table, database=query.get("database", [None])[0],
                                path=path, metrics_table=metrics)
    if not parts.hostname:
        raise BadClickHouseURL(f"{url}: no host")
    db = parts.path.strip("/") or query.get("database", ["default"])[0]
    if not _IDENT.match(db):
        raise BadClickHouseURL(f"{url}: database {db!r} is not a plain identifier")
    secure = query.get("secure", ["0"])[0].lower() in ("1", "true", "yes")
    try:
        port = parts.port
    except ValueError as exc:
        raise BadClickHouseURL(f"{url}: {exc}") from None
    return ClickHouseTarget(
        "clickhouse", table, database=db, host=parts.hostname, port=port,
        username=unquote(parts.username) if parts.username else None,
        password=(unquote(parts.password) if parts.password
                  else os.environ.get("CLICKHOUSE_PASSWORD")),
        secure=secure, metrics_table=metrics)


def backend_for(target: ClickHouseTarget) -> ClickHouseBackend:
    if target.scheme == "chdb":
        return ChdbBackend(target.path)
    return HttpBackend(target.host or "localhost", target.port, target.username,
                       target.password, target.database, target.secure)


def connect(target: ClickHouseTarget | str, *, since_ns: int | None = None,
            until_ns: int | None = None, backend: ClickHouseBackend | None = None,
            materialize: bool = False) -> ClickHouseConnection:
    """A connection whose canonical tables are the spans starting in [since, until).

    ``materialize``: parse the attribute Maps once into session temporary tables
    (:meth:`ClickHouseConnection.materialize`) instead of in every statement.
    """
    if isinstance(target, str):
        target = parse_url(target)
    wanted = [f"{target.metrics_table}_gauge", f"{target.metrics_table}_sum"]
    db = f"'{target.database}'" if target.database else "currentDatabase()"
    try:  # the first contact: a server that does not answer is unusable input, not a bug
        be = backend or backend_for(target)
        probe = ClickHouseConnection(be, {})
        found = {r[0] for r in probe.query(
            f"SELECT name FROM system.tables WHERE database = {db} AND name IN "
            f"('{wanted[0]}', '{wanted[1]}')").fetchall()}
    except ImportError as exc:
        raise SourceUnavailable(f"{target.redacted()}: {exc}") from exc
    except Exception as exc:
        if backend is not None:
            raise
        raise SourceUnavailable(f"{target.redacted()}: cannot query the server: "
                                f"{type(exc).__name__}: {exc}") from exc
    rel = canonical_relations(
        target.qualified_table, TimeRange(since_ns, until_ns),
        gauge_table=target.qualified(wanted[0]) if wanted[0] in found else None,
        sum_table=target.qualified(wanted[1]) if wanted[1] in found else None)
    con = ClickHouseConnection(be, rel, windowed=since_ns is not None or until_ns is not None)
    con.bytes_pulled, con.queries = probe.bytes_pulled, probe.queries
    if materialize:
        con.materialize()
    return con


def analyze_clickhouse(target: ClickHouseTarget | str, params: Any = None, *,
                       since_ns: int | None = None, until_ns: int | None = None,
                       backend: ClickHouseBackend | None = None,
                       close: bool = True, materialize: bool = True) -> dict[str, Any]:
    """The same report as ``analyze(paths)``, computed in ClickHouse.

    ``materialize`` (default): the window's canonical spans are parsed once into a session
    temporary table on the server; False re-reads ``otel_traces`` in every statement (no
    temporary-table memory on the server, several times slower).

    Raises:
        UnusableInput: the table holds no span in the window.
        ClickHouseQueryError: a statement failed (the message has the translated SQL).
    """
    from inferaudit_analyzer.analyze import analyze_connection
    from inferaudit_analyzer.store import UnusableInput

    if isinstance(target, str):
        target = parse_url(target)
    con = connect(target, since_ns=since_ns, until_ns=until_ns, backend=backend,
                  materialize=materialize)
    try:
        row = con.execute("SELECT COUNT(*) FROM spans").fetchone()
        spans = int(row[0]) if row else 0
        if spans == 0:
            raise UnusableInput(target.redacted(), None, "no spans in the table for the window")
        info: dict[str, Any] = {"paths": [target.redacted()], "files": [], "errors": []}
        report = analyze_connection(con, params, (), info)
        report["input"]["engine"] = {
            "name": "clickhouse", "source": target.redacted(), "table": target.table,
            "since_ns": since_ns, "until_ns": until_ns,
            "bytes_pulled": con.bytes_pulled, "queries": con.queries,
        }
        return report
    finally:
        if close:
            con.close()
