"""Reasoning controls become what each model takes (the catalogue's thinking fields): Claude adaptive
thinking with an effort, budgets, Gemini 3 levels and 2.5 budgets, through Complete and Stream against the
emulators, which refuse what the real APIs refuse per model. And the gateway never sends the default
allowlist's models anything they refuse, whatever reasoning control a caller sends: it is either
accepted or refused up front (INVALID_ARGUMENT naming the capability, no provider call)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from server.config import DEFAULT_ALLOWED_MODELS
from tests.conftest import Emulators
from tests.helpers import details_of, user

WEATHER = llm_pb2.Tool(
    name="get_weather",
    parameters_json=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
)
FORCED = llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_REQUIRED)
EFFORTS = {
    "low": llm_pb2.REASONING_EFFORT_LOW,
    "medium": llm_pb2.REASONING_EFFORT_MEDIUM,
    "high": llm_pb2.REASONING_EFFORT_HIGH,
}
both = pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])


async def ask(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    streamed: bool,
    model: str,
    reasoning: llm_pb2.Reasoning,
    **fields: Any,
) -> llm_pb2.CompleteResponse | llm_pb2.StreamDone:
    if not streamed:
        request = llm_pb2.CompleteRequest(model=model, messages=user("think"), reasoning=reasoning, **fields)
        return await stub.Complete(request, timeout=10)
    stream = llm_pb2.StreamRequest(model=model, messages=user("think"), reasoning=reasoning, **fields)
    events = [e async for e in stub.Stream(stream, timeout=10)]
    done: llm_pb2.StreamDone = events[-1].done
    return done


def sent(emulators: Emulators, provider: str) -> Any:
    return emulators.completions(provider)[-1].body


def gemini_thinking(emulators: Emulators) -> dict[str, Any]:
    config: dict[str, Any] = sent(emulators, "gemini")["generationConfig"]["thinkingConfig"]
    # google-genai sends the proto names here (`thinking_level`); the API reads either spelling.
    return {key.replace("_l", "L").replace("_b", "B").replace("_t", "T"): v for key, v in config.items()}


# --- Claude ---------------------------------------------------------------------------------------


@both
async def test_an_effort_on_opus_4_7_is_adaptive_thinking_with_that_effort_and_its_text_shown(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    answer = await ask(
        stub, streamed, "claude-opus-4-7", llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_HIGH)
    )

    body = sent(emulators, "anthropic")
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"]["effort"] == "high"
    # Opus 4.7 omits the thinking text unless asked to display it: it came back because the gateway asked.
    assert answer.reasoning
    assert answer.reasoning[0].text
    assert answer.usage.reasoning_tokens > 0


@pytest.mark.parametrize(("budget", "effort"), [(1, "low"), (2048, "low"), (5000, "medium"), (60000, "high")])
async def test_a_budget_on_an_adaptive_only_model_becomes_the_nearest_effort(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, budget: int, effort: str
) -> None:
    await ask(stub, False, "claude-opus-4-7", llm_pb2.Reasoning(budget_tokens=budget))

    body = sent(emulators, "anthropic")
    assert body["thinking"]["type"] == "adaptive"
    assert body["output_config"]["effort"] == effort


async def test_on_sonnet_4_6_an_effort_is_adaptive_and_a_budget_stays_a_budget(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    await ask(stub, False, "claude-sonnet-4-6", llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW))
    adaptive = sent(emulators, "anthropic")
    await ask(stub, False, "claude-sonnet-4-6", llm_pb2.Reasoning(budget_tokens=3000))
    budgeted = sent(emulators, "anthropic")

    assert (adaptive["thinking"]["type"], adaptive["output_config"]["effort"]) == ("adaptive", "low")
    assert budgeted["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    assert "output_config" not in budgeted


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
async def test_an_effort_on_a_budget_only_model_becomes_a_budget_and_no_effort_is_sent(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, effort: str, budget: int
) -> None:
    answer = await ask(stub, False, "claude-haiku-4-5", llm_pb2.Reasoning(effort=EFFORTS[effort]))

    body = sent(emulators, "anthropic")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert "output_config" not in body  # Haiku 4.5 refuses `effort`
    assert answer.usage.reasoning_tokens > 0


async def test_a_forced_tool_choice_while_thinking_on_a_budget_is_refused_before_any_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ask(
            stub,
            False,
            "claude-haiku-4-5",
            llm_pb2.Reasoning(budget_tokens=2048),
            tools=[WEATHER],
            tool_choice=FORCED,
        )

    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "UNSUPPORTED_BY_MODEL"
    assert "forced_tool_thinking" in details.violations["tool_choice"]
    assert emulators.completions("anthropic") == []


@both
async def test_a_forced_tool_choice_with_adaptive_thinking_is_sent_and_the_tool_called(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    answer = await ask(
        stub,
        streamed,
        "claude-opus-4-7",
        llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM),
        tools=[WEATHER],
        tool_choice=FORCED,
    )

    assert sent(emulators, "anthropic")["tool_choice"]["type"] == "any"
    assert [c.name for c in answer.tool_calls] == ["get_weather"]


async def test_no_thinking_on_claude_sends_no_thinking(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    await ask(stub, False, "claude-opus-4-7", llm_pb2.Reasoning(budget_tokens=0))

    body = sent(emulators, "anthropic")
    assert "thinking" not in body
    assert "output_config" not in body


# --- Gemini ---------------------------------------------------------------------------------------


@both
@pytest.mark.parametrize(
    ("model", "reasoning", "level"),
    [
        ("gemini-3.1-pro-preview", llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM), "MEDIUM"),
        ("gemini-3.1-pro-preview", llm_pb2.Reasoning(budget_tokens=100), "LOW"),
        ("gemini-3.5-flash", llm_pb2.Reasoning(budget_tokens=0), "MINIMAL"),
        ("gemini-3.5-flash", llm_pb2.Reasoning(budget_tokens=30000), "HIGH"),
        ("gemini-3.1-flash-lite", llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW), "LOW"),
    ],
)
async def test_gemini_3_gets_a_thinking_level_it_takes_and_never_a_budget(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    emulators: Emulators,
    streamed: bool,
    model: str,
    reasoning: llm_pb2.Reasoning,
    level: str,
) -> None:
    await ask(stub, streamed, model, reasoning)

    thinking = gemini_thinking(emulators)
    assert thinking["thinkingLevel"] == level
    assert "thinkingBudget" not in thinking
    assert thinking["includeThoughts"] is True


async def test_no_thinking_on_gemini_3_pro_is_refused_naming_the_capability_before_any_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ask(stub, False, "gemini-3.1-pro-preview", llm_pb2.Reasoning(budget_tokens=0))

    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "UNSUPPORTED_BY_MODEL"
    assert "thinking_off" in details.violations["reasoning.budget_tokens"]
    assert emulators.completions("gemini") == []


GEMINI_25 = """
[models."gemini-2.5-flash-lite"]
provider = "gemini"
tier = "fast"
context_window = 1048576
max_output_tokens = 65536
input = 0.10
output = 0.40
reasoning = true
document_input = true
"""


@pytest.mark.parametrize(
    ("reasoning", "budget"),
    [
        (llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM), 4096),
        (llm_pb2.Reasoning(budget_tokens=700), 700),
        (llm_pb2.Reasoning(budget_tokens=0), 0),
    ],
)
async def test_a_gemini_2_5_model_gets_a_budget_never_a_level(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    tmp_path: Path,
    reasoning: llm_pb2.Reasoning,
    budget: int,
) -> None:
    overlay = tmp_path / "catalogue.toml"
    overlay.write_text(GEMINI_25)
    app: App = await start_gateway(
        llm_catalogue_path=overlay,
        allowed_models=",".join((*DEFAULT_ALLOWED_MODELS, "gemini-2.5-flash-lite")),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await ask(llm_pb2_grpc.LLMServiceStub(channel), False, "gemini-2.5-flash-lite", reasoning)

    thinking = gemini_thinking(emulators)
    assert thinking["thinkingBudget"] == budget
    assert "thinkingLevel" not in thinking


# --- every control on every default model -----------------------------------------------------------

CONTROLS = [
    llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW),
    llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM),
    llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_HIGH),
    llm_pb2.Reasoning(budget_tokens=0),
    llm_pb2.Reasoning(budget_tokens=1),
    llm_pb2.Reasoning(budget_tokens=3000),
    llm_pb2.Reasoning(budget_tokens=60000),
]
DEFAULT_THINKERS = [
    "claude-opus-4-7",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "gemini-3.1-pro-preview",
    "gemini-3.5-flash",
    "gemini-3.1-flash-lite",
]


REFUSED = {
    # A forced tool choice while thinking on a budget: every control but "no thinking" on Haiku 4.5 (its
    # efforts become budgets), the positive budgets on Sonnet 4.6 (its efforts go adaptive).
    "claude-haiku-4-5": {(i, True) for i in (0, 1, 2, 4, 5, 6)},
    "claude-sonnet-4-6": {(i, True) for i in (4, 5, 6)},
    "claude-opus-4-7": set(),
    # Gemini 3 Pro cannot stop thinking.
    "gemini-3.1-pro-preview": {(3, False), (3, True)},
    "gemini-3.5-flash": set(),
    "gemini-3.1-flash-lite": set(),
}


@pytest.mark.parametrize("model", DEFAULT_THINKERS)
async def test_no_reasoning_control_makes_a_default_model_refuse_the_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, model: str
) -> None:
    provider = "anthropic" if model.startswith("claude") else "gemini"
    refused: set[tuple[int, bool]] = set()
    for (index, reasoning), forced in itertools.product(enumerate(CONTROLS), (False, True)):
        before = len(emulators.completions(provider))
        tools: dict[str, Any] = {"tools": [WEATHER], "tool_choice": FORCED} if forced else {}
        try:
            await ask(stub, False, model, reasoning, **tools)
        except grpc.aio.AioRpcError as error:
            # Refused up front by the gateway, naming what the model does not take; never a provider 400.
            details = details_of(error)
            assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details.message
            assert details.reason == "UNSUPPORTED_BY_MODEL", details.message
            assert len(emulators.completions(provider)) == before
            refused.add((index, forced))
        else:
            assert len(emulators.completions(provider)) == before + 1

    assert refused == REFUSED[model]


GEMINI_3_PRO = """
[models."gemini-3-pro-preview"]
provider = "gemini"
tier = "premium"
context_window = 1048576
max_output_tokens = 65536
input = 2.00
output = 12.00
reasoning = true
document_input = true
thinking = "levels"
thinking_levels = ["low", "high"]
thinking_off = false
"""


@pytest.mark.parametrize(
    ("reasoning", "level"),
    [
        (llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_MEDIUM), "HIGH"),  # a tie: the higher level
        (llm_pb2.Reasoning(budget_tokens=4096), "HIGH"),
        (llm_pb2.Reasoning(budget_tokens=1500), "LOW"),
    ],
)
async def test_a_level_the_model_lacks_becomes_its_nearest_level_never_less_thinking_on_a_tie(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    tmp_path: Path,
    reasoning: llm_pb2.Reasoning,
    level: str,
) -> None:
    overlay = tmp_path / "catalogue.toml"
    overlay.write_text(GEMINI_3_PRO)
    app: App = await start_gateway(
        llm_catalogue_path=overlay, allowed_models=",".join((*DEFAULT_ALLOWED_MODELS, "gemini-3-pro-preview"))
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await ask(llm_pb2_grpc.LLMServiceStub(channel), False, "gemini-3-pro-preview", reasoning)

    assert gemini_thinking(emulators)["thinkingLevel"] == level  # the emulator refuses MEDIUM on 3 Pro
