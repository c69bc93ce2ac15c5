"""The SDK's own coverage metrics: spans exported, spans dropped (and why), faults swallowed.

Counts are kept in plain process-wide tallies (one lock, no OpenTelemetry call on the hot path)
and published through observable counters, so they are correct whichever MeterProvider ends up
reading them and they survive a processor being replaced. An audit states its coverage from
them: ``exported / (exported + dropped)`` per exporter.

- ``inferaudit.sdk.spans.exported`` {span}, attribute ``inferaudit.exporter``
- ``inferaudit.sdk.spans.dropped`` {span}, attributes ``inferaudit.exporter``,
  ``inferaudit.drop.reason`` (``queue_full``, ``export_failed``, ``shutdown``)
- ``inferaudit.sdk.errors`` {fault}, attribute ``inferaudit.component`` (fed by
  :func:`inferaudit_sdk._guard.add_listener`)
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from inferaudit_sdk import _guard, semconv

_lock = threading.Lock()
_exported: Counter[str] = Counter()
_dropped: Counter[tuple[str, str]] = Counter()
_errors: Counter[str] = Counter()
_listener_installed = False
# Meter providers we registered instruments on (weakly: an app may drop its provider).
_installed_on: weakref.WeakSet[Any] = weakref.WeakSet()
_installed_ids: set[int] = set()


_REASONS = (semconv.DROP_REASON_QUEUE_FULL, semconv.DROP_REASON_EXPORT_FAILED,
            semconv.DROP_REASON_SHUTDOWN)


def register_exporter(exporter: str) -> None:
    """Start ``exporter``'s counts at zero (every drop reason too), so a clean run exports
    "0 dropped" explicitly rather than no data point at all."""
    with _lock:
        _exported[exporter] += 0
        for reason in _REASONS:
            _dropped[(exporter, reason)] += 0


def add_exported(exporter: str, n: int) -> None:
    """Count ``n`` spans handed successfully to ``exporter``."""
    if n:
        with _lock:
            _exported[exporter] += n


def add_dropped(exporter: str, reason: str, n: int = 1) -> None:
    """Count ``n`` spans lost on the way to ``exporter`` for ``reason``."""
    if n:
        with _lock:
            _dropped[(exporter, reason)] += n


def exported_counts() -> dict[str, int]:
    """Spans exported so far per exporter (a copy)."""
    with _lock:
        return dict(_exported)


def dropped_counts() -> dict[tuple[str, str], int]:
    """Spans dropped so far per (exporter, reason) (a copy)."""
    with _lock:
        return dict(_dropped)


def error_counts() -> dict[str, int]:
    """Instrumentation faults counted through the guard listener, per component (a copy)."""
    with _lock:
        return dict(_errors)


def _on_fault(component: str) -> None:
    with _lock:
        _errors[component] += 1


def install_guard_listener() -> None:
    """Forward every swallowed fault to ``inferaudit.sdk.errors`` (once per process)."""
    global _listener_installed
    with _lock:
        if _listener_installed:
            return
        _listener_installed = True
        # Faults swallowed before configure() count too.
        _errors.update(_guard.error_counts())
    _guard.add_listener(_on_fault)


def _observe_exported(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(n, {semconv.SDK_EXPORTER: e}) for e, n in exported_counts().items()]


def _observe_dropped(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(n, {semconv.SDK_EXPORTER: e, semconv.SDK_DROP_REASON: r})
        for (e, r), n in dropped_counts().items()
    ]


def _observe_errors(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(n, {semconv.ERROR_COMPONENT: c}) for c, n in error_counts().items()]


def install(meter_provider: MeterProvider, version: str | None = None) -> bool:
    """Register the three observable counters on ``meter_provider`` (once per provider).

    Returns True when it registered them now, False when they already were there.
    """
    if not _first_time(meter_provider):
        return False
    _register(meter_provider.get_meter(semconv.INSTRUMENTATION_NAME, version))
    return True


def install_without_configure(meter: Any) -> None:
    """Without ``configure()`` (the application wired OpenTelemetry itself), register the
    counters on the meter the SDK records with, once: the faults it counts are exported too."""
    with _lock:
        if _installed_on or _installed_ids:
            return  # configure() registered them on its provider
    if _first_time(meter):
        install_guard_listener()
        _register(meter)


def _first_time(owner: Any) -> bool:
    key = id(owner)
    with _lock:
        try:
            if owner in _installed_on:
                return False
            _installed_on.add(owner)
        except TypeError:  # not weak-referenceable: fall back to the id
            if key in _installed_ids:
                return False
            _installed_ids.add(key)
    return True


def _register(meter: Any) -> None:
    meter.create_observable_counter(
        semconv.METRIC_SDK_SPANS_EXPORTED, [_observe_exported], unit="{span}",
        description="Spans handed successfully to an exporter",
    )
    meter.create_observable_counter(
        semconv.METRIC_SDK_SPANS_DROPPED, [_observe_dropped], unit="{span}",
        description="Spans lost before export, by exporter and reason",
    )
    meter.create_observable_counter(
        semconv.METRIC_SDK_ERRORS, [_observe_errors], unit="{fault}",
        description="Instrumentation faults swallowed by the SDK",
    )
