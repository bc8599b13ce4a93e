"""The agents' contract end to end, for each provider, through Complete and Stream: a tool round trip,
reasoning that goes back with its signatures, a JSON-schema answer the gateway checks, an image the
provider receives, and usage with cache and reasoning tokens priced by the catalogue."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS, Emulators
from tests.helpers import user

PROVIDERS = tuple(MODELS)
WEATHER = llm_pb2.Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def assistant_turn(response: llm_pb2.CompleteResponse | llm_pb2.StreamDone, content: str) -> llm_pb2.Message:
    return llm_pb2.Message(
        role=llm_pb2.ROLE_ASSISTANT,
        content=content,
        tool_calls=response.tool_calls,
        reasoning=response.reasoning,
    )


def answers(response: llm_pb2.CompleteResponse | llm_pb2.StreamDone) -> list[llm_pb2.Message]:
    return [
        llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=call.id, content='{"temp_c": 21}')
        for call in response.tool_calls
    ]


async def stream(stub: llm_pb2_grpc.LLMServiceAsyncStub, **fields: Any) -> list[llm_pb2.StreamResponse]:
    return [event async for event in stub.Stream(llm_pb2.StreamRequest(**fields), timeout=10)]


# --- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_tool_round_trip_completes(stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str) -> None:
    messages = user("What is the weather in Paris?")

    called = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=messages, tools=[WEATHER]), timeout=10
    )
    messages += [assistant_turn(called, called.content), *answers(called)]
    answered = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=messages, tools=[WEATHER]), timeout=10
    )

    assert called.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert [(c.name, json.loads(c.arguments_json)) for c in called.tool_calls] == [
        ("get_weather", {"city": "text"})
    ]
    assert called.tool_calls[0].id
    assert answered.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert 'tool get_weather returned {"temp_c": 21}' in answered.content
    assert answered.response_id


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_streamed_tool_call_arrives_in_fragments_and_whole_in_done(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    events = await stream(stub, model=MODELS[provider], messages=user("weather in Paris?"), tools=[WEATHER])

    fragments = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    done = events[-1].done
    assert fragments
    assert fragments[0].name == "get_weather"
    assert fragments[0].id == done.tool_calls[0].id
    assert "".join(f.arguments_delta for f in fragments) == done.tool_calls[0].arguments_json
    assert json.loads(done.tool_calls[0].arguments_json) == {"city": "text"}
    assert done.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert done.usage.total_tokens > 0
    assert not done.usage.usage_estimated


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_named_tool_choice_is_the_tool_called(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    clock = llm_pb2.Tool(name="get_time", parameters_json='{"type": "object", "properties": {}}')

    response = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=MODELS[provider],
            messages=user("what time is it?"),
            tools=[WEATHER, clock],
            tool_choice=llm_pb2.ToolChoice(tool_name="get_time"),
        ),
        timeout=10,
    )

    assert [c.name for c in response.tool_calls] == ["get_time"]


# --- reasoning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reasoning_goes_back_with_its_signatures_for_the_next_turn(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    reasoning = llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW)
    messages = user("weather in Paris?")

    called = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=MODELS[provider], messages=messages, tools=[WEATHER], reasoning=reasoning
        ),
        timeout=10,
    )
    messages += [assistant_turn(called, called.content), *answers(called)]
    answered = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=MODELS[provider], messages=messages, tools=[WEATHER], reasoning=reasoning
        ),
        timeout=10,
    )

    assert called.usage.reasoning_tokens > 0
    if provider != "openai":  # OpenAI's chat completions return no reasoning state
        signed = [p for p in called.reasoning if p.signature] + [c for c in called.tool_calls if c.signature]
        assert signed, "the provider's signatures reach the caller"
        assert all(p.provider == provider for p in called.reasoning)
    assert "tool get_weather returned" in answered.content


# --- structured output ----------------------------------------------------------------------------


def person_format() -> llm_pb2.ResponseFormat:
    return llm_pb2.ResponseFormat(
        type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="person", schema_json=json.dumps(PERSON)
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_json_schema_answer_is_checked_valid(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=MODELS[provider], messages=user("who?"), response_format=person_format()
        ),
        timeout=10,
    )
    events = await stream(
        stub, model=MODELS[provider], messages=user("who?"), response_format=person_format()
    )

    assert set(json.loads(response.content)) == {"name", "age"}
    assert response.structured_output == llm_pb2.StructuredOutput(valid=True)
    assert events[-1].done.structured_output == llm_pb2.StructuredOutput(valid=True)


# --- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_image_reaches_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    image = llm_pb2.ContentPart(image=llm_pb2.Image(data=PNG, mime_type="image/png"))
    message = llm_pb2.Message(role=llm_pb2.ROLE_USER, content="what is this?", parts=[image])

    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=[message]), timeout=10
    )

    assert response.content
    assert base64.b64encode(PNG).decode() in json.dumps(emulators.completions(provider)[-1].body)


# --- usage and cost -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cached_prompt_tokens_are_reported_and_priced_at_the_cached_rate(
    gateway: App, stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    system = llm_pb2.Message(
        role=llm_pb2.ROLE_SYSTEM, content=" ".join(["policy"] * 1500), cache_breakpoint=True
    )
    request = llm_pb2.CompleteRequest(model=MODELS[provider], messages=[system, *user("hi")])

    first = await stub.Complete(request, timeout=10)
    second = await stub.Complete(request, timeout=10)

    usage = second.usage
    assert usage.cached_input_tokens >= 1024
    info = gateway.gateway.catalogue.get(MODELS[provider])
    assert info.cached_input_per_mtok is not None
    cached = min(usage.cached_input_tokens, usage.prompt_tokens)  # a part of the prompt, never more
    uncached = usage.prompt_tokens - cached - usage.cache_write_tokens
    expected = (
        uncached * info.input_per_mtok
        + cached * info.cached_input_per_mtok
        + usage.cache_write_tokens * (info.cache_write_per_mtok or info.input_per_mtok)
        + usage.completion_tokens * info.output_per_mtok
    ) / 1e6
    assert second.cost_usd == pytest.approx(expected)
    assert second.cost_usd < first.cost_usd


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_tool_call_turn_carries_no_structured_output_verdict(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=MODELS[provider], messages=user("who?"), tools=[WEATHER], response_format=person_format()
        ),
        timeout=10,
    )

    assert response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert not response.HasField("structured_output")  # the answer comes after the tool results


async def test_a_large_document_reserves_no_more_prompt_than_the_models_window(
    start_gateway: Any, emulators: Emulators, tmp_path: Path
) -> None:
    policy = tmp_path / "limits.json"
    policy.write_text(json.dumps({"default": {"tokens_per_minute": 300_000}}))
    app: App = await start_gateway(llm_limits_file=str(policy))
    pdf = b"%PDF-1.7\n" + b"x" * 300_000  # bound: a token a byte, beyond claude-haiku's 200k window
    document = llm_pb2.ContentPart(document=llm_pb2.Document(data=pdf, mime_type="application/pdf"))
    message = llm_pb2.Message(role=llm_pb2.ROLE_USER, content="summarise", parts=[document])

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=[message], max_tokens=1000),
            timeout=10,
        )

    assert response.content  # 200k + 1k reserved fit the 300k bucket; 300k + 1k would not
    assert len(emulators.completions("anthropic")) == 1
