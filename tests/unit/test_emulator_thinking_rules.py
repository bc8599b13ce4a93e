"""The emulators refuse the thinking each model does not take, with the real APIs' error bodies, through
the official SDKs (rules and sources: server/emulators/anthropic_rules.py, gemini_rules.py); and they take
what the models take."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from server.emulators.anthropic import AnthropicEmulator
from server.emulators.gemini import GeminiEmulator

KEY = "emulator-key"
HI: Any = [{"role": "user", "content": "hi"}]
TOOL: Any = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture
async def claude() -> AsyncIterator[anthropic.AsyncAnthropic]:
    emulator = AnthropicEmulator(api_key=KEY)
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=await emulator.start(), max_retries=0)
    yield client
    await client.close()
    await emulator.stop()


@pytest.fixture
async def gemini() -> AsyncIterator[genai.Client]:
    emulator = GeminiEmulator(api_key=KEY)
    options = types.HttpOptions(
        base_url=await emulator.start(), retry_options=types.HttpRetryOptions(attempts=1)
    )
    client = genai.Client(api_key=KEY, http_options=options)
    yield client
    await client.aio.aclose()
    await emulator.stop()


CLAUDE_REFUSALS = [
    (
        "claude-opus-4-7",
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
        '"output_config.effort" to control thinking behavior.',
    ),
    (
        "claude-haiku-4-5",
        {"thinking": {"type": "adaptive"}},
        "adaptive thinking is not supported on this model",
    ),
    (
        "claude-opus-4-5",
        {"thinking": {"type": "adaptive"}},
        "adaptive thinking is not supported on this model",
    ),
    (
        "claude-haiku-4-5",
        {"output_config": {"effort": "low"}},
        "This model does not support the effort parameter.",
    ),
    (
        "claude-sonnet-4-6",
        {"output_config": {"effort": "xhigh"}},
        "output_config.effort: `xhigh` is not supported for this model.",
    ),
    (
        "claude-haiku-4-5",
        {
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [TOOL],
            "tool_choice": {"type": "any"},
        },
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
]


@pytest.mark.parametrize(("model", "fields", "message"), CLAUDE_REFUSALS)
async def test_claude_emulator_refuses_thinking_a_model_does_not_take(
    claude: anthropic.AsyncAnthropic, model: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(model=model, max_tokens=4096, messages=HI, **fields)

    body: Any = refused.value.body
    assert body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": message}
    assert body["request_id"].startswith("req_")


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("claude-opus-4-7", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}),
        ("claude-sonnet-4-6", {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
        ("claude-sonnet-4-6", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}),
        (
            "claude-opus-4-5",
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "output_config": {"effort": "low"}},
        ),
        ("claude-haiku-4-5-20251001", {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
    ],
)
async def test_claude_emulator_takes_the_thinking_a_model_takes(
    claude: anthropic.AsyncAnthropic, model: str, fields: dict[str, Any]
) -> None:
    message = await claude.messages.create(model=model, max_tokens=4096, messages=HI, **fields)

    assert message.content[0].type == "thinking"


async def test_opus_4_7_returns_empty_thinking_text_unless_asked_to_display_it(
    claude: anthropic.AsyncAnthropic,
) -> None:
    hidden = await claude.messages.create(
        model="claude-opus-4-7", max_tokens=4096, messages=HI, thinking={"type": "adaptive"}
    )
    shown = await claude.messages.create(
        model="claude-opus-4-7",
        max_tokens=4096,
        messages=HI,
        thinking={"type": "adaptive", "display": "summarized"},
    )

    assert hidden.content[0].type == shown.content[0].type == "thinking"
    assert hidden.content[0].thinking == ""
    assert hidden.content[0].signature
    assert shown.content[0].thinking
    assert hidden.usage.output_tokens == shown.usage.output_tokens  # omitted thinking is billed all the same


async def test_adaptive_thinking_takes_a_forced_tool_choice_and_skips_thinking(
    claude: anthropic.AsyncAnthropic,
) -> None:
    message = await claude.messages.create(
        model="claude-opus-4-7",
        max_tokens=4096,
        messages=HI,
        thinking={"type": "adaptive"},
        tools=[TOOL],
        tool_choice={"type": "any"},
    )

    assert [block.type for block in message.content] == ["tool_use"]


async def test_adaptive_thinking_continues_a_tool_turn_that_did_not_start_with_thinking(
    claude: anthropic.AsyncAnthropic,
) -> None:
    turns: Any = [
        *HI,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]},
    ]
    adaptive = await claude.messages.create(
        model="claude-opus-4-7", max_tokens=4096, messages=turns, thinking={"type": "adaptive"}, tools=[TOOL]
    )
    with pytest.raises(anthropic.BadRequestError) as manual:
        await claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=4096,
            messages=turns,
            thinking={"type": "enabled", "budget_tokens": 2048},
            tools=[TOOL],
        )

    assert adaptive.stop_reason == "end_turn"
    assert "must start with a thinking block" in str(manual.value)


GEMINI_REFUSALS = [
    (
        "gemini-3.1-pro-preview",
        types.ThinkingConfig(thinking_level=types.ThinkingLevel.MINIMAL),
        "Thinking level MINIMAL is not supported for this model. Please retry with other thinking level.",
    ),
    (
        "gemini-3.1-flash-lite",
        types.ThinkingConfig(thinking_level=types.ThinkingLevel.XHIGH),
        "Thinking level XHIGH is not supported for this model. Please retry with other thinking level.",
    ),
    (
        "gemini-2.5-flash-lite",
        types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW),
        "Thinking level is not supported for this model.",
    ),
    (
        "gemini-3.1-pro-preview",
        types.ThinkingConfig(thinking_budget=0),
        "The model does not support setting thinking_budget to 0.",
    ),
]


@pytest.mark.parametrize(("model", "thinking", "message"), GEMINI_REFUSALS)
async def test_gemini_emulator_refuses_thinking_a_model_does_not_take(
    gemini: genai.Client, model: str, thinking: types.ThinkingConfig, message: str
) -> None:
    with pytest.raises(genai_errors.ClientError) as refused:
        await gemini.aio.models.generate_content(
            model=model, contents="hi", config=types.GenerateContentConfig(thinking_config=thinking)
        )

    assert refused.value.code == 400
    assert refused.value.details == {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


async def test_gemini_emulator_refuses_a_level_and_a_budget_together(gemini: genai.Client) -> None:
    thinking = types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW, thinking_budget=1024)

    with pytest.raises(genai_errors.ClientError) as refused:
        await gemini.aio.models.generate_content(
            model="gemini-3.5-flash",
            contents="hi",
            config=types.GenerateContentConfig(thinking_config=thinking),
        )

    assert "only one of thinking budget and thinking level" in str(refused.value)


@pytest.mark.parametrize(
    ("model", "level"),
    [
        ("gemini-3.1-pro-preview", types.ThinkingLevel.MEDIUM),
        ("gemini-3.5-flash", types.ThinkingLevel.MINIMAL),
        ("gemini-3.1-flash-lite", types.ThinkingLevel.HIGH),
    ],
)
async def test_gemini_emulator_takes_the_levels_a_model_takes(
    gemini: genai.Client, model: str, level: types.ThinkingLevel
) -> None:
    thinking = types.ThinkingConfig(thinking_level=level, include_thoughts=True)

    response = await gemini.aio.models.generate_content(
        model=model, contents="hi", config=types.GenerateContentConfig(thinking_config=thinking)
    )

    assert response.text
