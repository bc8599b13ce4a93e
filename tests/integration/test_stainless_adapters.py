"""The OpenAI and Anthropic adapters on their real SDKs (both Stainless-generated), called directly — no
gRPC, no gateway — against their emulators over HTTP on loopback. Each behaviour runs on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from server.core.errors import (
    ModelRetired,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
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
)
from server.emulators.anthropic import AnthropicEmulator
from server.emulators.base import Emulator, RecordedRequest
from server.emulators.openai import OpenAIEmulator
from server.providers.anthropic import AnthropicProvider
from server.providers.base import ProviderSettings
from server.providers.openai import OpenAIProvider
from tests.helpers import open_streams_reach

OPTIONS = CallOptions(headers={"X-Trace-ID": "trace-1", "X-Source-Agent": "planner"}, timeout=10)


@dataclass(frozen=True)
class Kind:
    name: str
    key: str
    model: str
    emulator: type[Emulator]
    adapter: type[OpenAIProvider] | type[AnthropicProvider]
    wire_api: str = "chat_completions"

    def sent_key(self, request: RecordedRequest) -> str:
        """The key as the request carried it: a bearer token (OpenAI, and current Anthropic SDKs), or
        `x-api-key` (older Anthropic SDKs)."""
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        return bearer or request.headers["x-api-key"]


KINDS = [
    Kind(
        "openai",
        "sk-test-openai-0123456789abcdef",
        "gpt-4.1-mini",
        OpenAIEmulator,
        OpenAIProvider,
    ),
    Kind(
        "openai",
        "sk-test-openai-0123456789abcdef",
        "gpt-5.4-mini",
        OpenAIEmulator,
        OpenAIProvider,
        wire_api="responses",
    ),
    Kind(
        "anthropic",
        "sk-ant-test-0123456789abcdef",
        "claude-haiku-4-5",
        AnthropicEmulator,
        AnthropicProvider,
    ),
]


@pytest.fixture(params=KINDS, ids=[f"{k.name}-{k.wire_api}" if k.name == "openai" else k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    chosen: Kind = request.param
    return chosen


@pytest.fixture
async def emulator(kind: Kind) -> AsyncIterator[Emulator]:
    started = kind.emulator(api_key=kind.key)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def adapter(kind: Kind, emulator: Emulator) -> AsyncIterator[Any]:
    built = kind.adapter(
        ProviderSettings(name=kind.name, api_key=kind.key, base_url=emulator.base_url, default_max_tokens=321)
    )
    yield built
    await built.aclose()


def ask(kind: Kind, text: str, *history: Message, **params: Any) -> ChatRequest:
    return ChatRequest(
        model=kind.model, messages=(*history, Message(Role.USER, text)), wire_api=kind.wire_api, **params
    )


async def collect(adapter: Any, request: ChatRequest, options: CallOptions = OPTIONS) -> list[StreamEvent]:
    return [event async for event in adapter.stream(request, options)]


def generations(emulator: Emulator) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.method == "POST"]


# --- calls ----------------------------------------------------------------------------------------


async def test_complete_returns_text_usage_finish_served_model_and_request_id(
    kind: Kind, adapter: Any
) -> None:
    completion = await adapter.complete(ask(kind, "hello there friend"), OPTIONS)

    assert completion.content == "emulator reply: hello there friend"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 5
    assert not completion.usage.estimated
    assert completion.finish_reason is FinishReason.STOP
    assert completion.served_model.startswith(kind.model)
    assert completion.request_id


async def test_stream_yields_the_deltas_then_one_end_with_provider_usage(kind: Kind, adapter: Any) -> None:
    events = await collect(adapter, ask(kind, "one two three"))

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "emulator reply: one two three"
    assert len(deltas) == 5
    [end] = [e for e in events if isinstance(e, StreamEnd)]
    assert end is events[-1]
    assert (end.usage.completion_tokens, end.finish_reason) == (5, FinishReason.STOP)
    assert end.served_model.startswith(kind.model)
    assert end.request_id


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_reply_cut_at_max_tokens_ends_in_length(kind: Kind, adapter: Any, streamed: bool) -> None:
    # The Responses API refuses max_output_tokens below 16 (server/emulators/openai_responses.py).
    least = 16 if kind.wire_api == "responses" else 3
    request = ask(kind, " ".join(f"w{i}" for i in range(20)), max_tokens=least)

    if streamed:
        end = (await collect(adapter, request))[-1]
        assert isinstance(end, StreamEnd)
        finish = end.finish_reason
    else:
        finish = (await adapter.complete(request, OPTIONS)).finish_reason

    assert finish is FinishReason.LENGTH


# --- request translation --------------------------------------------------------------------------


async def test_key_a2a_headers_and_model_arrive_with_the_request(
    kind: Kind, adapter: Any, emulator: Emulator
) -> None:
    await adapter.complete(ask(kind, "hi"), OPTIONS)
    await collect(adapter, ask(kind, "hi"))

    for sent in generations(emulator):
        assert kind.sent_key(sent) == kind.key
        assert sent.headers["x-trace-id"] == "trace-1"
        assert sent.headers["x-source-agent"] == "planner"
        assert sent.body["model"] == kind.model
    assert [bool(r.body.get("stream")) for r in generations(emulator)] == [False, True]


async def test_system_messages_sampling_and_stop_reach_the_api_in_its_own_shape(
    kind: Kind, adapter: Any, emulator: Emulator
) -> None:
    # Claude 4.5+ and the GPT-5 models (on the Responses API) take no temperature; that API takes no stop.
    chat = kind.wire_api == "chat_completions"
    sampling = {"temperature": 0.5} if kind.name == "openai" and chat else {}
    request = ask(
        kind,
        "and now?",
        Message(Role.SYSTEM, "be brief"),
        Message(Role.USER, "hi"),
        Message(Role.ASSISTANT, "hello"),
        stop=("END",) if chat or kind.name != "openai" else (),
        max_tokens=50,
        **sampling,
    )

    await adapter.complete(request, OPTIONS)

    [sent] = generations(emulator)
    turns = [(m["role"], _text(m["content"])) for m in sent.body.get("messages") or sent.body["input"]]
    if kind.wire_api == "responses":
        assert turns == [("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "and now?")]
        assert (sent.body["max_output_tokens"], sent.body["store"]) == (50, False)
        assert "stop" not in sent.body
    elif kind.name == "openai":
        assert turns == [("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "and now?")]
        assert (sent.body["max_completion_tokens"], sent.body["stop"]) == (50, ["END"])
    else:
        assert sent.body["system"] == "be brief"
        assert turns == [("user", "hi"), ("assistant", "hello"), ("user", "and now?")]
        assert (sent.body["max_tokens"], sent.body["stop_sequences"]) == (50, ["END"])
    assert sent.body.get("temperature") == sampling.get("temperature")


async def test_unset_max_tokens_is_left_out_or_the_configured_default_where_the_api_requires_it(
    kind: Kind, adapter: Any, emulator: Emulator
) -> None:
    await adapter.complete(ask(kind, "hi"), OPTIONS)

    [sent] = generations(emulator)
    if kind.name == "anthropic":  # the Messages API requires max_tokens
        assert sent.body["max_tokens"] == 321
    elif kind.wire_api == "responses":
        assert "max_output_tokens" not in sent.body
    else:
        assert "max_completion_tokens" not in sent.body
        assert "max_tokens" not in sent.body


def _text(content: str | list[dict[str, Any]]) -> str:
    """A message's text, sent as a string or as content blocks (`[{"type": "text", "text": ...}]`)."""
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in content if block.get("type") == "text")


