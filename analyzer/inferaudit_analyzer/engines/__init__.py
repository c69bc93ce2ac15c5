"""Engines the analyses run on: DuckDB (local files) and ClickHouse (where large deployments
keep their traces). The analyses' SQL is written once in DuckDB's dialect; see ``dialect``.

Kept import-free (the CLI imports this package on every run; sqlglot, chDB and
clickhouse-connect load only when a URL source is analysed).
"""

from __future__ import annotations

__all__ = ["BadClickHouseURL", "SourceUnavailable"]


class BadClickHouseURL(ValueError):
    """A URL source cannot be used as given; the message says which part is wrong."""


class SourceUnavailable(RuntimeError):
    """A URL source is well formed but cannot be read: the server does not answer, or the
    optional package its scheme needs is not installed. The message says which and how to fix."""
