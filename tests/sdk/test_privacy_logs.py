"""No prompt or completion text reaches the logs by default either: a swallowed fault's
message can quote user data (a user object's error, a completion passed to the wrong field)."""

from __future__ import annotations

import pytest

import inferaudit_sdk as ia
from inferaudit_sdk import _guard

SECRET = "SECRETPROMPT123"


class _Response:
    """A user object whose usage property fails with the prompt in its message."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt

    @property
    def usage(self):
        raise RuntimeError(f"usage not ready for {self.prompt}")


@pytest.mark.parametrize("capture", [False, True], ids=["capture-off", "capture-on"])
def test_fault_messages_in_the_log_follow_content_capture(otel, audit_config, caplog, capture):
    audit_config(capture_content=capture)

    @ia.audited(model="m")
    def mixed_up(prompt):
        ia.record(output_tokens="the answer " + prompt)  # a completion in the count's place
        return "x"

    @ia.audited(model="m")
    def returns_response(prompt):
        return _Response(prompt)

    with caplog.at_level("WARNING", logger="inferaudit_sdk"):
        assert mixed_up(SECRET) == "x"
        assert isinstance(returns_response(SECRET), _Response)
    faults = _guard.error_counts()
    assert faults.get("record") == 1 and sum(faults.values()) >= 2, faults
    # The SDK's own message (field names and types only) is logged in full either way.
    assert "record(output_tokens=...) must be a non-negative int" in caplog.text
    assert "a str of length 26" in caplog.text
    if capture:
        assert f"usage not ready for {SECRET}" in caplog.text
    else:
        assert SECRET not in caplog.text
        assert "message withheld" in caplog.text and "raised at " in caplog.text
