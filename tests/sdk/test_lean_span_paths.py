"""Lean spans under every sampler and parent, and only where they are exact: which path
``_tracing.start_span`` takes for each provider and processor pipeline (tests/sdk/_lean_twins.py
has the twin-provider comparison)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _lean_twins import (
    _LINKED,
    _RANDOM,
    Arm,
    FixedIds,
    PairFactory,
    _set_many,
    _view,
    assert_same_spans,
    both,
    one_span,
)
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ConcurrentMultiSpanProcessor,
    ReadableSpan,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState

from inferaudit_sdk import _lean_plan, _lean_span, _tracing, semconv
from inferaudit_sdk._version import VERSION
from inferaudit_sdk.sdk.processors import CountingBatchSpanProcessor


def _events(span: Any) -> None:
    span.add_event("plain")
    span.add_event("with-attrs", {"k": 1, "list": ["a", "b"]})
    span.add_event("explicit-time", {"t": True}, timestamp=1_000)


# -- samplers --------------------------------------------------------------------------------
class _TaggingSampler(Sampler):
    """Records and samples, adding an attribute and a trace state; remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None
                      ) -> SamplingResult:
        self.seen.append((parent_context, trace_id, name, kind,
                          None if attributes is None else dict(attributes),
                          None if links is None else len(links)))
        added = dict(attributes or {})
        added["sampler.tag"] = "tagged"
        decision = Decision.RECORD_AND_SAMPLE if name != "record-only" else Decision.RECORD_ONLY
        return SamplingResult(decision, added, TraceState([("vendor", "v1")]))

    def get_description(self) -> str:
        return "TaggingSampler"


def _roots_and_child(arm: Arm) -> None:
    parent = arm.start("root", {"a": 1}, [Link(_LINKED, {"l": 1})])
    with trace.use_span(parent):
        arm.start("child", {"b": 2}).end()
    parent.end()


SAMPLERS = [
    pytest.param(None, id="default-parentbased-always-on"),
    pytest.param(lambda: ALWAYS_ON, id="always-on"),
    pytest.param(lambda: ALWAYS_OFF, id="always-off"),
    pytest.param(lambda: ParentBased(ALWAYS_OFF), id="parentbased-always-off"),
    pytest.param(lambda: ParentBased(TraceIdRatioBased(0.5)), id="parentbased-ratio"),
    pytest.param(_TaggingSampler, id="custom-sampler"),
    pytest.param(lambda: ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON,
                                     local_parent_not_sampled=ALWAYS_ON), id="parentbased-all-on"),
    pytest.param(lambda: ParentBased(ParentBased(ALWAYS_ON)), id="nested-parentbased"),
    pytest.param(lambda: StaticSampler(Decision.RECORD_ONLY), id="static-record-only"),
]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("random_ids", [True, False], ids=["random-ids", "nonrandom-ids"])
def test_samplers_match(make_pair: PairFactory, sampler: Any, random_ids: bool) -> None:
    def kwargs() -> dict[str, Any]:
        kw: dict[str, Any] = {"id_generator": FixedIds(random=random_ids)}
        if sampler is not None:
            kw["sampler"] = sampler()
        return kw
    lean, sdk = make_pair(kwargs)
    _roots_and_child(lean)
    _roots_and_child(sdk)
    assert_same_spans(lean, sdk)
    for a, b in zip(lean.started, sdk.started, strict=True):
        assert type(a) is NonRecordingSpan or isinstance(a, _lean_span.LeanSpan)
        assert (type(a) is NonRecordingSpan) == (type(b) is NonRecordingSpan)
        flags = a.get_span_context().trace_flags
        assert bool(flags & _RANDOM) is random_ids
    if isinstance(lean.provider.sampler, _TaggingSampler):
        assert lean.provider.sampler.seen == sdk.provider.sampler.seen
        assert lean.finished()[0].attributes["sampler.tag"] == "tagged"


def test_always_off_gives_unsampled_nonrecording(make_pair: PairFactory) -> None:
    lean, sdk = make_pair(lambda: {"sampler": ALWAYS_OFF})
    for arm in (lean, sdk):
        span = arm.start("dropped", {"a": 1})
        span.set_attribute("b", 2)
        span.end()
    assert_same_spans(lean, sdk, count=0)
    assert type(lean.started[0]) is NonRecordingSpan
    ctx = lean.started[0].get_span_context()
    assert ctx.is_valid and not ctx.trace_flags.sampled


