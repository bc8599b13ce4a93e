"""Fidelity to what the provider said: every finish reason each SDK defines has a documented meaning,
truncation is never reported as a clean stop, a stream without usage is never a silent zero cost, and a
reasoning model's default max_tokens leaves it room to think."""

from __future__ import annotations

import typing

import pytest
import structlog
from anthropic.types import StopReason
from google.genai import types as genai_types
from openai.types.chat.chat_completion import Choice
from openai.types.responses.response import IncompleteDetails

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.core.types import FinishReason
from server.providers import anthropic as anthropic_adapter
from server.providers import gemini as gemini_adapter
from server.providers import openai as openai_adapter
from server.providers import openai_responses_translate as responses_translate
from tests.conftest import MODELS, SAMPLING_MODELS, Emulators
from tests.helpers import user


def test_every_finish_reason_each_sdk_defines_is_mapped() -> None:
    openai_reasons = set(typing.get_args(Choice.model_fields["finish_reason"].annotation))
    anthropic_reasons = set(typing.get_args(StopReason))
    gemini_reasons = {reason.value for reason in genai_types.FinishReason}

    assert openai_reasons <= set(openai_adapter.FINISH_REASONS)
    assert anthropic_reasons <= set(anthropic_adapter.FINISH_REASONS)
    assert gemini_reasons <= set(gemini_adapter.FINISH_REASONS)
    assert [r for r, f in gemini_adapter.FINISH_REASONS.items() if f is FinishReason.STOP] == ["STOP"]
    incomplete = typing.get_args(typing.get_args(IncompleteDetails.model_fields["reason"].annotation)[0])
    assert set(incomplete) <= set(responses_translate.INCOMPLETE_REASONS)


async def _finish(stub: llm_pb2_grpc.LLMServiceAsyncStub, model: str, raw: str, streamed: bool) -> int:
    text = f"hi [[emulate: finish={raw}]]"
    if streamed:
        events = [
            e async for e in stub.Stream(llm_pb2.StreamRequest(model=model, messages=user(text)), timeout=10)
        ]
        return events[-1].done.finish_reason
    response = await stub.Complete(llm_pb2.CompleteRequest(model=model, messages=user(text)), timeout=10)
    return response.finish_reason


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("provider", "raw", "expected"),
    [
        ("gemini", "RECITATION", llm_pb2.FINISH_REASON_CONTENT_FILTER),
        ("gemini", "CONTINUATION", llm_pb2.FINISH_REASON_LENGTH),
        ("gemini", "MALFORMED_FUNCTION_CALL", llm_pb2.FINISH_REASON_OTHER),
        ("gemini", "SPII", llm_pb2.FINISH_REASON_CONTENT_FILTER),
        ("anthropic", "pause_turn", llm_pb2.FINISH_REASON_OTHER),
        ("anthropic", "model_context_window_exceeded", llm_pb2.FINISH_REASON_LENGTH),
        ("chat_completions", "tool_calls", llm_pb2.FINISH_REASON_TOOL_CALLS),
        ("openai", "length", llm_pb2.FINISH_REASON_LENGTH),  # Responses: incomplete, max_output_tokens
        ("openai", "content_filter", llm_pb2.FINISH_REASON_CONTENT_FILTER),
        ("openai", "max_messages", llm_pb2.FINISH_REASON_OTHER),
    ],
)
async def test_provider_finish_reason_reaches_the_caller_normalised(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, raw: str, expected: int, streamed: bool
) -> None:
    # OpenAI's own models are on the Responses API; gpt-4.1-mini is the one on Chat Completions.
    model = SAMPLING_MODELS["openai"] if provider == "chat_completions" else MODELS[provider]
    assert await _finish(stub, model, raw, streamed) == expected


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_unknown_finish_reason_is_other_and_logged_with_its_raw_value(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        finish = await _finish(stub, MODELS[provider], "brand_new_reason", streamed=False)

    assert finish == llm_pb2.FINISH_REASON_OTHER
    unknown = [e for e in logs if e["event"] == "provider.unknown_finish_reason"]
    assert unknown[0]["finish_reason"] == "brand_new_reason"
    assert unknown[0]["provider"] == provider


async def test_openai_stream_without_its_usage_chunk_reports_an_estimate_not_zero(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    events = [
        e
        async for e in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS["openai"], messages=user("a b c [[emulate: no_usage=1]]")),
            timeout=10,
        )
    ]

    done = events[-1].done
    assert done.usage.usage_estimated
    assert done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens > 0
    assert done.cost_usd > 0


async def test_openai_reply_without_usage_reports_an_estimate_not_zero(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("a b c [[emulate: no_usage=1]]")),
        timeout=10,
    )

    assert response.usage.usage_estimated
    assert response.usage.completion_tokens > 0
    assert response.cost_usd > 0


async def test_provider_usage_is_not_marked_estimated(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    events = [
        e
        async for e in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS["openai"], messages=user("a")), timeout=10
        )
    ]

    assert not events[-1].done.usage.usage_estimated


async def test_reasoning_models_default_max_tokens_leaves_room_to_think(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi")), timeout=10)
    await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi"), max_tokens=50), timeout=10
    )

    sent = [r.body["max_tokens"] for r in emulators.completions("anthropic")]
    assert sent == [16384, 50]


async def test_anthropic_stream_usage_comes_from_the_cumulative_message_delta(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    events = [
        e
        async for e in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS["anthropic"], messages=user("a b c")), timeout=10
        )
    ]

    usage = events[-1].done.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 5)
    assert not usage.usage_estimated
