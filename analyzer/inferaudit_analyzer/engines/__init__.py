"""Engines the analyses run on: DuckDB (local files) and ClickHouse (where large deployments
keep their traces). The analyses' SQL is written once in DuckDB's dialect; see ``dialect``."""
