"""Spans handed straight to the provider's span processors, without the SDK's per-span machinery.

Why: a batch-1 forward of a small model lasts a few ms, and the OpenTelemetry SDK's own ``Span``
costs it several percent on its own (bench/device_overhead.py, ``span_floor``): a lock and a
validation pass for every attribute, twice (at start and at ``set_attributes``), an attribute
container with its own lock, a bounded list per span for events and links, and a copy into a
``ReadableSpan`` at the end. A :class:`LeanSpan` keeps its attributes in a plain dict, checks a
value's type in one step (anything but ``str``/``int``/``float``/``bool`` goes through the SDK's
own cleaner), and builds the ``ReadableSpan`` once, at ``end()``.

Nothing the application configured is bypassed: the span comes from the provider's sampler, id
generator, resource and span limits, carries the tracer's instrumentation scope, counts in the
SDK's internal span metrics when those are on, and ends in the provider's processors, so every
exporter sees what the SDK's span would have produced (tests/sdk/test_lean_span_fields.py and
test_lean_span_paths.py compare the two field by field). :mod:`._lean_plan` decides where that
holds: the SDK's own ``Tracer`` and ``start_span``, and span processors that do nothing when a
span starts or is ending. Anywhere else the tracer's own ``start_span`` runs, unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as trace_api
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from inferaudit_sdk import semconv

if TYPE_CHECKING:
    from inferaudit_sdk._lean_plan import LeanPlan

# The SDK span's own warnings come from this logger: the same ones, for the same filters.
_sdk_logger = logging.getLogger("opentelemetry.sdk.trace")
_time_ns = time.time_ns
_INTERNAL = SpanKind.INTERNAL
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED_RANDOM: Any = None  # TraceFlags(SAMPLED | RANDOM_TRACE_ID), bound by _load()
# Values stored as given (the SDK's cleaner returns these unchanged too).
_PLAIN = frozenset((str, int, float, bool))
_STR = frozenset((str,))
_MISSING = object()
# Held only to decide which of two racing end() calls exports the span, as the SDK's lock does.
_end_lock = threading.Lock()


def _new_end_lock() -> None:
    global _end_lock
    _end_lock = threading.Lock()  # a fork while another thread held it would leave it held


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_end_lock)

# SDK classes, bound by _load() the first time an SDK tracer is planned.
_ReadableSpan: Any = None
_Event: Any = None
_BoundedAttributes: Any = None
_BoundedList: Any = None
_clean_value: Any = None
_RECORD_AND_SAMPLE: Any = None
_RandomIdGenerator: Any = None
_NoOpTracerMetrics: Any = None
_SyncMulti: Any = None
_TUPLE_LAYOUT = False  # SpanContext is the tuple its __new__ builds (checked by _load)
_tuple_new = tuple.__new__
_DEFAULT_STATE = trace_api.DEFAULT_TRACE_STATE
_MULTI: tuple[type, ...] = ()


def _load() -> bool:
    global _ReadableSpan, _Event, _BoundedAttributes, _BoundedList, _clean_value, _MULTI
    global _RECORD_AND_SAMPLE, _SAMPLED_RANDOM, _RandomIdGenerator, _NoOpTracerMetrics, _SyncMulti
    global _TUPLE_LAYOUT
    if _ReadableSpan is not None:
        return True
    try:
        from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
        from opentelemetry.sdk.trace import (
            ConcurrentMultiSpanProcessor,
            Event,
            ReadableSpan,
            SynchronousMultiSpanProcessor,
        )
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.trace.sampling import Decision
        from opentelemetry.sdk.util import BoundedList
    except ImportError:  # an SDK without these: its own start_span it is
        return False
    _Event, _BoundedAttributes, _BoundedList = Event, BoundedAttributes, BoundedList
    _clean_value = _clean_attribute_value
    _MULTI = (SynchronousMultiSpanProcessor, ConcurrentMultiSpanProcessor)
    _RECORD_AND_SAMPLE = Decision.RECORD_AND_SAMPLE
    # An API without RANDOM_TRACE_ID gets no lean plan (_lean_plan), so this is never used there.
    _SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
    _ReadableSpan = ReadableSpan
    _RandomIdGenerator = RandomIdGenerator
    _SyncMulti = SynchronousMultiSpanProcessor
    _TUPLE_LAYOUT = _tuple_layout()
    try:
        from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
    except ImportError:  # an SDK without span metrics: its no-op is not known here
        NoOpTracerMetrics = type("_Never", (), {})
    _NoOpTracerMetrics = NoOpTracerMetrics
    return True


def _tuple_layout() -> bool:
    """True where a SpanContext is the plain tuple ``(trace_id, span_id, is_remote, flags,
    trace_state, is_valid)``, as the API's ``__new__`` builds it."""
    try:
        built = SpanContext(1, 2, False, _SAMPLED, None)
        made = _tuple_new(SpanContext, (1, 2, False, _SAMPLED, _DEFAULT_STATE, True))
        return (tuple(built) == tuple(made) and made.is_valid and made.trace_id == 1
                and made.span_id == 2 and made.trace_state is _DEFAULT_STATE
                and made.trace_flags is _SAMPLED and not made.is_remote)
    except Exception:
        return False


