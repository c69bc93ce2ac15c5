"""The SDK's defaults a lean span handles without calling into them: the random id generator
(drawn from ``random.getrandbits`` in the SDK's order), the SpanContext tuple, no-op span
metrics, the synchronous processor loop and live event limits. Each is compared with the SDK
span through the twin providers of tests/sdk/_lean_twins.py."""

from __future__ import annotations

import random
from typing import Any

import pytest
from _lean_twins import Arm, PairFactory, assert_same_spans
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased
from opentelemetry.trace import SpanContext, TraceFlags

from inferaudit_sdk import _lean_plan, _lean_span, _tracing


def _random_ids() -> dict[str, Any]:
    return {"id_generator": RandomIdGenerator()}


def _seeded(lean: Arm, sdk: Arm, scenario: Any, seed: int = 1234) -> None:
    """Run ``scenario`` on each arm from the same random state: twin ids."""
    for arm in (lean, sdk):
        random.seed(seed)
        scenario(arm)


def _root_and_child(arm: Arm) -> None:
    root = arm.start("root", {"a": 1})
    token = _tracing.attach(trace.set_span_in_context(root))
    try:
        arm.start("child", {"b": "x"}).end()
    finally:
        _tracing.detach(token)
    root.end()


@pytest.mark.parametrize("sampler", [None, ALWAYS_ON, TraceIdRatioBased(1.0)],
                         ids=["default", "always-on", "ratio-1"])
def test_default_ids_are_the_sdks_draws(make_pair: PairFactory, sampler: Any) -> None:
    kwargs = _random_ids if sampler is None else (lambda: {**_random_ids(), "sampler": sampler})
    lean, sdk = make_pair(kwargs)
    _seeded(lean, sdk, _root_and_child)
    spans = assert_same_spans(lean, sdk, count=2)
    child, root = spans
    assert child.parent == root.context
    assert root.context.trace_flags & TraceFlags.RANDOM_TRACE_ID


def test_span_context_is_the_tuple_its_constructor_builds(make_pair: PairFactory) -> None:
    lean, sdk = make_pair(_random_ids)
    _seeded(lean, sdk, lambda arm: arm.start("op").end())
    got, want = lean.started[0].get_span_context(), sdk.started[0].get_span_context()
    assert type(got) is type(want) is SpanContext
    assert tuple(got) == tuple(want)
    assert got.is_valid and not got.is_remote
    assert got.trace_state is want.trace_state or got.trace_state == want.trace_state


def test_a_zero_draw_is_drawn_again(make_pair: PairFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """As RandomIdGenerator: an id of 0 is invalid, and is drawn again."""
    lean, sdk = make_pair(_random_ids)
    for arm in (lean, sdk):
        draws = iter([0, 0xABC, 0, 0x123])
        monkeypatch.setattr(random, "getrandbits", lambda bits, d=draws: next(d))
        arm.start("op").end()
    assert_same_spans(lean, sdk, count=1)
    ctx = lean.started[0].get_span_context()
    assert (ctx.trace_id, ctx.span_id) == (0xABC, 0x123)


def test_without_the_tuple_layout_the_constructor_runs(make_pair: PairFactory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert _lean_span._tuple_layout()  # this API's SpanContext is the plain tuple
    monkeypatch.setattr(_lean_span, "_TUPLE_LAYOUT", False)
    lean, sdk = make_pair(_random_ids)
    _seeded(lean, sdk, _root_and_child)
    assert_same_spans(lean, sdk, count=2)


def test_no_op_span_metrics_are_not_called(make_pair: PairFactory) -> None:
    lean, _ = make_pair(_random_ids)
    span = lean.start("op")
    assert span._metrics_end is None
    span.end()
    assert len(lean.finished()) == 1


def test_span_metrics_count_as_the_sdks(make_pair: PairFactory,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the sampler's answer is known (the default ParentBased(ALWAYS_ON)), the SDK's
    own span metrics, when on, still count started and live spans as for its own span."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    readers = []

    def with_metrics() -> dict[str, Any]:
        reader = InMemoryMetricReader()
        readers.append(reader)
        return {**_random_ids(), "meter_provider": MeterProvider(metric_readers=[reader])}

    lean, sdk = make_pair(with_metrics)

    def scenario(arm: Arm) -> None:
        _root_and_child(arm)
        arm.start("open")  # left open: counted live

    _seeded(lean, sdk, scenario)
    assert lean.started[0]._metrics_end is not None
    assert_same_spans(lean, sdk, count=2)

    def points(reader: InMemoryMetricReader) -> list[tuple[str, Any, Any]]:
        out = []
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for p in metric.data.data_points:
                        out.append((metric.name, sorted(p.attributes.items()), p.value))
        return sorted(out)

    got, want = points(readers[0]), points(readers[1])
    assert want and got == want


def test_the_sdks_processor_loop_is_run_directly(make_pair: PairFactory) -> None:
    lean, _ = make_pair(_random_ids)
    plan = _lean_plan.plan_for(lean.provider.get_tracer("t"))
    assert plan is not None and plan.direct
    lean.start("op").end()
    assert len(lean.finished()) == 1


def test_a_patched_on_end_is_called(make_pair: PairFactory) -> None:
    """An ``on_end`` replaced on the multi-processor (instance or class) is what runs."""
    lean, sdk = make_pair(_random_ids)
    seen: list[str] = []
    for arm in (lean, sdk):
        multi = arm.provider._active_span_processor
        original = multi.on_end

        def on_end(span: Any, original: Any = original) -> None:
            seen.append(span.name)
            original(span)

        multi.on_end = on_end
    plan = _lean_plan.plan_for(lean.provider.get_tracer("t"))
    assert plan is not None and not plan.direct
    _seeded(lean, sdk, _root_and_child)
    assert seen == ["child", "root", "child", "root"]
    assert_same_spans(lean, sdk, count=2)


def test_live_events_are_bounded_as_they_arrive(make_pair: PairFactory) -> None:
    """The oldest event goes as a new one arrives, on the live span too (memory stays
    bounded for an application that adds many events to one of our spans)."""
    lean, sdk = make_pair(lambda: {"span_limits": SpanLimits(max_events=3)})
    live = []
    for arm in (lean, sdk):
        span = arm.start("op")
        for i in range(50):
            span.add_event(f"e{i}", {"i": i}, timestamp=i + 1)
        live.append(([e.name for e in span.events], span.dropped_events))
        span.end()
    assert live[0] == live[1] == (["e47", "e48", "e49"], 47)
    assert len(lean.started[0]._events) == 3
    exported = assert_same_spans(lean, sdk, count=1)
    assert exported[0].dropped_events == 47
