"""The OpenAI emulator refuses what the real APIs refuse around the Responses API, in their own words, with
the official SDK pointed at it: Chat Completions' refusal of function tools with reasoning on gpt-5.2 and
later, and the Responses API's own rules for stateless replays. It also answers in shapes the SDK's typed
`responses.create` parses, in the real event order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from server.emulators.openai import OpenAIEmulator

KEY = "emulator-key"
CHAT_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}
ASKED: Any = {"role": "user", "content": "weather?"}


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    emulator = OpenAIEmulator(api_key=KEY)
    built = openai.AsyncOpenAI(api_key=KEY, base_url=await emulator.start(), max_retries=0)
    yield built
    await built.close()
    await emulator.stop()


# --- Chat Completions: function tools with reasoning on gpt-5.2 and later ----------------------------


@pytest.mark.parametrize(
    ("model", "effort", "advice"),
    [
        ("gpt-5.4-mini", "low", "Please use /v1/responses instead."),
        ("gpt-5.4", "high", "Please use /v1/responses instead."),
        ("gpt-5.2", "medium", "Please use /v1/responses instead."),
        ("gpt-5.5", None, "Please use /v1/responses instead."),  # its default effort is medium
        (
            "gpt-5.6-terra",
            None,
            "To use function tools, use /v1/responses or set reasoning_effort to 'none'.",
        ),
        ("gpt-6-mini", "low", "To use function tools, use /v1/responses or set reasoning_effort to 'none'."),
    ],
)
async def test_chat_completions_refuses_function_tools_with_reasoning_in_the_real_body(
    client: openai.AsyncOpenAI, model: str, effort: str | None, advice: str
) -> None:
    extra: Any = {"reasoning_effort": effort} if effort else {}

    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=model, messages=[ASKED], tools=[CHAT_TOOL], **extra)

    assert refused.value.body == {
        "message": f"Function tools with reasoning_effort are not supported for {model} in "
        f"/v1/chat/completions. {advice}",
        "type": "invalid_request_error",
        "param": "reasoning_effort",
        "code": None,
    }


@pytest.mark.parametrize(
    ("model", "effort"),
    [("gpt-5.4", None), ("gpt-5.4-mini", "none"), ("gpt-5.5", "none"), ("gpt-5", "high"), ("gpt-4.1", None)],
)
async def test_chat_completions_takes_function_tools_without_reasoning_or_before_gpt_5_2(
    client: openai.AsyncOpenAI, model: str, effort: str | None
) -> None:
    extra: Any = {"reasoning_effort": effort} if effort else {}

    reply = await client.chat.completions.create(model=model, messages=[ASKED], tools=[CHAT_TOOL], **extra)

    assert reply.choices[0].finish_reason == "tool_calls"


# --- the Responses API ------------------------------------------------------------------------------


async def _first_turn(client: openai.AsyncOpenAI) -> Any:
    return await client.responses.create(
        model="gpt-5.4-mini",
        input=[ASKED],
        tools=[WEATHER],
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
    )


async def test_a_reasoning_turn_returns_a_reasoning_item_then_the_function_call(
    client: openai.AsyncOpenAI,
) -> None:
    response = await _first_turn(client)

    reasoning, call = response.output
    assert response.id.startswith("resp_")
    assert reasoning.type == "reasoning"
    assert reasoning.id.startswith("rs_")
    assert reasoning.encrypted_content
    assert reasoning.summary[0].text == "step1 step2 step3 step4 step5 step6 step7 step8"
    assert call.type == "function_call"
    assert call.id.startswith("fc_")
    assert call.call_id.startswith("call_")
    assert len(call.call_id) == len("call_") + 24
    assert json.loads(call.arguments) == {"city": "text"}
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 8


def _replay(
    response: Any, *, reasoning: dict[str, Any] | None = None, call_id: str | None = None
) -> list[Any]:
    rs, fc = response.output
    reasoning_item = {
        "type": "reasoning",
        "id": rs.id,
        "encrypted_content": rs.encrypted_content,
        "summary": [],
    } | (reasoning or {})
    call = {
        "type": "function_call",
        "id": fc.id,
        "call_id": fc.call_id,
        "name": fc.name,
        "arguments": fc.arguments,
    }
    output = {"type": "function_call_output", "call_id": call_id or fc.call_id, "output": "sunny"}
    return [ASKED, reasoning_item, call, output]


async def test_a_stateless_replay_with_the_encrypted_reasoning_is_answered(
    client: openai.AsyncOpenAI,
) -> None:
    first = await _first_turn(client)

    second = await client.responses.create(
        model="gpt-5.4-mini",
        input=_replay(first),
        tools=[WEATHER],
        include=["reasoning.encrypted_content"],
        store=False,
    )

    assert second.output_text == "emulator reply: tool get_weather returned sunny"


def _message(error: openai.APIStatusError) -> str:
    """The error body's message (the SDK's own `message` prefixes the status)."""
    body: Any = error.body
    return str(body["message"])


async def _refusal(client: openai.AsyncOpenAI, **fields: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as refused:
        await client.responses.create(**{"model": "gpt-5.4-mini", "store": False, **fields})
    return refused.value


async def test_a_reasoning_item_without_its_encrypted_content_is_not_found_when_nothing_is_stored(
    client: openai.AsyncOpenAI,
) -> None:
    first = await _first_turn(client)
    replay = _replay(first, reasoning={"encrypted_content": None})

    error = await _refusal(client, input=replay, tools=[WEATHER])

    assert error.status_code == 404
    assert _message(error) == (
        f"Item with id '{first.output[0].id}' not found. Items are not persisted when `store` is set to "
        "false. Try again with `store` set to true, or remove this item from your input."
    )


async def test_altered_encrypted_content_could_not_be_verified(client: openai.AsyncOpenAI) -> None:
    first = await _first_turn(client)
    replay = _replay(first, reasoning={"encrypted_content": "gAAAAABforged=="})

    error = await _refusal(client, input=replay, tools=[WEATHER])

    assert error.status_code == 400
    assert error.body == {
        "message": "The encrypted content gAAA...ed== could not be verified.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_encrypted_content",
    }


async def test_a_reasoning_item_without_the_item_that_followed_it_is_refused(
    client: openai.AsyncOpenAI,
) -> None:
    first = await _first_turn(client)
    _, reasoning, call, output = _replay(first)
    anonymous = {key: value for key, value in call.items() if key != "id"}

    for replay in ([ASKED, reasoning], [ASKED, reasoning, anonymous, output]):
        error = await _refusal(client, input=replay, tools=[WEATHER])
        assert _message(error) == (
            f"Item '{first.output[0].id}' of type 'reasoning' was provided without its required "
            "following item."
        )


@pytest.mark.parametrize(
    ("replay", "message"),
    [
        (
            [ASKED, {"type": "function_call_output", "call_id": "call_x", "output": "sunny"}],
            "No tool call found for function call output with call_id call_x.",
        ),
        (
            [ASKED, {"type": "function_call", "call_id": "call_x", "name": "get_weather", "arguments": "{}"}],
            "No tool output found for function call call_x.",
        ),
        (
            [
                ASKED,
                {
                    "type": "function_call",
                    "id": "toolu_1",
                    "call_id": "toolu_1",
                    "name": "get_weather",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"},
            ],
            "Invalid 'input[1].id': 'toolu_1'. Expected an ID that begins with 'fc'.",
        ),
    ],
)
async def test_function_calls_and_their_outputs_must_pair_and_carry_ids_of_their_shape(
    client: openai.AsyncOpenAI, replay: list[Any], message: str
) -> None:
    error = await _refusal(client, input=replay, tools=[WEATHER])

    assert (error.status_code, _message(error)) == (400, message)


async def test_a_call_from_another_provider_without_an_item_id_is_accepted(
    client: openai.AsyncOpenAI,
) -> None:
    replay = [
        ASKED,
        {"type": "function_call", "call_id": "toolu_01A", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_01A", "output": "sunny"},
    ]

    answer = await client.responses.create(model="gpt-5.4-mini", input=replay, tools=[WEATHER], store=False)

    assert answer.output_text == "emulator reply: tool get_weather returned sunny"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seed": 7}, "Unknown parameter: 'seed'."),
        (
            {"max_output_tokens": 10},
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 10 "
            "instead.",
        ),
        ({"temperature": 0.5}, "Unsupported parameter: 'temperature' is not supported with this model."),
        (
            {"tools": [{**WEATHER, "strict": True}]},
            "Invalid schema for function 'get_weather': In context=(), 'additionalProperties' is required",
        ),
        (  # `strict` left out is strict on this API
            {"tools": [{key: value for key, value in WEATHER.items() if key != "strict"}]},
            "'additionalProperties' is required to be supplied and to be false",
        ),
    ],
)
async def test_the_responses_api_refuses_what_it_does_not_take(
    client: openai.AsyncOpenAI, fields: dict[str, Any], message: str
) -> None:
    seed = fields.pop("seed", None)
    extra = {"extra_body": {"seed": seed}} if seed is not None else {}

    error = await _refusal(client, input=[ASKED], **fields, **extra)

    assert error.status_code == 400
    assert message in error.message


async def test_the_stream_sends_the_real_events_in_order_with_sequence_numbers(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.responses.create(
        model="gpt-5.4-mini",
        input=[ASKED],
        tools=[WEATHER],
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
        stream=True,
    )
    events = [event async for event in stream]

    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.reasoning_summary_text.delta" in kinds
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [e.item.type for e in added] == ["reasoning", "function_call"]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "text"}
    done: list[Any] = [e.item for e in events if e.type == "response.output_item.done"]
    assert done[0].encrypted_content


async def test_azure_takes_the_responses_api_from_its_2025_03_01_preview_version() -> None:
    emulator = OpenAIEmulator(api_key=KEY)
    root = (await emulator.start()).removesuffix("/v1")
    old = openai.AsyncAzureOpenAI(azure_endpoint=root, api_key=KEY, api_version="2024-10-21", max_retries=0)
    new = openai.AsyncAzureOpenAI(
        azure_endpoint=root, api_key=KEY, api_version="2025-04-01-preview", max_retries=0
    )
    try:
        with pytest.raises(openai.NotFoundError):
            await old.responses.create(model="gpt-5.4-mini", input="hi", store=False)
        answer = await new.responses.create(model="gpt-5.4-mini", input="hi", store=False)
    finally:
        await old.close()
        await new.close()
        await emulator.stop()

    assert answer.output_text == "emulator reply: hi"