async def test_stop_sequences_on_the_responses_api_are_refused_before_any_call() -> None:
    # A port nothing listens on: were the request sent, the error would be a refused connection.
    settings = ProviderSettings(
        name="openai", api_key="sk-test-openai-0123456789abcdef", base_url="http://127.0.0.1:9/v1"
    )
    adapter = OpenAIProvider(settings)
    request = ChatRequest(
        model="gpt-5.4-mini", messages=(Message(Role.USER, "hi"),), stop=("END",), wire_api="responses"
    )

    with pytest.raises(ProviderBadRequest) as refused:
        await adapter.complete(request, OPTIONS)

    assert "stop sequences are not supported by the Responses API" in str(refused.value)
    await adapter.aclose()


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "error", "status"),
    [
        ("status=400", ProviderBadRequest, 400),
        ("status=500", ProviderUnavailable, 500),
        ("status=503", ProviderUnavailable, 503),
        ("fail=auth", ProviderAuthError, None),
        ("fail=quota", QuotaExhausted, None),
        ("fail=retired", ModelRetired, 404),
    ],
    ids=lambda value: str(value) if isinstance(value, str) else None,
)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_provider_errors_map_to_core_errors_with_status_and_request_id_after_one_attempt(
    kind: Kind,
    adapter: Any,
    emulator: Emulator,
    directive: str,
    error: type[ProviderError],
    status: int | None,
    streamed: bool,
) -> None:
    request = ask(kind, f"hi [[emulate: {directive}]]")

    with pytest.raises(error) as caught:
        if streamed:
            await anext(adapter.stream(request, OPTIONS))
        else:
            await adapter.complete(request, OPTIONS)

    assert caught.value.provider == kind.name
    if status is not None:
        assert caught.value.status_code == status
    assert caught.value.request_id
    assert len(generations(emulator)) == 1  # the SDK does not retry: the gateway does


async def test_a_rate_limit_carries_the_providers_retry_after(kind: Kind, adapter: Any) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await adapter.complete(ask(kind, "hi [[emulate: status=429 retry_after=2]]"), OPTIONS)

    assert (caught.value.status_code, caught.value.retry_after) == (429, 2.0)


async def test_a_rate_limit_in_milliseconds_is_read_too(kind: Kind, adapter: Any) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await adapter.complete(ask(kind, "hi [[emulate: status=429 retry_after_ms=150]]"), OPTIONS)

    assert caught.value.retry_after == pytest.approx(0.15)


