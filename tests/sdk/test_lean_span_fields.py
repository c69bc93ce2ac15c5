"""A LeanSpan ends as a ReadableSpan an exporter cannot tell from the SDK span's: attributes,
events, links, status, ending, and the bytes the encoders write.

Every case runs twice on twin providers (same sampler, limits, resource and a fixed id
generator, so both arms get the same trace and span ids): once through
``_tracing.start_span`` (the lean path; each test asserts it really produced a ``LeanSpan``)
and once through the SDK tracer's own ``start_span`` with the same instrumentation scope. The
finished spans are then compared field by field (:func:`assert_same_spans`), attribute order and
value types included.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import signal
import time
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from _lean_twins import (
    _LINKED,
    LIMITS,
    Arm,
    PairFactory,
    _noop,
    _set_many,
    assert_same_spans,
    both,
    one_span,
)
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import (
    SpanLimits,
)
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState

from inferaudit_sdk import _lean_span, semconv
from inferaudit_sdk.sdk import otlp_json, otlp_json_text


# -- attributes ------------------------------------------------------------------------------
class _WithStr:
    def __str__(self) -> str:
        return "custom-str"


class _WithRepr:
    def __repr__(self) -> str:
        return "custom-repr"


class _Plain:
    pass


class _Name(str):
    pass


class _Color(enum.IntEnum):
    RED = 1


class _StrKey:
    def __str__(self) -> str:
        return "from-str-key"



def _every_shape(span: Any) -> None:
    span.set_attributes({
        "str": "s", "int": 7, "float": 0.5, "bool": False, "bytes": b"\x00\xff", "none": None,
        "list": [1, 2, 3], "tuple": ("x", "y"), "mixed": [1, "a", None, 2.5],
        "nested": {"k": [1, {"deep": "v"}], "": "dropped inside"}, "empty_list": [],
        "np": np.int64(5), "np_float": np.float32(0.25), "with_str": _WithStr(),
        "with_repr": _WithRepr(), "plain": _Plain(), "list_of_objects": [_Plain(), _WithStr()],
        "big_int": 2**70, "neg_zero": -0.0, "range": range(3), "np_bool": np.bool_(True),
        "bytearray": bytearray(b"ab"), "list_of_maps": [{"k": 1}], "str_sub": _Name("named"),
        "int_sub": _Color.RED, "proxy": MappingProxyType({"p": 1}),
    })
    span.set_attribute("set_list", ["p", "q"])
    span.set_attribute("set_np", np.int64(9))
    span.set_attribute("set_plain", _Plain())
    span.set_attribute("set_map", {"m": 1})


def _bad_keys(span: Any) -> None:
    span.set_attributes({"": "empty", 5: "int key", _StrKey(): "custom key", "ok": 1})
    span.set_attributes({_Plain(): "unprintable key dropped", None: "none key"})
    span.set_attribute("", "empty")
    span.set_attribute(7, "int key via set_attribute is dropped")  # type: ignore[arg-type]
    span.set_attribute(None, "none")  # type: ignore[arg-type]


def _colliding_keys(span: Any) -> None:
    span.set_attributes({"1": "a", 1: "b"})  # both keys are '1' once cleaned


ATTRIBUTE_CASES = [
    pytest.param({"s": "x", "i": 1, "a": "first"}, _set_many, None, id="start+set+rewrite"),
    pytest.param({"start_list": [1.0, 2.0], "start_np": np.int64(3)}, _every_shape, None,
                 id="every-shape"),
    pytest.param({"": "empty at start", 3: "int at start", "kept": "yes"}, _bad_keys, None,
                 id="bad-keys"),
    pytest.param(None, _set_many, None, id="no-start-attributes"),
    pytest.param({"x": 1}, _noop, None, id="start-only"),
    pytest.param(MappingProxyType({"x": 1, "y": [1]}), _set_many, None, id="start-mapping-proxy"),
    pytest.param({f"k{i}": i for i in range(130)}, lambda s: s.set_attribute("k100", "again"),
                 None, id="over-default-128"),
    pytest.param({"a": "longer than four", "b": ["abcdef", "xy"], "c": 1, "d": b"bytes!"},
                 _every_shape, LIMITS, id="limits-3-attrs-len-4"),
    pytest.param({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, _noop, {"max_span_attributes": 3},
                 id="limit-3-at-start"),
    pytest.param({"a": 1, "b": 2}, lambda s: s.set_attributes({"c": 3, "b": 4}),
                 {"max_span_attributes": 3}, id="limit-3-rewrite-under-limit"),
    pytest.param({"a": 1, "b": 2}, _set_many, {"max_span_attributes": 3},
                 id="limit-3-set-later"),
    pytest.param({"a": 1, "": 2, 5: 3}, _bad_keys, {"max_span_attributes": 3},
                 id="limit-3-bad-keys"),
    pytest.param({"a": 1, "b": "two"}, lambda s: (s.set_attribute("c", 3),
                                                  s.set_attributes({"d": 4, "": 5})),
                 {"max_span_attributes": 0}, id="limit-0"),
    pytest.param(None, _noop, {"max_span_attributes": 0}, id="limit-0-nothing-set"),
    pytest.param({"a": 1}, lambda s: (s.set_attribute("b", 2), s.set_attribute("a", 3)),
                 {"max_span_attributes": 1}, id="evicted-key-written-again"),
    pytest.param({"a": 1}, lambda s: (s.set_attribute("a", 2), s.set_attributes({"a": 3})),
                 {"max_span_attributes": 0}, id="limit-0-same-key-rewritten"),
    pytest.param(None, _colliding_keys, None, id="keys-colliding-after-str"),
]


@pytest.mark.parametrize(("start", "body", "limits"), ATTRIBUTE_CASES)
def test_attributes_match(make_pair: PairFactory, start: Any, body: Any, limits: Any) -> None:
    kwargs = (lambda: {"span_limits": SpanLimits(**limits)}) if limits else None
    both(make_pair, one_span(body, attributes=start), kwargs, count=1)


def test_start_attributes_dict_is_copied(make_pair: PairFactory) -> None:
    """Mutating the caller's dict after start changes neither span."""
    def run(arm: Arm) -> None:
        attrs: dict[str, Any] = {"a": 1}
        span = arm.start("op", attrs)
        attrs["b"] = 2
        attrs["a"] = 9
        span.end()
    (span,) = both(make_pair, run, count=1)
    assert dict(span.attributes) == {"a": 1}


