"""The load generator: N calls at concurrency C, either straight at the emulator with the official
`openai` SDK or over gRPC (to the gateway or to the floor). Runs inside the harness's event loop.

The SDK side makes the call the gateway's OpenAI adapter makes (the SDK's own `post` with the JSON
body, on its aiohttp transport), so the difference between the sides is the gateway and its gRPC hop,
not a costlier way of using the SDK on one side. Which call that is depends on the wire API of the
model asked for: `WireApi` says, per API, the path, the body and how a streamed event shows the first
token (`APIS`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx2
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc

MODEL = "gpt-4.1-mini"
"""The Chat Completions model every scenario calls unless it names another API (OpenAI's GPT-5.x are on
the Responses API in the gateway: run.py APIS measures that path through its own model)."""
CHANNELS = 4
"""gRPC connections per target, calls spread round-robin: with `--workers N` the kernel spreads
connections, not calls, over the workers."""


TOOL = llm_pb2.Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)
"""The tool a `tools` scenario declares (the emulator answers with text: the model is not made to call it)."""


def prompt(tokens: int, token_delay_ms: float = 0.0) -> str:
    """A prompt whose emulator reply ("emulator reply: " + the prompt) is `tokens` tokens long."""
    words = " ".join(f"w{i}" for i in range(max(0, tokens - 2)))
    return f"[[emulate: token_delay_ms={token_delay_ms:g}]] {words}" if token_delay_ms else words


def _chat_body(model: str, text: str, stream: bool) -> dict[str, Any]:
    """What the OpenAI adapter sends for a one-message request (server/providers/openai.py)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _chat_first_token(chunk: object) -> bool:
    if not isinstance(chunk, dict):
        return False
    choices = chunk.get("choices") or ()
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _responses_body(model: str, text: str, stream: bool) -> dict[str, Any]:
    """A one-message Responses API request (openai SDK: types/responses/response_create_params.py;
    `input` as a list of messages). Match it to what the Responses adapter sends when it lands."""
    body: dict[str, Any] = {"model": model, "input": [{"role": "user", "content": text}]}
    return body | {"stream": True} if stream else body


def _responses_first_token(event: object) -> bool:
    """The first `response.output_text.delta` event with text (openai SDK:
    types/responses/response_text_delta_event.py)."""
    return (
        isinstance(event, dict)
        and event.get("type") == "response.output_text.delta"
        and bool(event.get("delta"))
    )


@dataclass(frozen=True)
class WireApi:
    """One of the provider APIs the gateway speaks, as the SDK side calls it directly."""

    name: str
    path: str
    body: Callable[[str, str, bool], dict[str, Any]]
    """(model, prompt, stream) → the JSON body the gateway's adapter sends."""
    first_token: Callable[[object], bool]
    """Whether a decoded stream event carries the first generated text."""


APIS = {
    "chat_completions": WireApi("chat_completions", "/chat/completions", _chat_body, _chat_first_token),
    "responses": WireApi("responses", "/responses", _responses_body, _responses_first_token),
}


@dataclass
class Sample:
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def calls(self) -> int:
        return len(self.latency)

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        kind = error.code().name if isinstance(error, grpc.aio.AioRpcError) else type(error).__name__
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


Call = Callable[[Sample], Awaitable[None]]


class Target:
    """Something to send calls to: `unary(text)` and `stream(text)` give one call each."""

    async def aclose(self) -> None:
        raise NotImplementedError

    def unary(self, text: str) -> Call:
        raise NotImplementedError

    def stream(self, text: str) -> Call:
        raise NotImplementedError


class SdkTarget(Target):
    def __init__(
        self,
        base_url: str,
        key: str,
        max_connections: int = 512,
        *,
        model: str = MODEL,
        api: str = "chat_completions",
    ) -> None:
        http = DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        )
        self._client = AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, http_client=http)
        self._model = model
        self._api = APIS[api]

    async def aclose(self) -> None:
        await self._client.close()

    def unary(self, text: str) -> Call:
        body, path = self._api.body(self._model, text, False), self._api.path

        async def call(sample: Sample) -> None:
            started = time.perf_counter()
            await self._client.post(path, cast_to=object, body=body, options={"timeout": 120})
            sample.latency.append(time.perf_counter() - started)

        return call

    def stream(self, text: str) -> Call:
        body, path, first_token = (
            self._api.body(self._model, text, True),
            self._api.path,
            self._api.first_token,
        )

        async def call(sample: Sample) -> None:
            started = time.perf_counter()
            first = True
            chunks = await self._client.post(
                path,
                cast_to=object,
                body=body,
                options={"timeout": 120},
                stream=True,
                stream_cls=AsyncStream[object],
            )
            async for chunk in chunks:
                if first and first_token(chunk):
                    sample.ttft.append(time.perf_counter() - started)
                    first = False
            sample.latency.append(time.perf_counter() - started)

        return call


class GrpcTarget(Target):
    def __init__(
        self, address: str, channels: int = CHANNELS, *, model: str = MODEL, tools: bool = False
    ) -> None:
        """Calls to `model` (its catalogue entry says which wire API the gateway uses); with `tools`, each
        request declares one function tool (the agents' contract's validation and translation priced)."""
        self._model = model
        self._tools = [TOOL] if tools else []
        # A local subchannel pool per channel: otherwise channels with equal arguments share one connection.
        self._channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)
        ]
        self._stubs = [llm_pb2_grpc.LLMServiceStub(channel) for channel in self._channels]
        self._next = 0

    async def aclose(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    def _stub(self) -> llm_pb2_grpc.LLMServiceAsyncStub:
        self._next = (self._next + 1) % len(self._stubs)
        return self._stubs[self._next]

    def unary(self, text: str) -> Call:
        request = llm_pb2.CompleteRequest(
            model=self._model,
            messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text)],
            tools=self._tools,
        )

        async def call(sample: Sample) -> None:
            stub = self._stub()
            started = time.perf_counter()
            await stub.Complete(request, timeout=120)
            sample.latency.append(time.perf_counter() - started)

        return call

    def stream(self, text: str) -> Call:
        request = llm_pb2.StreamRequest(
            model=self._model,
            messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text)],
            tools=self._tools,
        )

        async def call(sample: Sample) -> None:
            stub = self._stub()
            started = time.perf_counter()
            first = True
            async for event in stub.Stream(request, timeout=120):
                if first and event.WhichOneof("event") == "delta":
                    sample.ttft.append(time.perf_counter() - started)
                    first = False
            sample.latency.append(time.perf_counter() - started)

        return call


async def run(call: Call, *, concurrency: int, calls: int, warmup: int = 0) -> Sample:
    """`calls` calls, `concurrency` at a time (after `warmup` calls not counted)."""
    scratch = Sample()
    for _ in range(warmup):
        await call(scratch)
    sample = Sample()
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await call(sample)
            except Exception as error:
                sample.failed(error)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, calls))))
    sample.elapsed = time.perf_counter() - started
    return sample