def start_span(plan: LeanPlan, name: str, attributes: Mapping[str, Any] | None,
               links: Sequence[Link], parent: SpanContext | None, keep: bool) -> Any:
    """What ``plan.tracer.start_span(name, attributes=..., links=...)`` would return under the
    current span context ``parent``: a recording :class:`LeanSpan`, or a ``NonRecordingSpan``
    where the sampler drops it. ``keep``: the caller knows the sampler is ALWAYS_ON for this
    parent (its answer: record and sample, the given attributes, the parent's trace state)."""
    tracer = plan.tracer
    links = links or ()
    if not tracer._is_enabled():
        return trace_api.NonRecordingSpan(context=parent)
    ids = tracer.id_generator
    # The SDK's default generator is random.getrandbits, never 0, trace id first: called
    # straight, in that order (ids stay what the SDK would draw from the same seed).
    default_ids = type(ids) is _RandomIdGenerator
    getrandbits = random.getrandbits  # looked up per call, as the SDK's generator does
    if parent is None or not parent.is_valid:
        parent = None
        if default_ids:
            trace_id = getrandbits(128)
            while not trace_id:
                trace_id = getrandbits(128)
            random_id = True
        else:
            trace_id = ids.generate_trace_id()
            random_id = ids.is_trace_id_random()
    else:
        trace_id = parent.trace_id
        random_id = parent.trace_flags.random_trace_id
    if keep:  # ALWAYS_ON's answer: record and sample, the given attributes
        decision = _RECORD_AND_SAMPLE
        trace_state = parent.trace_state if parent is not None else None
        flags = _SAMPLED_RANDOM if random_id else _SAMPLED
    else:
        result = tracer.sampler.should_sample(None, trace_id, name, _INTERNAL, attributes,
                                              links)
        decision = result.decision
        attributes = result.attributes
        trace_state = result.trace_state
        flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED
        if random_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
    if default_ids:  # drawn after the sampler, as the SDK does
        span_id = getrandbits(64)
        while not span_id:
            span_id = getrandbits(64)
    else:
        span_id = ids.generate_span_id()
    if default_ids and _TUPLE_LAYOUT:
        # SpanContext(...) without its Python __new__: the tuple that builds, for ids that are
        # valid by construction (non-zero draws of 128 and 64 bits).
        context = _tuple_new(SpanContext, (
            trace_id, span_id, False, flags,
            _DEFAULT_STATE if trace_state is None else trace_state, True))
    else:
        context = SpanContext(trace_id, span_id, False, flags, trace_state)
    metrics = tracer._tracer_metrics
    # The SDK's no-op metrics answer with a function that does nothing: not called at all.
    on_end = None if type(metrics) is _NoOpTracerMetrics \
        else metrics.start_span(parent, decision)
    if not keep and not decision.is_recording():
        return trace_api.NonRecordingSpan(context=context)
    return LeanSpan(plan, name, context, parent, attributes, links, on_end)


