"""The agents' contract end to end, for each provider, through Complete and Stream: the gateway's adapters
on the official SDKs against the emulators, which enforce each API's rules (a tool result answers a call
by id, Anthropic thinking signatures and Gemini thought signatures come back unchanged, ...)."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import jsonschema
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.emulators.gemini_rules import decode_bytes
from tests.conftest import MODELS, Emulators
from tests.helpers import user

PROVIDERS = ("openai", "anthropic", "gemini")
# A real 1x1 PNG: the Anthropic emulator, like the API, checks an image's bytes against its media type.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WEATHER = llm_pb2.Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
Request = llm_pb2.CompleteRequest | llm_pb2.StreamRequest


def request(kind: type[Request], provider: str, messages: list[llm_pb2.Message], **fields: Any) -> Any:
    return kind(model=MODELS[provider], messages=messages, **fields)


async def call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    streamed: bool,
    provider: str,
    messages: list[llm_pb2.Message],
    **fields: Any,
) -> tuple[str, llm_pb2.StreamDone | llm_pb2.CompleteResponse, list[llm_pb2.ToolCallDelta]]:
    """(text, the final response or StreamDone, the tool-call deltas a stream relayed) of one call."""
    if not streamed:
        response = await stub.Complete(
            request(llm_pb2.CompleteRequest, provider, messages, **fields), timeout=10
        )
        return response.content, response, []
    events = [
        e async for e in stub.Stream(request(llm_pb2.StreamRequest, provider, messages, **fields), timeout=10)
    ]
    assert [e.WhichOneof("event") for e in events].count("done") == 1
    text = "".join(e.delta for e in events if e.WhichOneof("event") == "delta")
    deltas = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    return text, events[-1].done, deltas


def assistant(answer: llm_pb2.StreamDone | llm_pb2.CompleteResponse, content: str = "") -> llm_pb2.Message:
    """The assistant turn of an answer, sent back as it came: its tool calls and its reasoning."""
    return llm_pb2.Message(
        role=llm_pb2.ROLE_ASSISTANT, content=content, tool_calls=answer.tool_calls, reasoning=answer.reasoning
    )


def tool_result(call_id: str, text: str) -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=call_id, content=text)


def body(emulators: Emulators, provider: str, index: int = -1) -> Any:
    return emulators.completions(provider)[index].body


both = pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
providers = pytest.mark.parametrize("provider", PROVIDERS)


@providers
@both
async def test_a_tool_round_trip_calls_the_tool_then_answers_with_its_result(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str, streamed: bool
) -> None:
    question = user("What is the weather in Paris?")

    _, first, deltas = await call(stub, streamed, provider, question, tools=[WEATHER])
    [tool_call] = first.tool_calls
    text, second, _ = await call(
        stub,
        streamed,
        provider,
        [*question, assistant(first), tool_result(tool_call.id, "sunny, 21 C")],
        tools=[WEATHER],
    )

    assert first.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert tool_call.id
    assert tool_call.name == "get_weather"
    assert json.loads(tool_call.arguments_json) == {"city": "text"}  # the emulator's minimal valid instance
    if streamed:
        assert (deltas[0].name, deltas[0].id) == ("get_weather", tool_call.id)
        assert "".join(d.arguments_delta for d in deltas) == tool_call.arguments_json
        assert first.usage.completion_tokens > 0  # usage on the final event, also with tool calls
    assert text == "emulator reply: tool get_weather returned sunny, 21 C"
    assert second.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert len(emulators.completions(provider)) == 2


@providers
async def test_a_required_named_tool_is_what_the_model_calls(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    other = llm_pb2.Tool(name="get_time", parameters_json='{"type": "object", "properties": {}}')
    choice = llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_REQUIRED, tool_name="get_time")

    _, answer, _ = await call(
        stub, False, provider, user("time?"), tools=[WEATHER, other], tool_choice=choice
    )

    assert [c.name for c in answer.tool_calls] == ["get_time"]
    sent = body(emulators, provider)
    expected = {
        "openai": ("tool_choice", {"type": "function", "name": "get_time"}),  # the Responses API shape
        "anthropic": ("tool_choice", {"type": "tool", "name": "get_time"}),
        "gemini": (
            "toolConfig",
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
        ),
    }[provider]
    assert sent[expected[0]] == expected[1]


@providers
async def test_tool_choice_none_gets_text(stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str) -> None:
    choice = llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_NONE)

    text, answer, _ = await call(stub, False, provider, user("hello"), tools=[WEATHER], tool_choice=choice)

    assert text == "emulator reply: hello"
    assert not answer.tool_calls


@providers
@both
async def test_a_json_schema_answer_validates_against_the_schema(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str, streamed: bool
) -> None:
    fmt = llm_pb2.ResponseFormat(
        type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="person", schema_json=json.dumps(PERSON)
    )

    text, answer, _ = await call(
        stub, streamed, provider, user("Who wrote the first program?"), response_format=fmt
    )

    jsonschema.validate(json.loads(text), PERSON)
    assert answer.structured_output.valid
    sent = body(emulators, provider)
    if provider == "openai":  # the Responses API's text.format
        assert sent["text"]["format"] == {"type": "json_schema", "name": "person", "schema": PERSON}
    elif provider == "anthropic":  # closed, as the API's structured outputs require
        assert sent["output_config"]["format"]["schema"] == {**PERSON, "additionalProperties": False}
    else:
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
        assert sent["generationConfig"]["responseJsonSchema"] == PERSON


@providers
@both
async def test_an_image_goes_to_the_provider_in_its_own_shape(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str, streamed: bool
) -> None:
    message = llm_pb2.Message(
        role=llm_pb2.ROLE_USER,
        content="What is in this picture?",
        parts=[llm_pb2.ContentPart(image=llm_pb2.Image(data=PNG, mime_type="image/png"))],
    )

    text, _, _ = await call(stub, streamed, provider, [message])

    assert text == "emulator reply: What is in this picture?"
    encoded = base64.b64encode(PNG).decode()
    sent = body(emulators, provider)
    if provider == "openai":
        parts = sent["input"][0]["content"]
        assert parts[1] == {
            "type": "input_image",
            "image_url": f"data:image/png;base64,{encoded}",
            "detail": "auto",
        }
    elif provider == "anthropic":
        blocks = sent["messages"][0]["content"]
        assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": encoded}
    else:
        part = sent["contents"][0]["parts"][1]
        assert decode_bytes(part["inlineData"]["data"]) == PNG


REASONING_SENT = {
    "openai": lambda body: body["reasoning"] == {"effort": "high", "summary": "auto"},
    "anthropic": lambda body: body["thinking"] == {"type": "enabled", "budget_tokens": 16384},
    "gemini": lambda body: body["generationConfig"]["thinkingConfig"]["thinking_level"] == "HIGH",
}


@providers
@both
async def test_a_reasoning_effort_is_mapped_and_its_tokens_reported(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str, streamed: bool
) -> None:
    reasoning = llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_HIGH)

    text, answer, _ = await call(stub, streamed, provider, user("think hard"), reasoning=reasoning)

    assert text == "emulator reply: think hard"
    assert REASONING_SENT[provider](body(emulators, provider))
    assert answer.usage.reasoning_tokens > 0
    assert answer.usage.completion_tokens > answer.usage.reasoning_tokens


@providers
@both
async def test_reasoning_signatures_round_trip_through_a_tool_loop(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str, streamed: bool
) -> None:
    reasoning = llm_pb2.Reasoning(budget_tokens=2048)
    question = user("What is the weather in Paris?")

    _, first, _ = await call(stub, streamed, provider, question, tools=[WEATHER], reasoning=reasoning)
    [tool_call] = first.tool_calls
    text, _, _ = await call(
        stub,
        streamed,
        provider,
        [*question, assistant(first), tool_result(tool_call.id, "sunny")],
        tools=[WEATHER],
        reasoning=reasoning,
    )

    # The emulator refuses a replay whose signature is missing or changed, as the API does.
    assert text == "emulator reply: tool get_weather returned sunny"
    signed = [r.signature for r in first.reasoning if r.signature] + [c.signature for c in first.tool_calls]
    assert any(signed)
    assert all(r.provider == provider for r in first.reasoning)


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
async def test_a_tampered_signature_is_refused_by_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    reasoning = llm_pb2.Reasoning(budget_tokens=2048)
    question = user("What is the weather in Paris?")
    _, first, _ = await call(stub, False, provider, question, tools=[WEATHER], reasoning=reasoning)
    turn = assistant(first)
    for part in turn.reasoning:
        part.signature = base64.b64encode(b"forged")
    for tool_call in turn.tool_calls:
        tool_call.signature = base64.b64encode(b"forged") if tool_call.signature else b""

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(
            stub,
            False,
            provider,
            [*question, turn, tool_result(first.tool_calls[0].id, "sunny")],
            tools=[WEATHER],
            reasoning=reasoning,
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature" in (refused.value.details() or "")


LONG = " ".join(f"rule{i}." for i in range(1500))
"""A system prompt long enough for every provider's prompt cache (1024 tokens and more)."""


