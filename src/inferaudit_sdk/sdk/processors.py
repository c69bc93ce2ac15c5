"""A batch span processor that never loses a span without counting it.

Same shape as the OpenTelemetry SDK's ``BatchSpanProcessor`` (bounded queue, one worker thread,
export in batches every ``schedule_delay_ms`` or as soon as a batch is full, ``force_flush``,
``shutdown``), with two differences that matter to an audit:

- every span that does not reach the exporter is counted in ``inferaudit.sdk.spans.dropped``
  with its reason (queue full, export failed after the exporter's own retries, ended after
  shutdown), and every exported one in ``inferaudit.sdk.spans.exported``;
- optional *bounded backpressure*: with ``block_when_full_ms > 0`` (used for the local file
  sink) a producer that finds the queue full waits up to that long for the worker to make room
  before it drops. If one such wait times out the sink is taken to be stalled and later spans
  drop at once (no waiting) until an export succeeds again, so a stuck disk costs the
  application at most one bounded wait, not one per span. Network exporters use 0: they never
  block the application.

The queue bound is soft under concurrency (a few producers racing may overshoot it by one span
each); nothing is ever evicted silently.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref

from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    Context,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import TraceFlags

from inferaudit_sdk import semconv
from inferaudit_sdk.sdk import self_metrics

_SAMPLED = TraceFlags.SAMPLED

_logger = logging.getLogger("inferaudit_sdk")


def drain_profiles(deadline: float) -> bool:
    """Wait (until ``deadline``, monotonic s) for the profile export worker, where the spans of
    sampled model calls end (also when the application flushes its own provider). Never
    raises."""
    try:
        from inferaudit_sdk.instrumentation import _profiler_sampling

        return _profiler_sampling.drain(max(0.0, deadline - time.monotonic()))
    except Exception:
        _logger.exception("inferaudit: waiting for the profile exports failed")
        return False


class CountingBatchSpanProcessor(SpanProcessor):
    """Batching processor with counted drops and optional bounded backpressure.

    Args:
        exporter: any ``SpanExporter``; called from the worker thread only (or from the
            thread calling ``force_flush``/``shutdown``), never concurrently.
        exporter_name: value of ``inferaudit.exporter`` on the coverage counters.
        max_queue_size: spans buffered before the queue counts as full.
        max_export_batch_size: spans per ``exporter.export`` call.
        schedule_delay_ms: longest a span waits before the worker exports it.
        block_when_full_ms: bounded wait for space when full (0: drop at once).

    Thread-safety: ``on_end`` may be called from any number of threads.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        exporter_name: str,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_ms: float = 500,
        block_when_full_ms: float = 0,
    ) -> None:
        self.exporter = exporter
        self.exporter_name = exporter_name
        self._max_queue = max(1, int(max_queue_size))
        self._max_batch = max(1, min(int(max_export_batch_size), self._max_queue))
        self._delay_s = max(0.0, float(schedule_delay_ms)) / 1000
        self._block_s = max(0.0, float(block_when_full_ms)) / 1000
        self_metrics.register_exporter(exporter_name)
        self._init_threading()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._at_fork_reinit)

            def _after_in_child() -> None:
                reinit = weak_reinit()
                if reinit is not None:
                    reinit()

            os.register_at_fork(after_in_child=_after_in_child)

    def _init_threading(self) -> None:
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._space = threading.Condition(threading.Lock())
        self._flush_lock = threading.Lock()
        self._flush_requests: list[threading.Event] = []
        self._stalled = False
        self.stall_count = 0  # bounded waits that timed out (each one starts a stall)
        self._shutdown = False
        self._pid = os.getpid()
        self._worker = threading.Thread(
            name=f"InferAuditBatch-{self.exporter_name}", target=self._run, daemon=True
        )
        self._worker.start()

    def _at_fork_reinit(self) -> None:
        # The parent still owns (and exports) what was queued before the fork.
        self._init_threading()

    # -- producer side -------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span (sampled ones only). Never raises; may wait up to
        ``block_when_full_ms`` when the queue is full and the sink is not stalled."""
        if not span.context.trace_flags & _SAMPLED:  # .sampled, a property call less
            return
        if self._shutdown:
            self_metrics.add_dropped(self.exporter_name, semconv.DROP_REASON_SHUTDOWN)
            return
        queue = self._queue
        if len(queue) >= self._max_queue and not self._wait_for_space():
            self_metrics.add_dropped(self.exporter_name, semconv.DROP_REASON_QUEUE_FULL)
            return
        queue.append(span)
        if len(queue) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    def _wait_for_space(self) -> bool:
        """True when there is room now; False means drop this span."""
        if self._block_s <= 0 or self._stalled or threading.current_thread() is self._worker:
            return False
        self._wake.set()
        deadline = time.monotonic() + self._block_s
        with self._space:
            while len(self._queue) >= self._max_queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._shutdown:
                    self._stalled = True
                    self.stall_count += 1
                    # Once per processor: the counters carry the rest, not a log storm.
                    log = _logger.warning if self.stall_count == 1 else _logger.debug
                    log(
                        "inferaudit: %s sink did not keep up for %.0f ms; dropping (and counting) "
                        "spans until it recovers", self.exporter_name, self._block_s * 1000,
                    )
                    return False
                self._space.wait(remaining)
        return True

    # -- worker side (the only thread that calls the exporter) -----------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            with self._flush_lock:
                pending, self._flush_requests = self._flush_requests, []
            self._drain()
            for event in pending:  # everything queued before the request is exported now
                event.set()
            if self._shutdown:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            n = min(self._max_batch, len(queue))
            batch = [queue.popleft() for _ in range(n)]
            with self._space:
                self._space.notify_all()
            self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            result = self.exporter.export(batch)
        except Exception:
            _logger.exception("inferaudit: exporter %s raised", self.exporter_name)
            result = SpanExportResult.FAILURE
        finally:
            detach(token)
        if result is SpanExportResult.SUCCESS:
            self._stalled = False
            self_metrics.add_exported(self.exporter_name, len(batch))
        else:
            self_metrics.add_dropped(
                self.exporter_name, semconv.DROP_REASON_EXPORT_FAILED, len(batch)
            )

    # -- lifecycle -----------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Have the worker export everything queued now, then flush the exporter (the file sink
        fsyncs). Waits at most ``timeout_millis``; False if that was not enough, after
        shutdown, or when the exporter's flush failed. A hung exporter cannot hang the caller.
        """
        if self._shutdown or not self._worker.is_alive():
            return False
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        drain_profiles(deadline)  # sampled calls' spans end once their traces are written
        done = threading.Event()
        with self._flush_lock:
            self._flush_requests.append(done)
        self._wake.set()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            return False
        flush = getattr(self.exporter, "force_flush", None)
        if flush is None:
            return True
        try:
            flushed = flush(max(0, int((deadline - time.monotonic()) * 1000)))
            return flushed is None or bool(flushed)  # the base class's "hint" returns None
        except Exception:
            _logger.exception("inferaudit: exporter %s failed to flush", self.exporter_name)
            return False

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Let the worker export what is queued (within the timeout), then shut the exporter
        down; past the timeout the exporter is shut down under the worker (which aborts OTLP
        retries) and whatever is still queued is counted as dropped. Idempotent."""
        if self._shutdown:
            return
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        drain_profiles(deadline)  # before the queue closes: those spans end into it
        self._shutdown = True
        self._wake.set()
        with self._space:
            self._space.notify_all()
        own_thread = self._worker is threading.current_thread()
        if self._worker.is_alive() and not own_thread:
            self._worker.join(max(0.0, deadline - time.monotonic()))
        try:
            self.exporter.shutdown()
        except Exception:
            _logger.exception("inferaudit: exporter %s failed to shut down", self.exporter_name)
        if self._worker.is_alive() and not own_thread:
            # The exporter's shutdown aborts its retries: let the in-flight batch be counted.
            self._worker.join(0.5)
        left = 0
        while self._queue:
            try:
                self._queue.popleft()
            except IndexError:
                break
            left += 1
        if left:
            self_metrics.add_dropped(self.exporter_name, semconv.DROP_REASON_SHUTDOWN, left)

    @property
    def queue_length(self) -> int:
        """Spans waiting for export now (for tests and diagnostics)."""
        return len(self._queue)
