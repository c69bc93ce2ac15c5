"""One request span's life: start, what accumulates while it runs, and the single finish.

The decorator computes a :class:`Spec` per decorated function once (static attributes, the
span name when the model is known, where the token-related arguments sit), so a call does
only dictionary look-ups. :class:`RequestSpan` is the :class:`~inferaudit_sdk._active.ActiveSpan`
of a request: ``record()`` writes into it, streaming wrappers feed it chunk times, and
:func:`finish` ends it exactly once, inferring usage only for what ``record()`` did not set.
Every step after the user's code is guarded: a fault is counted, never raised.
"""

from __future__ import annotations

import time
from typing import Any

from inferaudit_sdk import _content, _fingerprint, _metrics, _settings, _tokens, _tracing, semconv
from inferaudit_sdk._active import ActiveSpan
from inferaudit_sdk._exceptions import record_error
from inferaudit_sdk._guard import swallow
from inferaudit_sdk._usage import CallTokens, from_result

DEFAULT_OPERATION = semconv.OPERATION_TEXT_COMPLETION
DEFAULT_PROVIDER = "unknown"

# Call arguments the request reads (by keyword, or by position from the signature).
ARG_NAMES = (
    "model",
    "max_new_tokens",
    "max_tokens",
    "input_ids",
    "prompt_token_ids",
    "attention_mask",
    "pad_token_id",
    "eos_token_id",
    "generation_config",
    "prompt",
    "messages",
)
_TOKEN_ARGS = frozenset(ARG_NAMES) - {"model", "max_new_tokens", "max_tokens"}


def _now_ns() -> int:
    return time.perf_counter_ns()


