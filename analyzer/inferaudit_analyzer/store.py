"""Open exported traces as a DuckDB store of the canonical tables (docs/data-model.md).

``load_store(paths)`` finds the input files, parses what the cache does not already hold (in a
pool of worker processes for large inputs), and returns a :class:`Store` whose explicit DuckDB
connection has ``spans``, ``links``, ``resources``, ``metric_points``, ``ingest_errors`` and
``inputs``. ``spans`` and ``links`` are views over the Parquet parts, so memory stays bounded by
DuckDB's ``memory_limit`` however large the input; the small tables are materialised.

Bad input never raises a traceback: every problem becomes an ``ingest_errors`` row naming the
file and position. Only when not a single span could be read does ``load_store`` raise
:class:`UnusableInput`, which the CLI turns into exit status 2.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from inferaudit_analyzer import schema
from inferaudit_analyzer.ingest import cache as cache_mod
from inferaudit_analyzer.ingest import files
from inferaudit_analyzer.ingest.coverage import (
    LINE_COUNTS_COLUMNS,
    LINE_COUNTS_TABLE,
    coverage,
    coverage_gaps,
)
from inferaudit_analyzer.ingest.pool import run_pool
from inferaudit_analyzer.ingest.worker import PART_TABLES, UnitResult, WorkUnit, run_unit

__all__ = [
    "IngestError", "InputSummary", "Progress", "Store", "UnusableInput", "coverage",
    "coverage_gaps", "load_store",
]

SPLIT_BYTES = 32 * 1024 * 1024  # uncompressed JSON files larger than this are split by range
POOL_MIN_BYTES = 24 * 1024 * 1024  # below this, parsing inline beats starting workers


class UnusableInput(Exception):
    """Nothing usable could be read; names the file and position of the first problem."""

    def __init__(self, file: str, position: str | int | None, message: str) -> None:
        self.file = file
        self.position = position
        self.message = message
        where = file if position is None else f"{file}:{position}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class IngestError:
    """One thing that could not be read: file, 1-based line (JSON lines) or byte offset."""

    file: str
    line: int | None
    byte_offset: int | None
    message: str

    @property
    def position(self) -> str | None:
        if self.line is not None:
            return f"line {self.line}"
        if self.byte_offset is not None:
            return f"byte {self.byte_offset}"
        return None


@dataclass(frozen=True)
class InputSummary:
    """What one input file contributed."""

    file: str
    format: str
    compression: str
    size_bytes: int
    mtime_ns: int
    spans: int
    links: int
    metric_points: int
    errors: int
    cached: bool


@dataclass(frozen=True)
class Progress:
    """Handed to the ``progress`` callback after each file or file part is done."""

    file: str
    bytes_done: int
    bytes_total: int
    spans: int
    files_done: int
    files_total: int
    cached: bool


@dataclass
class Store:
    """The loaded store. Close it (or use ``with``) to release temporary Parquet parts."""

    con: duckdb.DuckDBPyConnection
    inputs: list[InputSummary]
    errors: list[IngestError]
    stats: dict[str, Any] = field(default_factory=dict)
    _finalizer: Any = None

    @property
    def spans(self) -> int:
        return sum(i.spans for i in self.inputs)

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pretty_printed(path: str) -> bool:
    """The file's first line is a lone ``{``: one JSON document over many lines, which only a
    reader that starts at its first byte can read (worker._read_document)."""
    try:
        with open(path, "rb") as fh:
            return fh.readline(4096).strip() == b"{"
    except OSError:
        return False


def _units(f: files.InputFile, out_dir: str, chunk_spans: int) -> list[WorkUnit]:
    if f.format == "json" and f.compression == "none" and f.size_bytes > SPLIT_BYTES \
            and not _pretty_printed(f.path):
        n = -(-f.size_bytes // SPLIT_BYTES)
        step = -(-f.size_bytes // n)
        return [WorkUnit(f.path, f.compression, f.format, i * step,
                         min(f.size_bytes, (i + 1) * step), out_dir, i, chunk_spans)
                for i in range(n)]
    return [WorkUnit(f.path, f.compression, f.format, 0, None, out_dir, 0, chunk_spans)]


def _absolute_errors(f: files.InputFile, results: list[UnitResult]) -> list[IngestError]:
    """Unit-relative line numbers → file line numbers (one newline-counting pass, on error only)."""
    raw: list[tuple[int | None, int | None, str, bool]] = []
    for r in sorted(results, key=lambda r: r.unit.start):
        for line, offset, msg in r.errors:
            raw.append((line, offset, msg, r.unit.start > 0))
    need = sorted({off for _, off, _, split in raw if split and off is not None})
    lines_at = (dict(zip(need, files.count_newlines_at(f.path, need), strict=True)) if need
                else {})  # nothing to count: the file may not even open (a dangling link)
    out: list[IngestError] = []
    for line, offset, msg, split in raw:
        if split:
            line = None if offset is None else lines_at[offset] + 1
        out.append(IngestError(f.path, line, offset if f.compression == "none" else None, msg))
    return out


def _run(units: list[WorkUnit], workers: int) -> Iterable[UnitResult]:
    if workers <= 1 or len(units) <= 1:
        for u in units:
            yield _run_inline(u)
        return
    yield from run_pool(units, workers)


def _run_inline(unit: WorkUnit) -> UnitResult:
    was = gc.isenabled()
    gc.disable()
    try:
        return run_unit(unit)
    finally:
        if was:
            gc.enable()


def load_store(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    cache: bool = True,
    progress: Callable[[Progress], None] | None = None,
    workers: int | None = None,
    cache_root: str | os.PathLike[str] | None = None,
    memory_limit: str = "1GB",
    threads: int | None = None,
    chunk_spans: int = 32768,
    require_spans: bool = True,
) -> Store:
    """Read ``paths`` (files, directories, globs) into a DuckDB store of the canonical tables.

    Args:
        cache: reuse / write the per-file Parquet cache; ``False`` parses into a temporary
            directory removed by ``Store.close``.
        progress: called after each file (or part of a large file) with a :class:`Progress`.
        workers: parser processes; default: CPU count, used only for inputs over ~24 MB.
        cache_root: put cache entries here instead of beside the inputs.
        memory_limit / threads: DuckDB settings of the returned connection.
        require_spans: raise :class:`UnusableInput` when no span at all was read.

    Raises:
        UnusableInput: no input file matched, or (with ``require_spans``) zero spans were read.
    """
    t0 = time.perf_counter()
    try:
        found = files.discover(paths)
    except files.InputNotFound as exc:
        raise UnusableInput(exc.path, None, exc.reason) from None
    tmp_root = None if cache else Path(tempfile.mkdtemp(prefix="inferaudit-ingest-"))
    root = tmp_root if tmp_root is not None else (
        Path(cache_root) if cache_root is not None else None)
    total_bytes = sum(f.size_bytes for f in found)
    done_bytes = files_done = spans_done = 0

    manifests: dict[str, tuple[Path, dict[str, Any], bool]] = {}
    pending: dict[str, tuple[files.InputFile, Path, Path, list[WorkUnit]]] = {}
    empty_errors: list[IngestError] = []
    try:
        for f in found:
            if f.format == "empty":
                empty_errors.append(IngestError(f.path, None, 0, "empty file"))
                files_done += 1
                continue
            entry = cache_mod.entry_dir(f, root)
            m = cache_mod.load_manifest(entry) if cache else None
            if m is not None:
                manifests[f.path] = (entry, m, True)
                done_bytes += f.size_bytes
                spans_done += m["spans"]
                files_done += 1
                if progress:
                    progress(Progress(f.path, done_bytes, total_bytes, spans_done, files_done,
                                      len(found), True))
                continue
            scratch = cache_mod.begin(entry)
            pending[f.path] = (f, entry, scratch, _units(f, str(scratch), chunk_spans))

        all_units = [u for *_, units in pending.values() for u in units]
        parse_bytes = sum(pending[p][0].size_bytes for p in pending)
        n_workers = workers if workers is not None else (os.cpu_count() or 1)
        if parse_bytes < POOL_MIN_BYTES and workers is None:
            n_workers = 1
        t_parse = time.perf_counter()
        results: dict[str, list[UnitResult]] = {p: [] for p in pending}
        for r in _run(all_units, n_workers):
            f, entry, scratch, units = pending[r.unit.path]
            results[f.path].append(r)
            span = (r.unit.end if r.unit.end is not None else f.size_bytes) - r.unit.start
            done_bytes += span
            spans_done += r.spans
            if len(results[f.path]) == len(units):
                files_done += 1
                manifests[f.path] = (entry, _commit(f, entry, scratch, results[f.path]), False)
            if progress:
                progress(Progress(f.path, done_bytes, total_bytes, spans_done, files_done,
                                  len(found), False))
        parse_s = time.perf_counter() - t_parse
    except BaseException:
        # Interrupted or failed mid-parse: leave no scratch directory behind (a committed
        # entry's scratch has been renamed away already).
        for pending_file in pending.values():
            shutil.rmtree(pending_file[2], ignore_errors=True)
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
        raise

    con = _connect(memory_limit, threads, tmp_root or root)
    store = Store(con, [], list(empty_errors))
    if tmp_root is not None:
        store._finalizer = weakref.finalize(store, shutil.rmtree, str(tmp_root), True)
    _fill(store, found, manifests)
    store.stats = {
        "files": len(found), "files_parsed": len(pending), "files_cached": len(manifests)
        - len(pending), "bytes": total_bytes, "spans": store.spans, "parse_s": parse_s,
        "load_s": time.perf_counter() - t0, "workers": n_workers if all_units else 0,
    }
    if require_spans and store.spans == 0:
        first = store.errors[0] if store.errors else None
        store.close()
        if first is not None:
            raise UnusableInput(first.file, first.position, first.message)
        raise UnusableInput(found[0].path if found else str(paths), None,
                            "no spans in any input")
    return store


def _commit(f: files.InputFile, entry: Path, scratch: Path,
            results: list[UnitResult]) -> dict[str, Any]:
    errors = _absolute_errors(f, results)
    parts: dict[str, list[str]] = {t: [] for t in PART_TABLES}
    for r in sorted(results, key=lambda r: r.unit.start):
        for table, paths in r.parts.items():
            parts[table].extend(os.path.basename(p) for p in paths)
    manifest = {
        "file": f.path, "size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns,
        "format": f.format, "compression": f.compression, "parts": parts,
        "spans": sum(r.spans for r in results), "links": sum(r.links for r in results),
        "metric_points": sum(r.metric_points for r in results),
        "errors": [[e.line, e.byte_offset, e.message] for e in errors],
        "lines": sum(r.lines for r in results),
        "lines_lost": sum(r.lines_lost for r in results),
        "spans_lost": sum(r.spans_lost for r in results),
    }
    cache_mod.commit(scratch, entry, manifest)
    return manifest


def _connect(memory_limit: str, threads: int | None, spill: Path | None) -> Any:
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{_setting(memory_limit)}'")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    con.execute("SET preserve_insertion_order = false")
    spill_dir = Path(spill or tempfile.gettempdir()) / "duckdb-spill"
    con.execute(f"SET temp_directory = '{_setting(str(spill_dir))}'")
    return con


def _setting(text: str) -> str:
    return text.replace("'", "''")


def _parquet_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# Span ids are random 64-bit: two spans with one (trace_id, span_id) are copies of one export
# read together (a .jsonl and its .gz, a collector writing to two places). Counted once, so
# request counts, cost per request and duplicate-prompt shares stand; coverage reports how
# many were dropped, from the one-row table schema.SPAN_COPIES_TABLE.
_HAS_COPIES_SQL = "SELECT COUNT(*) > COUNT(DISTINCT span_id) FROM spans"


def _drop_copies(con: Any, parts: dict[str, list[str]]) -> None:
    """Replace the spans and links views by de-duplicated tables when copies were read."""
    if not con.execute(_HAS_COPIES_SQL).fetchone()[0]:
        return  # the common case costs one COUNT(DISTINCT) over the span ids
    read = con.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
    for table, select in (
            ("spans", "SELECT * FROM read_parquet({}) QUALIFY row_number() OVER "
                      "(PARTITION BY trace_id, span_id ORDER BY start_ns, end_ns) = 1"),
            ("links", "SELECT DISTINCT * FROM read_parquet({})")):
        if not parts[table]:
            continue
        con.execute(f"DROP VIEW {table}")
        con.execute(f"CREATE TABLE {table} AS " + select.format(_parquet_list(parts[table])))
    kept = con.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
    con.execute(f"CREATE TABLE {schema.SPAN_COPIES_TABLE} AS "
                f"SELECT {int(read - kept)}::BIGINT AS dropped")


def _fill(store: Store, found: list[files.InputFile],
          manifests: dict[str, tuple[Path, dict[str, Any], bool]]) -> None:
    con = store.con
    parts: dict[str, list[str]] = {t: [] for t in PART_TABLES}
    line_counts: list[tuple[str, int, int, int]] = []
    for f in found:
        if f.path not in manifests:
            store.inputs.append(InputSummary(f.path, f.format, f.compression, f.size_bytes,
                                             f.mtime_ns, 0, 0, 0, 1, False))
            continue
        entry, m, cached = manifests[f.path]
        if "lines" in m:
            line_counts.append((f.path, int(m["lines"]), int(m["lines_lost"]),
                                int(m["spans_lost"])))
        for table, names in m["parts"].items():
            parts[table].extend(str(entry / n) for n in names)
        errs = [IngestError(f.path, ln, off, msg) for ln, off, msg in m["errors"]]
        store.errors.extend(errs)
        store.inputs.append(InputSummary(f.path, f.format, f.compression, f.size_bytes,
                                         f.mtime_ns, m["spans"], m["links"],
                                         m["metric_points"], len(errs), cached))
    for table in ("spans", "links"):
        if parts[table]:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
                        f"{_parquet_list(parts[table])})")
        else:
            con.execute(schema.create_table_sql(table))
    if parts["spans"]:
        _drop_copies(con, parts)
    for table in ("resources", "metric_points", "ingest_errors", "inputs"):
        con.execute(schema.create_table_sql(table))
    if parts["resources"]:
        con.execute("INSERT INTO resources SELECT DISTINCT ON (resource_id) * FROM "
                    f"read_parquet({_parquet_list(parts['resources'])})")
    if parts["metric_points"]:
        con.execute("INSERT INTO metric_points SELECT * FROM "
                    f"read_parquet({_parquet_list(parts['metric_points'])})")
    if store.errors:
        con.executemany("INSERT INTO ingest_errors (file, line, message, byte_offset) "
                        "VALUES (?, ?, ?, ?)",
                        [(e.file, e.line, e.message, e.byte_offset) for e in store.errors])
    rows = [(i.file, i.format, i.compression, i.size_bytes, i.mtime_ns, i.spans, i.links,
             i.metric_points, i.errors, i.cached) for i in store.inputs]
    if rows:
        con.executemany("INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    cols = ", ".join(f"{n} {t}" for n, t in LINE_COUNTS_COLUMNS)
    con.execute(f"CREATE TABLE {LINE_COUNTS_TABLE} ({cols})")
    if line_counts:
        con.executemany(f"INSERT INTO {LINE_COUNTS_TABLE} VALUES (?, ?, ?, ?)", line_counts)