# Trace ids on both sides of TraceIdRatioBased(0.5)'s bound (it reads the low 64 bits).
_RATIO_IDS = (0x1, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000,
              0xABC_0000_0000_0000_0000_0000_0000_0001)


def test_ratio_sampler_fixed_trace_ids(make_pair: PairFactory) -> None:
    lean, sdk = make_pair(lambda: {"sampler": TraceIdRatioBased(0.5),
                                   "id_generator": FixedIds(_RATIO_IDS)})
    for arm in (lean, sdk):
        for i in range(len(_RATIO_IDS)):
            arm.start(f"r{i}", {"i": i}).end()
    assert_same_spans(lean, sdk)
    sampled = [s.get_span_context().trace_flags.sampled for s in lean.started]
    assert sampled == [True, False, True, False, True]


def test_record_only_sampler(make_pair: PairFactory) -> None:
    """RECORD_ONLY: a recording, unsampled span; Simple processors export none of it, a
    processor that sees every on_end gets the same span from both."""
    class Collect(SpanProcessor):
        def __init__(self) -> None:
            self.ended: list[ReadableSpan] = []

        def on_end(self, span: ReadableSpan) -> None:
            self.ended.append(span)

    lean, sdk = make_pair(lambda: {"sampler": _TaggingSampler()})
    collected = []
    for arm in (lean, sdk):
        collect = Collect()
        arm.provider.add_span_processor(collect)
        collected.append(collect)
        span = arm.start("record-only", {"a": 1})
        assert span.is_recording()
        span.set_attribute("b", 2)
        span.end()
    assert_same_spans(lean, sdk, count=0)
    (got,), (want,) = collected[0].ended, collected[1].ended
    assert _view(got, False) == _view(want, False)
    assert not got.context.trace_flags.sampled


def test_sampler_sees_links_none_as_empty(make_pair: PairFactory) -> None:
    """``start_span(..., links=None)``: the SDK hands the sampler ``()`` (links or ())."""
    lean, sdk = make_pair(lambda: {"sampler": _TaggingSampler()})
    for arm in (lean, sdk):
        arm.start("op", {"a": 1}, None).end()
    assert_same_spans(lean, sdk, count=1)
    assert sdk.provider.sampler.seen[0][-1] == 0
    assert lean.provider.sampler.seen == sdk.provider.sampler.seen, (
        "lean hands the sampler links=None where the SDK hands it ()")


# -- parentage -------------------------------------------------------------------------------
def test_child_of_current_lean_span(make_pair: PairFactory) -> None:
    def run(arm: Arm) -> None:
        parent = arm.start("parent", {"p": 1})
        with trace.use_span(parent):
            child = arm.start("child", {"c": 1})
            with trace.use_span(child):
                arm.start("grandchild").end()
            child.end()
        parent.end()
    lean, sdk = make_pair()
    run(lean)
    run(sdk)
    grandchild, child, parent = assert_same_spans(lean, sdk, count=3)
    assert parent.parent is None
    assert child.parent == parent.context and grandchild.parent == child.context
    assert child.context.trace_id == parent.context.trace_id == grandchild.context.trace_id


def test_lean_child_of_application_span(make_pair: PairFactory) -> None:
    def run(arm: Arm) -> None:
        with arm.provider.get_tracer("app").start_as_current_span("app-root"):
            arm.start("ours", {"a": 1}).end()
    ours, app = both(make_pair, run, count=2)
    assert ours.parent == app.context


def test_sdk_child_of_lean_span(make_pair: PairFactory) -> None:
    """An application span started under a current LeanSpan (another tracer) is its child."""
    lean, _ = make_pair()
    parent = lean.start("parent")
    with trace.use_span(parent):
        child = lean.provider.get_tracer("app").start_span("app-child")
        child.end()
    parent.end()
    app, ours = lean.finished()
    assert app.parent == ours.context and app.context.trace_id == ours.context.trace_id


