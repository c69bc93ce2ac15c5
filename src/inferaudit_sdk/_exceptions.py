"""The user's exception on a span, without the text it may carry unless content capture is on.

An exception's message often quotes the input (``ValueError(f"prompt too long: {prompt}")``),
so by default the standard ``exception`` event carries ``exception.type`` and a stack trace of
frames and exception *types* only (the chain of causes kept, every message line reduced to the
type name); ``exception.message`` and the messages inside the stack trace are recorded only when
``AuditConfig.capture_content`` is on (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``),
like prompt text. The status description is the exception class name either way.

Status and ``error.type`` are set before the event is built, so an exception whose ``__str__``
raises (or any fault here) still leaves the span marked as failed. Nothing here modifies the
exception object.
"""

from __future__ import annotations

import traceback
from typing import Any

from opentelemetry.trace import Status, StatusCode

from inferaudit_sdk import _settings, semconv
from inferaudit_sdk._guard import swallow

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_TRACEBACK = "Traceback (most recent call last):\n"


def type_name(exc: BaseException) -> str:
    """``error.type``: the bare class name for builtins and ``__main__``, else module.QualName."""
    cls = type(exc)
    mod = cls.__module__
    return cls.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{cls.__qualname__}"


def _qualified(exc: BaseException) -> str:
    """``exception.type`` as the OpenTelemetry SDK's ``record_exception`` writes it (a builtin
    bare, anything else module-qualified), so spans of one service group alike."""
    cls = type(exc)
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"


def redacted_stacktrace(exc: BaseException) -> str:
    """Like ``traceback.format_exception`` with every exception line reduced to its type."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for item, link_to_next in reversed(chain):
        if item.__traceback__ is not None:
            parts.append(_TRACEBACK)
            parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(type_name(item) + "\n")  # the type as the traceback module prints it
        if link_to_next:
            parts.append(link_to_next)
    return "".join(parts)


def _event_attributes(exc: BaseException, capture: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {semconv.EXCEPTION_TYPE: _qualified(exc)}
    if capture:
        try:
            attrs[semconv.EXCEPTION_MESSAGE] = str(exc)
        except Exception:
            attrs[semconv.EXCEPTION_MESSAGE] = "<exception str() failed>"
        # format_exception survives a failing __str__ itself.
        attrs[semconv.EXCEPTION_STACKTRACE] = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        )
    else:
        attrs[semconv.EXCEPTION_STACKTRACE] = redacted_stacktrace(exc)
    return attrs


def record_error(span: Any, exc: BaseException, component: str) -> str:
    """Mark ``span`` failed by ``exc`` (status ERROR, ``exception`` event); return the
    ``error.type`` value. Never raises: faults are counted under ``component``."""
    etype = type_name(exc)
    try:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    except Exception as fault:
        swallow(component, fault)
    try:
        capture = _settings.get_config().capture_content
        span.add_event(semconv.EXCEPTION_EVENT, _event_attributes(exc, capture))
    except Exception as fault:
        swallow(component, fault)
    return etype
