"""Opt-in capture of prompt and completion text as GenAI message attributes.

Off by default: text is only put on spans when ``AuditConfig.capture_content`` is true
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). The value is the GenAI convention's
message list serialised as JSON, e.g. ``[{"role": "user", "parts": [{"type": "text",
"content": "..."}]}]``. Text is cut to ``content_max_chars`` per attribute (counted over the
text parts), and ``inferaudit.content.truncated`` is set when anything was cut.
:func:`is_content_name` tells ``record()`` which extra attribute names carry text, so those too
stay off spans while capture is off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from inferaudit_sdk import semconv

ROLE_USER = "user"
ROLE_ASSISTANT = "assistant"

# Attribute names that carry prompt/completion text: the GenAI content attributes, the older
# gen_ai.prompt / gen_ai.completion spellings (and their children, gen_ai.prompt.0.content),
# and the argument and record() field names the SDK itself reads text from. An exception's
# message and stack trace are in: they quote the input that failed (the SDK's own exception
# events gate them the same way, _exceptions.py).
_CONTENT_ATTRIBUTES = (
    semconv.GEN_AI_INPUT_MESSAGES,
    semconv.GEN_AI_OUTPUT_MESSAGES,
    semconv.GEN_AI_SYSTEM_INSTRUCTIONS,
    semconv.GEN_AI_TOOL_CALL_ARGUMENTS,
    semconv.GEN_AI_TOOL_CALL_RESULT,
    semconv.GEN_AI_TOOL_DEFINITIONS,
    semconv.GEN_AI_TOOL_DESCRIPTION,
    semconv.LEGACY_GEN_AI_PROMPT,
    semconv.LEGACY_GEN_AI_COMPLETION,
)
_CONTENT_NAMES = frozenset(
    (*_CONTENT_ATTRIBUTES, "prompt", "completion", "messages", "prompt_text", "completion_text",
     semconv.EXCEPTION_MESSAGE, semconv.EXCEPTION_STACKTRACE)
)
_CONTENT_PREFIXES = tuple(f"{name}." for name in _CONTENT_ATTRIBUTES)


def is_content_name(name: str) -> bool:
    """True when an attribute named ``name`` would carry message text (case-insensitive)."""
    low = name.lower()
    return low in _CONTENT_NAMES or low.startswith(_CONTENT_PREFIXES)


def _messages_from(value: Any, default_role: str) -> list[dict[str, Any]] | None:
    """Messages from a string or a chat-style list of ``{"role", "content"}`` dicts."""
    if isinstance(value, str):
        return [{"role": default_role, "parts": [{"type": "text", "content": value}]}]
    if isinstance(value, Sequence) and value and all(isinstance(m, dict) for m in value):
        out = []
        for m in value:
            content = m.get("content")
            if isinstance(content, str):
                parts = [{"type": "text", "content": content}]
            elif isinstance(content, list):
                parts = [
                    {"type": "text", "content": p.get("text") or p.get("content") or ""}
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text") or p.get("content"), str)
                ]
            else:
                continue
            out.append({"role": str(m.get("role") or default_role), "parts": parts})
        return out or None
    return None


def _truncate(messages: list[dict[str, Any]], max_chars: int) -> bool:
    budget = max_chars
    cut = False
    for m in messages:
        for p in m["parts"]:
            text = p["content"]
            if len(text) > budget:
                p["content"] = text[: max(budget, 0)]
                cut = True
            budget -= len(p["content"])
    return cut


def message_attributes(
    prompt: Any, completion: Any, max_chars: int, finish_reason: str | None = None
) -> dict[str, Any]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` for what is known (may be empty)."""
    attrs: dict[str, Any] = {}
    truncated = False
    inp = _messages_from(prompt, ROLE_USER) if prompt is not None else None
    if inp:
        truncated |= _truncate(inp, max_chars)
        attrs[semconv.GEN_AI_INPUT_MESSAGES] = json.dumps(inp, ensure_ascii=False)
    out = _messages_from(completion, ROLE_ASSISTANT) if completion is not None else None
    if out:
        truncated |= _truncate(out, max_chars)
        if finish_reason:
            for m in out:
                m["finish_reason"] = finish_reason
        attrs[semconv.GEN_AI_OUTPUT_MESSAGES] = json.dumps(out, ensure_ascii=False)
    if truncated:
        attrs[semconv.CONTENT_TRUNCATED] = True
    return attrs