REMOTE_FLAGS = [
    pytest.param(TraceFlags.SAMPLED, id="sampled"),
    pytest.param(TraceFlags.SAMPLED | _RANDOM, id="sampled-random"),
    pytest.param(TraceFlags.DEFAULT, id="not-sampled"),
    pytest.param(_RANDOM, id="not-sampled-random"),
]


@pytest.mark.parametrize("flags", REMOTE_FLAGS)
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("is_remote", [True, False], ids=["remote", "local"])
def test_parent_context(make_pair: PairFactory, flags: int, sampler: Any, is_remote: bool
                        ) -> None:
    """A span under a current non-recording parent (remote: propagated in; local: e.g. an
    unsampled application span) takes its trace id, flags and trace state as the SDK does."""
    remote = SpanContext(0x1234_5678, 0x9ABC, is_remote=is_remote, trace_flags=TraceFlags(flags),
                         trace_state=TraceState([("rk", "rv"), ("other", "x")]))

    def run(arm: Arm) -> None:
        with trace.use_span(NonRecordingSpan(remote)):
            arm.start("under-remote", {"a": 1}).end()
    kwargs = (lambda: {"sampler": sampler()}) if sampler else None
    lean, sdk = make_pair(kwargs)
    run(lean)
    run(sdk)
    spans = assert_same_spans(lean, sdk)
    ctx = lean.started[0].get_span_context()
    assert ctx.trace_id == remote.trace_id
    assert bool(ctx.trace_flags & _RANDOM) == bool(flags & _RANDOM)
    if sampler is None:
        assert ctx.trace_state == remote.trace_state
        assert len(spans) == (1 if flags & TraceFlags.SAMPLED else 0)
    if spans:
        assert spans[0].parent == remote


