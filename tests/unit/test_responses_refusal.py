"""A model's refusal on the Responses API is reported as CONTENT_FILTER, not as an ordinary answer: a
`refusal` content part (openai/types/responses/response_output_refusal.py) in a completed response."""

from __future__ import annotations

from server.core.types import FinishReason
from server.providers import openai_responses_translate as translate


def completed(*parts: dict[str, str]) -> dict[str, object]:
    return {
        "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": list(parts)}],
    }


def test_a_refusal_part_finishes_as_content_filter() -> None:
    response = completed({"type": "refusal", "refusal": "I can't help with that."})

    assert translate.finish(response, has_calls=False) is FinishReason.CONTENT_FILTER
    assert translate.output(response)[0] == "I can't help with that."


def test_output_text_finishes_as_stop() -> None:
    response = completed({"type": "output_text", "text": "hello", "annotations": []})  # type: ignore[dict-item]

    assert translate.finish(response, has_calls=False) is FinishReason.STOP
