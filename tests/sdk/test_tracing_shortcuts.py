"""``_tracing``'s shortcuts around the OpenTelemetry API answer exactly what the API would:
the current span and a context holding a span (read straight from the runtime context's
ContextVar), ``decide()`` (one read of the plan and the current span for a batch span), and
the attribute fold every audited span ends with."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags

from inferaudit_sdk import _active, _batch, _tracing

_CTX = SpanContext(0xAB, 0xCD, is_remote=False, trace_flags=TraceFlags(1))


def test_the_default_runtime_takes_the_shortcut() -> None:
    assert _tracing.current_span is not trace.get_current_span
    assert _tracing.context_with_span is not trace.set_span_in_context


@pytest.mark.parametrize("value", [None, NonRecordingSpan(_CTX), "not a span", 42],
                         ids=["nothing", "span", "str", "int"])
def test_current_span_is_the_apis(value: Any) -> None:
    ctx = otel_context.set_value(trace.propagation._SPAN_KEY, value) if value is not None \
        else otel_context.get_current()
    token = otel_context.attach(ctx)
    try:
        assert _tracing.current_span() is trace.get_current_span()
    finally:
        otel_context.detach(token)
    if not isinstance(value, trace.Span):
        token = otel_context.attach(ctx)
        try:
            assert _tracing.current_span() is INVALID_SPAN
        finally:
            otel_context.detach(token)


def test_context_with_span_is_set_span_in_context() -> None:
    base = otel_context.set_value("other-key", "kept")
    token = otel_context.attach(base)
    try:
        span = NonRecordingSpan(_CTX)
        got, want = _tracing.context_with_span(span), trace.set_span_in_context(span)
        assert type(got) is type(want)
        assert dict(got) == dict(want)
        assert got is not otel_context.get_current()  # a new context; the current one unchanged
        assert trace.get_current_span(got) is span
        assert got["other-key"] == "kept"
    finally:
        otel_context.detach(token)


def test_another_runtime_context_goes_through_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    class OtherRuntime:
        _current_context = None

    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", OtherRuntime())
    current, with_span = _tracing._span_ops()
    assert current is trace.get_current_span
    assert with_span is trace.set_span_in_context


@pytest.mark.parametrize("sampler", [
    ALWAYS_ON, ALWAYS_OFF, ParentBased(ALWAYS_ON), ParentBased(ALWAYS_OFF),
    ParentBased(ALWAYS_ON, local_parent_sampled=ALWAYS_OFF), TraceIdRatioBased(0.5),
], ids=["on", "off", "pb-on", "pb-off", "pb-local-off", "ratio"])
@pytest.mark.parametrize("parent", [None, _CTX, SpanContext(0xAB, 0xCD, True, TraceFlags(0))],
                         ids=["root", "local-sampled", "remote-unsampled"])
def test_decide_is_the_decision_for_the_current_parent(sampler: Any, parent: Any) -> None:
    provider = TracerProvider(sampler=sampler)
    _tracing.use_tracer_provider(provider)
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent))) \
        if parent is not None else None
    try:
        plan, ctx, decision = _tracing.decide()
        assert ctx == trace.get_current_span().get_span_context()
        assert decision == _tracing._decision(plan, ctx)
        assert (decision == _tracing.DROP) == _tracing.would_drop()
        span = _tracing.start_decided(plan, ctx, decision, "op")
        if decision == _tracing._KEEP:
            assert span.is_recording()
        elif decision == _tracing.DROP:
            assert not span.is_recording()
        span.end()
    finally:
        if token is not None:
            otel_context.detach(token)
        _tracing.use_tracer_provider(None)
        provider.shutdown()


class _Recorder:
    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.written.append(attributes)


@pytest.mark.parametrize("totals, want", [
    ({"n": 3, "ns": 10}, {"n": 3, "ns": 10}),
    ({"n": 3, "bytes": 2.0}, {"n": 3, "bytes": 2}),
    ({"ms": 1.5, "n": 2}, {"ms": 1.5, "n": 2}),
], ids=["ints", "whole-float", "fraction"])
def test_the_totals_fold(totals: dict[str, Any], want: dict[str, Any]) -> None:
    """Counts stay ints, whole float sums read as ints, fractions stay floats."""
    span = _Recorder()
    state = _active.ActiveSpan(span, "request", True)  # type: ignore[arg-type]
    state.attributes["kept"] = "x"
    for key, value in totals.items():
        state.add(key, value)
    state.flush_attributes()
    assert span.written == [{"kept": "x", **want}]
    assert all(type(span.written[0][k]) is type(v) for k, v in want.items())


def test_a_batch_state_has_every_field_of_an_active_span() -> None:
    state = _batch.BatchSpan(INVALID_SPAN, True, None)
    fresh = _active.ActiveSpan(INVALID_SPAN, "batch", True)
    for slot in _active.ActiveSpan.__slots__:
        assert getattr(state, slot) == getattr(fresh, slot), slot
