"""The redactor's fast path (`Redactor.clean`) never lets through what the patterns would scrub."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.observability import redact
from server.observability.logging import RedactProcessor
from server.observability.redact import Redactor

SECRET = "configured-secret-value"
PIECES = st.sampled_from(
    [
        "sk-",
        "sk-ant-",
        "sk-proj-",
        "AIza",
        "Bearer ",
        "bearer\t",
        "Authorization: ",
        "x-api-key=",
        "API_KEY='",
        "apikey:",
        "0123456789abcdefghij",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        SECRET,
        " ",
        "\n",
        '"',
        "é",
        "model gpt-5.4-mini",
    ]
)
TEXTS = st.lists(PIECES | st.text(max_size=8), max_size=12).map("".join)


def _patterns_only(text: str) -> str:
    """What the redactor did before it had a fast path."""
    text = text.replace(SECRET, redact.REDACTED)
    text = redact._KEY_SHAPES.sub(redact.REDACTED, text)
    return redact._LABELLED.sub(lambda match: match.group("label") + redact.REDACTED, text)


@settings(max_examples=500)
@given(TEXTS)
def test_redactor_scrubs_as_the_patterns_alone_do(text: str) -> None:
    assert Redactor([SECRET])(text) == _patterns_only(text)


@settings(max_examples=300)
@given(st.lists(TEXTS, min_size=1, max_size=6))
def test_log_processor_scrubs_each_value_as_the_patterns_alone_do(values: list[str]) -> None:
    event = {f"field{i}": value for i, value in enumerate(values)} | {"count": 3}
    scrubbed = RedactProcessor(Redactor([SECRET]))(None, "info", dict(event))
    assert scrubbed == {k: _patterns_only(v) if isinstance(v, str) else v for k, v in event.items()}


def test_a_canonical_call_line_is_clean() -> None:
    assert Redactor([SECRET]).clean("llm.call\0Complete\0gpt-5.4-mini\0openai\0OK\0req_0123456789")
