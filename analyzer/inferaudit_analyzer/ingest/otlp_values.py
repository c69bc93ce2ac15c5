"""OTLP/JSON values → plain Python values, and the id and JSON helpers every reader shares.

Accepts both the OTLP/JSON encoding (hex ids, 64-bit integers as strings) and what generic
protobuf JSON printers emit (base64 ids, numbers).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import orjson

from inferaudit_analyzer.ingest import foreign


def any_value(v: Any) -> Any:
    """Decode an OTLP ``AnyValue`` object (a dict) into a plain Python value."""
    if type(v) is not dict:
        raise TypeError(f"attribute value must be an object, got {type(v).__name__}")
    for t, x in v.items():
        if t == "stringValue":
            return x
        if t == "intValue":
            return int(x)
        if t == "doubleValue":
            return foreign.to_float(x)  # a ValueError, not an OverflowError, past 1e308
        if t == "boolValue":
            return x if type(x) is bool else foreign.to_bool(x)
        if t == "arrayValue":
            return [any_value(e) for e in (x or {}).get("values") or ()]
        if t == "kvlistValue":
            return {kv["key"]: any_value(kv.get("value") or {})
                    for kv in (x or {}).get("values") or ()}
        if t == "bytesValue":
            return x
    return None


def typed_value(v: Any) -> Any:
    """The non-string, non-int cases of a typed ``AnyValue`` struct."""
    if v.intValue is not None:
        return int(v.intValue)
    if v.doubleValue is not None:
        return foreign.to_float(v.doubleValue)
    if v.boolValue is not None:
        return v.boolValue if type(v.boolValue) is bool else foreign.to_bool(v.boolValue)
    if v.arrayValue is not None:
        return [e.stringValue if e.stringValue is not None else typed_value(e)
                for e in v.arrayValue.values or ()]
    if v.kvlistValue is not None:
        return any_value({"kvlistValue": v.kvlistValue})
    return v.bytesValue


def attr_dict(attrs: Any, bad: Callable[[Any, Exception], None] | None = None
              ) -> dict[str, Any]:
    """A ``KeyValue`` list as a dict (the slow, general path: resources, scopes, links).
    With ``bad``, an entry that cannot be read is reported to it (its key, or its place in
    the list, and the error) and left out; without, the error propagates."""
    out: dict[str, Any] = {}
    for i, kv in enumerate(attrs or ()):
        if bad is None:
            out[kv["key"]] = any_value(kv.get("value") or {})
            continue
        try:
            if type(kv) is not dict:
                raise TypeError(f"must be an object with a key and a value, got "
                                f"{type(kv).__name__}")
            key = kv["key"]
            if type(key) is not str:
                raise TypeError(f"key must be a string, got {type(key).__name__}")
            out[key] = any_value(kv.get("value") or {})
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            bad(kv.get("key", f"#{i}") if type(kv) is dict else f"#{i}", exc)
    return out


def hex_id(x: Any) -> str | None:
    """Span/trace id as lowercase hex; OTLP/JSON writes hex, protobuf printers base64."""
    if not x:
        return None
    n = len(x)
    if n == 32 or n == 16:
        return x.lower()
    try:
        return base64.b64decode(x, validate=True).hex()
    except (binascii.Error, ValueError):
        return x.lower()


_HEX = frozenset("0123456789abcdef")


def norm_id(x: str, n_hex: int, field: str) -> str:
    """A span or trace id as lowercase hex (``n_hex`` digits): OTLP/JSON writes hex, which is
    case-insensitive (an upper-case copy of a span is the same span), protobuf printers write
    base64. Anything else (``"abc"``) is no id a link or parent could name.

    Raises:
        ValueError: ``x`` is neither, naming ``field``.
    """
    if len(x) == n_hex:
        low = x.lower()
        if _HEX.issuperset(low):
            return low
    else:
        try:
            raw = base64.b64decode(x, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) * 2 == n_hex:
            return raw.hex()
    raise ValueError(f"{field} {x[:40]!r} is neither {n_hex} hex digits nor the base64 of "
                     f"{n_hex // 2} bytes")


def dumps_bytes(obj: Any) -> bytes:
    """JSON of a decoded value as UTF-8; the stdlib copes where orjson refuses (big ints)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, default=str).encode()


def dumps(obj: Any) -> str:
    """:func:`dumps_bytes` as text."""
    return dumps_bytes(obj).decode()
