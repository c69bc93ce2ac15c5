"""Where a lean span (:mod:`._lean_span`) is exact, decided once per tracer and pipeline.

A lean span skips the SDK's ``Span``, so it is used only where nothing could tell: the tracer
is the OpenTelemetry SDK's own ``Tracer`` with its own ``start_span`` (not one an agent wrapped),
it has everything ``_lean_span.start_span`` reads, and every span processor's ``on_start`` and
``_on_ending`` is a plain function that does nothing (checked by bytecode, on the instance the
SDK will call; a wrapper counts as doing something). The answer is kept on the tracer with the
processors tuple it was made for; the SDK replaces that tuple when a processor is added.
"""

from __future__ import annotations

import dis
from types import FunctionType, MethodType
from typing import Any

from opentelemetry.trace import TraceFlags

from inferaudit_sdk import _lean_span

_INERT_OPS = frozenset(("RESUME", "NOP", "LOAD_CONST", "RETURN_VALUE", "RETURN_CONST", "CACHE"))


def _plain_function(fn: Any) -> FunctionType | None:
    """The function behind ``fn`` (a function or bound method), or ``None`` for anything else:
    a wrapper (wrapt's proxies pass ``__code__`` through; ``functools.wraps`` leaves
    ``__wrapped__``), a partial, C code."""
    if type(fn) is MethodType:
        fn = fn.__func__
    if type(fn) is not FunctionType or hasattr(fn, "__wrapped__"):
        return None
    return fn


def _does_nothing(fn: Any) -> bool:
    """True when ``fn`` is a plain function or bound method whose body is only ``pass`` / a
    docstring / ``return None``. Anything else counts as doing something."""
    plain = _plain_function(fn)
    if plain is None:
        return False
    try:
        for ins in dis.get_instructions(plain.__code__):
            if ins.opname not in _INERT_OPS:
                return False
            if ins.opname in ("LOAD_CONST", "RETURN_CONST") and ins.argval is not None:
                return False
    except Exception:
        return False
    return True


def _sdk_loop(processor: Any) -> bool:
    """True for the SDK's ``SynchronousMultiSpanProcessor`` with the SDK's own ``on_end``
    (nothing patched on the class or the instance), which only loops over its members."""
    if type(processor) is not _lean_span._SyncMulti \
            or "on_end" in getattr(processor, "__dict__", {}):
        return False
    fn = _plain_function(type(processor).on_end)
    return fn is not None and fn.__module__ == "opentelemetry.sdk.trace" \
        and fn.__qualname__ == "SynchronousMultiSpanProcessor.on_end"


class LeanPlan:
    """What a lean span needs from one SDK tracer (and its pipeline when planned)."""

    __slots__ = (
        "attrs_max",
        "direct",
        "event_attrs_max",
        "events_max",
        "info",
        "link_attrs_max",
        "links_max",
        "no_link_attrs",
        "other_value_len",
        "processor",
        "scope",
        "tracer",
        "value_len",
    )

    def __init__(self, tracer: Any, processor: Any, limits: Any, scope: Any) -> None:
        self.tracer = tracer
        self.processor = processor
        # The SDK's synchronous multi-processor with its own on_end (a loop over its members),
        # which the lean span then runs itself.
        self.direct = _sdk_loop(processor)
        self.scope = scope
        self.info = getattr(tracer, "instrumentation_info", None)  # deprecated, still exported
        self.attrs_max = limits.max_span_attributes
        self.value_len = limits.max_span_attribute_length
        self.other_value_len = limits.max_attribute_length  # events' and links' values
        self.events_max = limits.max_events
        self.links_max = limits.max_links
        self.event_attrs_max = limits.max_event_attributes
        self.link_attrs_max = limits.max_link_attributes
        # What the SDK gives a link without attributes; immutable, so one serves them all.
        self.no_link_attrs = _lean_span._BoundedAttributes(
            self.link_attrs_max, None, max_value_len=self.other_value_len)


_PLAN_ATTR = "_inferaudit_lean_plan"


def plan_for(tracer: Any) -> LeanPlan | None:
    """The lean plan for an SDK tracer, or ``None`` where its own ``start_span`` must run.

    Kept on the tracer itself (so it lives as long as the tracer), with the processors tuple
    it was made for: the SDK replaces that tuple whenever a processor is added."""
    procs = getattr(getattr(tracer, "span_processor", None), "_span_processors", None)
    entry = getattr(tracer, _PLAN_ATTR, None)
    if entry is not None and entry[0] is procs:
        return entry[1]
    plan = _make_plan(tracer)
    try:
        setattr(tracer, _PLAN_ATTR, (procs, plan))
    except Exception:  # a tracer that takes no attributes is not the SDK's
        return None
    return plan


def _make_plan(tracer: Any) -> LeanPlan | None:
    cls = type(tracer)
    if cls.__module__ != "opentelemetry.sdk.trace" or cls.__name__ != "Tracer":
        return None
    if not _lean_span._load():
        return None
    # The SDK's own start_span, not one an agent wrapped to see every span start.
    own = _plain_function(getattr(tracer, "start_span", None))
    if own is None or own.__module__ != "opentelemetry.sdk.trace":
        return None
    processor = getattr(tracer, "span_processor", None)
    limits = getattr(tracer, "_span_limits", None)
    scope = getattr(tracer, "_instrumentation_scope", None)
    if not isinstance(processor, _lean_span._MULTI) or limits is None or scope is None:
        return None
    members = getattr(processor, "_span_processors", None)
    if not isinstance(members, tuple):
        return None
    for member in members:  # the instance's methods: what the SDK will call
        if not (_does_nothing(getattr(member, "on_start", None))
                and _does_nothing(getattr(member, "_on_ending", None))):
            return None
    # What start_span reads; an SDK older than the one this was checked against lacks some,
    # and then keeps its own start_span.
    for name in ("sampler", "id_generator", "resource", "_is_enabled", "_tracer_metrics"):
        if not hasattr(tracer, name):
            return None
    if not (hasattr(TraceFlags, "RANDOM_TRACE_ID")
            and hasattr(tracer.id_generator, "is_trace_id_random")):
        return None
    return LeanPlan(tracer, processor, limits, scope)
