"""InferAudit SDK: find where the cost and latency of AI inference come from.

Importing this package is light (OpenTelemetry API, wrapt, numpy); the SDK wiring
(``configure``) and the torch instrumentation load on first use.

    import inferaudit_sdk as ia

    @ia.audited(model="gpt2", provider="my-team")
    def generate(prompt: str, max_new_tokens: int = 32) -> str: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferaudit_sdk._batch import BatchHandle, batch
from inferaudit_sdk._decorator import audited
from inferaudit_sdk._record import RequestHandle, current_request, record
from inferaudit_sdk._version import VERSION as __version__
from inferaudit_sdk.config import AuditConfig

if TYPE_CHECKING:
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

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
