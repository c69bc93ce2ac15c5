"""``configure()``: wire InferAudit into OpenTelemetry, using the application's providers if any.

Decision table (docs/configuration.md is the user-facing version):

- A real SDK ``TracerProvider`` is already there (passed in, or set globally; the API's default
  ``ProxyTracerProvider``/``NoOpTracerProvider`` do not count): we use it and never replace it.
  We add exporters to it only when ``AuditConfig.exporters`` (``INFERAUDIT_EXPORTERS``) names
  some explicitly (e.g. ``file`` to keep a local copy for the analyzer); otherwise the app's
  pipeline carries our spans. Same for a ``MeterProvider`` (ours are observable counters, so
  they need no reader of their own).
- Otherwise we build the providers from the standard environment: resource from
  ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` merged over the detected hardware, sampler
  from ``OTEL_TRACES_SAMPLER``/``_ARG`` (both read by the OpenTelemetry SDK itself), exporters
  from ``INFERAUDIT_EXPORTERS``, else ``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER``, else
  ``file`` into ``AuditConfig.trace_dir``. OTLP endpoints, headers, timeouts and compression are
  read by the OTLP exporters themselves; the protocol (``http/protobuf`` or ``grpc``) by us.
- ``OTEL_SDK_DISABLED=true``: nothing is built and nothing exported.

Idempotent: a second ``configure()`` while one is active returns the active handle (with the new
config made current for the decorators); call :func:`shutdown` first to rebuild. Bad environment
values warn and fall back; wrong argument types raise ``TypeError``.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from inferaudit_sdk._guard import guarded
from inferaudit_sdk._version import VERSION
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.sdk import self_metrics
from inferaudit_sdk.sdk.exporters import (
    EXPORTER_FILE,
    FileMetricExporter,
    make_metric_exporter,
    make_span_exporter,
    resolve_exporters,
)
from inferaudit_sdk.sdk.processors import CountingBatchSpanProcessor, drain_profiles
from inferaudit_sdk.sdk.resource import build_resource

_logger = logging.getLogger("inferaudit_sdk")


_lock = threading.RLock()
# At shutdown, the part of the timeout kept for the final metrics collection (at most).
_METRICS_RESERVE_S = 1.0
_current: AuditHandle | None = None
# Providers this module built and set globally (OTel allows that once per process): a later
# configure() after shutdown() reuses them instead of mistaking them for the application's.
_own_global_tracer_provider: TracerProvider | None = None
_own_global_meter_provider: MeterProvider | None = None


class AuditHandle:
    """What :func:`configure` set up; flush or shut down through it.

    Attributes:
        config: the active :class:`AuditConfig`.
        tracer_provider / meter_provider: the providers in use (ours or the app's; None when
            disabled).
        owns_tracer_provider / owns_meter_provider: True when InferAudit built them.
        trace_exporters / metric_exporters: exporter names actually installed by us.
        trace_dir: where the file sink writes, or None without one.
        disabled: True under ``OTEL_SDK_DISABLED=true`` or ``INFERAUDIT_ENABLED=false``.
    """

    def __init__(
        self,
        config: AuditConfig,
        *,
        tracer_provider: trace_api.TracerProvider | None = None,
        meter_provider: metrics_api.MeterProvider | None = None,
        owns_tracer_provider: bool = False,
        owns_meter_provider: bool = False,
        processors: Sequence[CountingBatchSpanProcessor] = (),
        metric_exporters: Sequence[str] = (),
        metric_exporter_objs: Sequence[MetricExporter] = (),
        trace_dir: Path | None = None,
        disabled: bool = False,
    ) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.owns_tracer_provider = owns_tracer_provider
        self.owns_meter_provider = owns_meter_provider
        self.processors = tuple(processors)
        self.trace_exporters = tuple(p.exporter_name for p in self.processors)
        self.metric_exporters = tuple(metric_exporters)
        self._metric_exporter_objs = tuple(metric_exporter_objs)
        self.trace_dir = trace_dir
        self.disabled = disabled
        self._shut = False
        self._lock = threading.Lock()
        # The SDK tracer/meter configure() pointed at this handle's (non-global) providers;
        # shutdown() points them back at the global proxies if they are still these.
        self._bound_tracer: Any = None
        self._bound_meter: Any = None

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything buffered by our processors (and our metric readers) now; the file
        sink fsyncs. Returns False if something did not finish in ``timeout_s``. Never raises."""
        if self._shut:
            return False
        deadline = time.monotonic() + max(0.0, timeout_s)
        ok = drain_profiles(deadline)
        for proc in self.processors:
            try:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
                ok = proc.force_flush(timeout_ms) and ok
            except Exception:
                _logger.exception("inferaudit: flushing %s failed", proc.exporter_name)
                ok = False
        if self.owns_meter_provider and isinstance(self.meter_provider, MeterProvider):
            try:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
                ok = bool(self.meter_provider.force_flush(timeout_ms)) and ok
            except Exception:
                _logger.exception("inferaudit: flushing metrics failed")
                ok = False
        return ok

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Flush and stop what InferAudit built (never the application's providers). Idempotent;
        never raises."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        timeout_s = max(0.0, timeout_s)
        deadline = time.monotonic() + timeout_s
        # A network exporter retrying against a dead collector uses all the time it is given:
        # the span processors stop a share of the budget early, so the final metrics
        # collection (the coverage counters) still reaches the file sink.
        spans_deadline = deadline - min(_METRICS_RESERVE_S, timeout_s / 4)

        def remaining_ms() -> int:
            return max(0, int((spans_deadline - time.monotonic()) * 1000))

        drain_profiles(spans_deadline)  # sampled calls' spans end once their traces are out
        _detach_processors(self.tracer_provider, self.processors)
        self._unbind_sdk_instruments()
        # The local file first: it finishes in milliseconds, and must not wait behind OTLP.
        for proc in sorted(self.processors, key=lambda p: p.exporter_name != EXPORTER_FILE):
            try:
                proc.shutdown(remaining_ms())
            except Exception:
                _logger.exception("inferaudit: shutting down %s failed", proc.exporter_name)
        # The metric provider goes last so its final collection sees the final span counts.
        if self.owns_meter_provider and isinstance(self.meter_provider, MeterProvider):
            self._shutdown_metrics(deadline)
        # After the final metric collection, which reads the sampler's last window.
        _stop_gpu_sampler()
        global _current
        with _lock:
            if _current is self:
                _current = None

    def _unbind_sdk_instruments(self) -> None:
        """Undo :func:`_bind_sdk_instruments`: after shutdown the decorators must not keep
        sending spans to this handle's provider, nor to a later configure()'s."""
        from inferaudit_sdk import _tracing

        try:
            if self._bound_tracer is not None and _tracing.tracer() is self._bound_tracer:
                _tracing.use_tracer_provider(None)
            if self._bound_meter is not None and _tracing.meter() is self._bound_meter:
                _tracing.use_meter_provider(None)
        except Exception:
            _logger.debug("inferaudit: could not unbind the SDK's tracer/meter", exc_info=True)
        self._bound_tracer = self._bound_meter = None

    def _shutdown_metrics(self, deadline: float) -> None:
        """MeterProvider.shutdown with a real deadline: an OTLP metric exporter retrying
        against a dead collector ignores the timeout it is given, so past the deadline we shut
        the exporters down under it, which aborts their retries."""
        mp = self.meter_provider
        assert isinstance(mp, MeterProvider)

        def run() -> None:
            try:
                mp.shutdown(max(0, int((deadline - time.monotonic()) * 1000)))
            except Exception:
                _logger.exception("inferaudit: shutting down metrics failed")

        worker = threading.Thread(target=run, name="InferAuditMetricsShutdown", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            for exporter in self._metric_exporter_objs:
                if isinstance(exporter, FileMetricExporter):
                    continue
                try:
                    exporter.shutdown()
                except Exception:
                    _logger.debug("inferaudit: metric exporter shutdown failed", exc_info=True)
            worker.join(1.0)

    def __repr__(self) -> str:
        return (
            f"AuditHandle(traces={self.trace_exporters}, metrics={self.metric_exporters}, "
            f"trace_dir={self.trace_dir}, owns_tracer_provider={self.owns_tracer_provider}, "
            f"disabled={self.disabled})"
        )


# ---------------------------------------------------------------------------------------------
# Environment resolution (warn + default, never raise)
# ---------------------------------------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _span_processor(name: str, config: AuditConfig) -> CountingBatchSpanProcessor | None:
    """One processor per exporter, so a dead collector cannot hold up the local file."""
    exporter = make_span_exporter(name, config)
    if exporter is None:
        return None
    return CountingBatchSpanProcessor(
        exporter,
        exporter_name=name,
        max_queue_size=config.max_queue_size,
        max_export_batch_size=config.max_export_batch_size,
        schedule_delay_ms=config.schedule_delay_ms,
        # Only the local sink may make the app wait (bounded); the network never does.
        block_when_full_ms=config.file_block_ms if name == EXPORTER_FILE else 0,
    )


def _is_real_tracer_provider(tp: Any) -> bool:
    return not isinstance(tp, trace_api.ProxyTracerProvider | trace_api.NoOpTracerProvider)


def _is_real_meter_provider(mp: Any) -> bool:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    return not isinstance(mp, _ProxyMeterProvider | metrics_api.NoOpMeterProvider)


# ---------------------------------------------------------------------------------------------
# configure / shutdown
# ---------------------------------------------------------------------------------------------
def _check_args(config: Any, tracer_provider: Any, meter_provider: Any, overrides: dict) -> None:
    if config is not None and not isinstance(config, AuditConfig):
        raise TypeError(f"configure(config=...) needs an AuditConfig, got {type(config).__name__}")
    if tracer_provider is not None and not isinstance(tracer_provider, trace_api.TracerProvider):
        raise TypeError(
            "configure(tracer_provider=...) needs an opentelemetry TracerProvider, got "
            f"{type(tracer_provider).__name__}"
        )
    if meter_provider is not None and not isinstance(meter_provider, metrics_api.MeterProvider):
        raise TypeError(
            "configure(meter_provider=...) needs an opentelemetry MeterProvider, got "
            f"{type(meter_provider).__name__}"
        )
    known = {f.name for f in dataclasses.fields(AuditConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"configure() got unknown AuditConfig fields: {', '.join(unknown)}")


def configure(
    config: AuditConfig | None = None,
    *,
    tracer_provider: trace_api.TracerProvider | None = None,
    meter_provider: metrics_api.MeterProvider | None = None,
    **overrides: Any,
) -> AuditHandle:
    """Wire InferAudit's exporters, processors, resource and self-metrics (see module doc).

    Args:
        config: settings (default ``AuditConfig.from_env()``).
        tracer_provider / meter_provider: the application's providers, to use instead of the
            global ones; never replaced, never shut down by us. The decorators use them until
            :func:`shutdown`, which points them back at the global providers.
        **overrides: AuditConfig fields to override, e.g. ``trace_dir="/var/audit"``.

    Returns:
        The active :class:`AuditHandle` (the existing one when already configured).

    Raises:
        TypeError: a wrongly-typed argument or an unknown override name (a programming error).
            Bad environment values never raise: they warn and fall back to defaults.
    """
    _check_args(config, tracer_provider, meter_provider, overrides)
    cfg = config if config is not None else AuditConfig.from_env()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)  # __post_init__ type-checks -> TypeError
    _set_config(cfg)
    global _current
    with _lock:
        if _current is not None and not _current.is_shutdown:
            _logger.info(
                "inferaudit: configure() called again; keeping the active pipeline (call "
                "inferaudit_sdk.shutdown() first to rebuild it)"
            )
            _current.config = cfg
            return _current
        try:
            handle = build(cfg, tracer_provider=tracer_provider, meter_provider=meter_provider)
            _bind_sdk_instruments(handle)
        except Exception as exc:  # never break the application's start-up
            _logger.exception("inferaudit: configure() failed (%s); auditing is off", exc)
            handle = AuditHandle(cfg, disabled=True)
        else:
            _start_gpu_sampler(handle)
        _current = handle
        return handle


def _start_gpu_sampler(handle: AuditHandle) -> None:
    """Start the NVML sampler with the pipeline, so GPU counters flow as metrics even before a
    model is instrumented. Without a GPU (or with INFERAUDIT_NVML=false) it logs once and stays
    off; it never fails configure()."""
    if handle.disabled or not handle.config.enabled or not handle.config.nvml_enabled:
        return
    from inferaudit_sdk.samplers import nvml

    guarded("nvml.start", nvml.start_sampler, handle.config, meter_provider=handle.meter_provider)


def _stop_gpu_sampler() -> None:
    from inferaudit_sdk.samplers import nvml

    guarded("nvml.stop", nvml.stop_sampler)


def _bind_sdk_instruments(handle: AuditHandle) -> None:
    """Point the decorators' tracer/meter at the providers in use when those are not the
    global ones (an explicit ``tracer_provider=`` argument): the API's global proxies would
    never reach them."""
    from inferaudit_sdk import _tracing

    tp, mp = handle.tracer_provider, handle.meter_provider
    if tp is not None and tp is not trace_api.get_tracer_provider():
        _tracing.use_tracer_provider(tp)
        handle._bound_tracer = _tracing.tracer()
    if mp is not None and mp is not metrics_api.get_meter_provider():
        _tracing.use_meter_provider(mp)
        handle._bound_meter = _tracing.meter()


def _set_config(cfg: AuditConfig) -> None:
    from inferaudit_sdk import _settings

    _settings.set_config(cfg)


def build(
    cfg: AuditConfig,
    *,
    tracer_provider: trace_api.TracerProvider | None = None,
    meter_provider: metrics_api.MeterProvider | None = None,
    set_global: bool = True,
    resource: Resource | None = None,
) -> AuditHandle:
    """Build (or attach to) the providers for ``cfg`` without the once-per-process guard.

    ``set_global=False`` neither reads nor sets the global providers: tests use it to build
    several independent pipelines in one process. ``configure()`` is the public entry point.
    """
    global _own_global_tracer_provider, _own_global_meter_provider
    if _env_true("OTEL_SDK_DISABLED") or not cfg.enabled:
        _logger.info("inferaudit: SDK disabled (OTEL_SDK_DISABLED / INFERAUDIT_ENABLED); no export")
        return AuditHandle(cfg, disabled=True)
    self_metrics.install_guard_listener()

    tp: trace_api.TracerProvider | None = tracer_provider
    if tp is None and set_global:
        current = trace_api.get_tracer_provider()
        if _is_real_tracer_provider(current):
            tp = current
    owns_tp = tp is None or tp is _own_global_tracer_provider
    mp: metrics_api.MeterProvider | None = meter_provider
    if mp is None and set_global:
        current_mp = metrics_api.get_meter_provider()
        if _is_real_meter_provider(current_mp) and current_mp is not _own_global_meter_provider:
            mp = current_mp
    owns_mp = mp is None

    trace_names, trace_source = resolve_exporters(cfg, "traces")
    metric_names, metric_source = resolve_exporters(cfg, "metrics")
    if not owns_tp:
        # The app's own pipeline carries our spans; add to it only what was asked for in code
        # or INFERAUDIT_EXPORTERS, and build metrics only when asked for too.
        if trace_source != "config":
            trace_names = ()
        if metric_source in ("default", "endpoint"):  # not asked for by name
            metric_names = ()
    processors = [p for p in (_span_processor(n, cfg) for n in trace_names) if p is not None]
    file_on = any(p.exporter_name == EXPORTER_FILE for p in processors)
    if file_on and EXPORTER_FILE not in metric_names:
        # The coverage counters must reach the analyzer even when OTLP is down.
        metric_names = (*metric_names, EXPORTER_FILE)

    res = resource
    if res is None and tp is not None:
        # metrics describe the same service as the app's traces: its resource, not ours
        app_resource = getattr(tp, "resource", None)
        if isinstance(app_resource, Resource):
            res = app_resource
    if (tp is None or (owns_mp and mp is None)) and res is None:
        res = build_resource(cfg)
    if tp is None:
        tp = TracerProvider(resource=res, shutdown_on_exit=False)
        if set_global:
            trace_api.set_tracer_provider(tp)
            _own_global_tracer_provider = tp
    _add_processors(tp, processors)

    installed_metric_names: list[str] = []
    metric_exporter_objs: list[MetricExporter] = []
    readers: list[PeriodicExportingMetricReader] = []
    if mp is None:
        # The local file reader first: at shutdown the readers run in order, and a dead
        # collector must not keep the coverage counters from reaching the disk.
        for name in sorted(metric_names, key=lambda n: n != EXPORTER_FILE):
            exporter = make_metric_exporter(name, cfg)
            if exporter is not None:
                readers.append(PeriodicExportingMetricReader(exporter))
                installed_metric_names.append(name)
                metric_exporter_objs.append(exporter)
    if mp is None and readers:
        mp = MeterProvider(metric_readers=readers, resource=res, shutdown_on_exit=False)
        if set_global:
            if _own_global_meter_provider is None:
                metrics_api.set_meter_provider(mp)
                _own_global_meter_provider = mp
            else:
                _logger.warning(
                    "inferaudit: metrics were already configured once in this process; new "
                    "metrics go to the new exporters only through the handle's provider"
                )
    if mp is None:
        # Nothing to read metrics: leave the global MeterProvider free for the application.
        owns_mp = False
    else:
        self_metrics.install(mp, VERSION)

    # (_add_processors may have refused them all: then no file sink is writing spans.)
    file_on = any(p.exporter_name == EXPORTER_FILE for p in processors)
    trace_dir = Path(cfg.trace_dir).resolve() if file_on else None
    handle = AuditHandle(
        cfg,
        tracer_provider=tp,
        meter_provider=mp,
        owns_tracer_provider=owns_tp,
        owns_meter_provider=owns_mp,
        processors=processors,
        metric_exporters=installed_metric_names,
        metric_exporter_objs=metric_exporter_objs,
        trace_dir=trace_dir,
    )
    if set_global:
        atexit.register(handle.shutdown)
    return handle


def _add_processors(tp: trace_api.TracerProvider, processors: list[SpanProcessor]) -> None:
    if not processors:
        return
    add = getattr(tp, "add_span_processor", None)
    if add is None:
        _logger.warning(
            "inferaudit: the application's TracerProvider (%s) cannot take span processors; "
            "the requested exporters are not installed", type(tp).__name__,
        )
        for proc in processors:
            proc.shutdown(0)
        processors.clear()
        return
    for proc in processors:
        add(proc)


def _detach_processors(tp: Any, processors: Sequence[SpanProcessor]) -> None:
    """Take our processors out of ``tp`` so spans ended after shutdown() are not offered to
    (and counted as dropped by) a pipeline that no longer exists. Best effort: the SDK has no
    public removal API, and a provider that is not the SDK's is left alone."""
    multi = getattr(tp, "_active_span_processor", None)
    lock = getattr(multi, "_lock", None)
    if multi is None or lock is None or not hasattr(multi, "_span_processors"):
        return
    try:
        with lock:
            multi._span_processors = tuple(
                p for p in multi._span_processors if all(p is not q for q in processors)
            )
    except Exception:
        _logger.debug("inferaudit: could not detach processors", exc_info=True)


def current_handle() -> AuditHandle | None:
    """The active handle, or None before ``configure()`` / after ``shutdown()``."""
    return _current


def shutdown(timeout_s: float = 30.0) -> None:
    """Flush and stop what the active ``configure()`` built. Never raises."""
    handle = _current
    if handle is not None:
        handle.shutdown(timeout_s)


__all__ = ["AuditHandle", "build", "configure", "current_handle", "shutdown"]
