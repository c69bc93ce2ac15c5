"""InferAudit SDK: find where the cost and latency of AI inference come from.

Importing this package costs nothing: every public name loads on first use (the decorator
side needs only the OpenTelemetry API, wrapt and numpy; ``configure`` brings the SDK; the torch
instrumentation loads with ``instrument_model``). So the analyzer and the collector can import
``inferaudit_sdk.semconv`` without paying for the rest.

    import inferaudit_sdk as ia

    @ia.audited(model="gpt2", provider="my-team")
    def generate(prompt: str, max_new_tokens: int = 32) -> str: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferaudit_sdk._version import VERSION as __version__

if TYPE_CHECKING:
    from inferaudit_sdk._batch import BatchHandle, batch
    from inferaudit_sdk._decorator import audited
    from inferaudit_sdk._record import RequestHandle, current_request, record
    from inferaudit_sdk.config import AuditConfig
    from inferaudit_sdk.instrumentation.torch import instrument_model
    from inferaudit_sdk.sdk.provider import AuditHandle, configure, shutdown

__all__ = [
    "AuditConfig",
    "AuditHandle",
    "BatchHandle",
    "RequestHandle",
    "__version__",
    "audited",
    "batch",
    "configure",
    "current_request",
    "instrument_model",
    "record",
    "shutdown",
]

_LAZY = {
    "audited": "inferaudit_sdk._decorator",
    "batch": "inferaudit_sdk._batch",
    "BatchHandle": "inferaudit_sdk._batch",
    "record": "inferaudit_sdk._record",
    "current_request": "inferaudit_sdk._record",
    "RequestHandle": "inferaudit_sdk._record",
    "AuditConfig": "inferaudit_sdk.config",
    "configure": "inferaudit_sdk.sdk.provider",
    "shutdown": "inferaudit_sdk.sdk.provider",
    "AuditHandle": "inferaudit_sdk.sdk.provider",
    "instrument_model": "inferaudit_sdk.instrumentation.torch",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'inferaudit_sdk' has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        if module_name != "inferaudit_sdk.sdk.provider":
            raise
        # The OpenTelemetry SDK failed at import (an OTEL_* value it rejects there): configure
        # must not raise into the application; it reports why and leaves auditing off.
        from inferaudit_sdk._sdk_unavailable import substitutes

        value = substitutes(exc)[name]
    else:
        value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
