"""OTLP files from object storage in the Collector ``awss3exporter`` layout, read via fsspec.

The exporter writes each batch to ``{s3_prefix}/{strftime(upload time, s3_partition_format)}/
{file_prefix}traces_{random}.{json|binpb}[.gz]``; the default partition format is
``year=%Y/month=%m/day=%d/hour=%H/minute=%M`` (the older ``s3_partition: hour|minute`` gives the
same keys, stopping at the hour or the minute). The partition is **upload** time: a span lands
in a partition at or after its end, by up to the exporter's batching and retry delay. So a span
window ``[since, until)`` needs the partitions whose upload interval meets
``[since - clock_skew, until + upload_lag)``; those are listed (pruning whole years, months,
days... without listing below them), fetched into a local directory, and read by the normal
file ingest. The spans are then filtered on their own start time, so the report covers exactly
the window.

Any fsspec URL works (``s3://`` needs ``s3fs``; ``gs://``, ``az://``, ``file://``, ``memory://``).
``.binpb`` objects (the ``otlp_proto`` marshaler: one bare ``ExportTraceServiceRequest``) are
re-encoded to OTLP/JSON lines on fetch, since the file ingest reads length-prefixed protobuf.
"""

from __future__ import annotations

import calendar
import gzip
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from inferaudit_analyzer.schema import WINDOWED_SPANS_TABLE

__all__ = ["DEFAULT_UPLOAD_LAG_S", "PartitionedSource", "analyze_partitions", "restrict_spans"]

DEFAULT_UPLOAD_LAG_S = 900.0  # exporter batching + retries; raise it for long-running spans
DEFAULT_CLOCK_SKEW_S = 60.0  # span clocks (the app's) ahead of the exporter's upload clock
_FIELDS = ("year", "month", "day", "hour", "minute")
_SIGNALS = ("traces_", "metrics_")  # logs_ objects are not ours
_SUFFIXES = (".json", ".json.gz", ".binpb", ".binpb.gz", ".jsonl", ".jsonl.gz")
NS = 1_000_000_000


def partition_bounds_ns(parts: dict[str, int]) -> tuple[int, int]:
    """The [start, end) of upload times a partition prefix covers (UTC), in epoch ns."""
    year = parts["year"]
    month = parts.get("month")
    if month is None:
        lo = calendar.timegm((year, 1, 1, 0, 0, 0))
        return lo * NS, calendar.timegm((year + 1, 1, 1, 0, 0, 0)) * NS
    day = parts.get("day")
    if day is None:
        lo = calendar.timegm((year, month, 1, 0, 0, 0))
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        return lo * NS, calendar.timegm((ny, nm, 1, 0, 0, 0)) * NS
    hour, minute = parts.get("hour"), parts.get("minute")
    lo = calendar.timegm((year, month, day, hour or 0, minute or 0, 0))
    width = 86_400 if hour is None else 3_600 if minute is None else 60
    return lo * NS, (lo + width) * NS


def _segment(name: str) -> tuple[str, int] | None:
    key, sep, value = name.rpartition("/")[2].partition("=")
    if not sep or key not in _FIELDS:
        return None
    try:
        return key, int(value)
    except ValueError:
        return None


