"""No prompt or completion text on spans by default; opt-in GenAI message attributes."""

from __future__ import annotations

import json

import pytest

import inferaudit_sdk as ia
from inferaudit_sdk import semconv
from inferaudit_sdk.config import AuditConfig

PROMPT = "my secret medical question about zebras"
COMPLETION = "a confidential answer about zebras"


def _all_values(span):
    values = [str(v) for v in span.attributes.values()]
    for ev in span.events:
        values.extend(str(v) for v in ev.attributes.values())
    for link in span.links:
        values.extend(str(v) for v in (link.attributes or {}).values())
    values.append(span.name)
    return values


def _run_all_paths():
    @ia.audited(model="m")
    def by_arg(prompt):
        return COMPLETION

    @ia.audited(model="m")
    def by_record():
        ia.record(prompt_text=PROMPT, completion_text=COMPLETION)
        return None

    @ia.audited(model="m")
    def streamed(prompt):
        yield "a confidential "
        yield "answer about zebras"

    @ia.audited(model="m")
    def chat(messages):
        return COMPLETION

    by_arg(PROMPT)
    by_record()
    list(streamed(PROMPT))
    chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}])


def test_default_config_never_captures_content(otel, monkeypatch):
    monkeypatch.delenv(semconv.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    exporter, _ = otel
    _run_all_paths()
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    for span in spans:
        assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
        assert semconv.GEN_AI_OUTPUT_MESSAGES not in span.attributes
        for value in _all_values(span):
            assert "zebras" not in value, (span.name, value)
    # Fingerprints are there instead.
    assert all(semconv.PROMPT_FINGERPRINT in s.attributes for s in spans[:3])


def test_env_opt_in_captures_messages(otel, monkeypatch):
    monkeypatch.setenv(semconv.ENV_CAPTURE_MESSAGE_CONTENT, "true")
    exporter, _ = otel
    _run_all_paths()
    by_arg, by_record, streamed, chat = exporter.get_finished_spans()
    for span in (by_arg, by_record, streamed):
        inp = json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES])
        out = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
        assert inp == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
        assert out[0]["role"] == "assistant"
        assert out[0]["parts"] == [{"type": "text", "content": COMPLETION}]
        assert semconv.CONTENT_TRUNCATED not in span.attributes
    msgs = json.loads(chat.attributes[semconv.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["parts"][0]["content"] == PROMPT


def test_truncation_marks_the_span(otel, audit_config):
    exporter, _ = otel
    audit_config(capture_content=True, content_max_chars=10)

    @ia.audited
    def handler(prompt):
        return "y" * 50

    handler("x" * 50)
    (span,) = exporter.get_finished_spans()
    inp = json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES])
    out = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert inp[0]["parts"][0]["content"] == "x" * 10
    assert out[0]["parts"][0]["content"] == "y" * 10
    assert span.attributes[semconv.CONTENT_TRUNCATED] is True


@pytest.mark.parametrize("raw,expected", [("span_only", True), ("no_content", False),
                                          ("false", False), ("1", True)])
def test_env_values_follow_the_genai_switch(raw, expected):
    cfg = AuditConfig.from_env({semconv.ENV_CAPTURE_MESSAGE_CONTENT: raw})
    assert cfg.capture_content is expected


def test_recorded_prompt_and_returned_completion_combine(otel, audit_config):
    exporter, _ = otel
    audit_config(capture_content=True)

    @ia.audited
    def handler(messages):
        ia.record(prompt_text="explicit prompt")
        return "the answer"

    handler([{"role": "user", "content": "ignored: record() wins"}])
    (span,) = exporter.get_finished_spans()
    inp = json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES])
    out = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert inp[0]["parts"][0]["content"] == "explicit prompt"
    assert out[0]["parts"][0]["content"] == "the answer"


def test_streamed_completion_keeps_only_what_the_cap_can_use(otel, audit_config):
    """With capture on, a long text stream is buffered only up to the size cap (plus one
    chunk), not whole, and the captured text is still marked truncated."""
    audit_config(capture_content=True, content_max_chars=10)
    exporter, _ = otel
    seen = []

    @ia.audited(model="m")
    def stream():
        for i in range(1000):
            yield f"chunk{i:04d} "
            seen.append(len(ia.current_request()._active.completion_parts or ()))

    assert len(list(stream())) == 1000
    assert max(seen) <= 2
    (span,) = exporter.get_finished_spans()
    out = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert out[0]["parts"][0]["content"] == "chunk0000 "
    assert span.attributes[semconv.CONTENT_TRUNCATED] is True
