"""@audited on plain functions and methods: span shape, attributes, errors, metrics."""

from __future__ import annotations

import inspect
import traceback

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, semconv


def test_bare_decorator_makes_one_request_span(otel):
    exporter, _ = otel

    @ia.audited
    def handler(x):
        return x * 2

    assert handler(21) == 42
    (span,) = exporter.get_finished_spans()
    a = span.attributes
    assert span.name == "text_completion"  # no model known: named after the operation
    assert span.kind == trace.SpanKind.INTERNAL
    assert a[semconv.SPAN_ROLE] == semconv.ROLE_REQUEST
    assert a[semconv.SCHEMA_VERSION_ATTR] == semconv.SCHEMA_VERSION
    assert a[semconv.GEN_AI_OPERATION_NAME] == semconv.OPERATION_TEXT_COMPLETION
    assert semconv.GEN_AI_REQUEST_MODEL not in a  # no placeholder model
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "unknown"
    assert a[semconv.GEN_AI_REQUEST_STREAM] is False
    assert semconv.ERROR_TYPE not in a
    assert span.status.status_code == StatusCode.UNSET


def test_options_set_name_and_static_attributes(otel):
    exporter, _ = otel

    @ia.audited(model="gpt2-tiny", operation="chat", provider="acme", route="/v1/chat",
                model_tier="small")
    def handler(prompt, max_new_tokens=16):
        return "ok"

    handler("hi", max_new_tokens=7)
    (span,) = exporter.get_finished_spans()
    a = span.attributes
    assert span.name == "chat gpt2-tiny"
    assert a[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "acme"
    assert a[semconv.GEN_AI_REQUEST_MODEL] == "gpt2-tiny"
    assert a[semconv.ROUTE] == "/v1/chat"
    assert a[semconv.MODEL_TIER] == "small"
    assert a[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 7


def test_model_and_max_tokens_from_call_arguments(otel):
    exporter, _ = otel

    @ia.audited
    def complete(model, prompt, max_tokens=5):
        return None

    complete("llama-3-8b", "hello")  # positional model; default max_tokens is not passed
    complete(model="mistral", prompt="x", max_tokens=99)
    complete(object(), "x", 3)  # a non-str model object is not a model name
    s1, s2, s3 = exporter.get_finished_spans()
    assert s1.name == "text_completion llama-3-8b"
    assert s1.attributes[semconv.GEN_AI_REQUEST_MODEL] == "llama-3-8b"
    assert semconv.GEN_AI_REQUEST_MAX_TOKENS not in s1.attributes
    assert s2.attributes[semconv.GEN_AI_REQUEST_MODEL] == "mistral"
    assert s2.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 99
    assert s3.name == "text_completion"
    assert semconv.GEN_AI_REQUEST_MODEL not in s3.attributes
    assert s3.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 3


def test_response_model_renames_an_unknown_model_span(otel):
    exporter, _ = otel

    @ia.audited
    def handler():
        ia.record(response_model="gpt-4o-mini-2024")
        return 1

    handler()
    (span,) = exporter.get_finished_spans()
    assert span.name == "text_completion gpt-4o-mini-2024"
    assert span.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024"


def test_user_exception_passes_through_untouched(otel):
    exporter, _ = otel

    class Boom(RuntimeError):
        pass

    err = Boom("model fell over")

    @ia.audited(model="m")
    def handler():
        raise err

    with pytest.raises(Boom) as info:
        handler()
    assert info.value is err
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "handler"  # the raising frame is still the user's
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE].endswith("Boom")
    assert span.events[0].name == "exception"
    assert _guard.error_counts() == {}


def test_builtin_error_type_is_the_class_name(otel):
    exporter, _ = otel

    @ia.audited
    def handler():
        raise KeyError("k")

    with pytest.raises(KeyError):
        handler()
    assert exporter.get_finished_spans()[0].attributes[semconv.ERROR_TYPE] == "KeyError"


def test_signature_and_metadata_preserved(otel):
    def raw(prompt: str, *, max_new_tokens: int = 8) -> str:
        """Doc."""
        return prompt

    handler = ia.audited(model="m")(raw)
    assert handler.__name__ == "raw"
    assert handler.__doc__ == "Doc."
    assert inspect.signature(handler) == inspect.signature(raw)
    assert list(inspect.signature(handler).parameters) == ["prompt", "max_new_tokens"]
    assert handler.__wrapped__ is raw


class Model:
    def __init__(self):
        self.calls = 0

    @ia.audited(model="inst")
    def generate(self, input_ids, max_new_tokens=4):
        self.calls += 1
        return [1] * max_new_tokens

    @ia.audited(model="cls-outer")
    @classmethod
    def cls_outer(cls, input_ids):
        return cls.__name__

    @classmethod
    @ia.audited(model="cls-inner")
    def cls_inner(cls, input_ids):
        return cls.__name__

    @ia.audited(model="static-outer")
    @staticmethod
    def static_outer(input_ids, max_new_tokens=2):
        return [9] * max_new_tokens

    @staticmethod
    @ia.audited(model="static-inner")
    def static_inner(input_ids, max_new_tokens=2):
        return [9] * max_new_tokens


def test_methods_in_every_order(otel):
    exporter, _ = otel
    m = Model()
    assert m.generate([1, 2, 3], 2) == [1, 1]
    assert Model.generate(m, [1, 2], max_new_tokens=3) == [1, 1, 1]
    assert m.calls == 2
    assert Model.cls_outer([1]) == "Model" and m.cls_outer([1]) == "Model"
    assert Model.cls_inner([1, 2]) == "Model"
    assert Model.static_outer([1, 2, 3], 3) == [9, 9, 9]
    assert m.static_inner([1, 2, 3, 4]) == [9, 9]
    spans = exporter.get_finished_spans()
    by = [(s.attributes[semconv.GEN_AI_REQUEST_MODEL], s.attributes.get(
        semconv.GEN_AI_USAGE_INPUT_TOKENS), s.attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
        s.attributes.get(semconv.GEN_AI_REQUEST_MAX_TOKENS)) for s in spans]
    assert by == [
        ("inst", 3, 2, 2),
        ("inst", 2, 3, 3),
        ("cls-outer", 1, None, None),
        ("cls-outer", 1, None, None),
        ("cls-inner", 2, None, None),
        ("static-outer", 3, 3, 3),
        ("static-inner", 4, 2, None),
    ]


def test_nested_request_span_parented_to_outer(otel):
    exporter, _ = otel

    @ia.audited(model="inner")
    def inner():
        return 1

    @ia.audited(model="outer")
    def outer():
        return inner()

    outer()
    inner_span, outer_span = exporter.get_finished_spans()
    assert inner_span.parent.span_id == outer_span.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_child_span_parented_and_context_restored(otel, otel_provider):
    exporter, _ = otel
    tracer = otel_provider.get_tracer("t")

    @ia.audited(model="m")
    def handler():
        with tracer.start_as_current_span("child"):
            pass
        return ia.current_request()

    before = trace.get_current_span()
    handle = handler()
    assert trace.get_current_span() is before
    child, req = exporter.get_finished_spans()
    assert child.parent.span_id == req.context.span_id
    assert handle.span_context.span_id == req.context.span_id
    assert ia.current_request() is None


def test_metrics_recorded_with_attributes_and_spec_buckets(otel_env):
    @ia.audited(model="m", provider="p", operation="chat")
    def handler(input_ids):
        return [1, 2, 3, 4, 5]

    @ia.audited(model="m", provider="p", operation="chat")
    def failing():
        raise ValueError("x")

    handler([7, 8])
    with pytest.raises(ValueError):
        failing()
    m = otel_env.metrics()
    durations = m[semconv.METRIC_SERVER_REQUEST_DURATION]
    assert sum(p.count for p in durations) == 2
    ok = next(p for p in durations if semconv.ERROR_TYPE not in p.attributes)
    bad = next(p for p in durations if semconv.ERROR_TYPE in p.attributes)
    assert dict(ok.attributes) == {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_PROVIDER_NAME: "p",
        semconv.GEN_AI_REQUEST_MODEL: "m",
    }
    assert bad.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert tuple(ok.explicit_bounds) == semconv.BUCKETS_REQUEST_DURATION_S
    tokens = {p.attributes[semconv.GEN_AI_TOKEN_TYPE]: p
              for p in m[semconv.METRIC_CLIENT_TOKEN_USAGE]}
    assert tokens[semconv.TOKEN_TYPE_INPUT].sum == 2
    assert tokens[semconv.TOKEN_TYPE_OUTPUT].sum == 5
    assert tuple(tokens["input"].explicit_bounds) == semconv.BUCKETS_TOKEN_USAGE
    assert semconv.METRIC_SERVER_TIME_TO_FIRST_TOKEN not in m  # not a stream


def test_metrics_without_a_model_leave_the_model_out(otel_env):
    """No model known: the metric points carry no gen_ai.request.model, not a placeholder
    that would pool every unnamed model under one name in the backend."""
    @ia.audited(provider="p")
    def handler(input_ids):
        return [1, 2]

    handler([7])
    m = otel_env.metrics()
    (point,) = m[semconv.METRIC_SERVER_REQUEST_DURATION]
    assert dict(point.attributes) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_TEXT_COMPLETION,
        semconv.GEN_AI_PROVIDER_NAME: "p",
    }
    assert all(semconv.GEN_AI_REQUEST_MODEL not in p.attributes
               for p in m[semconv.METRIC_CLIENT_TOKEN_USAGE])


