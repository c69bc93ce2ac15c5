"""The GenAI server metrics, created once (lazily) from the SDK's proxy meter.

Instruments are made on first use, not at import, and from the API's proxy meter, so they bind
to the MeterProvider that ``configure()`` installs later. Boundaries are the GenAI convention's
advisory buckets from :mod:`inferaudit_sdk.semconv`. Sampled-out requests record no metrics
(the fast path does no work at all), so under trace sampling in the SDK these histograms
describe the sampled requests (docs/semantic-conventions.md says what to do instead).
"""

from __future__ import annotations

import threading
from typing import Any

from inferaudit_sdk import _tracing, semconv
from inferaudit_sdk._guard import guarded

_lock = threading.Lock()
_instruments: _Instruments | None = None


class _Instruments:
    __slots__ = ("duration_s", "tokens", "tpot_s", "ttft_s")

    def __init__(self, meter: Any) -> None:
        self.duration_s = meter.create_histogram(
            semconv.METRIC_SERVER_REQUEST_DURATION,
            unit="s",
            description="Time spent serving one GenAI request (request span duration).",
            explicit_bucket_boundaries_advisory=semconv.BUCKETS_REQUEST_DURATION_S,
        )
        self.ttft_s = meter.create_histogram(
            semconv.METRIC_SERVER_TIME_TO_FIRST_TOKEN,
            unit="s",
            description="Time from the start of a streamed request to its first chunk.",
            explicit_bucket_boundaries_advisory=semconv.BUCKETS_TIME_TO_FIRST_TOKEN_S,
        )
        self.tpot_s = meter.create_histogram(
            semconv.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN,
            unit="s",
            description="Time per output token after the first, for streamed requests.",
            explicit_bucket_boundaries_advisory=semconv.BUCKETS_TIME_PER_OUTPUT_TOKEN_S,
        )
        self.tokens = meter.create_histogram(
            semconv.METRIC_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Input and output tokens per request.",
            explicit_bucket_boundaries_advisory=semconv.BUCKETS_TOKEN_USAGE,
        )


def instruments() -> _Instruments:
    """The instruments (created on the first call; thread-safe)."""
    inst = _instruments
    if inst is None:
        inst = _create()
    return inst


def _create() -> _Instruments:
    global _instruments
    with _lock:
        if _instruments is None:
            _instruments = _Instruments(_tracing.meter())
            created = True
        else:
            created = False
    if created:
        from inferaudit_sdk.sdk import self_metrics

        guarded("metrics.self", self_metrics.install_without_configure, _tracing.meter())
    return _instruments


def reset() -> None:
    """Forget the instruments (after the meter changed); recreated on next use."""
    global _instruments
    with _lock:
        _instruments = None


def record_request(
    attributes: dict[str, Any],
    duration_s: float,
    ttft_s: float | None,
    tpot_s: float | None,
    input_tokens: int | None,
    output_tokens: int | None,
    error_type: str | None = None,
) -> None:
    """Record one finished request. ``attributes`` holds operation, provider and models; it
    is not modified. As the GenAI conventions define them, only the duration carries
    ``error.type``, and time to first token and per output token describe successful
    responses only."""
    inst = instruments()
    if error_type is None:
        inst.duration_s.record(duration_s, attributes)
        if ttft_s is not None:
            inst.ttft_s.record(ttft_s, attributes)
        if tpot_s is not None:
            inst.tpot_s.record(tpot_s, attributes)
    else:
        failed = dict(attributes)
        failed[semconv.ERROR_TYPE] = error_type
        inst.duration_s.record(duration_s, failed)
    if input_tokens is not None:
        attrs = dict(attributes)
        attrs[semconv.GEN_AI_TOKEN_TYPE] = semconv.TOKEN_TYPE_INPUT
        inst.tokens.record(input_tokens, attrs)
    if output_tokens is not None:
        attrs = dict(attributes)
        attrs[semconv.GEN_AI_TOKEN_TYPE] = semconv.TOKEN_TYPE_OUTPUT
        inst.tokens.record(output_tokens, attrs)
