"""Saying, in words, what is wrong with a span the OTLP/JSON reader rejected.

Only the error path runs this (``otlp_json.RowBuilder`` calls it after a span fails), so the
hot path pays nothing for the checks: which field is missing or of the wrong type, and where
msgspec placed a bad attribute value.
"""

from __future__ import annotations

import binascii
import contextlib
import re
from typing import Any

from inferaudit_analyzer.ingest import foreign
from inferaudit_analyzer.ingest.otlp_values import hex_id

I64_MIN, I64_MAX = foreign.INT64_MIN, foreign.INT64_MAX

# Where msgspec places a value of the wrong shape inside a span's attribute list.
BAD_ATTRIBUTE = re.compile(r"at `\$\.attributes\[\d+\]")
# The same, inside one attribute converted on its own.
AT_PATH = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`")


def at_path(obj: Any, path: str) -> Any:
    """The value at a msgspec path such as ``value.arrayValue.values[0].intValue``."""
    for name, index in re.findall(r"(\w+)|\[(\d+)\]", path):
        try:
            obj = obj[int(index)] if index else obj[name]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def span_label(s: dict[str, Any]) -> str:
    """The span's id (hex where it can be read) and name, for an error about one attribute."""
    sid = s.get("spanId")
    with contextlib.suppress(TypeError, ValueError, binascii.Error):
        sid = sid if type(sid) is str and len(sid) == 16 else hex_id(sid)
    name = s.get("name")
    return f"{sid}" + (f" ({name!r})" if type(name) is str else "")


def diagnose(s: Any, exc: BaseException) -> str:
    """Say which field of a rejected span is wrong, in words (only runs on the error path)."""
    if type(s) is not dict:
        return f"a span must be an object, got {type(s).__name__}"
    name = s.get("name")
    where = f"span {name!r}" if isinstance(name, str) else "span"
    for field in ("traceId", "spanId"):
        v = s.get(field)
        if v is None:
            return f"{where}: missing {field}"
        if not isinstance(v, str):
            return f"{where}: {field} must be a hex string, got {type(v).__name__}"
    for field in ("startTimeUnixNano", "endTimeUnixNano"):
        v = s.get(field)
        if v is None:
            return f"{where}: missing {field}"
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return f"{where}: {field} must be an integer (string), got {type(v).__name__}"
        try:
            t = int(v)
        except ValueError:
            return f"{where}: {field} is not an integer: {v!r}"
        if not I64_MIN <= t <= I64_MAX:
            return f"{where}: {field} {t} is outside the signed 64-bit range"
    start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
    if start <= 0:
        return f"{where}: startTimeUnixNano is {start} (0 is OTLP's unset; need a time after 1970)"
    if end < start:
        return f"{where}: endTimeUnixNano before startTimeUnixNano ({end} < {start})"
    attrs = s.get("attributes")
    if attrs is not None and not isinstance(attrs, list):
        return f"{where}: attributes must be a list, got {type(attrs).__name__}"
    for kv in attrs or ():
        if not isinstance(kv, dict) or "key" not in kv or not isinstance(kv.get("value"), dict):
            return f"{where}: malformed attribute {str(kv)[:80]}"
    status = s.get("status")
    if status is not None and not isinstance(status, dict):
        return f"{where}: status must be an object, got {type(status).__name__}"
    links = s.get("links")
    if links is not None and not isinstance(links, list):
        return f"{where}: links must be a list, got {type(links).__name__}"
    for j, ln in enumerate(links or ()):
        if not isinstance(ln, dict):
            return f"{where}: link #{j} must be an object, got {type(ln).__name__}"
    return f"{where}: {type(exc).__name__}: {exc}"
