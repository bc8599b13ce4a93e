"""A tool conversation started on one provider and continued on another (failover, or a caller switching
models) reaches the next provider in a form it accepts: another provider's reasoning parts and signatures
are not sent, and a function call Gemini did not sign goes to Gemini 3 with the signature Google documents
for that case. Written through gRPC only, so it holds whichever wire API serves OpenAI."""

from __future__ import annotations

import itertools
import json
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import Emulators
from tests.helpers import details_of, user

MODELS = {"openai": "gpt-5.4-mini", "anthropic": "claude-opus-4-7", "gemini": "gemini-3.5-flash"}
# Reasoning on the legs whose thinking this test is about; OpenAI's own path is the Responses work's.
REASONING = {
    "openai": None,
    "anthropic": llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM),
    "gemini": llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM),
}
WEATHER = llm_pb2.Tool(
    name="get_weather",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
DUMMY = "skip_thought_signature_validator"
"""The JSON value Google documents (ai.google.dev/gemini-api/docs/thought-signatures#faqs)."""


async def turn(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, messages: list[llm_pb2.Message], streamed: bool
) -> tuple[str, Any]:
    fields: dict[str, Any] = {"model": MODELS[provider], "messages": messages, "tools": [WEATHER]}
    if REASONING[provider] is not None:
        fields["reasoning"] = REASONING[provider]
    if not streamed:
        response = await stub.Complete(llm_pb2.CompleteRequest(**fields), timeout=10)
        return response.content, response
    events = [e async for e in stub.Stream(llm_pb2.StreamRequest(**fields), timeout=10)]
    text = "".join(e.delta for e in events if e.WhichOneof("event") == "delta")
    return text, events[-1].done


def continued(first: Any) -> list[llm_pb2.Message]:
    """The conversation after the first provider's tool call: its turn sent back as it came (reasoning
    parts and signatures included), then the tool's result."""
    [call] = first.tool_calls
    return [
        *user("What is the weather in Paris?"),
        llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, tool_calls=first.tool_calls, reasoning=first.reasoning),
        llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=call.id, content="sunny"),
    ]


def assert_nothing_foreign_sent(emulators: Emulators, origin: str, target: str) -> None:
    body = emulators.completions(target)[-1].body
    if target == "anthropic":
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        assert not [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
    elif target == "gemini":
        parts = [p for c in body["contents"] for p in c["parts"]]
        assert not [p for p in parts if p.get("thought")]
        [call] = [p for p in parts if "functionCall" in p or "function_call" in p]
        signature = call.get("thoughtSignature", call.get("thought_signature"))
        assert signature == DUMMY  # Gemini's documented stand-in for a call it did not sign


@pytest.mark.parametrize(("origin", "target"), list(itertools.permutations(MODELS, 2)))
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_tool_conversation_started_on_one_provider_continues_on_another(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, origin: str, target: str, streamed: bool
) -> None:
    _, first = await turn(stub, origin, user("What is the weather in Paris?"), streamed)
    text, second = await turn(stub, target, continued(first), streamed)

    assert first.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    if origin != "openai":
        assert first.reasoning  # there was foreign reasoning to leave out
    assert text == "emulator reply: tool get_weather returned sunny"
    assert second.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert_nothing_foreign_sent(emulators, origin, target)


async def test_a_claude_thinking_budget_cannot_continue_another_providers_tool_turn(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    _, first = await turn(stub, "gemini", user("What is the weather in Paris?"), False)
    request = llm_pb2.CompleteRequest(
        model="claude-haiku-4-5",
        messages=continued(first),
        tools=[WEATHER],
        reasoning=llm_pb2.Reasoning(budget_tokens=2048),
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(request, timeout=10)

    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tool turn Claude did not think in" in details.message
    assert emulators.completions("anthropic") == []
