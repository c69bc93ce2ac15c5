"""The connection contract the analyses use, so any engine can stand behind them.

DuckDB's own connection satisfies it; :class:`~inferaudit_analyzer.engines.clickhouse_engine.
ClickHouseConnection` implements it over ClickHouse. SQL handed to ``execute`` is DuckDB's
dialect with ``?`` parameters; an engine translates it (``engines.dialect``) if it must.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Connection", "Cursor", "engine_name"]


class Cursor(Protocol):
    """One statement's result."""

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def fetchnumpy(self) -> dict[str, Any]: ...


class Connection(Protocol):
    """What ``analyze_connection`` and every analysis call on a connection."""

    def execute(self, sql: str, params: Sequence[Any] | None = ...) -> Cursor: ...

    def close(self) -> None: ...


def engine_name(con: Any) -> str:
    """``clickhouse`` for our ClickHouse connection, else ``duckdb``."""
    return str(getattr(con, "dialect", "duckdb"))
