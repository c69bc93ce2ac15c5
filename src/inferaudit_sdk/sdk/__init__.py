"""OpenTelemetry wiring: providers, exporters, the counting batch processor, the resource."""

from __future__ import annotations

from inferaudit_sdk.sdk.provider import AuditHandle, configure, current_handle, shutdown

__all__ = ["AuditHandle", "configure", "current_handle", "shutdown"]
