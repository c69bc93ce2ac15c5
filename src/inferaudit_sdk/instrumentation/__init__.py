"""Model-call instrumentation: device time, copies, kernel sampling (see ``torch``).

Importing this package does not import torch; torch loads when a model is instrumented.
"""

from __future__ import annotations

from inferaudit_sdk.instrumentation.torch import (
    TorchInstrumentor,
    instrument_generate,
    instrument_model,
    is_instrumented,
    uninstrument_generate,
    uninstrument_model,
)

__all__ = [
    "TorchInstrumentor",
    "instrument_generate",
    "instrument_model",
    "is_instrumented",
    "uninstrument_generate",
    "uninstrument_model",
]