@dataclass
class PartitionedSource:
    """A bucket prefix in the awss3exporter layout, narrowed to a span-time window."""

    url: str
    since_ns: int | None = None
    until_ns: int | None = None
    upload_lag_s: float = DEFAULT_UPLOAD_LAG_S
    storage_options: dict[str, Any] = field(default_factory=dict)
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
    listed_dirs: int = 0

    def _fs(self) -> tuple[Any, str]:
        from inferaudit_analyzer.engines import SourceUnavailable

        try:
            from fsspec.core import url_to_fs

            return url_to_fs(self.url, **self.storage_options)
        except ImportError as exc:  # e.g. s3:// without s3fs: the message names the package
            raise SourceUnavailable(f"{self.url}: {exc}") from exc

    def _wanted(self, parts: dict[str, int]) -> bool:
        if "year" not in parts:
            return True
        lo, hi = partition_bounds_ns(parts)
        if self.since_ns is not None and hi <= self.since_ns - int(self.clock_skew_s * NS):
            return False  # uploaded before the window began: every span in it started earlier
        # uploaded more than the lag after the window ended: every span in it started later
        return self.until_ns is None or lo < self.until_ns + int(self.upload_lag_s * NS)

    def objects(self) -> list[str]:
        """Paths (in the filesystem's terms) of trace objects in the partitions that can hold
        spans of the window; whole subtrees are skipped without being listed."""
        fs, root = self._fs()
        return sorted(self._walk(fs, root, {}))

    def _walk(self, fs: Any, path: str, parts: dict[str, int]) -> Iterator[str]:
        self.listed_dirs += 1
        for entry in fs.ls(path, detail=True):
            name = entry["name"]
            base = name.rstrip("/").rpartition("/")[2]
            if entry.get("type") == "directory":
                seg = _segment(base)
                sub = dict(parts, **{seg[0]: seg[1]}) if seg else parts
                if self._wanted(sub):
                    yield from self._walk(fs, name, sub)
            elif base.lower().endswith(_SUFFIXES) and any(s in base for s in _SIGNALS) \
                    and self._wanted(parts):
                yield name

    def fetch(self, dest: str) -> list[str]:
        """Copy the wanted objects under ``dest`` (binpb re-encoded as JSON lines); local paths."""
        import json

        from inferaudit_analyzer.ingest.otlp_proto import decode

        fs, _root = self._fs()
        out = []
        for i, obj in enumerate(self.objects()):
            base = obj.rpartition("/")[2]
            data = fs.cat_file(obj)
            if base.endswith(".gz"):
                data = gzip.decompress(data)
                base = base[:-3]
            local = os.path.join(dest, f"{i:06d}-{base}")
            if base.endswith(".binpb"):
                try:
                    msg = decode(data)
                except ValueError as exc:
                    raise ValueError(f"{obj}: {exc}") from None
                data = json.dumps(msg).encode() + b"\n"
                local = local[: -len(".binpb")] + ".jsonl"
            elif not data.endswith(b"\n"):
                data += b"\n"  # the JSON marshaler writes one object with no newline
            with open(local, "wb") as fh:
                fh.write(data)
            out.append(local)
        return out


def restrict_spans(con: Any, since_ns: int | None, until_ns: int | None) -> None:
    """Narrow the store's ``spans`` view to spans starting in [since, until) (DuckDB)."""
    if since_ns is None and until_ns is None:
        return
    conds = []
    if since_ns is not None:
        conds.append(f"start_ns >= {int(since_ns)}")
    if until_ns is not None:
        conds.append(f"start_ns < {int(until_ns)}")
    # a view over the Parquet parts, or a table where the store dropped copies of spans
    is_view = con.execute("SELECT COUNT(*) FROM duckdb_views() WHERE view_name = 'spans' "
                          "AND NOT internal").fetchone()[0]
    con.execute(f"ALTER {'VIEW' if is_view else 'TABLE'} spans RENAME TO {WINDOWED_SPANS_TABLE}")
    con.execute(f"CREATE VIEW spans AS SELECT * FROM {WINDOWED_SPANS_TABLE} WHERE "
                f"{' AND '.join(conds)}")


def analyze_partitions(url: str, params: Any = None, *, since_ns: int | None = None,
                       until_ns: int | None = None,
                       upload_lag_s: float = DEFAULT_UPLOAD_LAG_S,
                       storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report over the spans of [since, until) found under an awss3exporter prefix.

    Raises:
        UnusableInput: no object in the wanted partitions, or no span in the window.
    """
    import shutil

    from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
    from inferaudit_analyzer.store import UnusableInput, load_store

    params = params or AnalyzeParams()
    src = PartitionedSource(url, since_ns, until_ns, upload_lag_s, dict(storage_options or {}))
    tmp = tempfile.mkdtemp(prefix="inferaudit-partitions-")
    try:
        local = src.fetch(tmp)
        if not local:
            raise UnusableInput(url, None, "no trace objects in the partitions of the window")
        store = load_store(local, cache=False, require_spans=True)
        try:
            restrict_spans(store.con, since_ns, until_ns)
            (n,) = store.con.execute("SELECT COUNT(*) FROM spans").fetchone()
            if n == 0:
                raise UnusableInput(url, None, "no spans start in the window")
            info = {"paths": [url], "files": [{"file": p.rpartition("/")[2], "format": "json"}
                                              for p in local],
                    "errors": [{"file": e.file, "position": e.position, "message": e.message}
                               for e in store.errors]}
            report = analyze_connection(store.con, params, (), info)
        finally:
            store.close()
        report["input"]["partitions"] = {
            "url": url, "since_ns": since_ns, "until_ns": until_ns,
            "upload_lag_s": upload_lag_s, "objects": len(local), "dirs_listed": src.listed_dirs,
        }
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