async def test_a_refused_key_is_an_auth_error_that_never_carries_the_key(
    kind: Kind, emulator: Emulator
) -> None:
    wrong = kind.key[:-6] + "WRONG0"
    adapter = kind.adapter(ProviderSettings(name=kind.name, api_key=wrong, base_url=emulator.base_url))
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await adapter.complete(ask(kind, "hi [[emulate: echo_key=1]]"), OPTIONS)
    finally:
        await adapter.aclose()

    assert caught.value.status_code == 401
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value.metadata())
    assert kind.sent_key(emulator.requests[-1]) == wrong  # refused by the emulator, as the API does


async def test_a_refused_connection_is_unavailable(kind: Kind, refusing_url: str) -> None:
    url = refusing_url + ("/v1" if kind.name == "openai" else "")
    adapter = kind.adapter(ProviderSettings(name=kind.name, api_key=kind.key, base_url=url))
    try:
        with pytest.raises(ProviderUnavailable):
            await adapter.complete(ask(kind, "hi"), OPTIONS)
        with pytest.raises(ProviderUnavailable):
            await anext(adapter.stream(ask(kind, "hi"), OPTIONS))
    finally:
        await adapter.aclose()


async def test_a_provider_slower_than_the_timeout_is_a_timeout(kind: Kind, adapter: Any) -> None:
    # 200 tokens at 100 ms each: the reply takes 20 s, the timeout is 0.2 s.
    long = " ".join(f"w{i}" for i in range(200))
    options = CallOptions(headers={"X-Trace-ID": "t"}, timeout=0.2)

    with pytest.raises(ProviderTimeout):
        await adapter.complete(ask(kind, f"{long} [[emulate: token_delay_ms=100]]"), options)


@pytest.mark.parametrize("directive", ["drop_after=2", "error_after=2", "malformed_after=2"])
async def test_a_stream_failing_midway_is_a_provider_error_after_the_earlier_deltas(
    kind: Kind, adapter: Any, directive: str
) -> None:
    received: list[str] = []

    with pytest.raises(ProviderError) as caught:
        async for event in adapter.stream(ask(kind, f"a b c d [[emulate: {directive}]]"), OPTIONS):
            assert isinstance(event, TextDelta)
            received.append(event.text)

    assert isinstance(caught.value, ProviderUnavailable | ProviderBadRequest)
    assert received == ["emulator ", "reply: "]


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("error=failed", ProviderUnavailable),  # response.failed, its error's code server_error
        ("error=rate_limit", ProviderRateLimited),  # an `error` event, code rate_limit_exceeded
        ("error=quota", QuotaExhausted),
    ],
)
async def test_a_responses_api_stream_that_fails_is_classified_by_its_error_code(
    directive: str, error: type[ProviderError]
) -> None:
    kind = next(k for k in KINDS if k.wire_api == "responses")
    emulator = kind.emulator(api_key=kind.key)
    adapter = kind.adapter(ProviderSettings(name="openai", api_key=kind.key, base_url=await emulator.start()))
    received: list[str] = []
    try:
        with pytest.raises(error) as caught:
            async for event in adapter.stream(
                ask(kind, f"a b c d [[emulate: error_after=2 {directive}]]"), OPTIONS
            ):
                assert isinstance(event, TextDelta)
                received.append(event.text)
    finally:
        await adapter.aclose()
        await emulator.stop()

    assert received == ["emulator ", "reply: "]
    assert caught.value.request_id  # the stream's x-request-id


# --- lifecycle ------------------------------------------------------------------------------------


async def test_closing_the_stream_closes_the_http_response(
    kind: Kind, adapter: Any, emulator: Emulator
) -> None:
    long = " ".join(f"w{i}" for i in range(200))
    events = adapter.stream(ask(kind, f"{long} [[emulate: token_delay_ms=100]]"), OPTIONS)
    assert isinstance(await anext(events), TextDelta)
    assert emulator.open_streams == 1

    await events.aclose()

    await open_streams_reach(emulator, 0)


async def test_cancellation_passes_through(kind: Kind, adapter: Any, emulator: Emulator) -> None:
    call = asyncio.create_task(
        adapter.complete(ask(kind, "a b c [[emulate: token_delay_ms=60000]]"), OPTIONS)
    )
    await asyncio.wait_for(emulator.wait_for_requests(1), 30)  # the request is at the provider

    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call


async def test_the_probe_lists_models_with_the_key(kind: Kind, adapter: Any, emulator: Emulator) -> None:
    await adapter.probe(timeout=5)

    [sent] = emulator.requests
    assert sent.method == "GET"
    assert sent.path.endswith("/models")
    assert kind.sent_key(sent) == kind.key


async def test_list_models_names_the_models_the_emulator_serves(kind: Kind, adapter: Any) -> None:
    models = await adapter.list_models(timeout=5)

    assert any(model.startswith(kind.model) for model in models)  # the alias, or its dated snapshot
