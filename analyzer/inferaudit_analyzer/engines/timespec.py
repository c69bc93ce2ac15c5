"""``--since`` / ``--until`` values → epoch ns (kept import-light: the CLI parser uses it)."""

from __future__ import annotations

import datetime as _dt
import re
import time

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time_ns(text: str, now_ns: int | None = None) -> int:
    """``2026-01-01T00:00:00Z`` (ISO 8601; naive means UTC), epoch seconds (``1767225600``,
    fractions allowed), or a duration before now (``90m``, ``6h``, ``2d``).

    Raises:
        ValueError: none of those forms; the message quotes the text.
    """
    t = text.strip()
    m = _REL.match(t)
    if m:
        now = time.time_ns() if now_ns is None else now_ns
        return now - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1_000_000_000)
    try:
        secs = float(t)
    except ValueError:
        pass
    else:
        if secs != secs or secs in (float("inf"), float("-inf")):
            raise ValueError(f"not a time: {text!r}")
        return round(secs * 1_000_000_000)
    try:
        dt = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time (ISO 8601, epoch seconds, or e.g. 6h): {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    delta = dt - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