@providers
@both
async def test_a_repeated_long_prompt_reports_cached_input_tokens(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, streamed: bool
) -> None:
    system = llm_pb2.Message(role=llm_pb2.ROLE_SYSTEM, content=LONG, cache_breakpoint=True)

    _, first, _ = await call(stub, streamed, provider, [system, *user("first question")])
    _, second, _ = await call(stub, streamed, provider, [system, *user("second question")])

    assert first.usage.cached_input_tokens == 0
    assert second.usage.cached_input_tokens >= 1024
    assert second.usage.cached_input_tokens <= second.usage.prompt_tokens
    if provider == "anthropic":  # explicit caching: the breakpoint wrote the cache, then it was read
        assert first.usage.cache_write_tokens >= 1500
        assert second.usage.cache_write_tokens == 0


@providers
async def test_seed_and_end_user_id_are_forwarded_where_the_provider_takes_them(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    answer = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi"), seed=7, user="user-42"),
        timeout=10,
    )

    sent = body(emulators, provider)
    if provider == "openai":  # the Responses API takes no seed (best-effort in the contract)
        assert "seed" not in sent
        assert sent["safety_identifier"] == "user-42"
    elif provider == "anthropic":
        assert sent["metadata"] == {"user_id": "user-42"}
    else:
        assert sent["generationConfig"]["seed"] == 7
    assert answer.response_id