def test_decoration_type_errors_are_raised_at_decoration_time():
    with pytest.raises(TypeError, match="model"):
        ia.audited(model=3)
    with pytest.raises(TypeError, match="stream"):
        ia.audited(stream="yes")
    with pytest.raises(TypeError, match="function"):
        ia.audited(42)


def test_works_without_any_provider():
    # No configure(), no provider bound: the global proxy is a no-op and calls still work.
    @ia.audited(model="m")
    def handler(x):
        ia.record(output_tokens=3)
        return x + 1

    assert handler(1) == 2
    assert _guard.error_counts() == {}


def test_disabled_config_makes_no_spans(otel, audit_config):
    exporter, _ = otel
    audit_config(enabled=False)

    @ia.audited
    def handler():
        return 5

    assert handler() == 5
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("kind", ["sync", "async", "generator"])
def test_an_sdk_fault_at_start_is_not_chained_onto_the_users_exception(otel, monkeypatch, kind):
    import asyncio

    from inferaudit_sdk import _decorator

    def broken_start(*args, **kwargs):
        raise RuntimeError("sdk fault")

    monkeypatch.setattr(_decorator, "start", broken_start)

    @ia.audited
    def sync_fn():
        raise ValueError("user")

    @ia.audited
    async def async_fn():
        raise ValueError("user")

    @ia.audited
    def gen_fn(x):
        yield x

    with pytest.raises((ValueError, TypeError)) as info:
        if kind == "sync":
            sync_fn()
        elif kind == "async":
            asyncio.run(async_fn())
        else:
            gen_fn()  # binding fails: a TypeError of the user's call, not ours
    assert info.value.__context__ is None
    assert _guard.error_counts().get("audited.start", 0) >= 1
