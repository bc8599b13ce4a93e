"""Core rules of the agents' contract that need no wire: cost under prompt caching, the structured-output
check, and the prompt bound limits reserve."""

from __future__ import annotations

import pytest

from server.core.catalogue import ModelInfo, Tier
from server.core.structured import check_output
from server.core.types import (
    IMAGE_TOKEN_BOUND,
    ChatRequest,
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    ResponseFormatType,
    Role,
    StructuredOutput,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)

CLAUDE = ModelInfo(
    id="claude",
    provider="anthropic",
    tier=Tier.FAST,
    context_window=200_000,
    max_output_tokens=64_000,
    input_per_mtok=1.0,
    output_per_mtok=5.0,
    cached_input_per_mtok=0.1,
    cache_write_per_mtok=1.25,
)
STOP = FinishReason.STOP
PERSON = ResponseFormat(
    ResponseFormatType.JSON_SCHEMA,
    "person",
    {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
)


def test_cached_and_written_prompt_tokens_are_priced_at_their_own_rates() -> None:
    usage = Usage(
        prompt_tokens=1_000_000, completion_tokens=0, cached_prompt_tokens=600_000, cache_write_tokens=300_000
    )

    # 100k at input (1.0), 600k cached (0.1), 300k written (1.25)
    assert CLAUDE.cost(usage) == pytest.approx(0.1 + 0.06 + 0.375)


def test_cache_prices_default_to_the_input_price() -> None:
    plain = ModelInfo("m", "openai", Tier.FAST, 1000, 100, 2.0, 8.0)

    assert plain.cost(Usage(prompt_tokens=1_000_000, cached_prompt_tokens=500_000)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"age": 41}', StructuredOutput(valid=True)),
        ('{"age": "x"}', StructuredOutput(valid=False, error="$.age: 'x' is not of type 'integer'")),
        ("{}", StructuredOutput(valid=False, error="$: 'age' is a required property")),
    ],
)
def test_a_json_schema_answer_is_checked_against_its_schema(text: str, expected: StructuredOutput) -> None:
    assert check_output(text, PERSON, STOP) == expected


def test_a_json_object_answer_must_be_an_object() -> None:
    json_object = ResponseFormat(ResponseFormatType.JSON_OBJECT)

    assert check_output("[1]", json_object, STOP) == StructuredOutput(
        False, "the answer is JSON but not an object"
    )
    assert check_output("{}", json_object, STOP) == StructuredOutput(True)
    assert not check_output("nope", json_object, STOP).valid  # type: ignore[union-attr]


def test_free_text_is_not_checked() -> None:
    assert check_output("anything", None, STOP) is None
    assert check_output("anything", ResponseFormat(ResponseFormatType.TEXT), STOP) is None


def test_a_turn_that_ends_in_tool_calls_is_not_checked() -> None:
    assert check_output("", PERSON, FinishReason.TOOL_CALLS) is None


def test_the_prompt_bound_counts_parts_tool_turns_schemas_and_attachments() -> None:
    request = ChatRequest(
        model="m",
        messages=(
            Message(
                Role.USER,
                "look",
                parts=(TextPart("here"), ImagePart(b"png", "image/png"), DocumentPart(b"%PDF")),
            ),
            Message(Role.ASSISTANT, "", tool_calls=(ToolCall("c1", "lookup", '{"q": "x"}'),)),
            Message(Role.TOOL, "result", tool_call_id="c1"),
        ),
        tools=(ToolSpec("lookup", "Look it up"),),
        response_format=PERSON,
    )

    texts = "".join(request.prompt_texts())
    assert all(piece in texts for piece in ("lookhere", '{"q": "x"}', "result", "Look it up", '"integer"'))
    assert request.attachment_token_bound() == IMAGE_TOKEN_BOUND + 4
