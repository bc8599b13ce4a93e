"""Hostile input to the agents' contract gets a clear status through gRPC, never INTERNAL or a provider
failure that would count against the provider's circuit; and Gemini's made-up call ids stay unique over
a multi-round tool loop."""

from __future__ import annotations

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import MODELS, Emulators
from tests.helpers import details_of, user
from tests.integration.test_agents_roundtrip import WEATHER, answers, assistant_turn


async def _code(stub: llm_pb2_grpc.LLMServiceAsyncStub, request: llm_pb2.CompleteRequest) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(request, timeout=10)
    return refused.value.code()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_nan_in_a_tool_schema_is_invalid_argument_and_no_provider_is_called(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    tool = llm_pb2.Tool(
        name="f",
        parameters_json='{"type": "object", "properties": {"a": {"type": "number", "maximum": NaN}}}',
    )

    code = await _code(
        stub, llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi"), tools=[tool])
    )

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert emulators.completions(provider) == []


async def test_tool_arguments_nested_past_the_parser_are_invalid_argument(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    call = llm_pb2.ToolCall(id="call_1", name="get_weather", arguments_json="[" * 5000)
    messages = [
        *user("weather?"),
        llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, tool_calls=[call]),
        llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id="call_1", content="{}"),
    ]

    code = await _code(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages, tools=[WEATHER])
    )

    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_forged_anthropic_signature_is_the_providers_refusal_not_unavailable(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    forged = llm_pb2.ReasoningPart(text="thought", signature=b"\xff\xfe", provider="anthropic")
    messages = [
        *user("weather in Paris?"),
        llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, content="let me see", reasoning=[forged]),
        *user("and now?"),
    ]
    reasoning = llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=messages, reasoning=reasoning),
            timeout=10,
        )

    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(refused.value).reason == "PROVIDER_REJECTED_REQUEST"


async def test_gemini_call_ids_stay_unique_over_two_tool_rounds(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    ask = llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=user("weather in Paris?"), tools=[WEATHER])
    first = await stub.Complete(ask, timeout=10)
    second = await stub.Complete(ask, timeout=10)
    messages = [
        *user("weather in Paris?"),
        assistant_turn(first, first.content),
        *answers(first),
        *user("and again?"),
        assistant_turn(second, second.content),
        *answers(second),
    ]

    answered = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=messages, tools=[WEATHER]), timeout=10
    )

    ids = [call.id for call in (*first.tool_calls, *second.tool_calls)]
    assert len(ids) == len(set(ids)) == 2  # made up by the adapter (Gemini names none), never reused
    assert "tool get_weather returned" in answered.content


async def test_a_zero_thinking_budget_asks_for_no_thinking_where_the_api_allows_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    reasoning = llm_pb2.Reasoning(budget_tokens=0)

    for provider in ("anthropic", "gemini"):
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi"), reasoning=reasoning),
            timeout=10,
        )

    (anthropic,) = emulators.completions("anthropic")
    (gemini,) = emulators.completions("gemini")
    assert "thinking" not in anthropic.body
    # Gemini 3 has no budget: MINIMAL is what Google documents as "no thinking" for most queries.
    thinking = gemini.body["generationConfig"]["thinkingConfig"]
    assert thinking.get("thinkingLevel", thinking.get("thinking_level")) == "MINIMAL"  # the API reads either
    assert "thinkingBudget" not in thinking
    assert "thinking_budget" not in thinking
