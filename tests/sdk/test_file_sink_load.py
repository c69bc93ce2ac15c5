"""No silent loss under load: the file sink keeps every span of a tight producer loop.

The stock ``BatchSpanProcessor`` drops (silently, apart from a log line) whatever does not fit its
queue while the exporter is behind; ours makes the producer wait, boundedly, for the local sink.
Speeds are measured on this machine side by side, never assumed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from inferaudit_sdk.sdk import self_metrics
from inferaudit_sdk.sdk.exporters import FileSpanExporter
from inferaudit_sdk.sdk.processors import CountingBatchSpanProcessor

N_SPANS = 50_000
STOCK_QUEUE = 2048  # BatchSpanProcessor's default max_queue_size
STOCK_BATCH = 512  # and max_export_batch_size


def _produce(tp: TracerProvider, n: int) -> float:
    """End ``n`` spans as fast as possible; seconds taken."""
    tracer = tp.get_tracer("load")
    t0 = time.perf_counter()
    for i in range(n):
        tracer.start_span("s", attributes={"i": i}).end()
    return time.perf_counter() - t0


def _spans_on_disk(files: Sequence[Path]) -> list[int]:
    seen = []
    for path in files:
        for line in path.read_bytes().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    seen += [int(a["value"]["intValue"]) for s in ss["spans"]
                             for a in s["attributes"] if a["key"] == "i"]
    return seen


class _SlowDisk(FileSpanExporter):
    """The real file sink on storage slower than the producer: each batch costs a fixed
    time per span on top of the real write (sleeping releases the GIL, like I/O does)."""

    def __init__(self, directory: Path, per_span_s: float) -> None:
        super().__init__(directory)
        self.per_span_s = per_span_s

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(len(spans) * self.per_span_s)
        return super().export(spans)


def test_counting_processor_keeps_all_50000_spans(tmp_path: Path):
    exporter = FileSpanExporter(tmp_path)
    proc = CountingBatchSpanProcessor(
        exporter, exporter_name="file-load", max_queue_size=STOCK_QUEUE,
        # One batch export must fit in the bound even when a shared CI machine stalls the
        # export thread (100 ms flaked there); production's is AuditConfig.file_block_ms.
        max_export_batch_size=STOCK_BATCH, block_when_full_ms=2000,
    )
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(proc)
    before = self_metrics.exported_counts().get("file-load", 0)
    _produce(tp, N_SPANS)
    tp.shutdown()
    on_disk = _spans_on_disk(exporter.writer.files)
    assert len(on_disk) == N_SPANS and sorted(on_disk) == list(range(N_SPANS))
    assert self_metrics.exported_counts()["file-load"] - before == N_SPANS
    assert sum(c for (e, _), c in self_metrics.dropped_counts().items() if e == "file-load") == 0


def test_stock_pair_drops_where_ours_keeps_everything_on_a_slow_disk(tmp_path: Path):
    n = 10_000
    bare = TracerProvider(shutdown_on_exit=False)
    per_span_s = _produce(bare, 5_000) / 5_000
    # The sink runs at half the producer's speed (plus the real encoding and write).
    slow_s = 2 * per_span_s

    stock_sink = _SlowDisk(tmp_path / "stock", slow_s)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(BatchSpanProcessor(stock_sink))  # stock defaults: 2048 / 512
    _produce(tp, n)
    tp.shutdown()
    stock_kept = len(_spans_on_disk(stock_sink.writer.files))

    ours_sink = _SlowDisk(tmp_path / "ours", slow_s)
    proc = CountingBatchSpanProcessor(
        ours_sink, exporter_name="file-slow", max_queue_size=STOCK_QUEUE,
        max_export_batch_size=STOCK_BATCH,
        # Generous bound for a shared CI machine: one batch export must fit in it.
        block_when_full_ms=2000,
    )
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(proc)
    _produce(tp, n)
    tp.shutdown()
    ours = _spans_on_disk(ours_sink.writer.files)

    print(f"stock BatchSpanProcessor kept {stock_kept}/{n}; ours kept {len(ours)}/{n}")
    assert stock_kept < n, "the stock processor kept up; the sink was not slow enough"
    assert sorted(ours) == list(range(n))
    assert sum(c for (e, _), c in self_metrics.dropped_counts().items() if e == "file-slow") == 0


def test_a_stalled_sink_costs_one_bounded_wait_then_drops_are_counted(tmp_path: Path):
    class _Stuck(FileSpanExporter):
        def __init__(self, directory: Path) -> None:
            super().__init__(directory)
            self.release = False

        def export(self, spans):
            while not self.release:
                time.sleep(0.005)
            return super().export(spans)

    sink = _Stuck(tmp_path)
    proc = CountingBatchSpanProcessor(
        sink, exporter_name="file-stuck", max_queue_size=64, max_export_batch_size=16,
        block_when_full_ms=50,
    )
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(proc)
    before = self_metrics.dropped_counts().get(("file-stuck", "queue_full"), 0)
    _produce(tp, 2_000)
    sink.release = True
    tp.shutdown()
    dropped = self_metrics.dropped_counts()[("file-stuck", "queue_full")] - before
    kept = len(_spans_on_disk(sink.writer.files))
    exported = self_metrics.exported_counts()["file-stuck"]
    assert kept + dropped == 2_000  # every span is either on disk or counted
    assert exported == kept and dropped > 0
    # One bounded wait timed out, then the stall was known: no wait per span.
    assert proc.stall_count == 1
