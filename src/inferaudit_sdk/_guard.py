"""Instrumentation never raises into the host application.

Every piece of bookkeeping the SDK does on a user's call path goes through :func:`guarded` or
:func:`swallow`: a fault is logged once per (component, exception type), counted, and dropped.
The user's own exceptions never pass through here; they are recorded and re-raised untouched.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

_logger = logging.getLogger("inferaudit_sdk")
_T = TypeVar("_T")

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_logged: set[tuple[str, str]] = set()
# Set by the SDK wiring to forward counts to the inferaudit.sdk.errors metric.
_listeners: list[Callable[[str], None]] = []


class OwnMessage:
    """Marks an SDK error whose message the SDK wrote from names, types and numbers only (no
    user value): logged in full whatever the content-capture setting."""


def swallow(component: str, exc: BaseException) -> None:
    """Count and (once per component and exception type) log an instrumentation fault."""
    try:
        key = (component, type(exc).__name__)
        with _lock:
            _counts[component] += 1
            first = key not in _logged
            _logged.add(key)
        if first:
            _logger.warning(
                "inferaudit: instrumentation fault in %s (%s: %s); further ones are counted "
                "in the inferaudit.sdk.errors metric, not logged",
                component, type(exc).__name__, _detail(exc),
            )
        for listener in tuple(_listeners):
            listener(component)
    except Exception:  # the guard itself must never raise
        pass


def _detail(exc: BaseException) -> str:
    """The fault's message where message content may leave the process; else where it was
    raised. A message can quote the user's data (a prompt inside a user object's error, a
    completion passed to the wrong field), and logs are shipped like traces."""
    try:
        from inferaudit_sdk import _settings

        if isinstance(exc, OwnMessage) or _settings.get_config().capture_content:
            return str(exc)
    except Exception:
        pass
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
    return (f"raised at {where}; message withheld while "
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is off")


def guarded(component: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """Call ``fn``; on any ``Exception`` swallow it (see :func:`swallow`) and return ``None``."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        swallow(component, exc)
        return None


def error_counts() -> dict[str, int]:
    """Faults swallowed so far, per component (a copy; for tests and the coverage metric)."""
    with _lock:
        return dict(_counts)


def add_listener(listener: Callable[[str], None]) -> None:
    """Be told the component name of each swallowed fault (used to export the error metric)."""
    _listeners.append(listener)


def reset_for_tests() -> None:
    with _lock:
        _counts.clear()
        _logged.clear()
