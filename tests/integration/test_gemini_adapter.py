"""The Gemini adapter on the real google-genai SDK, against the Gemini emulator over HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.core.errors import (
    ModelRetired,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from server.core.types import (
    CallOptions,
    ChatRequest,
    FinishReason,
    Message,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from server.emulators.base import Directives
from server.emulators.gemini import GeminiEmulator
from server.providers.base import ProviderSettings
from server.providers.gemini import GeminiProvider
from tests.helpers import open_streams_reach

KEY = "AIzaTest0123456789abcdefghijklmn"
MODEL = "gemini-3.1-flash-lite"
OPTIONS = CallOptions(headers={"X-Trace-ID": "trace-1"}, timeout=10)


@pytest.fixture
async def emulator() -> AsyncIterator[GeminiEmulator]:
    started = GeminiEmulator(api_key=KEY)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def provider(emulator: GeminiEmulator) -> AsyncIterator[GeminiProvider]:
    built = GeminiProvider(ProviderSettings(name="gemini", api_key=KEY, base_url=emulator.base_url))
    yield built
    await built.aclose()


def ask(text: str, *history: Message, **params: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=(*history, Message(Role.USER, text)), **params)


async def collect(provider: GeminiProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request, OPTIONS)]


def generation_requests(emulator: GeminiEmulator) -> list[Any]:
    return [r for r in emulator.requests if r.method == "POST"]


# --- calls ----------------------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_stop(provider: GeminiProvider) -> None:
    completion = await provider.complete(ask("hello there friend"), OPTIONS)

    assert completion.content == "emulator reply: hello there friend"
    assert completion.usage == Usage(prompt_tokens=3, completion_tokens=5)
    assert completion.finish_reason is FinishReason.STOP


async def test_stream_yields_a_delta_per_chunk_then_one_end_with_provider_usage(
    provider: GeminiProvider,
) -> None:
    events = await collect(provider, ask("one two three"))

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["emulator ", "reply: ", "one ", "two ", "three"]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert (end.usage, end.finish_reason) == (Usage(prompt_tokens=3, completion_tokens=5), FinishReason.STOP)
    assert end.served_model == "gemini-3.1-flash-lite"
    assert end.request_id  # the responseId
    assert sum(isinstance(e, StreamEnd) for e in events) == 1


async def test_stream_goes_to_the_sse_endpoint(provider: GeminiProvider, emulator: GeminiEmulator) -> None:
    await collect(provider, ask("hi"))

    [sent] = generation_requests(emulator)
    assert sent.path.endswith(f"/models/{MODEL}:streamGenerateContent")
    assert sent.query == {"alt": "sse"}


@pytest.mark.parametrize(
    ("directive", "finish"),
    [
        ("finish=stop", FinishReason.STOP),
        ("finish=length", FinishReason.LENGTH),
        ("finish=content_filter", FinishReason.CONTENT_FILTER),
        ("finish=RECITATION", FinishReason.CONTENT_FILTER),
        ("finish=PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("finish=MALFORMED_FUNCTION_CALL", FinishReason.OTHER),
        pytest.param(  # the SDK warns once about a reason it does not know, and passes it on
            "finish=SOMETHING_NEW",
            FinishReason.OTHER,
            marks=pytest.mark.filterwarnings("ignore:SOMETHING_NEW is not a valid FinishReason"),
        ),
    ],
)
async def test_finish_reasons_map_in_complete_and_stream(
    provider: GeminiProvider, directive: str, finish: FinishReason
) -> None:
    request = ask(f"hi [[emulate: {directive}]]")

    completion = await provider.complete(request, OPTIONS)
    events = await collect(provider, request)

    assert completion.finish_reason is finish
    assert isinstance(events[-1], StreamEnd)
    assert events[-1].finish_reason is finish


async def test_max_tokens_becomes_max_output_tokens_and_ends_in_length(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    completion = await provider.complete(ask("a b c d e", max_tokens=2), OPTIONS)

    assert completion.content == "emulator reply: "
    assert completion.finish_reason is FinishReason.LENGTH
    assert generation_requests(emulator)[-1].body["generationConfig"]["maxOutputTokens"] == 2


async def test_prompt_blocked_outright_ends_empty_with_content_filter(provider: GeminiProvider) -> None:
    request = ask("hi [[emulate: finish=prompt_blocked]]")

    completion = await provider.complete(request, OPTIONS)
    events = await collect(provider, request)

    assert (completion.content, completion.finish_reason) == ("", FinishReason.CONTENT_FILTER)
    assert [(e.usage, e.finish_reason) for e in events if isinstance(e, StreamEnd)] == [
        (Usage(prompt_tokens=1), FinishReason.CONTENT_FILTER)
    ]
    assert len(events) == 1


# --- request translation --------------------------------------------------------------------------


async def test_system_messages_go_to_system_instruction_and_assistant_becomes_model(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    history = (
        Message(Role.SYSTEM, "be brief"),
        Message(Role.USER, "first"),
        Message(Role.ASSISTANT, "ok"),
        Message(Role.SYSTEM, "be kind"),
    )

    await provider.complete(ask("second", *history), OPTIONS)

    body = generation_requests(emulator)[-1].body
    assert body["systemInstruction"]["parts"] == [{"text": "be brief\n\nbe kind"}]
    assert [(c["role"], c["parts"]) for c in body["contents"]] == [
        ("user", [{"text": "first"}]),
        ("model", [{"text": "ok"}]),
        ("user", [{"text": "second"}]),
    ]


async def test_consecutive_turns_merge_and_empty_messages_are_left_out(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    history = (Message(Role.USER, "one"), Message(Role.ASSISTANT, ""), Message(Role.USER, "two"))

    await provider.complete(ask("three", *history), OPTIONS)

    body = generation_requests(emulator)[-1].body
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}
    ]
    assert "systemInstruction" not in body


async def test_sampling_and_stop_sequences_reach_generation_config(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    completion = await provider.complete(
        ask("alpha beta gamma", temperature=0.5, top_p=0.9, stop=("gamma",)), OPTIONS
    )

    config = generation_requests(emulator)[-1].body["generationConfig"]
    assert config == {"temperature": 0.5, "topP": pytest.approx(0.9), "stopSequences": ["gamma"]}
    assert completion.content == "emulator reply: alpha beta "


async def test_more_than_five_stop_sequences_are_refused_before_any_request(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    request = ask("hi", stop=("a", "b", "c", "d", "e", "f"))

    with pytest.raises(ProviderBadRequest, match="at most 5 stop sequences"):
        await provider.complete(request, OPTIONS)
    with pytest.raises(ProviderBadRequest, match="at most 5 stop sequences"):
        await anext(provider.stream(request, OPTIONS))
    assert emulator.requests == []


async def test_a2a_headers_key_and_timeout_arrive_with_every_request(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    headers = {"X-Trace-ID": "trace-42", "X-Source-Agent": "planner", "X-Session-ID": "session-7"}
    options = CallOptions(headers=headers, timeout=7.5)

    await provider.complete(ask("hi"), options)
    [_ async for _ in provider.stream(ask("hi"), options)]

    for sent in generation_requests(emulator):
        assert sent.headers["x-trace-id"] == "trace-42"
        assert sent.headers["x-source-agent"] == "planner"
        assert sent.headers["x-session-id"] == "session-7"
        assert sent.headers["x-goog-api-key"] == KEY
        assert sent.headers["x-server-timeout"] == "8"  # the SDK's rendering of the 7.5 s timeout
        assert "key" not in sent.query


# --- errors ---------------------------------------------------------------------------------------


async def test_provider_refusal_is_a_bad_request_with_the_providers_message(
    provider: GeminiProvider,
) -> None:
    with pytest.raises(ProviderBadRequest) as caught:
        await provider.complete(ask("hi", temperature=3.0), OPTIONS)

    assert caught.value.status_code == 400
    assert "temperature" in caught.value.message


async def test_unknown_model_is_model_retired(provider: GeminiProvider) -> None:
    request = ChatRequest(model="no-such-model", messages=(Message(Role.USER, "hi"),))

    with pytest.raises(ModelRetired, match="not found") as caught:
        await provider.complete(request, OPTIONS)

    assert caught.value.status_code == 404


async def test_invalid_key_is_an_auth_error_that_never_carries_the_key(emulator: GeminiEmulator) -> None:
    wrong = "AIzaWrongKey0123456789abcdefghij"
    provider = GeminiProvider(ProviderSettings(name="gemini", api_key=wrong, base_url=emulator.base_url))
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await provider.complete(ask("hi"), OPTIONS)
    finally:
        await provider.aclose()

    assert "refused the gateway's API key" in caught.value.message
    assert wrong not in str(caught.value)
    assert caught.value.status_code == 401
    assert emulator.requests[-1].headers["x-goog-api-key"] == wrong  # refused by the emulator, as Gemini does


async def test_rate_limit_carries_retry_after_from_the_header(provider: GeminiProvider) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.complete(ask("hi [[emulate: status=429 retry_after=2]]"), OPTIONS)

    assert caught.value.retry_after == 2.0
    assert caught.value.status_code == 429


class _RetryInfoOnly(GeminiEmulator):
    """Gemini itself states the wait only as google.rpc.RetryInfo in the error body."""

    def retry_headers(self, directives: Directives) -> dict[str, str]:
        return {}


async def test_rate_limit_carries_retry_after_from_the_body_retry_info() -> None:
    emulator = _RetryInfoOnly(api_key=KEY)
    await emulator.start()
    provider = GeminiProvider(ProviderSettings(name="gemini", api_key=KEY, base_url=emulator.base_url))
    try:
        with pytest.raises(ProviderRateLimited) as caught:
            await provider.complete(ask("hi [[emulate: status=429 retry_after=1.5]]"), OPTIONS)
    finally:
        await provider.aclose()
        await emulator.stop()

    assert caught.value.retry_after == 1.5


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable_after_one_attempt(
    provider: GeminiProvider, emulator: GeminiEmulator, status: int
) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.complete(ask(f"hi [[emulate: status={status}]]"), OPTIONS)

    assert caught.value.status_code == status
    assert len(generation_requests(emulator)) == 1  # the SDK does not retry: the gateway does


async def test_stream_error_surfaces_at_the_first_event(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    events = provider.stream(ask("hi [[emulate: status=503]]"), OPTIONS)

    with pytest.raises(ProviderUnavailable) as caught:
        await anext(events)

    assert caught.value.status_code == 503
    assert len(generation_requests(emulator)) == 1


async def test_refused_connection_is_unavailable(refusing_url: str) -> None:
    provider = GeminiProvider(ProviderSettings(name="gemini", api_key=KEY, base_url=refusing_url))
    try:
        with pytest.raises(ProviderUnavailable, match="connection failed"):
            await provider.complete(ask("hi"), OPTIONS)
        with pytest.raises(ProviderUnavailable, match="connection failed"):
            await anext(provider.stream(ask("hi"), OPTIONS))
    finally:
        await provider.aclose()


async def test_slow_provider_is_a_timeout(provider: GeminiProvider) -> None:
    options = CallOptions(headers={"X-Trace-ID": "t"}, timeout=0.2)

    with pytest.raises(ProviderTimeout):
        await provider.complete(ask("a b c [[emulate: token_delay_ms=200]]"), options)


async def test_stream_that_outlives_its_timeout_is_a_timeout_after_the_earlier_deltas(
    provider: GeminiProvider,
) -> None:
    options = CallOptions(headers={"X-Trace-ID": "t"}, timeout=0.5)
    received: list[StreamEvent] = []

    long = " ".join(f"w{i}" for i in range(200))  # 40 s of reply at 200 ms a token: never done in time

    with pytest.raises(ProviderTimeout):
        async for event in provider.stream(ask(f"{long} [[emulate: token_delay_ms=200]]"), options):
            received.append(event)

    assert received
    assert all(isinstance(e, TextDelta) for e in received)


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("drop_after=2", "connection failed"),
        ("error_after=2", "overloaded"),
        ("malformed_after=2", "malformed"),
    ],
)
async def test_mid_stream_failure_is_unavailable_after_the_earlier_deltas(
    provider: GeminiProvider, directive: str, message: str
) -> None:
    received: list[str] = []

    with pytest.raises(ProviderUnavailable, match=message):
        async for event in provider.stream(ask(f"a b c d [[emulate: {directive}]]"), OPTIONS):
            assert isinstance(event, TextDelta)
            received.append(event.text)

    assert received == ["emulator ", "reply: "]


async def test_closing_the_stream_closes_the_http_response(
    provider: GeminiProvider, emulator: GeminiEmulator
) -> None:
    events = provider.stream(ask("a b c d e f [[emulate: token_delay_ms=200]]"), OPTIONS)
    assert isinstance(await anext(events), TextDelta)
    assert emulator.open_streams == 1

    await events.aclose()

    await open_streams_reach(emulator, 0)


async def test_cancellation_passes_through(provider: GeminiProvider, emulator: GeminiEmulator) -> None:
    call = asyncio.create_task(provider.complete(ask("a b c [[emulate: token_delay_ms=500]]"), OPTIONS))
    await asyncio.wait_for(emulator.wait_for_requests(1), 30)  # the request is at the provider

    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call


# --- probe ----------------------------------------------------------------------------------------


async def test_probe_lists_one_page_of_models(provider: GeminiProvider, emulator: GeminiEmulator) -> None:
    await provider.probe(timeout=5)

    [sent] = emulator.requests
    assert (sent.method, sent.query) == ("GET", {"pageSize": "1"})
    assert sent.path.endswith("/models")


async def test_probe_maps_errors_like_calls(emulator: GeminiEmulator, refusing_url: str) -> None:
    wrong = GeminiProvider(ProviderSettings(name="gemini", api_key="AIzaWrong", base_url=emulator.base_url))
    unreachable = GeminiProvider(ProviderSettings(name="gemini", api_key=KEY, base_url=refusing_url))
    try:
        with pytest.raises(ProviderAuthError):
            await wrong.probe(timeout=5)
        with pytest.raises(ProviderUnavailable):
            await unreachable.probe(timeout=5)
    finally:
        await wrong.aclose()
        await unreachable.aclose()
