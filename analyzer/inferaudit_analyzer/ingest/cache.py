"""Where a file's parsed Parquet parts live, and whether they are still valid.

Each input file gets its own cache entry, keyed on (absolute path, size, mtime_ns) and the store
schema version, so a directory that grows by rotation re-parses only the new files. Entries sit
beside the input (``<dir>/.inferaudit-cache/``) when that directory is writable, else under the
user cache dir (``$XDG_CACHE_HOME/inferaudit`` or ``~/.cache/inferaudit``) — e.g. for a
read-only ``../shared``. An entry is valid only once its ``manifest.json`` exists: it is written
last, atomically, so an interrupted parse is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from inferaudit_analyzer import schema
from inferaudit_analyzer.ingest.files import InputFile
from inferaudit_sdk import semconv as sc

CACHE_DIR_NAME = ".inferaudit-cache"
PARSER_VERSION = "2"  # bump when the parser's output changes for the same input
# 2: manifests count lines read and lost (coverage weighs unreadable lines by them)
MANIFEST = "manifest.json"


def user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inferaudit"


def _writable(d: str) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def _path_key(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def _stat_key(f: InputFile) -> str:
    text = json.dumps([f.path, f.size_bytes, f.mtime_ns, schema.STORE_SCHEMA_VERSION,
                       sc.SCHEMA_VERSION, PARSER_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(f: InputFile, root: Path | None = None) -> Path:
    """The cache directory for this exact version of ``f`` (not created)."""
    if root is None:
        parent = os.path.dirname(f.path)
        root = Path(parent) / CACHE_DIR_NAME if _writable(parent) else user_cache_root()
        if root.exists() and not _writable(str(root)):
            root = user_cache_root()
    return root / f"{_path_key(f.path)}-{_stat_key(f)}"


def load_manifest(d: Path) -> dict[str, Any] | None:
    """The manifest of a complete entry whose part files all exist and are whole Parquet
    files, else None (the file is parsed again and the entry replaced). A part cut short (a
    full disk, a copy interrupted) failed every later run with DuckDB's "No magic bytes"."""
    try:
        with open(d / MANIFEST, encoding="utf-8") as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return None
    for paths in m.get("parts", {}).values():
        if not all(_whole(d / p) for p in paths):
            return None
    return m


def _whole(path: Path) -> bool:
    """The part exists and, being Parquet, starts and ends with its magic bytes."""
    if path.suffix != ".parquet":
        return path.exists()
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PAR1":
                return False
            fh.seek(-4, os.SEEK_END)
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def begin(d: Path) -> Path:
    """A fresh scratch directory beside ``d``; ``commit`` renames it into place."""
    d.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=d.name + ".tmp-", dir=d.parent))


def commit(scratch: Path, d: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest, move the entry into place, drop older entries of the same file."""
    with open(scratch / MANIFEST, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
    try:
        os.replace(scratch, d)
    except OSError:  # another process committed the same entry first: keep theirs
        shutil.rmtree(scratch, ignore_errors=True)
    prefix = d.name.split("-")[0] + "-"
    for other in d.parent.glob(prefix + "*"):
        if other != d and other.is_dir() and ".tmp-" not in other.name:
            shutil.rmtree(other, ignore_errors=True)
    return d
