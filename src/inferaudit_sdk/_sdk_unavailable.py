"""``configure`` / ``shutdown`` where the OpenTelemetry SDK itself cannot load.

The SDK reads some ``OTEL_*`` variables when it is imported (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
=-1`` raises there), so ``import opentelemetry.sdk.trace`` can fail before any of our code
runs. ``ia.configure()`` must still not raise into the application: it logs why, once, and
returns a handle that is disabled; the decorators keep running on the API's no-op tracer.
"""

from __future__ import annotations

import logging
from typing import Any

_logger = logging.getLogger("inferaudit_sdk")


class DisabledHandle:
    """What ``configure`` returns when the SDK cannot load: auditing is off, nothing to flush."""

    disabled = True
    tracer_provider = meter_provider = trace_dir = None
    owns_tracer_provider = owns_meter_provider = False
    trace_exporters: tuple[str, ...] = ()
    metric_exporters: tuple[str, ...] = ()

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.config: Any = None

    def force_flush(self, timeout_s: float | None = None) -> bool:
        return True

    def shutdown(self, timeout_s: float | None = None) -> None:
        return None

    def __repr__(self) -> str:
        return f"DisabledHandle({self.reason!r})"


def substitutes(exc: BaseException) -> dict[str, Any]:
    """``configure``, ``shutdown`` and ``AuditHandle`` stand-ins, logging ``exc`` once."""
    reason = f"{type(exc).__name__}: {exc}"
    logged = False

    def configure(*args: Any, **kwargs: Any) -> DisabledHandle:
        nonlocal logged
        if not logged:
            logged = True
            _logger.warning("inferaudit: the OpenTelemetry SDK cannot load (%s); auditing is "
                            "off. Fix the OTEL_* setting it names.", reason)
        return DisabledHandle(reason)

    def shutdown(*args: Any, **kwargs: Any) -> None:
        return None

    return {"configure": configure, "shutdown": shutdown, "AuditHandle": DisabledHandle}
