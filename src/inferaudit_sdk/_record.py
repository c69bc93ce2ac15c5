"""``record()``, ``current_request()`` and :class:`RequestHandle`: telling a span what only
the application knows.

``record()`` applies to the innermost active audited span (request or batch), never raises,
and always wins over what ``@audited`` would infer. A bad value for one field is reported
(counted under ``record``, logged once) and dropped; the other fields still apply.
On a request span the fields map to GenAI usage and ``inferaudit.request.*``/prompt attributes;
on a batch span token counts go to ``inferaudit.batch.*`` and request-only fields (text,
fingerprints, queue time) are ignored. ``record()`` sets values; the torch wrappers add
(``ActiveSpan.add``); where both touch one key the recorded value is kept.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

from inferaudit_sdk import _active, _content, _fingerprint, _settings, _tokens, semconv
from inferaudit_sdk._active import ActiveSpan
from inferaudit_sdk._guard import OwnMessage, swallow
from inferaudit_sdk._usage import INT64_MAX


class RecordError(OwnMessage, ValueError):
    """A ``record()`` field had a value that cannot be used (reported, never raised)."""


def _count(field: str, value: Any) -> int:
    """A plain int from an int, an integral float, or anything ``operator.index`` accepts
    (numpy integer scalars, as usage inference takes them); never from a bool."""
    n: Any = None
    if type(value) is int:
        n = value
    elif not isinstance(value, bool):
        if isinstance(value, float):
            if value.is_integer():
                n = int(value)
        else:
            try:
                n = operator.index(value)
            except TypeError:
                n = None
    if n is None or not 0 <= n <= INT64_MAX:
        raise RecordError(f"record({field}=...) must be a non-negative int (int64), got "
                          f"{_described(value)}")
    return n


def _ids(field: str, value: Any, need_values: bool = True) -> tuple[int, Any]:
    """(exact count, flat int64 array or None). The values are read (for a tensor on a
    device: copied to the host) only when ``need_values``; a count needs only the shape."""
    n = _tokens.count(value)
    arr = _tokens.to_array(value) if need_values and n is not None else None
    if n is None or (need_values and arr is None):
        raise RecordError(
            f"record({field}=...) must be token ids (list of ints, list of lists, integer "
            f"array or tensor), got {type(value).__name__}"
        )
    return n, arr.reshape(-1) if arr is not None else None


def _set_request(active: ActiveSpan, fields: Mapping[str, Any]) -> None:
    s = active.set
    cfg = None
    for field, value in fields.items():
        if value is None:
            continue
        try:
            if field == "input_tokens":
                s(semconv.GEN_AI_USAGE_INPUT_TOKENS, _count(field, value))
            elif field == "output_tokens":
                s(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, _count(field, value))
            elif field == "prompt_token_ids":
                n, flat = _ids(field, value)
                if fields.get("input_tokens") is None:
                    s(semconv.GEN_AI_USAGE_INPUT_TOKENS, n)
                active.attributes.update(_fingerprint.attributes_for_ids(flat))
            elif field == "output_token_ids":
                n, _ = _ids(field, value, need_values=False)
                if fields.get("output_tokens") is None:
                    s(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, n)
            elif field == "prompt_text":
                if not isinstance(value, str):
                    raise RecordError(f"record(prompt_text=...) must be a str, got "
                                      f"{type(value).__name__}")
                basis = active.attributes.get(semconv.PROMPT_FINGERPRINT_BASIS)
                if basis != _fingerprint.BASIS_TOKEN_IDS and fields.get("prompt_token_ids") is None:
                    active.attributes.update(_fingerprint.attributes_for_text(value))
                cfg = cfg or _settings.get_config()
                if cfg.capture_content:
                    active.attributes.update(
                        _content.message_attributes(value, None, cfg.content_max_chars)
                    )
            elif field == "completion_text":
                if not isinstance(value, str):
                    raise RecordError(f"record(completion_text=...) must be a str, got "
                                      f"{type(value).__name__}")
                cfg = cfg or _settings.get_config()
                if cfg.capture_content:
                    attrs = _content.message_attributes(None, value, cfg.content_max_chars)
                    if active.attributes.get(semconv.CONTENT_TRUNCATED):
                        attrs.pop(semconv.CONTENT_TRUNCATED, None)
                    active.attributes.update(attrs)
            elif field == "batch_size":
                s(semconv.BATCH_SIZE, _count(field, value))
            elif field == "padded_tokens":
                s(semconv.BATCH_PADDED_TOKENS, _count(field, value))
            elif field == "cache_read_tokens":
                s(semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, _count(field, value))
            elif field == "queue_time_s":
                s(semconv.REQUEST_QUEUE_TIME_NS, _seconds_to_ns(field, value))
            else:
                _set_common(active, field, value)
        except Exception as exc:
            swallow("record", exc)


def _described(value: Any) -> str:
    """A wrong value for an error line: a number as it is, anything else by type and length,
    since a string passed by mistake may be the prompt or the completion."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    size = f" of length {len(value)}" if isinstance(value, (str, bytes, list, tuple)) else ""
    return f"a {type(value).__name__}{size}"


