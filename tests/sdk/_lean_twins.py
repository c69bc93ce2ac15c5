"""Twin providers for comparing a LeanSpan with the SDK span (tests/sdk/test_lean_span_*.py).

Each case runs on two providers with the same sampler, limits, resource and a fixed id generator,
so both arms get the same trace and span ids: one starts spans through ``_tracing.start_span``
(asserted to produce a ``LeanSpan``), the other through the SDK tracer's own ``start_span`` with
the same instrumentation scope; :func:`assert_same_spans` compares what they exported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import (
    ReadableSpan,
    TracerProvider,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    SpanContext,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState

from inferaudit_sdk import _lean_plan, _lean_span, _tracing, semconv
from inferaudit_sdk._version import VERSION

# Event timestamps below this were given explicitly (and compare exactly); above it they are
# the clock's (and differ between the arms).
_EXPLICIT_NS_MAX = 10**15
_RANDOM = TraceFlags.RANDOM_TRACE_ID
LIMITS = dict(max_span_attributes=3, max_span_attribute_length=4, max_events=2, max_links=2,
              max_event_attributes=1, max_link_attributes=1)


class FixedIds(IdGenerator):
    """Trace ids from a list (cycled), span ids counting up: twin providers give twin ids."""

    def __init__(self, trace_ids: tuple[int, ...] = (0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6),
                 random: bool = True) -> None:
        self._trace_ids = trace_ids
        self._next_trace = 0
        self._next_span = 0x5000
        self._random = random

    def generate_trace_id(self) -> int:
        tid = self._trace_ids[self._next_trace % len(self._trace_ids)]
        self._next_trace += 1
        return tid

    def generate_span_id(self) -> int:
        self._next_span += 1
        return self._next_span

    def is_trace_id_random(self) -> bool:
        return self._random


class Arm:
    """One side of a comparison: a provider, its exporter, and how spans are started."""

    def __init__(self, lean: bool, provider_kwargs: dict[str, Any]) -> None:
        self.lean = lean
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(**provider_kwargs)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.started: list[Any] = []

    def start(self, name: str, attributes: Any = None, links: Any = ()) -> Any:
        if self.lean:
            _tracing.use_tracer_provider(self.provider)
            assert _lean_plan.plan_for(_tracing.tracer()) is not None, "lean path not planned"
            span = _tracing.start_span(name, attributes, links)
        else:
            tracer = self.provider.get_tracer(semconv.INSTRUMENTATION_NAME, VERSION)
            span = tracer.start_span(name, attributes=attributes, links=links)
        if span.is_recording():
            # The comparison is only worth something if each arm took its own path.
            assert isinstance(span, _lean_span.LeanSpan) is self.lean, type(span)
            assert isinstance(span, SdkSpan) is not self.lean, type(span)
        self.started.append(span)
        return span

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


PairFactory = Callable[..., tuple[Arm, Arm]]


@pytest.fixture
def make_pair() -> Iterator[PairFactory]:
    """``make_pair(lambda: provider_kwargs)`` -> ``(lean, sdk)``; the lambda runs once per arm
    so stateful pieces (id generator, sampler) are not shared."""
    arms: list[Arm] = []

    def make(kwargs: Callable[[], dict[str, Any]] | None = None) -> tuple[Arm, Arm]:
        build = kwargs or (lambda: {})
        pair = []
        for lean in (True, False):
            kw = build()
            kw.setdefault("id_generator", FixedIds())
            pair.append(Arm(lean, kw))
        arms.extend(pair)
        return pair[0], pair[1]

    yield make
    _tracing.use_tracer_provider(None)
    for arm in arms:
        arm.provider.shutdown()


# -- the comparison --------------------------------------------------------------------------
def _typed(value: Any) -> Any:
    """A value with its type spelled out (``1 == True == 1.0`` must not pass)."""
    if isinstance(value, tuple | list):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, Mapping):
        return ("map", [(k, _typed(v)) for k, v in value.items()])
    return (type(value).__name__, value)


def _items(attributes: Any) -> Any:
    """Attributes as an ordered, typed list (``None`` kept distinct from empty)."""
    if attributes is None:
        return None
    assert isinstance(attributes, Mapping), type(attributes)
    return [(k, _typed(v)) for k, v in attributes.items()]


def _ctx(ctx: SpanContext | None) -> Any:
    if ctx is None:
        return None
    return (ctx.trace_id, ctx.span_id, ctx.is_remote, int(ctx.trace_flags),
            list(ctx.trace_state.items()))


def _view(span: ReadableSpan, same_end: bool) -> dict[str, Any]:
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    events = []
    for e in span.events:
        if e.timestamp >= _EXPLICIT_NS_MAX:
            assert span.start_time <= e.timestamp <= span.end_time
        events.append((e.name, _items(e.attributes), e.dropped_attributes,
                       e.timestamp if e.timestamp < _EXPLICIT_NS_MAX else "clock"))
    status = span.status
    return {
        "name": span.name,
        "kind": span.kind,
        "context": _ctx(span.context),
        "parent": _ctx(span.parent),
        "resource": (span.resource.attributes, span.resource.schema_url),
        "scope": span.instrumentation_scope,
        "attributes": _items(span.attributes),
        "dropped_attributes": span.dropped_attributes,
        "events": events,
        "dropped_events": span.dropped_events,
        "links": [(_ctx(link.context), _items(link.attributes), link.dropped_attributes)
                  for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (status.status_code, status.description),
        "end_time": span.end_time if same_end else "clock",
    }


def assert_same_spans(lean: Arm, sdk: Arm, *, count: int | None = None,
                      same_end: bool = False) -> list[ReadableSpan]:
    """The two arms exported the same spans, field by field; returns the lean arm's."""
    got, want = lean.finished(), sdk.finished()
    if count is not None:
        assert len(want) == count
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert type(g) is type(w)
        gv, wv = _view(g, same_end), _view(w, same_end)
        for field in wv:
            assert gv[field] == wv[field], f"{field}: lean {gv[field]!r} != sdk {wv[field]!r}"
    assert [_ctx(s.get_span_context()) for s in lean.started] == \
        [_ctx(s.get_span_context()) for s in sdk.started]
    assert [s.is_recording() for s in lean.started] == [s.is_recording() for s in sdk.started]
    return got


def both(make_pair: PairFactory, scenario: Callable[[Arm], None],
         kwargs: Callable[[], dict[str, Any]] | None = None, **expect: Any) -> list[ReadableSpan]:
    lean, sdk = make_pair(kwargs)
    scenario(lean)
    scenario(sdk)
    return assert_same_spans(lean, sdk, **expect)


def one_span(body: Callable[[Any], None], name: str = "op", attributes: Any = None,
             links: Callable[[], Any] = tuple) -> Callable[[Arm], None]:
    """A scenario: start one span, run ``body`` on it, end it."""
    def run(arm: Arm) -> None:
        span = arm.start(name, attributes, links())
        body(span)
        span.end()
    return run


def _noop(span: Any) -> None:
    return None


# Shared scenario pieces.
_LINKED = SpanContext(0xBEEF, 0xF00D, is_remote=True, trace_flags=TraceFlags(1),
                      trace_state=TraceState([("lk", "lv")]))


def _set_many(span: Any) -> None:
    span.set_attributes({"b": 2, "c": "three", "a": "rewritten"})  # "a" moves to the end
    span.set_attribute("d", 4.5)
    span.set_attribute("b", True)  # rewritten again: moves after "d"