# -- events ----------------------------------------------------------------------------------
def _raised() -> ValueError:
    try:
        raise ValueError("boom: \"quoted\"")
    except ValueError as exc:
        return exc


# Recorded, never raised again: raising an exception extends its traceback (and stacktrace).
_EXC = _raised()


def _events(span: Any) -> None:
    span.add_event("plain")
    span.add_event("with-attrs", {"k": 1, "list": ["a", "b"], "obj": _Plain()})
    span.add_event("explicit-time", {"t": True}, timestamp=1_000)
    span.add_event("", None, timestamp=2_000)


def _exceptions(span: Any) -> None:
    span.record_exception(_EXC)
    span.record_exception(_EXC, escaped=True, timestamp=3_000)
    span.record_exception(_EXC, {"extra": 1, semconv.EXCEPTION_MESSAGE: "overridden"},
                          timestamp=4_000, escaped=False)
    span.record_exception(KeyError("never raised"))


EVENT_CASES = [
    pytest.param(_events, None, id="events"),
    pytest.param(_exceptions, None, id="record-exception"),
    pytest.param(lambda s: (_events(s), _exceptions(s)), LIMITS, id="over-max-events"),
    pytest.param(lambda s: s.add_event("e", {"a": 1, "b": 2, "c": 3}),
                 {"max_event_attributes": 2}, id="over-max-event-attributes"),
    pytest.param(lambda s: [s.add_event(f"e{i}", timestamp=10 + i) for i in range(5)],
                 {"max_events": 0}, id="max-events-0"),
    pytest.param(lambda s: s.add_event("e", {"long": "abcdefgh"}),
                 {"max_span_attribute_length": 4}, id="span-length-limit-on-event"),
    pytest.param(lambda s: s.add_event("e", {"long": "abcdefgh"}),
                 {"max_attribute_length": 4}, id="global-length-limit-on-event"),
]