def _seconds_to_ns(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise RecordError(f"record({field}=...) must be a non-negative number of seconds, "
                          f"got {_described(value)}")
    return round(value * 1e9)


def _set_common(active: ActiveSpan, field: str, value: Any) -> None:
    s = active.set
    if field in ("route", "model_tier", "response_model"):
        if not isinstance(value, str):
            raise RecordError(f"record({field}=...) must be a str, got {type(value).__name__}")
        key = {"route": semconv.ROUTE, "model_tier": semconv.MODEL_TIER,
               "response_model": semconv.GEN_AI_RESPONSE_MODEL}[field]
        s(key, value)
    elif field == "max_tokens":
        s(semconv.GEN_AI_REQUEST_MAX_TOKENS, _count(field, value))
    elif field == "finish_reasons":
        reasons = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(r, str) for r in reasons):
            raise RecordError("record(finish_reasons=...) must be a str or a list of str")
        s(semconv.GEN_AI_RESPONSE_FINISH_REASONS, reasons)
    elif field == "cache_hit":
        if not isinstance(value, bool):
            raise RecordError(f"record(cache_hit=...) must be a bool, got {type(value).__name__}")
        s(semconv.CACHE_HIT, value)
    elif _content.is_content_name(field) and not _settings.get_config().capture_content:
        # Text under a content attribute's name: kept off spans unless capture is on. The
        # message names the field, never the value.
        raise RecordError(f"record({field}=...) dropped: message content is captured only with "
                          f"{semconv.ENV_CAPTURE_MESSAGE_CONTENT}=true")
    else:
        s(field, value)  # an extra attribute, under the caller's own name


def _set_batch(active: ActiveSpan, fields: Mapping[str, Any]) -> None:
    explicit = getattr(active, "explicit", None)
    for field, value in fields.items():
        if value is None:
            continue
        try:
            key = None
            if field == "input_tokens":
                key, v = semconv.BATCH_INPUT_TOKENS, _count(field, value)
            elif field == "output_tokens":
                key, v = semconv.BATCH_OUTPUT_TOKENS, _count(field, value)
            elif field == "padded_tokens":
                key, v = semconv.BATCH_PADDED_TOKENS, _count(field, value)
            elif field == "batch_size":
                key, v = semconv.BATCH_SIZE, _count(field, value)
            elif field == "prompt_token_ids":
                if fields.get("input_tokens") is None:
                    key, v = semconv.BATCH_INPUT_TOKENS, _ids(field, value, False)[0]
            elif field == "output_token_ids":
                if fields.get("output_tokens") is None:
                    key, v = semconv.BATCH_OUTPUT_TOKENS, _ids(field, value, False)[0]
            elif field in ("prompt_text", "completion_text", "queue_time_s", "cache_read_tokens"):
                continue  # request-level facts; a batch span does not carry them
            else:
                _set_common(active, field, value)
            if key is not None:
                active.set(key, v)
                if explicit is not None:
                    explicit[key] = v
        except Exception as exc:
            swallow("record", exc)