class Spec:
    """What is known about a decorated function at decoration time."""

    __slots__ = (
        "metric_attrs",
        "model",
        "name",
        "operation",
        "positions",
        "provider",
        "start_attrs",
        "stream",
        "stream_inferred",
        "var_kw",
    )

    def __init__(
        self,
        *,
        operation: str,
        provider: str,
        model: str | None,
        route: str | None,
        model_tier: str | None,
        stream: bool,
        positions: dict[str, int],
        var_kw: bool,
        stream_inferred: bool = False,
    ) -> None:
        self.operation = operation
        self.provider = provider
        self.model = model
        self.stream = stream
        # True when ``stream=`` was not given: a call that returns a stream then marks itself
        # streamed (:func:`mark_streamed`), which decoration time could not know.
        self.stream_inferred = stream_inferred
        self.positions = positions  # argument name -> index among positional parameters
        self.var_kw = var_kw
        self.name = f"{operation} {model}" if model else None
        attrs: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: operation,
            semconv.GEN_AI_PROVIDER_NAME: provider,
            semconv.SPAN_ROLE: semconv.ROLE_REQUEST,
            semconv.SCHEMA_VERSION_ATTR: semconv.SCHEMA_VERSION,
            semconv.GEN_AI_REQUEST_STREAM: stream,
        }
        if model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = model
        if route:
            attrs[semconv.ROUTE] = route
        if model_tier:
            attrs[semconv.MODEL_TIER] = model_tier
        self.start_attrs = attrs
        # No model known: the attribute is left out (the conventions require it only "if
        # available"); a placeholder would group every unnamed model under one fake name.
        self.metric_attrs = {
            semconv.GEN_AI_OPERATION_NAME: operation,
            semconv.GEN_AI_PROVIDER_NAME: provider,
        }
        if model:
            self.metric_attrs[semconv.GEN_AI_REQUEST_MODEL] = model

    def pick(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments named in :data:`ARG_NAMES` that this call passed."""
        found: dict[str, Any] = {}
        if kwargs and (self.var_kw or self.positions):
            for name in ARG_NAMES:
                if name in kwargs:
                    found[name] = kwargs[name]
        if self.positions and args:
            # A bound method's args exclude self/cls (wrapt passes it as ``instance``).
            offset = 1 if instance is not None else 0
            n = len(args)
            for name, pos in self.positions.items():
                i = pos - offset
                if 0 <= i < n and name not in found:
                    found[name] = args[i]
        return found


class RequestSpan(ActiveSpan):
    """The active state of one request span (one logical task; see ActiveSpan)."""

    __slots__ = (
        "batch_output_tokens",
        "chunks",
        "completion_chars",
        "completion_parts",
        "done",
        "first_ns",
        "found",
        "last_ns",
        "metric_attrs",
        "seq_rows",
        "spec",
        "start_ns",
        "stream_tokens",
        "timed_chunks",
    )

    def __init__(self, span: Any, recording: bool, spec: Spec, found: dict[str, Any]) -> None:
        super().__init__(span, semconv.ROLE_REQUEST, recording)
        self.spec = spec
        self.found = found
        self.metric_attrs = spec.metric_attrs
        self.start_ns = _now_ns()
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.chunks = 0
        self.timed_chunks = 0  # chunks not known to be empty: the ones TTFT/TPOT time
        self.stream_tokens: int | None = 0  # None once a chunk is not countable token ids
        self.seq_rows = 1
        self.completion_parts: list[str] | None = None
        self.completion_chars = 0
        self.done = False
        # exact output tokens of the model calls it was the one member of (their batch spans
        # counted them with the model's pad/EOS ids): preferred to a count by shape
        self.batch_output_tokens: int | None = None

    def on_chunk(self, chunk: Any) -> None:
        """A streamed chunk reached the consumer: timestamps and exact token counting.

        A chunk known to hold no token ids (``[]``, an empty array: a heartbeat) is counted as
        a chunk but not timed, so TTFT is the first chunk with tokens and TPOT spans first to
        last token-carrying chunk. A chunk that cannot be counted is timed (it may hold text).
        """
        now = _now_ns()
        self.chunks += 1
        tokens = self.stream_tokens
        n: int | None = None
        if tokens is None or not self.recording:
            pass
        elif type(chunk) is int:
            n = 1
            self.stream_tokens = tokens + 1  # the chunk is one token id
        else:
            n = _tokens.count(chunk)
            if n is None:
                self.stream_tokens = None
            else:
                self.stream_tokens = tokens + n
        if n != 0:
            if self.first_ns is None:
                self.first_ns = now
                if n is not None and type(chunk) is not int:
                    self.seq_rows = _rows(chunk)
            self.last_ns = now
            self.timed_chunks += 1
        if type(chunk) is str and self.recording:
            cfg = _settings.get_config()
            # Keep text only while the cap can still use it: once past content_max_chars the
            # rest would be cut anyway (what is kept already exceeds the cap: marked truncated).
            if cfg.capture_content and self.completion_chars <= cfg.content_max_chars:
                if self.completion_parts is None:
                    self.completion_parts = []
                self.completion_parts.append(chunk)
                self.completion_chars += len(chunk)


def _rows(chunk: Any) -> int:
    """Sequences in a counted chunk: rows of a 2-D array/tensor or of a list of rows (a batch
    streamed as ``[[t], [t]]``), else 1. Only the first element of a list is looked at."""
    shape = getattr(chunk, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) == 2 and shape[0] > 0 else 1
    if isinstance(chunk, (list, tuple)) and chunk:
        first = chunk[0]
        if isinstance(first, (list, tuple)) or len(getattr(first, "shape", ())) == 1:
            return len(chunk)
    return 1


def mark_streamed(state: RequestSpan) -> None:
    """The call returned a stream: ``gen_ai.request.stream`` is true unless ``stream=`` said
    otherwise (written attributes replace the start attribute)."""
    if state.spec.stream_inferred and not state.spec.stream:
        state.attributes[semconv.GEN_AI_REQUEST_STREAM] = True


def start(spec: Spec, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RequestSpan:
    """Start the request span (not yet current); attributes known at start go to the sampler."""
    found = spec.pick(instance, args, kwargs) if (spec.positions or spec.var_kw) else {}
    attrs = spec.start_attrs
    name = spec.name
    metric_attrs = spec.metric_attrs
    if found:
        attrs = dict(attrs)
        if name is None:
            model = found.get("model")
            if isinstance(model, str) and model:
                name = f"{spec.operation} {model}"
                attrs[semconv.GEN_AI_REQUEST_MODEL] = model
                metric_attrs = dict(metric_attrs)
                metric_attrs[semconv.GEN_AI_REQUEST_MODEL] = model
        max_tokens = found.get("max_new_tokens", found.get("max_tokens"))
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    if name is None:  # no model: the span is named after the operation alone
        name = spec.operation
    span = _tracing.start_span(name, attrs)
    state = RequestSpan(span, span.is_recording(), spec, found)
    state.metric_attrs = metric_attrs
    return state


def _infer(state: RequestSpan, result: Any, has_result: bool) -> tuple[int | None, int | None]:
    """Fill inferred attributes that record() did not set; return (input, output) tokens.

    Three steps, each guarded on its own and written as soon as it is done: usage, the prompt
    fingerprint, captured content. A fault in a later step (an odd ``messages`` argument, say)
    keeps what the earlier ones found.
    """
    attrs = state.attributes
    found = state.found
    call = None
    if found and not _TOKEN_ARGS.isdisjoint(found):
        try:
            call = CallTokens(found)
        except Exception as fault:  # an unreadable argument: the result may still tell
            swallow("usage.arguments", fault)
    usage = from_result(result if has_result else None, call)
    out = usage.output_tokens
    if usage.output_by_shape and state.batch_output_tokens is not None:
        # multi-row generate() output, counted by its width, includes the padding after each
        # row's EOS; the model's own calls counted it exactly
        out = state.batch_output_tokens
    if state.stream_tokens is not None and state.chunks:
        out = state.stream_tokens
    inferred: dict[str, Any] = {}
    if usage.input_tokens is not None:
        inferred[semconv.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
    if out is not None:
        inferred[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = out
    if usage.cache_read_tokens is not None:
        inferred[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    if usage.response_model:
        inferred[semconv.GEN_AI_RESPONSE_MODEL] = usage.response_model
    if usage.finish_reasons:
        inferred[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = usage.finish_reasons
    _merge(attrs, inferred)  # written first: later steps cannot lose it
    if semconv.PROMPT_FINGERPRINT not in attrs:
        try:
            prompt_text = found.get("prompt")
            fp = None
            if usage.prompt_ids is not None:
                fp = _fingerprint.attributes_for_ids(usage.prompt_ids)
            elif isinstance(prompt_text, str):
                fp = _fingerprint.attributes_for_text(prompt_text)
            if fp:
                _merge(attrs, fp)
        except Exception as fault:
            swallow("request.fingerprint", fault)
    cfg = _settings.get_config()
    if cfg.capture_content:
        try:
            _merge(attrs, _content_attributes(state, result, usage.finish_reasons,
                                              cfg.content_max_chars))
        except Exception as fault:
            swallow("request.content", fault)
    inp = attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)
    outp = attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    return (inp if isinstance(inp, int) else None, outp if isinstance(outp, int) else None)


def _merge(attrs: dict[str, Any], inferred: dict[str, Any]) -> None:
    """Add what was inferred; what record() set stays."""
    for key, value in inferred.items():
        if key not in attrs:
            attrs[key] = value


def _content_attributes(state: RequestSpan, result: Any, finish_reasons: Any,
                        max_chars: int) -> dict[str, Any]:
    """gen_ai.input/output.messages (content capture is on). No truth tests on arguments: an
    array of messages has no truth value."""
    attrs = state.attributes
    prompt = None
    if semconv.GEN_AI_INPUT_MESSAGES not in attrs:
        prompt = state.found.get("messages")
        if prompt is None:
            prompt = state.found.get("prompt")
    completion = None
    if semconv.GEN_AI_OUTPUT_MESSAGES not in attrs:
        if state.completion_parts is not None:
            completion = "".join(state.completion_parts)
        elif isinstance(result, str):
            completion = result
    reason = finish_reasons[0] if finish_reasons else None
    return _content.message_attributes(prompt, completion, max_chars, reason)


def finish(state: RequestSpan, result: Any = None, exc: BaseException | None = None,
           has_result: bool = True) -> None:
    """End the request span exactly once (later calls do nothing). Never raises."""
    if state.done:
        return
    state.done = True
    end_ns = _now_ns()
    span = state.span
    if not state.recording:
        try:
            span.end()
        except Exception as fault:
            swallow("request.end", fault)
        return
    inp = out = None
    ttft_s = tpot_s = None
    metric_attrs = state.metric_attrs
    try:
        inp, out = _infer(state, result, has_result and exc is None)
    except Exception as fault:
        swallow("request.usage", fault)
    try:
        attrs = state.attributes
        if state.chunks:
            attrs[semconv.REQUEST_STREAM_CHUNKS] = state.chunks
        if state.first_ns is not None:
            ttft_ns = state.first_ns - state.start_ns
            attrs[semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS] = ttft_ns
            ttft_s = ttft_ns / 1e9
            attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttft_s
            # Needs >= 2 timed chunks: tokens that all arrived in one chunk have no spacing.
            per_seq = (out // state.seq_rows if out is not None and state.timed_chunks > 1
                       else None)
            if per_seq is not None and per_seq > 1 and state.last_ns is not None:
                tpot_ns = (state.last_ns - state.first_ns) // (per_seq - 1)
                attrs[semconv.REQUEST_TIME_PER_OUTPUT_TOKEN_NS] = tpot_ns
                tpot_s = tpot_ns / 1e9
        response_model = attrs.get(semconv.GEN_AI_RESPONSE_MODEL)
        if isinstance(response_model, str):
            if semconv.GEN_AI_REQUEST_MODEL not in metric_attrs:
                span.update_name(f"{state.spec.operation} {response_model}")
            metric_attrs = dict(metric_attrs)
            metric_attrs[semconv.GEN_AI_RESPONSE_MODEL] = response_model
    except Exception as fault:
        swallow("request.attributes", fault)
    etype = None
    if exc is not None and not isinstance(exc, GeneratorExit):
        # Its own step: a fault in the attributes above must not hide the failure.
        etype = record_error(span, exc, "request.error")
        state.attributes[semconv.ERROR_TYPE] = etype
    try:
        # flush_attributes writes one atomic snapshot, so a RequestHandle.record() racing in
        # from a batcher thread cannot change the dict while the span iterates it.
        state.flush_attributes()
    except Exception as fault:
        swallow("request.flush", fault)
    try:
        span.end()
    except Exception as fault:
        swallow("request.end", fault)
    try:
        _metrics.record_request(metric_attrs, (end_ns - state.start_ns) / 1e9, ttft_s, tpot_s,
                                inp, out, etype)
    except Exception as fault:
        swallow("request.metrics", fault)
