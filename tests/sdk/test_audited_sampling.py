"""Sampling: the provider's sampler decides; sampled-out calls skip all attribute work."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

import inferaudit_sdk as ia
from inferaudit_sdk import _active, _guard, _tracing, semconv


class _CountingUsage:
    """A return value that counts how often the SDK looks at it."""

    looked = 0

    @property
    def usage(self):
        type(self).looked += 1
        return {"prompt_tokens": 1, "completion_tokens": 2}


class _DropAll(Sampler):
    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None,
                      links=None, trace_state=None):
        return SamplingResult(Decision.DROP)

    def get_description(self):
        return "DropAll"


def _handlers():
    @ia.audited(model="m")
    def sync(input_ids):
        ia.record(input_tokens=3)
        assert ia.current_request() is not None
        return _CountingUsage()

    @ia.audited(model="m")
    def stream(input_ids):
        yield 1
        yield 2

    return sync, stream


def test_always_off_takes_the_fast_path(make_otel):
    o = make_otel(sampler=ALWAYS_OFF)
    assert _tracing.would_drop() is True
    sync, stream = _handlers()
    _CountingUsage.looked = 0
    sync([1, 2])
    assert list(stream([1])) == [1, 2]
    assert o.spans() == []
    assert _CountingUsage.looked == 0
    assert o.metrics() == {}
    assert _guard.error_counts() == {}
    assert _active.current() is None


def test_custom_dropping_sampler_is_asked_and_work_is_skipped(make_otel):
    o = make_otel(sampler=_DropAll())
    assert _tracing.would_drop() is False  # unknown sampler: the SDK must ask it
    sync, stream = _handlers()
    _CountingUsage.looked = 0
    sync([1, 2])
    list(stream([1]))
    assert o.spans() == []
    assert _CountingUsage.looked == 0
    assert _guard.error_counts() == {}


def test_parent_based_follows_the_parent(make_otel):
    o = make_otel(sampler=ParentBased(ALWAYS_ON))
    tracer = o.tracer()
    assert _tracing.would_drop() is False
    sync, _ = _handlers()
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = NonRecordingSpan(SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(0)))
    with trace.use_span(unsampled):
        assert _tracing.would_drop() is True
        sync([1])
    assert o.spans() == []
    with tracer.start_as_current_span("sampled parent"):
        assert _tracing.would_drop() is False
        sync([1])
    names = [s.name for s in o.spans()]
    assert names == ["text_completion m", "sampled parent"]


def test_ratio_sampler_is_not_short_circuited(make_otel):
    make_otel(sampler=TraceIdRatioBased(0.5))
    assert _tracing.would_drop() is False
    make_otel(sampler=ParentBased(TraceIdRatioBased(0.0)))
    assert _tracing.would_drop() is False  # ratio root: ask the sampler


def test_sampled_in_spans_still_complete(make_otel):
    o = make_otel(sampler=ALWAYS_ON)
    sync, _ = _handlers()
    sync([1, 2])
    (span,) = o.spans()
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2


def test_no_provider_at_all_is_the_fast_path():
    _tracing.use_tracer_provider(None)  # global proxy, nothing installed in this process
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("another test installed a global TracerProvider in this process")
    assert _tracing.would_drop() is True