class LeanSpan(trace_api.Span):
    """A recording span whose data is plain Python until ``end()`` builds its ReadableSpan.
    Attribute limits, cleaning, ordering and dropped counts follow the SDK's
    ``BoundedAttributes`` step for step; writes after ``end()`` are ignored, as there."""

    __slots__ = ("_attrs", "_context", "_dropped", "_end_ns", "_events", "_links", "_metrics_end",
                 "_name", "_parent", "_plan", "_resource", "_start_ns", "_status")

    def __init__(self, plan: LeanPlan, name: str, context: SpanContext,
                 parent: SpanContext | None, attributes: Mapping[str, Any] | None,
                 links: Sequence[Link], metrics_end: Any) -> None:
        self._plan = plan
        self._name = name
        self._context = context
        self._parent = parent
        self._resource = plan.tracer.resource  # the SDK's span keeps the one it started with
        self._attrs: dict[str, Any] = {}
        self._dropped = 0
        self._events: Any = None  # the SDK's BoundedList, from the first event
        self._links: list[Any] | None = None
        self._status = _UNSET
        self._metrics_end = metrics_end
        self._end_ns: int | None = None
        if attributes:
            # set_attributes' usual case, inlined for the first write: plain values and keys
            # within the limit are taken as they are.
            limit = plan.attrs_max
            if (plan.value_len is None and _PLAIN.issuperset(map(type, attributes.values()))
                    and _STR.issuperset(map(type, attributes)) and "" not in attributes
                    and (limit is None or len(attributes) <= limit)):
                self._attrs = dict(attributes)
            else:
                self.set_attributes(attributes)
        if links:
            for link in links:
                self._add_link(link)
        self._start_ns = _time_ns()

    # -- attributes ----------------------------------------------------------------------
    def _put(self, key: str, value: Any) -> None:
        """``BoundedAttributes._setitem_locked``: a rewritten key moves to the end; when full,
        the oldest key makes room and counts as dropped."""
        attrs = self._attrs
        if attrs.pop(key, _MISSING) is _MISSING:
            limit = self._plan.attrs_max
            if limit is not None and len(attrs) >= limit:
                # No lock (the SDK's has one): another thread writing this full span at the
                # same moment can only make the eviction miss, never raise here.
                with contextlib.suppress(RuntimeError, KeyError, StopIteration):
                    attrs.pop(next(iter(attrs)))
                self._dropped += 1
        attrs[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_ns is not None:
            _ended(None)
            return
        if not attributes:
            return
        attrs = self._attrs
        plan = self._plan
        limit = plan.attrs_max
        # The usual write: new keys with plain values, within the limit, each check one C pass.
        if (plan.value_len is None and _PLAIN.issuperset(map(type, attributes.values()))
                and _STR.issuperset(map(type, attributes)) and "" not in attributes
                and (limit is None or len(attrs) + len(attributes) <= limit)
                and (not attrs or attrs.keys().isdisjoint(attributes))):
            attrs.update(attributes)
            return
        if limit == 0:
            self._dropped += len(attributes)
            return
        # As BoundedAttributes._set_items: the mapping cleaned at once (bad keys dropped,
        # non-str keys made str), then each key put in order.
        cleaned = _clean_value(attributes, plan.value_len)
        self._dropped += len(attributes) - len(cleaned)
        for key, value in cleaned.items():
            self._put(key, value)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_ns is not None:
            _ended(None)
            return
        plan = self._plan
        # As BoundedAttributes.__setitem__: a lone bad key is dropped, not converted.
        if plan.attrs_max == 0 or not key or not isinstance(key, str):
            self._dropped += 1
            return
        if type(value) not in _PLAIN or plan.value_len is not None:
            value = _clean_value(value, plan.value_len)
        self._put(key, value)

    # -- events, links, status, name -----------------------------------------------------
    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> None:
        if self._end_ns is not None:
            _ended("_add_event")
            return
        plan = self._plan
        attrs = _BoundedAttributes(plan.event_attrs_max, attributes,
                                   max_value_len=plan.other_value_len, immutable=True)
        events = self._events
        if events is None:  # as the SDK's span: the oldest event goes as a new one arrives
            events = self._events = _BoundedList(plan.events_max)
        events.append(_Event(name=name, attributes=attrs, timestamp=timestamp))

    def _add_link(self, link: Link) -> None:
        ctx = link.context if link else None
        attributes = link.attributes if link else None
        if not (ctx and (ctx.is_valid or attributes or ctx.trace_state)):
            return
        # As the SDK: the link's attributes bounded and frozen, on the caller's Link itself
        # (a Link subclass may keep them elsewhere: it gets a new Link).
        plan = self._plan
        bounded = _BoundedAttributes(plan.link_attrs_max, attributes,
                                     max_value_len=plan.other_value_len, immutable=True) \
            if attributes else plan.no_link_attrs
        if type(link) is Link:
            link._attributes = bounded
        else:
            link = Link(ctx, bounded)
        if self._links is None:
            self._links = []
        self._links.append(link)

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None
                 ) -> None:
        if self._end_ns is None:
            self._add_link(Link(context, attributes))
        else:
            _ended("_add_link")

    def update_name(self, name: str) -> None:
        if self._end_ns is None:
            self._name = name
        else:
            _ended("update_name")

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_ns is not None:
            _ended("set_status")
            return
        # The SDK's rules: OK is final, UNSET is ignored.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif isinstance(status, StatusCode) and status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None
                         = None, timestamp: int | None = None, escaped: bool = False) -> None:
        # The SDK's event, field for field (the application asked for it, message included).
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        attrs: dict[str, Any] = {
            semconv.EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins"
            else qualname,
            semconv.EXCEPTION_MESSAGE: str(exception),
            semconv.EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            semconv.EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event(semconv.EXCEPTION_EVENT, attrs, timestamp)

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        """``with span:`` as the SDK's: an escaping exception is recorded and sets ERROR."""
        if exc_val is not None and self._end_ns is None:
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    # -- the rest of the Span API, and the read side of the SDK's live span -----------------
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_ns is None

    @property
    def name(self) -> str:
        return self._name

    @property
    def context(self) -> SpanContext:
        return self._context

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def kind(self) -> SpanKind:
        return _INTERNAL

    @property
    def start_time(self) -> int:
        return self._start_ns

    @property
    def end_time(self) -> int | None:
        return self._end_ns

    @property
    def status(self) -> Status:
        return self._status

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self._attrs)

    @property
    def events(self) -> tuple[Any, ...]:
        return tuple(self._events or ())

    @property
    def links(self) -> tuple[Any, ...]:
        return tuple(self._links or ())

    @property
    def resource(self) -> Any:
        return self._resource

    @property
    def instrumentation_scope(self) -> Any:
        return self._plan.scope

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    @property
    def dropped_events(self) -> int:
        return self._events.dropped if self._events is not None else 0

    @property
    def dropped_links(self) -> int:
        return _excess(self._links, self._plan.links_max)

    def end(self, end_time: int | None = None) -> None:
        end_ns = end_time if end_time is not None else _time_ns()
        with _end_lock:  # nothing else runs under it
            ended = self._end_ns is not None
            if not ended:
                self._end_ns = end_ns
                # Copies: a write that passed its is-ended check on another thread just before
                # must not change what the exporter already holds.
                attrs: Any = self._attrs.copy()
                held = self._events
                events: Any = tuple(held) if held else ()
                events_dropped = held.dropped if held is not None else 0
                links: Any = tuple(self._links) if self._links else ()
        if ended:
            _sdk_logger.warning("Calling end() on an ended span.")
            return
        if self._metrics_end is not None:
            self._metrics_end()
        span = self._readable(attrs, events, events_dropped, links, end_ns)
        plan = self._plan
        processor = plan.processor
        if plan.direct:  # SynchronousMultiSpanProcessor.on_end's loop, a frame less
            for member in processor._span_processors:
                member.on_end(span)
        else:
            processor.on_end(span)

    def _readable(self, attrs: Any, events: Any, events_dropped: int, links: Any,
                  end_ns: int | None) -> Any:
        """The SDK's ``ReadableSpan`` of these fields, dropped counts kept in its containers."""
        plan = self._plan
        if self._dropped:
            attrs = _BoundedAttributes(plan.attrs_max, attrs, immutable=True)
            attrs.dropped = self._dropped
        if events_dropped:
            events = _BoundedList.from_seq(plan.events_max, events)
            events.dropped = events_dropped
        if plan.links_max is not None and len(links) > plan.links_max:
            links = _BoundedList.from_seq(plan.links_max, links)
        return _ReadableSpan(
            name=self._name, context=self._context, parent=self._parent,
            resource=self._resource, attributes=attrs, events=events, links=links,
            kind=_INTERNAL, status=self._status, start_time=self._start_ns, end_time=end_ns,
            instrumentation_info=plan.info, instrumentation_scope=plan.scope,
        )

    def to_json(self, indent: int | None = 4) -> str:
        """The SDK span's ``to_json``, of the span as it stands now (live or ended)."""
        held = self._events
        return self._readable(
            dict(self._attrs), tuple(held) if held else (), held.dropped if held is not None else 0,
            tuple(self._links or ()), self._end_ns,
        ).to_json(indent)

    def start(self, start_time: int | None = None, parent_context: Any = None) -> None:
        """A lean span starts as it is made; as the SDK's span, a second start only warns."""
        _sdk_logger.warning("Calling start() on a started span.")

    def __repr__(self) -> str:
        return f"LeanSpan(name={self._name!r}, context={self._context!r})"


def _excess(items: list[Any] | None, limit: int | None) -> int:
    """How many of ``items`` the SDK's bounded list would have dropped by now."""
    return max(0, len(items or ()) - limit) if limit is not None else 0


def _ended(method: str | None) -> None:
    """The SDK's warning for a write to an ended span (the write is ignored, as there): its
    attribute setters' own line, else its decorator's, naming the method it wraps."""
    if method is None:
        _sdk_logger.warning("Setting attribute on ended span.")
    else:
        _sdk_logger.warning("Tried calling %s on an ended span.", method)
