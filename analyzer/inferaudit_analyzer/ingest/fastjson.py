"""The compiled fast path of OTLP/JSON ingest, when it was built, and the switch that turns it off.

``_fastotlp`` (a C extension built at install, optional) turns a line of the common OTLP shape
into the same row values the Python path builds, without a Python object per attribute: 7
instead of 27 µs of CPU a span for decoding and row building. It declines any line it does not
handle exactly as the Python path would, and that line takes the Python path, so the two give
the same tables and errors
(``tests/analyzer/test_fast_json_equivalence.py`` checks this case by case).

``INFERAUDIT_FAST_JSON=0`` turns it off, read at each work unit: for a comparison, or if a
platform's build misbehaves. Without a C compiler at install the package still works, slower.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from inferaudit_analyzer.ingest import foreign
from inferaudit_analyzer.ingest.otlp_json import GENAI_PREFIXES, N_ROW, ROW_INDEX
from inferaudit_analyzer.schema import UNIQUE_PER_SPAN

try:
    from inferaudit_analyzer.ingest import _fastotlp
except ImportError:  # not built (no compiler at install): the Python path does everything
    _fastotlp = None

ENV_SWITCH = "INFERAUDIT_FAST_JSON"

_KIND_CODES = {foreign.to_str: 0, foreign.to_int: 1, foreign.to_float: 2, foreign.to_bool: 3,
               foreign.to_count: 4}
_FIXED = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
          "duration_ns", "status_code")
_stats = {"lines_fast": 0, "lines_fallback": 0, "lines_failed": 0}
_configured = False


def available() -> bool:
    """Whether the extension was built and imports on this platform."""
    return _fastotlp is not None


def enabled() -> bool:
    """Available and not switched off by ``INFERAUDIT_FAST_JSON=0``."""
    return _fastotlp is not None and os.environ.get(ENV_SWITCH, "1").strip() != "0"


def _configure() -> None:
    global _configured
    # a converter without a native type (none today) is kind -1: the extension declines it
    primary = {k: (ROW_INDEX[col], _KIND_CODES.get(conv, -1))
               for k, (col, conv) in foreign.PRIMARY.items()}
    _fastotlp.configure(
        primary=primary, fallback=frozenset(foreign.FALLBACK), genai_prefixes=GENAI_PREFIXES,
        n_row=N_ROW, fixed={name: ROW_INDEX[name] for name in _FIXED},
        shared_columns=frozenset(i for name, i in ROW_INDEX.items() if name not in UNIQUE_PER_SPAN),
        loads=orjson.loads, dumps=orjson.dumps)
    _configured = True


def convert(data: bytes) -> list[Any] | None:
    """The line's rows grouped by resource and scope, or None: the Python path takes it."""
    if not _configured:
        _configure()
    try:
        groups = _fastotlp.convert(data)
    except Exception:  # a fast path must never cost a line: Python retries it (and counts)
        _stats["lines_failed"] += 1
        return None
    _stats["lines_fast" if groups is not None else "lines_fallback"] += 1
    return groups


def transpose(rows: list[Any], n: int) -> list[list[Any]]:
    """The first ``n`` items of each row as ``n`` column lists (only when :func:`available`)."""
    return _fastotlp.transpose(rows, n)


def stats() -> dict[str, int]:
    """Lines this process took fast and handed back, so tests can tell it really runs."""
    return dict(_stats)
