"""Complete and Stream through the real server, for a model of each provider, against the emulators."""

from __future__ import annotations

from typing import Any

import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import MODELS, SAMPLING_MODELS, Emulators
from tests.helpers import user

PROVIDERS = sorted(MODELS)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_complete_returns_content_usage_and_who_served(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hello there friend")), timeout=10
    )

    assert response.content == "emulator reply: hello there friend"
    assert response.provider == provider
    assert response.model == MODELS[provider]
    assert response.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert response.usage.completion_tokens == 5
    assert response.usage.prompt_tokens == 3
    assert response.usage.total_tokens == 8
    assert response.latency_ms > 0
    assert response.trace_id


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_relays_deltas_then_exactly_one_done(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    events = [
        event
        async for event in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS[provider], messages=user("one two three")), timeout=10
        )
    ]

    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    dones = [e.done for e in events if e.WhichOneof("event") == "done"]
    assert "".join(deltas) == "emulator reply: one two three"
    assert len(deltas) == 5  # one delta per emulator token: relayed, not buffered
    assert len(dones) == 1
    assert events[-1].WhichOneof("event") == "done"
    done = dones[0]
    assert done.provider == provider
    assert done.model == MODELS[provider]
    assert done.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (3, 5, 8)
    assert done.latency_ms >= done.time_to_first_token_ms > 0
    assert done.trace_id


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_max_tokens_cuts_reply_with_finish_reason_length(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, streamed: bool
) -> None:
    # OpenAI: Chat Completions (the Responses API's own minimum is 16 tokens, tested below).
    model = SAMPLING_MODELS[provider] if provider == "openai" else MODELS[provider]
    content, finish, usage = await _call(stub, streamed, model, "a b c d e f", max_tokens=3)

    assert content == "emulator reply: a "
    assert finish == llm_pb2.FINISH_REASON_LENGTH
    assert usage.completion_tokens == 3


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_max_tokens_cuts_a_responses_api_reply_as_incomplete_with_finish_reason_length(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    words = " ".join(f"w{i}" for i in range(30))

    content, finish, usage = await _call(stub, streamed, MODELS["openai"], words, max_tokens=16)

    assert content == "emulator reply: " + " ".join(f"w{i}" for i in range(14)) + " "
    assert finish == llm_pb2.FINISH_REASON_LENGTH
    assert usage.completion_tokens == 16
    assert emulators.completions("openai")[-1].body["max_output_tokens"] == 16


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_stop_sequence_ends_reply_with_finish_reason_stop(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, streamed: bool
) -> None:
    model = SAMPLING_MODELS[provider]
    content, finish, _ = await _call(stub, streamed, model, "alpha beta END gamma", stop=["END"])

    assert content.strip() == "emulator reply: alpha beta"
    assert finish == llm_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_content_filter_finish_reason_is_normalised(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, streamed: bool
) -> None:
    _, finish, _ = await _call(stub, streamed, MODELS[provider], "hi [[emulate: finish=content_filter]]")

    assert finish == llm_pb2.FINISH_REASON_CONTENT_FILTER


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_system_prompt_and_sampling_reach_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    sampling: dict[str, Any] = {} if provider == "anthropic" else {"temperature": 0.5, "top_p": 0.9}
    response = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=SAMPLING_MODELS[provider], messages=user("hi", system="be brief"), **sampling
        ),
        timeout=10,
    )

    assert response.content == "emulator reply: hi"
    body = emulators.completions(provider)[-1].body
    system = {
        "openai": lambda: body["messages"][0],
        "anthropic": lambda: body["system"],
        "gemini": lambda: body["systemInstruction"]["parts"][0]["text"],
    }[provider]()
    assert system in ({"role": "system", "content": "be brief"}, "be brief")
    if provider == "openai":
        assert (body["temperature"], body["top_p"]) == (0.5, pytest.approx(0.9))
    if provider == "gemini":
        assert (body["generationConfig"]["temperature"], body["generationConfig"]["topP"]) == (
            0.5,
            pytest.approx(0.9),
        )


async def test_empty_model_uses_the_default_model(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    response = await stub.Complete(llm_pb2.CompleteRequest(messages=user("hi")), timeout=10)

    assert response.model == "gpt-5.4-mini"
    assert response.provider == "openai"


async def test_conversation_with_assistant_turns_is_accepted(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    for model in MODELS.values():
        messages = [
            llm_pb2.Message(role=llm_pb2.ROLE_USER, content="first"),
            llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, content="answer"),
            llm_pb2.Message(role=llm_pb2.ROLE_USER, content="second"),
        ]
        response = await stub.Complete(llm_pb2.CompleteRequest(model=model, messages=messages), timeout=10)
        assert response.content == "emulator reply: second", model


async def _call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    streamed: bool,
    model: str,
    text: str,
    *,
    max_tokens: int | None = None,
    stop: list[str] | None = None,
) -> tuple[str, int, llm_pb2.Usage]:
    if not streamed:
        response = await stub.Complete(
            llm_pb2.CompleteRequest(model=model, messages=user(text), max_tokens=max_tokens, stop=stop or []),
            timeout=10,
        )
        return response.content, response.finish_reason, response.usage
    content = ""
    async for event in stub.Stream(
        llm_pb2.StreamRequest(model=model, messages=user(text), max_tokens=max_tokens, stop=stop or []),
        timeout=10,
    ):
        if event.WhichOneof("event") == "delta":
            content += event.delta
        else:
            return content, event.done.finish_reason, event.done.usage
    raise AssertionError("stream ended without done")
