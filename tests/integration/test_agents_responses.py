"""OpenAI's own models on the Responses API, through the gateway's gRPC surface against the emulator:
every agent feature unary and streamed on the default allowlist's OpenAI models (which never reach Chat
Completions, whose refusal of function tools with reasoning they would trip), reasoning carried across a
tool turn as encrypted items replayed in order, and conversations that move between OpenAI and the other
providers."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS, Emulators
from tests.helpers import user

DEFAULT_OPENAI_MODELS = ("gpt-5.5", "gpt-5.4", "gpt-5.4-mini")
WEATHER = llm_pb2.Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
TIME = llm_pb2.Tool(name="get_time", parameters_json='{"type": "object", "properties": {}}')
EFFORTS = {
    "none": None,
    "low": llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW),
    "high": llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_HIGH),
}
Answer = llm_pb2.CompleteResponse | llm_pb2.StreamDone


async def call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    streamed: bool,
    model: str,
    messages: list[llm_pb2.Message],
    **fields: Any,
) -> tuple[str, Answer, list[llm_pb2.StreamResponse]]:
    """(text, the final answer, every stream event) of one call."""
    if not streamed:
        response = await stub.Complete(
            llm_pb2.CompleteRequest(model=model, messages=messages, **fields), timeout=10
        )
        return response.content, response, []
    events = [
        e
        async for e in stub.Stream(
            llm_pb2.StreamRequest(model=model, messages=messages, **fields), timeout=10
        )
    ]
    text = "".join(e.delta for e in events if e.WhichOneof("event") == "delta")
    return text, events[-1].done, events


def assistant(answer: Answer) -> llm_pb2.Message:
    return llm_pb2.Message(
        role=llm_pb2.ROLE_ASSISTANT, tool_calls=answer.tool_calls, reasoning=answer.reasoning
    )


def result(call_id: str, text: str = "sunny") -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=call_id, content=text)


both = pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])


@both
@pytest.mark.parametrize("effort", list(EFFORTS))
@pytest.mark.parametrize("model", DEFAULT_OPENAI_MODELS)
async def test_tools_with_any_reasoning_on_the_default_openai_models_go_through_the_responses_api(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, model: str, effort: str, streamed: bool
) -> None:
    reasoning = {"reasoning": EFFORTS[effort]} if EFFORTS[effort] else {}

    _, answer, _ = await call(stub, streamed, model, user("weather in Paris?"), tools=[WEATHER], **reasoning)

    # On Chat Completions each of these is refused (tests/unit/test_emulator_responses_rules.py).
    assert [c.name for c in answer.tool_calls] == ["get_weather"]
    assert answer.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    [sent] = emulators.completions("openai")
    assert sent.path == "/v1/responses"
    assert (sent.body["store"], sent.body["include"]) == (False, ["reasoning.encrypted_content"])
    assert sent.body["tools"][0] == {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": json.loads(WEATHER.parameters_json),
        "strict": False,
    }


@both
async def test_reasoning_is_carried_across_a_tool_turn_as_encrypted_items_replayed_in_order(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    model, question, effort = MODELS["openai"], user("weather in Paris?"), EFFORTS["low"]

    _, first, events = await call(stub, streamed, model, question, tools=[WEATHER], reasoning=effort)
    [tool_call] = first.tool_calls
    [thought] = first.reasoning
    text, second, _ = await call(
        stub,
        streamed,
        model,
        [*question, assistant(first), result(tool_call.id)],
        tools=[WEATHER],
        reasoning=effort,
    )

    assert (thought.provider, thought.id[:3], bool(thought.signature)) == ("openai", "rs_", True)
    assert (
        thought.text == "step1 step2 step3 step4 step5 step6 step7 step8"
    )  # the summary the caller asked for
    assert (tool_call.id[:5], tool_call.item_id[:3]) == ("call_", "fc_")
    if streamed:
        summary = "".join(e.reasoning_delta for e in events if e.WhichOneof("event") == "reasoning_delta")
        assert summary == thought.text
    replayed = emulators.completions("openai")[1].body["input"]
    assert [item.get("type", "message") for item in replayed] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]
    assert replayed[1] == {
        "type": "reasoning",
        "id": thought.id,
        "encrypted_content": thought.signature.decode(),
        "summary": [{"type": "summary_text", "text": thought.text}],
    }
    assert (replayed[2]["id"], replayed[2]["call_id"]) == (tool_call.item_id, tool_call.id)
    assert text == "emulator reply: tool get_weather returned sunny"
    assert second.usage.reasoning_tokens == 8


async def test_without_reasoning_summaries_the_reasoning_still_round_trips_encrypted(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(openai_reasoning_summaries=False)  # an unverified OpenAI organization
    model, question, effort = MODELS["openai"], user("weather in Paris?"), EFFORTS["low"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        _, first, _ = await call(stub, False, model, question, tools=[WEATHER], reasoning=effort)
        text, _, _ = await call(
            stub,
            False,
            model,
            [*question, assistant(first), result(first.tool_calls[0].id)],
            reasoning=effort,
            tools=[WEATHER],
        )

    assert emulators.completions("openai")[0].body["reasoning"] == {"effort": "low"}
    [thought] = first.reasoning
    assert (thought.text, bool(thought.signature)) == ("", True)
    assert text == "emulator reply: tool get_weather returned sunny"


async def test_altered_encrypted_reasoning_is_refused_by_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    model, question = MODELS["openai"], user("weather in Paris?")
    _, first, _ = await call(stub, False, model, question, tools=[WEATHER], reasoning=EFFORTS["low"])
    turn = assistant(first)
    turn.reasoning[0].signature = base64.b64encode(b"forged")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(stub, False, model, [*question, turn, result(first.tool_calls[0].id)], tools=[WEATHER])

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be verified" in (refused.value.details() or "")


@both
async def test_parallel_calls_a_named_tool_choice_and_a_pdf_reach_the_responses_api_in_its_shape(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    pdf = b"%PDF-1.7 a tiny document"
    message = llm_pb2.Message(
        role=llm_pb2.ROLE_USER,
        content="read this [[emulate: tool_calls=2]]",
        parts=[
            llm_pb2.ContentPart(
                document=llm_pb2.Document(data=pdf, mime_type="application/pdf", title="a.pdf")
            )
        ],
    )

    _, parallel, _ = await call(stub, streamed, MODELS["openai"], [message], tools=[WEATHER, TIME])
    _, named, _ = await call(
        stub,
        streamed,
        MODELS["openai"],
        user("time?"),
        tools=[WEATHER, TIME],
        tool_choice=llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_REQUIRED, tool_name="get_time"),
        parallel_tool_calls=False,
    )

    assert [c.name for c in parallel.tool_calls] == ["get_weather", "get_time"]
    assert len({c.id for c in parallel.tool_calls}) == 2
    assert [c.name for c in named.tool_calls] == ["get_time"]
    first, second = (r.body for r in emulators.completions("openai"))
    assert first["input"][0]["content"][1] == {
        "type": "input_file",
        "filename": "a.pdf",
        "file_data": "data:application/pdf;base64," + base64.b64encode(pdf).decode(),
    }
    assert (second["tool_choice"], second["parallel_tool_calls"]) == (
        {"type": "function", "name": "get_time"},
        False,
    )


# --- conversations that move between providers --------------------------------------------------


@pytest.mark.parametrize("origin", ["anthropic", "gemini"])
@both
async def test_a_tool_conversation_started_elsewhere_continues_on_openai(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, origin: str, streamed: bool
) -> None:
    question = user("weather in Paris?")
    budget = llm_pb2.Reasoning(budget_tokens=2048)
    _, first, _ = await call(stub, streamed, MODELS[origin], question, tools=[WEATHER], reasoning=budget)
    [tool_call] = first.tool_calls

    text, _, _ = await call(
        stub, streamed, MODELS["openai"], [*question, assistant(first), result(tool_call.id)], tools=[WEATHER]
    )

    assert first.reasoning  # the other provider's reasoning was in the history ...
    sent = emulators.completions("openai")[0].body["input"]
    # ... and is not sent to OpenAI; its call goes as a function_call without an item id of ours.
    assert [item.get("type", "message") for item in sent] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert "id" not in sent[1]
    assert sent[1]["call_id"] == sent[2]["call_id"] == tool_call.id
    assert text == "emulator reply: tool get_weather returned sunny"


@both
async def test_a_tool_conversation_started_on_openai_continues_on_anthropic_without_openai_reasoning(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    question = user("weather in Paris?")
    _, first, _ = await call(
        stub, streamed, MODELS["openai"], question, tools=[WEATHER], reasoning=EFFORTS["low"]
    )
    [tool_call] = first.tool_calls

    text, _, _ = await call(
        stub,
        streamed,
        MODELS["anthropic"],
        [*question, assistant(first), result(tool_call.id)],
        tools=[WEATHER],
    )

    assert first.reasoning[0].provider == "openai"
    [sent] = emulators.completions("anthropic")
    blocks = [b for m in sent.body["messages"] if isinstance(m["content"], list) for b in m["content"]]
    assert not [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
    assert [b["id"] for b in blocks if b["type"] == "tool_use"] == [tool_call.id]
    assert text == "emulator reply: tool get_weather returned sunny"


@both
async def test_no_thinking_asks_openai_for_effort_none_never_low(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    no_thinking = llm_pb2.Reasoning(budget_tokens=0)

    await call(stub, streamed, "gpt-5.4-mini", user("hi"), tools=[WEATHER], reasoning=no_thinking)

    [sent] = emulators.completions("openai")
    assert sent.body["reasoning"]["effort"] == "none"


async def test_no_thinking_on_a_gpt_5_model_that_cannot_stop_reasoning_is_refused_before_any_call(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(allowed_models="gpt-5-mini,gpt-5.4-mini")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Complete(
                llm_pb2.CompleteRequest(
                    model="gpt-5-mini", messages=user("hi"), reasoning=llm_pb2.Reasoning(budget_tokens=0)
                ),
                timeout=10,
            )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "thinking_off" in (refused.value.details() or "")
    assert emulators.completions("openai") == []


async def test_max_tokens_below_the_responses_api_minimum_is_refused_before_any_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(
            llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("hi"), max_tokens=15), timeout=10
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least 16" in (refused.value.details() or "")
    assert emulators.completions("openai") == []
