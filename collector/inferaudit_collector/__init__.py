"""InferAudit's collector wing: the embedded OTLP receiver behind ``inferaudit collect``.

It writes what it receives as OTLP JSON lines, the format of the OpenTelemetry Collector's
``file`` exporter, so the analyzer reads this receiver's output and a Collector's the same way.
Imports only ``inferaudit_sdk.semconv`` from the SDK (none at the moment) and never the analyzer.
"""

from __future__ import annotations

from .service import Collector, CollectorConfig, IngestResult, Outcome

__all__ = ["Collector", "CollectorConfig", "IngestResult", "Outcome"]
