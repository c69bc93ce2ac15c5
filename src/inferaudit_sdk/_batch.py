"""``batch()``: one span per model call on the device, linked to the requests it served.

A batch span (``inferaudit.span.role="batch"``, name ``"batch {model}"``) has an OTel link to
each member request's span context; that is how the analyzer splits device cost over requests.
Two shapes:

* unbatched serving: ``with ia.batch():`` inside an ``@audited`` call: the request span is the
  parent *and* the single member (linked too);
* batched serving: a batcher task calls ``ia.batch(handles)`` with the ``RequestHandle`` (or
  ``SpanContext``) of each queued request; the span's parent is whatever is current there.

While the with-block runs, ``_active.current()`` is the batch, so ``ia.record(...)`` and the
torch wrappers accumulate into it; everything is written once at exit. Exceptions are recorded
on the span and re-raised unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import time_ns
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Link, SpanContext

from inferaudit_sdk import _active, _tracing, semconv
from inferaudit_sdk._active import ActiveSpan
from inferaudit_sdk._exceptions import record_error
from inferaudit_sdk._guard import swallow
from inferaudit_sdk._record import RecordError, RequestHandle, SpanHandle, request_of
from inferaudit_sdk._record import _count as count_field
from inferaudit_sdk._request import DEFAULT_OPERATION

# The runtime context's ContextVar set/reset when it is the default one (see _tracing).
_attach = _tracing.attach
_detach = _tracing.detach
_pop = _active.pop
_context_with_span = _tracing.context_with_span
_decide = _tracing.decide
_DROP = _tracing.DROP


class BatchSpan(ActiveSpan):
    """Active state of a batch span. ``parent`` is the request active when it began."""

    __slots__ = ("explicit", "parent", "sole_request")

    def __init__(self, span: Any, recording: bool, parent: ActiveSpan | None,
                 sole_request: ActiveSpan | None = None) -> None:
        super().__init__(span, semconv.ROLE_BATCH, recording)
        self.parent = parent
        self.explicit: dict[str, Any] = {}  # values given to record(): they beat accumulations
        # the request this call served alone (the implicit member): its exact output tokens
        # go to that request's usage
        self.sole_request = sole_request

    def finish_attributes(self) -> None:
        """Resolve; keep recorded values over accumulated ones; derive the padding ratio.

        All of it is written by one ``span.set_attributes`` call: each call costs the OTel
        SDK a lock and a validation pass, a few µs that a batch-1 forward of a small model
        notices (bench/device_overhead.py)."""
        if not self.recording:
            return
        self.resolve_attributes()
        try:
            self._finalize()
        except Exception as fault:
            swallow("active.defer", fault)
        self.write_attributes()

    def _finalize(self) -> None:
        """After every accumulation is resolved into ``attributes``, before the write."""
        attrs = self.attributes
        explicit = self.explicit
        if explicit:
            attrs.update(explicit)  # a value given to record() beats the accumulated one
        real = attrs.get(semconv.BATCH_INPUT_TOKENS)
        padded = attrs.get(semconv.BATCH_PADDED_TOKENS)
        if isinstance(real, (int, float)) and isinstance(padded, (int, float)) and padded > 0 \
                and semconv.BATCH_PADDING_RATIO not in attrs:
            attrs[semconv.BATCH_PADDING_RATIO] = max(0.0, min(1.0, 1.0 - real / padded))
        out = attrs.get(semconv.BATCH_OUTPUT_TOKENS)
        request = self.sole_request
        if request is not None and type(out) is int and hasattr(request, "batch_output_tokens"):
            request.batch_output_tokens = (request.batch_output_tokens or 0) + out


def _member_context(member: Any) -> SpanContext | None:
    """A member's context to link; None for one sampled out (invalid context). The caller
    skips ``None`` members before asking."""
    if isinstance(member, RequestHandle):
        ctx = member.span_context
    elif isinstance(member, SpanContext):
        ctx = member
    else:
        raise TypeError(
            f"batch(members=...) items must be RequestHandle or SpanContext, got "
            f"{type(member).__name__}"
        )
    return ctx if ctx.is_valid else None


class BatchHandle(SpanHandle):
    """What ``with ia.batch(...) as b`` gives: ``b.record(...)`` (the fields of ``ia.record``
    plus ``padded_tokens``) and ``b.span_context``."""

    __slots__ = ()


_NOOP_BATCH = ActiveSpan(INVALID_SPAN, semconv.ROLE_BATCH, False)


def _checked(model: Any, operation: Any, batch_size: Any
             ) -> tuple[str | None, str | None, int | None]:
    """``batch()``'s arguments as record() takes the same fields: a wrong one (``model=3``,
    ``batch_size="x"``) is reported and left out, never written as given."""
    if model is not None and not isinstance(model, str):
        swallow("batch.args", RecordError(f"batch(model=...) must be a str, got "
                                          f"{type(model).__name__}"))
        model = None
    if operation is not None and not isinstance(operation, str):
        swallow("batch.args", RecordError(f"batch(operation=...) must be a str, got "
                                          f"{type(operation).__name__}"))
        operation = None
    if batch_size is not None and type(batch_size) is not int:
        try:
            batch_size = count_field("batch_size", batch_size)
        except RecordError as exc:
            swallow("batch.args", exc)
            batch_size = None
    elif batch_size is not None and batch_size < 0:
        swallow("batch.args", RecordError(f"batch(batch_size=...) must be a non-negative int, "
                                          f"got {batch_size}"))
        batch_size = None
    return model, operation, batch_size


def _start(members: Iterable[Any], model: str | None, operation: str | None,
           batch_size: int | None) -> ActiveSpan:
    plan, parent_ctx, decision = _decide()
    if decision == _DROP:  # also when the SDK is disabled
        return ActiveSpan(INVALID_SPAN, semconv.ROLE_BATCH, False)
    if not ((model is None or type(model) is str) and (operation is None or type(operation)
            is str) and (batch_size is None or (type(batch_size) is int and batch_size >= 0))):
        model, operation, batch_size = _checked(model, operation, batch_size)
    parent = _active.current()
    request = request_of(parent) if parent is not None else None
    contexts: list[SpanContext] = []
    # Every member counts towards the size, linked or not: a request sampled out upstream
    # (its handle's context invalid) still ran in this batch.
    n_members = 0
    for m in members or ():
        if m is None:
            continue
        try:
            ctx = _member_context(m)
        except TypeError as exc:
            swallow("batch.members", exc)
            continue
        n_members += 1
        if ctx is not None:
            contexts.append(ctx)
    implicit = not n_members and request is not None and request.recording
    if implicit:
        contexts.append(request.span.get_span_context())  # type: ignore[union-attr]
    req_attrs = getattr(request, "spec", None)
    if req_attrs is not None:
        metric_attrs = getattr(request, "metric_attrs", {})
        model = model or metric_attrs.get(semconv.GEN_AI_REQUEST_MODEL)
        operation = operation or req_attrs.operation
    size = batch_size if batch_size is not None else (n_members or len(contexts))
    attrs: dict[str, Any] = {
        semconv.SPAN_ROLE: semconv.ROLE_BATCH,
        semconv.SCHEMA_VERSION_ATTR: semconv.SCHEMA_VERSION,
        semconv.BATCH_OPERATION: operation or DEFAULT_OPERATION,
        semconv.BATCH_SIZE: size,
    }
    if model:  # no model known: left out, as on request spans
        attrs[semconv.BATCH_MODEL] = model
    span = _tracing.start_decided(plan, parent_ctx, decision,
                                  f"batch {model}" if model else "batch", attrs,
                                  [Link(c) for c in contexts] if contexts else ())
    return BatchSpan(span, span.is_recording(), parent, request if implicit else None)


def open_batch(members: Iterable[Any] = (), model: str | None = None,
               operation: str | None = None, batch_size: int | None = None
               ) -> tuple[ActiveSpan, Any, Any]:
    """Start a batch span and make it current: ``(state, context token, active token)`` for
    :func:`close_batch`. What ``batch.__enter__`` does, for callers that open one per model
    call (the torch wrappers) without a context-manager object. Never raises."""
    try:  # guarded() spelled out: a frame less, once per model call
        state = _start(members, model, operation, batch_size)
    except Exception as exc:
        swallow("batch.start", exc)
        state = _NOOP_BATCH
    token = atoken = None
    try:
        if state.span is not INVALID_SPAN:
            token = _attach(_context_with_span(state.span))
        atoken = _active.push(state)
    except Exception as exc:
        swallow("batch.start", exc)
    return state, token, atoken


def close_batch(state: ActiveSpan, token: Any, atoken: Any, exc: BaseException | None) -> None:
    """Undo :func:`open_batch` and end the span, recording ``exc`` (re-raised by the caller).
    Never raises."""
    # A block held open across a stream's yields is exited in another Context than it was
    # entered in where the server steps the stream in copies: put back what it replaced.
    try:
        if atoken is not None:
            _pop(atoken)
    except ValueError:
        _active.put_back(atoken)
    except Exception as fault:  # a token already used
        swallow("batch.exit", fault)
    if token is not None:
        try:
            _detach(token)
        except ValueError:
            _tracing.put_back(token)
        except Exception as fault:  # as for the pop above
            swallow("batch.exit", fault)
    if state.span is INVALID_SPAN:
        return
    if state.recording:
        if exc is not None and not isinstance(exc, GeneratorExit):  # a closed stream
            state.attributes[semconv.ERROR_TYPE] = record_error(state.span, exc, "batch.error")
        if isinstance(state, BatchSpan):
            try:
                state.finish_attributes()
            except Exception as fault:
                swallow("batch.flush", fault)
        # Written: a call still running in a context copied from the block (a task that
        # outlives it) adds nothing more, and leaves no device state behind unresolved.
        state.recording = False
    try:
        end_span = state.end_span
        if end_span is None:
            state.span.end()
        else:
            end_span(time_ns())
    except Exception as fault:
        swallow("batch.end", fault)


class batch:
    """Open a batch span for one model call (see the module docstring). Also ``async with``.

    Args:
        members: ``RequestHandle``s or ``SpanContext``s of the requests in this call. Empty
            inside an ``@audited`` call: that request is the single member.
        model: model name (default: the enclosing request's model, else left out).
        operation: GenAI operation name (default: the enclosing request's, else
            ``text_completion``).
        batch_size: requests in the call (default: the number of members).

    Never raises for instrumentation reasons; a member of the wrong type is reported and
    skipped. Not reentrant: use one ``batch`` object per with-block.
    """

    __slots__ = ("_atoken", "_batch_size", "_members", "_model", "_operation", "_state",
                 "_token")

    def __init__(
        self,
        members: Iterable[Any] = (),
        *,
        model: str | None = None,
        operation: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self._members = members
        self._model = model
        self._operation = operation
        self._batch_size = batch_size
        self._state: ActiveSpan = _NOOP_BATCH
        self._token: Any = None
        self._atoken: Any = None

    def __enter__(self) -> BatchHandle:
        self._state, self._token, self._atoken = open_batch(
            self._members, self._model, self._operation, self._batch_size)
        return BatchHandle(self._state)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        state, token, atoken = self._state, self._token, self._atoken
        self._token = self._atoken = None
        close_batch(state, token, atoken, exc)
        return False

    async def __aenter__(self) -> BatchHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return self.__exit__(exc_type, exc, tb)