@pytest.mark.parametrize(("body", "limits"), EVENT_CASES)
def test_events_match(make_pair: PairFactory, body: Any, limits: Any) -> None:
    kwargs = (lambda: {"span_limits": SpanLimits(**limits)}) if limits else None
    both(make_pair, one_span(body, attributes={"a": 1}), kwargs, count=1)


def test_exception_event_fields(make_pair: PairFactory) -> None:
    """The comparison is not blind to the exception event's content."""
    (span,) = both(make_pair, one_span(_exceptions), count=1)
    first = span.events[0]
    assert first.name == semconv.EXCEPTION_EVENT
    assert first.attributes[semconv.EXCEPTION_TYPE] == "ValueError"
    assert first.attributes[semconv.EXCEPTION_ESCAPED] == "False"
    assert span.events[1].attributes[semconv.EXCEPTION_ESCAPED] == "True"
    assert span.events[2].attributes[semconv.EXCEPTION_MESSAGE] == "overridden"
    assert "raise ValueError" in first.attributes[semconv.EXCEPTION_STACKTRACE]


# -- links -----------------------------------------------------------------------------------
_LINKED_2 = SpanContext(0xBEEF, 0xF00E, is_remote=False, trace_flags=TraceFlags(0))
_INVALID_WITH_STATE = SpanContext(0, 0, is_remote=False,
                                  trace_state=TraceState([("only", "state")]))



def _add_links(span: Any) -> None:
    span.add_link(_LINKED_2, {"later": 1})
    span.add_link(INVALID_SPAN_CONTEXT)  # invalid, no attributes: dropped
    span.add_link(INVALID_SPAN_CONTEXT, {"kept": "invalid but has attributes"})


LINK_CASES = [
    pytest.param(lambda: [Link(_LINKED, {"role": "member", "n": 2})], _noop, None,
                 id="valid-with-attributes"),
    pytest.param(lambda: [Link(INVALID_SPAN_CONTEXT), Link(_LINKED, {"a": 1})], _noop, None,
                 id="invalid-dropped"),
    pytest.param(lambda: [Link(INVALID_SPAN_CONTEXT, {"why": "kept"})], _noop, None,
                 id="invalid-with-attributes-kept"),
    pytest.param(lambda: [Link(_LINKED, {"a": 1})], _add_links, None, id="add-link-later"),
    pytest.param(lambda: [Link(_LINKED, {"a": 1, "b": "long value"}),
                          Link(_LINKED_2, {"c": 1}), Link(_LINKED, {"d": 1})],
                 _add_links, LIMITS, id="over-max-links"),
    pytest.param(lambda: [Link(_LINKED, {"a": "abcdefgh"})], _noop,
                 {"max_span_attribute_length": 4}, id="span-length-limit-on-link"),
    pytest.param(lambda: [Link(_LINKED, {"a": "abcdefgh"})], _noop,
                 {"max_attribute_length": 4}, id="global-length-limit-on-link"),
    pytest.param(lambda: [Link(_LINKED, {"a": 1})], lambda s: s.add_link(_LINKED_2, {"b": 2}),
                 {"max_links": 0}, id="max-links-0"),
    pytest.param(lambda: [Link(_LINKED)], _noop, None, id="valid-without-attributes"),
    pytest.param(lambda: [Link(_INVALID_WITH_STATE)], _noop, None,
                 id="invalid-with-trace-state-kept"),
    pytest.param(tuple, lambda s: s.add_link(_LINKED), None, id="add-link-without-attributes"),
]


@pytest.mark.parametrize(("links", "body", "limits"), LINK_CASES)
def test_links_match(make_pair: PairFactory, links: Any, body: Any, limits: Any) -> None:
    kwargs = (lambda: {"span_limits": SpanLimits(**limits)}) if limits else None
    both(make_pair, one_span(body, links=links), kwargs, count=1)


