"""The catalogue's thinking fields are checked at start: a file that describes a thinking mode the
gateway could not honour is refused with what is wrong, never loaded to fail on a call."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import load_catalogue

NEW_MODEL = """
[models."gemini-9-pro"]
provider = "gemini"
tier = "premium"
context_window = 100000
max_output_tokens = 1000
input = 1.0
output = 2.0
reasoning = true
"""


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ('thinking = "levels"', "thinking_levels lists the levels"),
        ('thinking_levels = ["low"]', "thinking_levels lists the levels"),
        ('thinking = "adaptive"', "set effort = true"),
        ('thinking = "levels"\nthinking_levels = ["low", "high"]', "thinking_off = false"),
        ('thinking = "levels"\nthinking_levels = ["lowest"]', "thinking_levels"),
        ('thinking = "sometimes"', "thinking"),
    ],
)
def test_a_thinking_mode_the_gateway_cannot_honour_is_refused_at_start(
    tmp_path: Path, fields: str, problem: str
) -> None:
    overlay = tmp_path / "catalogue.toml"
    overlay.write_text(NEW_MODEL + fields + "\n")

    with pytest.raises(ValueError, match="is invalid") as refused:
        load_catalogue(overlay)

    assert problem in str(refused.value)


def test_the_bundled_catalogue_says_how_each_default_reasoning_model_thinks() -> None:
    models = load_catalogue().models()

    assert models["claude-opus-4-7"].capabilities.thinking == "adaptive"
    assert models["claude-sonnet-4-6"].capabilities.thinking == "both"
    assert models["claude-haiku-4-5"].capabilities.effort is False
    assert models["gemini-3.1-pro-preview"].capabilities.thinking_levels == ("low", "medium", "high")
    assert models["gemini-3.1-pro-preview"].capabilities.thinking_off is False
    assert models["gemini-3.5-flash"].capabilities.thinking_levels[0] == "minimal"