def apply(active: ActiveSpan, fields: Mapping[str, Any]) -> None:
    """Apply ``record()`` fields to ``active`` (request or batch). Never raises."""
    try:
        if not active.recording or getattr(active, "done", False):
            return
        if active.role == semconv.ROLE_BATCH:
            _set_batch(active, fields)
        else:
            _set_request(active, fields)
    except Exception as exc:
        swallow("record", exc)


def record(
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    prompt_token_ids: Any = None,
    output_token_ids: Any = None,
    prompt_text: str | None = None,
    completion_text: str | None = None,
    batch_size: int | None = None,
    cache_hit: bool | None = None,
    cache_read_tokens: int | None = None,
    route: str | None = None,
    model_tier: str | None = None,
    response_model: str | None = None,
    queue_time_s: float | None = None,
    max_tokens: int | None = None,
    finish_reasons: Any = None,
    padded_tokens: int | None = None,
    **extra_attributes: Any,
) -> None:
    """Add facts to the innermost active audited span (request or batch); no-op outside one.

    Token counts are exact integers; ``prompt_token_ids`` gives the exact input count and the
    prompt fingerprints; ``prompt_text`` gives text fingerprints (and content, only when
    content capture is on) but never a token count. Values recorded here win over inferred
    ones. Extra keyword arguments become span attributes under their own names, except names
    that carry message text (``gen_ai.input.messages``, ``prompt``, ...: see
    :func:`._content.is_content_name`), which are dropped and counted while content capture is
    off. Token counts accept numpy integer scalars (stored as plain ints). Thread-safe
    for one span per logical task; never raises.
    """
    active = _active.current()
    if active is None or not active.recording:
        return
    fields = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "prompt_token_ids": prompt_token_ids,
        "output_token_ids": output_token_ids,
        "prompt_text": prompt_text,
        "completion_text": completion_text,
        "batch_size": batch_size,
        "cache_hit": cache_hit,
        "cache_read_tokens": cache_read_tokens,
        "route": route,
        "model_tier": model_tier,
        "response_model": response_model,
        "queue_time_s": queue_time_s,
        "max_tokens": max_tokens,
        "finish_reasons": finish_reasons,
        "padded_tokens": padded_tokens,
    }
    if extra_attributes:
        fields.update(extra_attributes)
    apply(active, fields)


class SpanHandle:
    """A reference to one audited span that user code may hold: its context and ``record``.
    Holds no lock; records after the span ended are ignored."""

    __slots__ = ("_active",)

    def __init__(self, active: ActiveSpan) -> None:
        self._active = active

    @property
    def span_context(self) -> Any:
        """The span's ``SpanContext`` (invalid for a sampled-out span)."""
        return self._active.span.get_span_context()

    @property
    def is_recording(self) -> bool:
        return self._active.recording and not getattr(self._active, "done", False)

    def record(self, **fields: Any) -> None:
        """Same fields as :func:`record`, applied to this span wherever it is called."""
        apply(self._active, fields)


class RequestHandle(SpanHandle):
    """A reference to one request span, to link batches to it or record into it later
    (e.g. from a batcher task)."""

    __slots__ = ()

    def __repr__(self) -> str:
        ctx = self.span_context
        return f"RequestHandle(trace_id={ctx.trace_id:032x}, span_id={ctx.span_id:016x})"


def current_request() -> RequestHandle | None:
    """The innermost audited request of this context (also from inside a batch it opened),
    or ``None`` outside any ``@audited`` call."""
    active = request_of(_active.current())
    return RequestHandle(active) if active is not None else None


def request_of(active: ActiveSpan | None) -> ActiveSpan | None:
    """The innermost request span at or above ``active`` (a batch's parent chain included)."""
    while active is not None and active.role != semconv.ROLE_REQUEST:
        active = getattr(active, "parent", None)
    return active