# -- status, name, end -----------------------------------------------------------------------
STATUS_CASES = [
    pytest.param([(StatusCode.ERROR, "bad"), (StatusCode.OK, None)], id="error-then-ok"),
    pytest.param([(StatusCode.OK, None), (StatusCode.ERROR, "ignored")], id="ok-is-final"),
    pytest.param([(StatusCode.UNSET, "ignored")], id="unset-ignored"),
    pytest.param([(StatusCode.ERROR, "a"), (StatusCode.UNSET, None)], id="unset-after-error"),
    pytest.param([(StatusCode.ERROR, "a"), (StatusCode.ERROR, "b")], id="error-twice"),
    pytest.param([(StatusCode.ERROR, None)], id="error-no-description"),
    pytest.param([(StatusCode.OK, "dropped by Status")], id="ok-with-description"),
    pytest.param([(Status(StatusCode.ERROR, "obj"), None)], id="status-object"),
    pytest.param([(Status(StatusCode.ERROR, "obj"), "extra ignored")], id="status-plus-desc"),
    pytest.param([(Status(StatusCode.OK), None), (Status(StatusCode.ERROR), None)],
                 id="status-object-ok-final"),
    pytest.param([(Status(StatusCode.UNSET), None)], id="status-object-unset"),
    pytest.param([("ERROR", None)], id="not-a-status"),
]


@pytest.mark.parametrize("calls", STATUS_CASES)
def test_status_match(make_pair: PairFactory, calls: list[tuple[Any, Any]]) -> None:
    def body(span: Any) -> None:
        for status, description in calls:
            span.set_status(status, description)
    both(make_pair, one_span(body), count=1)


def _after_end(span: Any) -> None:
    span.end(end_time=time.time_ns() + 10**9)
    span.set_attribute("late", 1)
    span.set_attributes({"late2": 2})
    span.add_event("late")
    span.add_link(_LINKED, {"late": 1})
    span.set_status(StatusCode.ERROR, "late")
    span.record_exception(_EXC)
    span.update_name("late name")
    assert not span.is_recording()


def test_writes_after_end_warn_like_the_sdk(make_pair: PairFactory,
                                          caplog: pytest.LogCaptureFixture) -> None:
    lean, sdk = make_pair()
    warned = []
    for arm in (lean, sdk):
        span = arm.start("ended")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _after_end(span)
        warned.append(sum(r.levelno == logging.WARNING for r in caplog.records))
    assert warned[0] == warned[1] > 0, warned


def test_update_name_and_writes_after_end(make_pair: PairFactory) -> None:
    end_ns = time.time_ns() + 10**9

    def run(arm: Arm) -> None:
        span = arm.start("first", {"a": 1}, [Link(_LINKED, {"l": 1})])
        span.update_name("renamed")
        span.add_event("before-end", timestamp=5)
        span.end(end_time=end_ns)
        _after_end(span)
        span.end()  # ended twice: exported once
    (span,) = both(make_pair, run, count=1, same_end=True)
    assert span.name == "renamed" and span.end_time == end_ns
    assert list(span.attributes) == ["a"]
    assert [e.name for e in span.events] == ["before-end"] and len(span.links) == 1


