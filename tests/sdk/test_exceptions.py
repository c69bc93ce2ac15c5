"""The user's exception on a span: status, error.type and the standard ``exception`` event,
without the exception's message (which may quote the prompt) unless content capture is on."""

from __future__ import annotations

import traceback

import pytest
from opentelemetry.trace import StatusCode

import inferaudit_sdk as ia
from inferaudit_sdk import _guard, semconv

SECRET = "patient asked about zebra allergy"


class PromptError(ValueError):
    pass


def _fail_with_chain():
    try:
        raise KeyError(f"lookup of {SECRET}")
    except KeyError as inner:
        raise PromptError(f"prompt too long: {SECRET}") from inner


@ia.audited(model="m")
def handler():
    _fail_with_chain()


def _event(span):
    (event,) = [e for e in span.events if e.name == semconv.EXCEPTION_EVENT]
    return dict(event.attributes)


def test_default_exception_event_has_type_and_frames_but_no_message(otel, monkeypatch):
    monkeypatch.delenv(semconv.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    exporter, _ = otel
    with pytest.raises(PromptError) as info:
        handler()
    assert SECRET in str(info.value)  # the caller's exception is untouched
    assert isinstance(info.value.__cause__, KeyError)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert SECRET not in (span.status.description or "")
    attrs = _event(span)
    assert attrs[semconv.EXCEPTION_TYPE] == f"{__name__}.PromptError"
    assert semconv.EXCEPTION_MESSAGE not in attrs
    stack = attrs[semconv.EXCEPTION_STACKTRACE]
    assert "_fail_with_chain" in stack and "KeyError" in stack and "PromptError" in stack
    assert "direct cause" in stack
    for value in attrs.values():
        assert SECRET not in str(value)
    assert _guard.error_counts() == {}


def test_capture_content_records_the_message_and_full_stacktrace(otel, audit_config):
    audit_config(capture_content=True)
    exporter, _ = otel
    with pytest.raises(PromptError) as info:
        handler()
    attrs = _event(exporter.get_finished_spans()[0])
    assert attrs[semconv.EXCEPTION_MESSAGE] == str(info.value)
    expected = "".join(traceback.format_exception(info.value))
    # The recorded stack was taken inside the wrapper: the same text minus the caller's frame.
    assert attrs[semconv.EXCEPTION_STACKTRACE].splitlines()[-1] == expected.splitlines()[-1]
    assert f"KeyError: 'lookup of {SECRET}'" in attrs[semconv.EXCEPTION_STACKTRACE]


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.mark.parametrize("capture", [False, True])
def test_exception_whose_str_raises_still_marks_the_span(otel, audit_config, capture):
    audit_config(capture_content=capture)
    exporter, _ = otel
    err = UnprintableError()

    @ia.audited(model="m")
    def bad():
        raise err

    with pytest.raises(UnprintableError) as info:
        bad()
    assert info.value is err
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE].endswith("UnprintableError")
    assert _event(span)[semconv.EXCEPTION_TYPE].endswith("UnprintableError")


def test_batch_exception_is_redacted_too(otel, monkeypatch):
    monkeypatch.delenv(semconv.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    exporter, _ = otel
    with pytest.raises(PromptError), ia.batch(model="m"):
        raise PromptError(SECRET)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    attrs = _event(span)
    assert attrs[semconv.EXCEPTION_TYPE].endswith("PromptError")
    assert all(SECRET not in str(v) for v in attrs.values())


async def test_streamed_exception_is_redacted(otel, monkeypatch):
    monkeypatch.delenv(semconv.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    exporter, _ = otel

    @ia.audited(model="m")
    async def stream():
        yield 1
        raise PromptError(SECRET)

    with pytest.raises(PromptError):
        async for _ in stream():
            pass
    attrs = _event(exporter.get_finished_spans()[0])
    assert all(SECRET not in str(v) for v in attrs.values())


@pytest.mark.parametrize("exc", [ValueError("bad"), PromptError("bad")])
def test_exception_type_is_written_as_the_sdks_record_exception_writes_it(otel, exc):
    # One service's spans must group alike: the app's own (SDK) spans and ours.
    from opentelemetry.sdk.trace import TracerProvider

    sdk_span = TracerProvider().get_tracer("t").start_span("app")
    sdk_span.record_exception(exc)
    (sdk_event,) = sdk_span.events

    @ia.audited(model="m")
    def fails():
        raise exc

    exporter, _ = otel
    with pytest.raises(type(exc)):
        fails()
    (span,) = exporter.get_finished_spans()
    attrs = _event(span)
    assert attrs[semconv.EXCEPTION_TYPE] == sdk_event.attributes[semconv.EXCEPTION_TYPE]
    # the redacted stack trace ends with the type as Python's traceback prints it
    printed = traceback.format_exception_only(type(exc), exc)[-1].split(":")[0]
    assert attrs[semconv.EXCEPTION_STACKTRACE].rstrip("\n").endswith(printed)
