"""Ingest: exported traces (OTLP JSON lines, length-prefixed OTLP protobuf) → canonical rows.

``files`` finds and opens inputs, ``otlp_json`` / ``otlp_proto`` / ``metrics`` turn export
requests into rows, ``foreign`` maps other instrumentations' attributes, ``worker`` writes one
unit of work as Parquet parts, ``cache`` keeps them keyed on each file's (path, size, mtime),
``coverage`` says how complete the input is. ``inferaudit_analyzer.store`` ties them together.
"""