def test_end_racing_end_exports_once(make_pair: PairFactory, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    lean, _ = make_pair()
    span = lean.start("raced")
    clock = _lean_span._time_ns
    calls = []

    def racing_clock() -> int:
        calls.append(1)
        if len(calls) == 1:
            span.end()  # the other thread's end(), arriving mid-end()
        return clock()

    monkeypatch.setattr(_lean_span, "_time_ns", racing_clock)
    span.end()
    assert len(lean.finished()) == 1


def test_live_span_reads_like_the_sdk_span(make_pair: PairFactory) -> None:
    """What application code may read off ``trace.get_current_span()`` before it ends."""
    lean, sdk = make_pair(lambda: {"span_limits": SpanLimits(**LIMITS)})
    views = []
    for arm in (lean, sdk):
        span = arm.start("live", {"a": 1, "b": 2}, [Link(_LINKED)] * 3)
        span.set_attributes({"c": 3, "d": 4})
        for n in range(3):
            span.add_event(f"e{n}")
        views.append((span.name, dict(span.attributes), span.dropped_attributes,
                      span.dropped_events, span.dropped_links, span.status.status_code,
                      span.kind, span.parent, span.resource, span.instrumentation_scope))
        span.end()
    assert views[0] == views[1]


def test_write_racing_end_cannot_change_the_exported_span(make_pair: PairFactory) -> None:
    """A write that passed its is-ended check when end() ran (forced here: the value's
    ``__str__`` ends the span while the SDK's cleaner reads it) lands after the export; the
    exported span does not change afterwards."""
    lean, _ = make_pair()
    span = lean.start("raced", {"a": 1})

    class EndsOnStr:
        def __str__(self) -> str:
            span.end()
            return "late"

    span.set_attribute("late", EndsOnStr())
    (done,) = lean.finished()
    assert dict(done.attributes) == {"a": 1}
    span.set_attribute("after", 2)
    assert dict(done.attributes) == {"a": 1}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_end_lock_held_leaves_child_usable(make_pair: PairFactory) -> None:
    """The module lock end() takes is made anew in a forked child, so a fork while another
    thread held it cannot hang every end() there."""
    lean, _ = make_pair()
    span = lean.start("in-child")
    with _lean_span._end_lock:
        pid = os.fork()
        if pid == 0:  # the child: end a span with the lock's old copy still "held"
            signal.alarm(5)
            try:
                span.end()
                os._exit(0 if len(lean.finished()) == 1 else 2)
            except BaseException:
                os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    span.end()


def test_context_manager_exit_ends(make_pair: PairFactory) -> None:
    def run(arm: Arm) -> None:
        with arm.start("cm", {"a": 1}) as span:
            span.set_attribute("b", 2)
    both(make_pair, run, count=1)


def test_context_manager_exit_with_exception(make_pair: PairFactory) -> None:
    def run(arm: Arm) -> None:
        with pytest.raises(ValueError), arm.start("cm"):
            raise ValueError("boom")
    both(make_pair, run, count=1)


def test_use_span_records_exception(make_pair: PairFactory) -> None:
    """trace.use_span(end_on_exit=True) records and ends through the Span API: same result."""
    def run(arm: Arm) -> None:
        span = arm.start("used")
        with pytest.raises(ValueError), trace.use_span(span, end_on_exit=True):
            raise ValueError("boom")
    (span,) = both(make_pair, run, count=1)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == [semconv.EXCEPTION_EVENT]


# -- what the encoders write -----------------------------------------------------------------
_START_NS = re.compile(rb',"startTimeUnixNano":"\d+"')


_RICH = {"s": "text ✓", "i": 2**40, "f": 0.25, "b": True, "list": [1, 2], "map": {"k": 1}}


def _rich(arm: Arm, end_ns: int, links: list[Link], extra: dict[str, Any] | None = None) -> None:
    remote = SpanContext(0x77, 0x88, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("rk", "rv")]))
    with trace.use_span(NonRecordingSpan(remote)):
        span = arm.start("rich \"name\" é", {**_RICH, **(extra or {})}, links)
    span.set_attribute("later", [0.5, 1.5])
    span.add_event("ev", {"x": 1}, timestamp=1_000)
    span.record_exception(_EXC, timestamp=2_000)
    span.set_status(StatusCode.ERROR, "went wrong")
    span.end(end_time=end_ns)


@pytest.mark.parametrize("links", [
    pytest.param(lambda: [Link(_LINKED, {"role": "member"})], id="link-with-attributes"),
    pytest.param(lambda: [Link(_LINKED), Link(_INVALID_WITH_STATE)],
                 id="links-without-attributes"),
])
def test_file_sink_encoders_write_the_same(make_pair: PairFactory, links: Any) -> None:
    """Same bytes from both file-sink encoders and the SDK's OTLP protobuf encoder, but for
    the start time (which ``_tracing.start_span`` cannot be given)."""
    end_ns = time.time_ns() + 10**9
    lean, sdk = make_pair()
    _rich(lean, end_ns, links(), {"bytes": b"\x01"})
    _rich(sdk, end_ns, links(), {"bytes": b"\x01"})
    if links()[0].attributes:
        assert_same_spans(lean, sdk, count=1, same_end=True)
    (got,), (want,) = lean.finished(), sdk.finished()
    text = [_START_NS.sub(b"", otlp_json_text.encode_spans_line([s])) for s in (got, want)]
    assert text[0] == text[1]
    ref = [_START_NS.sub(b"", otlp_json.dumps_line(otlp_json.encode_spans_request([s])))
           for s in (got, want)]
    assert ref[0] == ref[1] == text[0]
    assert b'"endTimeUnixNano":"%d"' % end_ns in text[0]
    protos = []
    for s in (got, want):
        request = encode_spans([s])
        request.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 0
        protos.append(request.SerializeToString(deterministic=True))
    assert protos[0] == protos[1]


