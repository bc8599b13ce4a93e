"""The emulators refuse what the real APIs refuse for agents (tools, tool turns, content parts, structured
output, reasoning, signatures, cache breakpoints), in the APIs' own words, with the official SDKs pointed
at them; and they accept what the APIs accept."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from server.emulators.anthropic import AnthropicEmulator
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator
from server.emulators.scripting import instance_of, sign

KEY = "emulator-key"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOL: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
ANTHROPIC_TOOL: Any = {"name": "get_weather", "input_schema": WEATHER_SCHEMA}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}
ASKED: Any = {"role": "user", "content": "weather?"}
CALLED: Any = {"role": "assistant", "content": None, "tool_calls": [CALL]}


@pytest.fixture
async def openai_client() -> AsyncIterator[openai.AsyncOpenAI]:
    emulator = OpenAIEmulator(api_key=KEY)
    client = openai.AsyncOpenAI(api_key=KEY, base_url=await emulator.start(), max_retries=0)
    yield client
    await client.close()
    await emulator.stop()


@pytest.fixture
async def anthropic_client() -> AsyncIterator[anthropic.AsyncAnthropic]:
    emulator = AnthropicEmulator(api_key=KEY)
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=await emulator.start(), max_retries=0)
    yield client
    await client.close()
    await emulator.stop()


@pytest.fixture
async def gemini_client() -> AsyncIterator[genai.Client]:
    emulator = GeminiEmulator(api_key=KEY)
    options = types.HttpOptions(
        base_url=await emulator.start(), retry_options=types.HttpRetryOptions(attempts=1)
    )
    client = genai.Client(api_key=KEY, http_options=options)
    yield client
    await client.aio.aclose()
    await emulator.stop()


# --- OpenAI Chat Completions ----------------------------------------------------------------------

OPENAI_REFUSALS = [
    (
        {
            "messages": [ASKED, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
            "tools": [OPENAI_TOOL],
        },
        "must be a response to a preceeding message with 'tool_calls'",
    ),
    (
        {"messages": [ASKED, CALLED, {"role": "user", "content": "and?"}], "tools": [OPENAI_TOOL]},
        "did not have response messages: call_1",
    ),
    (
        {"messages": [ASKED, CALLED, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
        "must be a response to a preceeding message",
    ),
    (
        {"messages": [ASKED], "tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "does not match pattern",
    ),
    (
        {
            "messages": [ASKED],
            "tools": [OPENAI_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "x"}},
        },
        "not found in 'tools'",
    ),
    ({"messages": [ASKED], "tool_choice": "auto"}, "only allowed when 'tools' are specified"),
    ({"messages": [ASKED], "parallel_tool_calls": False}, "only allowed when 'tools' are specified"),
    ({"messages": [ASKED], "response_format": {"type": "json_object"}}, "must contain the word 'json'"),
    (
        {
            "messages": [ASKED],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "strict": True, "schema": WEATHER_SCHEMA},
            },
        },
        "'additionalProperties' is required to be supplied and to be false",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%"}}],
                }
            ]
        },
        "Expected a base64-encoded data URL",
    ),
    (
        {"messages": [ASKED], "model": "gpt-4.1", "reasoning_effort": "high"},
        "'reasoning_effort' is not supported",
    ),
    ({"messages": [ASKED], "reasoning_effort": "extreme"}, "Invalid value: 'extreme'"),
]


@pytest.mark.parametrize(("fields", "words"), OPENAI_REFUSALS)
async def test_openai_emulator_refuses_what_the_api_refuses(
    openai_client: openai.AsyncOpenAI, fields: dict[str, Any], words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await openai_client.chat.completions.create(**{"model": "gpt-5", **fields})

    assert words in refused.value.message


async def test_openai_emulator_accepts_an_answered_tool_turn_and_an_image(
    openai_client: openai.AsyncOpenAI,
) -> None:
    image: Any = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    answered = [ASKED, CALLED, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]

    reply = await openai_client.chat.completions.create(model="gpt-5", messages=answered, tools=[OPENAI_TOOL])
    seen = await openai_client.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]
    )

    assert reply.choices[0].message.content == "emulator reply: tool get_weather returned sunny"
    assert seen.choices[0].message.content == "emulator reply: what?"


async def test_openai_emulator_streams_tool_calls_with_usage_when_asked(
    openai_client: openai.AsyncOpenAI,
) -> None:
    chunks = [
        chunk
        async for chunk in await openai_client.chat.completions.create(
            model="gpt-5",
            messages=[ASKED],
            tools=[OPENAI_TOOL],
            stream=True,
            stream_options={"include_usage": True},
            reasoning_effort="low",
        )
    ]

    fragments = [
        c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert fragments[0].id == "call_emu0100"
    assert fragments[0].function is not None
    assert fragments[0].function.name == "get_weather"
    assert "".join(f.function.arguments or "" for f in fragments if f.function) == '{"city":"text"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 8


# --- Anthropic Messages ---------------------------------------------------------------------------

USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
THINKING: Any = {"type": "enabled", "budget_tokens": 2048}


def _signed_thinking(text: str = "step1") -> dict[str, str]:
    return {"type": "thinking", "thinking": text, "signature": sign(text)}


ANTHROPIC_REFUSALS = [
    (
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": "and?"},
            ]
        },
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
    ),
    (
        {"messages": [{"role": "user", "content": [{**RESULT, "tool_use_id": "toolu_9"}]}]},
        "unexpected `tool_use_id` found in `tool_result` blocks: toolu_9",
    ),
    (
        {"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "get_weather"}]},
        "input_schema: Field required",
    ),
    (
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [ANTHROPIC_TOOL],
            "tool_choice": {"type": "tool", "name": "x"},
        },
        "not found",
    ),
    (
        {
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 512},
        },
        "greater than or equal to 1024",
    ),
    (
        {
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 4096},
            "max_tokens": 4096,
        },
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    (
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [ANTHROPIC_TOOL],
            "tool_choice": {"type": "any"},
            "thinking": THINKING,
        },
        "Thinking may not be enabled when tool_choice forces tool use",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{**_signed_thinking(), "signature": "forged"}, USE]},
                {"role": "user", "content": [RESULT]},
            ],
            "tools": [ANTHROPIC_TOOL],
            "thinking": THINKING,
        },
        "Invalid `signature` in `thinking` block",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": [RESULT]},
            ],
            "tools": [ANTHROPIC_TOOL],
            "thinking": THINKING,
        },
        "a final `assistant` message must start with a thinking block",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what?"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": base64.b64encode(PNG).decode(),
                            },
                        },
                    ],
                }
            ]
        },
        "appears to be a image/png image",
    ),
    (
        {
            "messages": [{"role": "user", "content": "json"}],
            "output_config": {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}},
        },
        "'additionalProperties' must be explicitly set to false",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"t{i}", "cache_control": {"type": "ephemeral"}}
                        for i in range(5)
                    ],
                }
            ]
        },
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
]


@pytest.mark.parametrize(("fields", "words"), ANTHROPIC_REFUSALS)
async def test_anthropic_emulator_refuses_what_the_api_refuses(
    anthropic_client: anthropic.AsyncAnthropic, fields: dict[str, Any], words: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await anthropic_client.messages.create(**{"model": "claude-sonnet-4-6", "max_tokens": 8192, **fields})

    assert words in str(refused.value)


async def test_anthropic_emulator_accepts_replayed_thinking_and_answers_the_tool_result(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [_signed_thinking(), USE]},
        {"role": "user", "content": [RESULT]},
    ]

    reply = await anthropic_client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=8192,
        messages=messages,
        tools=[ANTHROPIC_TOOL],
        thinking=THINKING,
    )

    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[1].type == "text"
    assert reply.content[1].text == "emulator reply: tool get_weather returned sunny"
    assert reply.usage.output_tokens_details is not None
    assert reply.usage.output_tokens_details.thinking_tokens == 32


async def test_anthropic_emulator_streams_thinking_signature_and_tool_input(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    async with anthropic_client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=8192,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[ANTHROPIC_TOOL],
        thinking=THINKING,
    ) as stream:
        kinds = [event.type async for event in stream]
        message = await stream.get_final_message()

    thinking, use = message.content
    assert thinking.type == "thinking"
    assert thinking.signature == sign(thinking.thinking)
    assert use.type == "tool_use"
    assert use.input == {"city": "text"}
    assert message.stop_reason == "tool_use"
    assert {"thinking", "signature", "input_json"} <= set(kinds)


# --- Gemini generateContent -----------------------------------------------------------------------

DECLARATION = types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER_SCHEMA)
NO_AUTOMATIC = types.AutomaticFunctionCallingConfig(disable=True)


def _user(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


def _called(signature: bytes | None) -> types.Content:
    call = types.FunctionCall(name="get_weather", args={"city": "text"})
    return types.Content(role="model", parts=[types.Part(function_call=call, thought_signature=signature)])


def _answered(*names: str) -> types.Content:
    parts = [
        types.Part(function_response=types.FunctionResponse(name=n, response={"output": "sunny"}))
        for n in names
    ]
    return types.Content(role="user", parts=parts)


GOOD_SIGNATURE = base64.b64decode(sign('get_weather:{"city": "text"}'))

GEMINI_REFUSALS = [
    (
        [_user("hi"), _answered("get_weather")],
        {},
        "function response turn comes immediately after a function call turn",
    ),
    (
        [_user("hi"), _called(GOOD_SIGNATURE), _answered("get_weather", "get_weather")],
        {},
        "number of function response parts is equal to the number of function call parts",
    ),
    (
        [_user("hi"), _called(None), _answered("get_weather")],
        {},
        "Function call is missing a thought_signature",
    ),
    ([_user("hi"), _called(b"forged"), _answered("get_weather")], {}, "Thought signature is not valid"),
    (
        [_user("hi")],
        {
            "thinking_config": types.ThinkingConfig(
                thinking_budget=1024, thinking_level=types.ThinkingLevel.LOW
            )
        },
        "only one of thinking budget and thinking level",
    ),
    (
        [_user("hi")],
        {
            "tools": [types.Tool(function_declarations=[DECLARATION])],
            "tool_config": types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(
                    mode=types.FunctionCallingConfigMode.AUTO, allowed_function_names=["get_weather"]
                )
            ),
        },
        "allowed_function_names can be set only when the mode is ANY",
    ),
    ([_user("hi")], {"response_json_schema": WEATHER_SCHEMA}, "response_mime_type must be one of"),
    (
        [_user("hi")],
        {"tools": [types.Tool(function_declarations=[types.FunctionDeclaration(name="get weather")])]},
        "Invalid function name",
    ),
]


@pytest.mark.parametrize(("contents", "config", "words"), GEMINI_REFUSALS)
async def test_gemini_emulator_refuses_what_the_api_refuses(
    gemini_client: genai.Client, contents: list[types.Content], config: dict[str, Any], words: str
) -> None:
    settings = types.GenerateContentConfig(automatic_function_calling=NO_AUTOMATIC, **config)

    with pytest.raises(genai_errors.ClientError) as refused:
        await gemini_client.aio.models.generate_content(
            model="gemini-3.5-flash", contents=contents, config=settings
        )

    assert words in str(refused.value.message)


async def test_gemini_emulator_accepts_a_signed_replay_and_answers_the_function_response(
    gemini_client: genai.Client,
) -> None:
    tools: list[Any] = [types.Tool(function_declarations=[DECLARATION])]
    config = types.GenerateContentConfig(
        tools=tools,
        automatic_function_calling=NO_AUTOMATIC,
        thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW, include_thoughts=True),
    )

    first = await gemini_client.aio.models.generate_content(
        model="gemini-3.5-flash", contents=[_user("weather?")], config=config
    )
    assert first.candidates
    assert first.candidates[0].content is not None
    turn = first.candidates[0].content
    second = await gemini_client.aio.models.generate_content(
        model="gemini-3.5-flash", contents=[_user("weather?"), turn, _answered("get_weather")], config=config
    )

    assert [bool(p.thought) for p in turn.parts or ()] == [True, False]
    assert second.text == "emulator reply: tool get_weather returned sunny"
    assert second.usage_metadata is not None
    assert second.usage_metadata.thoughts_token_count == 8


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        (WEATHER_SCHEMA, {"city": "text"}),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]},
            {"n": 3},
        ),
        ({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 2}, ["a", "a"]),
        ({"$defs": {"d": {"type": "boolean"}}, "anyOf": [{"$ref": "#/$defs/d"}]}, False),
        ({"type": ["null", "number"]}, 0.0),
    ],
)
def test_the_scripted_instance_is_the_smallest_the_schema_accepts(
    schema: dict[str, Any], instance: Any
) -> None:
    assert instance_of(schema) == instance