# -- which path: lean only where it is exact --------------------------------------------------
class _TagOnStart(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        span.set_attribute("tagged.on_start", True)


class _SeeOnEnding(SpanProcessor):
    """Reads the span while it ends (it can no longer write to it)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def _on_ending(self, span: Any) -> None:
        self.seen.append(span)


class _InertDocstring(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do when a span starts."""


class _InertReturnNone(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def _on_ending(self, span: Any) -> None:
        pass


@pytest.fixture
def bind() -> Iterator[Callable[..., InMemorySpanExporter]]:
    """``bind(*processors, **provider_kwargs)``: a provider with those processors, then a
    Simple processor into the returned exporter, bound to ``_tracing``."""
    made: list[TracerProvider] = []

    def make(*processors: SpanProcessor, **kwargs: Any) -> InMemorySpanExporter:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(**kwargs)
        made.append(provider)
        for p in processors:
            provider.add_span_processor(p)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _tracing.use_tracer_provider(provider)
        return exporter

    yield make
    _tracing.use_tracer_provider(None)
    for provider in made:
        provider.shutdown()


Bind = Callable[..., InMemorySpanExporter]


def test_on_start_processor_falls_back_to_sdk(bind: Bind) -> None:
    exporter = bind(_TagOnStart())
    assert _lean_plan.plan_for(_tracing.tracer()) is None
    span = _tracing.start_span("op", {"a": 1})
    assert isinstance(span, SdkSpan) and not isinstance(span, _lean_span.LeanSpan)
    span.end()
    (done,) = exporter.get_finished_spans()
    assert done.attributes["tagged.on_start"] is True and done.attributes["a"] == 1


def test_on_ending_processor_falls_back_to_sdk(bind: Bind) -> None:
    seer = _SeeOnEnding()
    exporter = bind(seer)
    assert _lean_plan.plan_for(_tracing.tracer()) is None
    span = _tracing.start_span("op", {"a": 1})
    assert isinstance(span, SdkSpan)
    span.end()
    assert seer.seen == [span] and len(exporter.get_finished_spans()) == 1


@pytest.mark.parametrize("processor", [_InertDocstring, _InertReturnNone, SpanProcessor])
def test_inert_processor_stays_lean(bind: Bind, processor: Any) -> None:
    exporter = bind(processor())
    span = _tracing.start_span("op", {"a": 1})
    assert isinstance(span, _lean_span.LeanSpan)
    span.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["op"]


def test_on_start_patched_on_instance(bind: Bind) -> None:
    patched = SpanProcessor()
    patched.on_start = lambda span, parent_context=None: span.set_attribute("patched", True)
    exporter = bind(patched)
    _tracing.start_span("op").end()
    (done,) = exporter.get_finished_spans()
    assert done.attributes.get("patched") is True


def test_wrapt_wrapped_on_start_falls_back_to_sdk(bind: Bind) -> None:
    """An agent's wrapt wrapper around a no-op on_start passes ``__code__`` through; it still
    counts as doing something."""
    import wrapt

    seen: list[str] = []

    class Wrapped(SpanProcessor):
        pass

    def hook(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        args[0].set_attribute("hooked", True)
        seen.append("on_start")
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(Wrapped, "on_start", hook)
    exporter = bind(Wrapped())
    assert _lean_plan.plan_for(_tracing.tracer()) is None
    _tracing.start_span("op").end()
    (done,) = exporter.get_finished_spans()
    assert seen == ["on_start"] and done.attributes["hooked"] is True


def test_wrapped_tracer_start_span_falls_back(bind: Bind) -> None:
    """A Tracer.start_span an agent wrapped (on the instance here) is called, not bypassed."""
    import functools

    exporter = bind()
    tracer = _tracing.tracer()
    own = tracer.start_span
    calls: list[str] = []

    @functools.wraps(own)
    def watched(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else kwargs["name"])
        return own(*args, **kwargs)

    tracer.start_span = watched
    try:
        _tracing.start_span("watched").end()
    finally:
        del tracer.start_span
    assert calls == ["watched"] and len(exporter.get_finished_spans()) == 1


def test_sampler_swapped_after_first_span_is_honoured(bind: Bind) -> None:
    exporter = bind()
    _tracing.start_span("first").end()
    _tracing.tracer().sampler = ALWAYS_OFF  # not public, but the SDK would honour it
    dropped = _tracing.start_span("after-swap")
    assert not dropped.is_recording()
    dropped.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["first"]


def test_record_only_sampler_is_not_a_drop(bind: Bind) -> None:
    """RECORD_ONLY records (unsampled): would_drop must not skip the span."""
    bind(sampler=StaticSampler(Decision.RECORD_ONLY))
    assert not _tracing.would_drop()
    span = _tracing.start_span("op")
    assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    span.end()


def test_processor_added_later_switches_to_sdk(bind: Bind) -> None:
    exporter = bind()
    first = _tracing.start_span("first")
    assert isinstance(first, _lean_span.LeanSpan)
    _tracing.tracer().span_processor.add_span_processor(_TagOnStart())
    second = _tracing.start_span("second")
    assert isinstance(second, SdkSpan)
    second.end()
    first.end()
    done = {s.name: s for s in exporter.get_finished_spans()}
    assert done["second"].attributes["tagged.on_start"] is True
    assert "tagged.on_start" not in done["first"].attributes  # it had started before


def test_concurrent_multi_processor_stays_lean(make_pair: PairFactory) -> None:
    lean, sdk = make_pair(lambda: {"active_span_processor": ConcurrentMultiSpanProcessor(2)})
    scenario = one_span(_set_many, attributes={"a": 1}, links=lambda: [Link(_LINKED, {"l": 1})])
    scenario(lean)
    scenario(sdk)
    assert isinstance(lean.started[0], _lean_span.LeanSpan)
    assert_same_spans(lean, sdk, count=1)


def test_counting_batch_processor_is_inert(make_pair: PairFactory) -> None:
    lean, sdk = make_pair()
    batch_exporters = []
    for arm in (lean, sdk):
        batch_exporters.append(InMemorySpanExporter())
        arm.provider.add_span_processor(CountingBatchSpanProcessor(
            batch_exporters[-1], exporter_name="test_lean_span", schedule_delay_ms=10))
        one_span(_events, attributes={"a": 1})(arm)
        assert arm.provider.force_flush(5_000)
    assert isinstance(lean.started[0], _lean_span.LeanSpan)
    assert_same_spans(lean, sdk, count=1)
    (got,), (want,) = (e.get_finished_spans() for e in batch_exporters)
    assert _view(got, False) == _view(want, False)


def test_noop_provider_gives_nonrecording(bind: Bind) -> None:
    _tracing.use_tracer_provider(trace.NoOpTracerProvider())
    assert _lean_plan.plan_for(_tracing.tracer()) is None
    span = _tracing.start_span("op", {"a": 1}, [Link(_LINKED)])
    assert not span.is_recording() and not span.get_span_context().is_valid
    span.set_attribute("b", 2)
    span.add_event("e")
    span.end()


def test_unbound_proxy_gives_nonrecording(bind: Bind, monkeypatch: pytest.MonkeyPatch) -> None:
    # As before any global provider is set (other tests in this process may have set one).
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    _tracing.use_tracer_provider(None)
    assert isinstance(_tracing.tracer(), trace.ProxyTracer)
    span = _tracing.start_span("op", {"a": 1})
    assert not span.is_recording() and not isinstance(span, _lean_span.LeanSpan)
    span.end()


def test_sdk_disabled_by_env(bind: Bind, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exporter = bind()
    span = _tracing.start_span("op", {"a": 1})
    assert not span.is_recording()
    span.end()
    assert not exporter.get_finished_spans()


def test_deprecated_instrumentation_info(make_pair: PairFactory) -> None:
    lean, sdk = make_pair()
    for arm in (lean, sdk):
        arm.start("op").end()
    (got,), (want,) = lean.finished(), sdk.finished()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert want.instrumentation_info is not None
        assert got.instrumentation_info == want.instrumentation_info


def test_resource_and_scope_come_from_provider(make_pair: PairFactory) -> None:
    resource = Resource({"service.name": "svc", "n": 3}, schema_url="https://schema/x")
    lean, sdk = make_pair(lambda: {"resource": resource})
    for arm in (lean, sdk):
        arm.start("op").end()
    (span,) = assert_same_spans(lean, sdk, count=1)
    assert span.resource.attributes["service.name"] == "svc"
    assert span.instrumentation_scope.name == semconv.INSTRUMENTATION_NAME
    assert span.instrumentation_scope.version == VERSION


def test_resource_updated_while_span_open(make_pair: PairFactory) -> None:
    """The SDK merges a process resource at fork (``_update_resource``); a span started before
    keeps the resource it started with."""
    lean, sdk = make_pair(lambda: {"resource": Resource({"service.name": "svc"})})
    for arm in (lean, sdk):
        span = arm.start("op")
        arm.provider._update_resource(Resource({"process.pid": 4242}))
        span.end()
    assert_same_spans(lean, sdk, count=1)


def test_disabled_tracer_gives_parent_context(make_pair: PairFactory) -> None:
    from opentelemetry.sdk.trace import _disable_tracer_configurator

    remote = SpanContext(0x42, 0x43, is_remote=True, trace_flags=TraceFlags(1))
    lean, sdk = make_pair()
    for arm in (lean, sdk):
        arm.provider._set_tracer_configurator(tracer_configurator=_disable_tracer_configurator)
        with trace.use_span(NonRecordingSpan(remote)):
            arm.start("op", {"a": 1}).end()
    assert_same_spans(lean, sdk, count=0)
    assert lean.started[0].get_span_context() == remote


def test_sdk_internal_span_metrics_match(make_pair: PairFactory,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With the SDK's own span metrics on, both paths count the same started/live spans."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    readers = []

    def kwargs() -> dict[str, Any]:
        reader = InMemoryMetricReader()
        readers.append(reader)
        return {"meter_provider": MeterProvider(metric_readers=[reader]),
                "sampler": ParentBased(TraceIdRatioBased(0.5)),
                "id_generator": FixedIds(_RATIO_IDS)}

    lean, sdk = make_pair(kwargs)
    remote = SpanContext(0x99, 0x98, is_remote=True, trace_flags=TraceFlags(1))
    for arm in (lean, sdk):
        for i in range(len(_RATIO_IDS)):
            arm.start(f"r{i}").end()
        with trace.use_span(NonRecordingSpan(remote)):
            arm.start("remote-child")  # left open: counted live
        parent = arm.start("parent")
        with trace.use_span(parent):
            arm.start("local-child").end()
        parent.end()
    assert_same_spans(lean, sdk)

    def points(reader: Any) -> list[Any]:
        out = []
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.extend((m.name, sorted(p.attributes.items()), p.value)
                               for p in m.data.data_points)
        return sorted(out)

    got, want = points(readers[0]), points(readers[1])
    assert want, "the SDK recorded no internal span metrics"
    assert got == want