def test_console_json_same(make_pair: PairFactory) -> None:
    """ReadableSpan.to_json (the console exporter's format), start time aside."""
    end_ns = time.time_ns() + 10**9
    lean, sdk = make_pair()
    for arm in (lean, sdk):
        _rich(arm, end_ns, [Link(_LINKED, {"role": "member"})])
    out = []
    for (span,) in (lean.finished(), sdk.finished()):
        d = json.loads(span.to_json())
        d.pop("start_time")
        out.append(d)
    assert out[0] == out[1]


def test_live_span_to_json_and_start_as_the_sdk_span(make_pair: PairFactory, caplog) -> None:
    """The live span's own ``to_json`` (before and after ``end``), a second ``start()`` and a
    write after ``end`` as on the SDK's span: limits and dropped counts included, and the
    warnings on the SDK's logger, for the filters users set there."""
    end_ns = time.time_ns() + 10**9
    lean, sdk = make_pair(lambda: {"span_limits": SpanLimits(**LIMITS)})
    views: list[list[dict[str, Any]]] = []
    messages: list[list[str]] = []
    for arm in (lean, sdk):
        span = arm.start("live", {"a": 1, "b": "x"}, [Link(_LINKED, {"role": "member"})])
        for k in range(5):  # past max_span_attributes and max_events
            span.set_attribute(f"k{k}", k)
            span.add_event(f"e{k}", {"n": k, "m": k}, timestamp=1_000 + k)
        span.set_status(StatusCode.ERROR, "mid")
        with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
            caplog.clear()
            span.start()
            seen = [json.loads(span.to_json()), json.loads(span.to_json(indent=None))]
            span.end(end_time=end_ns)
            seen.append(json.loads(span.to_json()))
            for late in _LATE_WRITES:  # each ignored, with the SDK's own warning
                late(span)
            seen.append(json.loads(span.to_json()))
            warned = [(r.name, r.getMessage()) for r in caplog.records
                      if r.levelno >= logging.WARNING]
        assert {name for name, _ in warned} == {"opentelemetry.sdk.trace"}
        messages.append([m for _, m in warned])
        for d in seen:
            d.pop("start_time")
        views.append(seen)
    assert type(lean.started[0]) is _lean_span.LeanSpan
    assert views[0] == views[1]
    assert views[0][0]["end_time"] is None and views[0][2]["end_time"] is not None
    assert views[0][2] == views[0][3]
    assert len(views[0][0]["events"]) == LIMITS["max_events"]
    assert messages[0] == messages[1]
    assert messages[0][0] == "Calling start() on a started span."
    assert len(messages[0]) == 1 + len(_LATE_WRITES)


_LATE_WRITES = (
    lambda s: s.set_attribute("late", 1),
    lambda s: s.set_attributes({"late": 1}),
    lambda s: s.add_event("late"),
    lambda s: s.add_link(_LINKED),
    lambda s: s.update_name("late"),
    lambda s: s.set_status(StatusCode.OK),
    lambda s: s.end(),
)


def test_a_callers_link_is_bounded_in_place_as_the_sdk_does(make_pair: PairFactory) -> None:
    """The SDK bounds and freezes the attributes of the very Link it is given; so does the lean
    span (one object per link, not two), and what the caller holds afterwards is the same."""
    lean, sdk = make_pair(lambda: {"span_limits": SpanLimits(**LIMITS)})
    held = []
    for arm in (lean, sdk):
        link = Link(_LINKED, {"a": 1, "b": 2})  # over max_link_attributes
        span = arm.start("linked", None, [link])
        span.end()
        (exported,) = arm.finished()
        assert exported.links[0] is link
        held.append((dict(link.attributes), link.dropped_attributes))
    assert type(lean.started[0]) is _lean_span.LeanSpan
    assert held[0] == held[1] == ({"b": 2}, 1)  # the oldest made room, as ever
