"""The redactor's fast path (`Redactor.clean`) never lets through what the patterns would scrub."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from server.observability.logging import RedactProcessor
from server.observability.redact import Redactor, literal_prefix
from server.providers.registry import SPECS

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


SHAPES = [spec.key_pattern for spec in SPECS.values()]


class PatternsOnly(Redactor):
    """The redactor without its fast path: what it did before it had one."""

    def clean(self, text: str) -> bool:
        return False


def _patterns_only(text: str) -> str:
    return PatternsOnly([SECRET], SHAPES)(text)


@settings(max_examples=500)
@given(TEXTS)
def test_redactor_scrubs_as_the_patterns_alone_do(text: str) -> None:
    assert Redactor([SECRET], SHAPES)(text) == _patterns_only(text)


@settings(max_examples=300)
@given(st.lists(TEXTS, min_size=1, max_size=6))
def test_log_processor_scrubs_each_value_as_the_patterns_alone_do(values: list[str]) -> None:
    event: dict[str, Any] = {f"field{i}": value for i, value in enumerate(values)}
    event |= {"count": 3, "headers": {"nested": values[0], "list": [values[-1]]}}
    fast = RedactProcessor(Redactor([SECRET], SHAPES))(None, "info", dict(event))
    slow = RedactProcessor(PatternsOnly([SECRET], SHAPES))(None, "info", dict(event))
    assert fast == slow


def test_a_canonical_call_line_is_clean() -> None:
    line = "llm.call\0Complete\0gpt-5.4-mini\0openai\0OK\0req_0123456789"
    assert Redactor([SECRET], SHAPES).clean(line)


def test_every_provider_key_shape_has_a_literal_prefix_to_look_for() -> None:
    assert all(literal_prefix(shape) for shape in SHAPES)


def test_a_shape_without_a_literal_prefix_turns_the_fast_path_off() -> None:
    redactor = Redactor([SECRET], [re.compile(r"[0-9a-f]{40}")])
    assert not redactor.clean("nothing here")
    assert redactor("sha " + "a" * 40) == "sha [REDACTED]"
