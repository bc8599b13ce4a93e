"""AsyncLLMClient and LLMClient: complete, stream, list models, check health, select a model, metrics and
quotas — A2A context in metadata, deadlines, TLS (and mTLS) and bearer tokens, and gRPC's own retries of
UNAVAILABLE for unary calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from llm_grpc_client.agents import ToolChoiceSpec, tool_choice
from llm_grpc_client.errors import from_rpc_error

Messages = str | Sequence[llm_pb2.Message]


def _messages(prompt: Messages, system: str | None) -> list[llm_pb2.Message]:
    messages = [llm_pb2.Message(role=llm_pb2.ROLE_SYSTEM, content=system)] if system else []
    if isinstance(prompt, str):
        messages.append(llm_pb2.Message(role=llm_pb2.ROLE_USER, content=prompt))
    else:
        messages.extend(prompt)
    return messages


SERVICE = "llm.v1.LLMService"
# gRPC-level retries of UNAVAILABLE (e.g. a replica that is draining) for the unary methods only: a
# stream may already have delivered tokens, so it is never retried behind the caller's back.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": SERVICE, "method": m}
                    for m in (
                        "Complete",
                        "ListModels",
                        "CheckHealth",
                        "SelectModel",
                        "GetMetrics",
                        "GetQuota",
                    )
                ],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]


def _credentials(
    tls: bool,
    root_certificates: bytes | None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials when any TLS option is given (a client certificate and key for mTLS), else None."""
    if not (tls or root_certificates or private_key or certificate_chain):
        return None
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("mTLS needs both private_key and certificate_chain")
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def enum_value(enum: Any, prefix: str, value: str | int | None) -> int:
    """An enum value from its number, its full name (`TIER_FAST`) or its short name (`fast`); 0 for
    None or ""; ValueError naming the accepted names otherwise."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    name = value.upper()
    name = name if name.startswith(prefix) else prefix + name
    try:
        number: int = enum.Value(name)
    except ValueError:
        names = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.DESCRIPTOR.values if v.number)
        raise ValueError(f"unknown {prefix.rstrip('_').lower()} {value!r}; expected one of {names}") from None
    return number


def _request_fields(prompt: Messages, options: dict[str, Any]) -> dict[str, Any]:
    """The fields shared by CompleteRequest and StreamRequest."""
    choice = options.get("tool_choice")
    return {
        "model": options.get("model") or "",
        "messages": _messages(prompt, options.get("system")),
        "temperature": options.get("temperature"),
        "max_tokens": options.get("max_tokens"),
        "top_p": options.get("top_p"),
        "stop": list(options.get("stop") or ()),
        "tools": list(options.get("tools") or ()),
        "tool_choice": tool_choice(choice) if choice is not None else None,
        "parallel_tool_calls": options.get("parallel_tool_calls"),
        "response_format": options.get("response_format"),
        "reasoning": options.get("reasoning"),
        "seed": options.get("seed"),
        "user": options.get("user") or "",
        "tier": enum_value(llm_pb2.Tier, "TIER_", options.get("tier")),
        "complexity": enum_value(llm_pb2.Complexity, "COMPLEXITY_", options.get("complexity")),
    }


class _Context:
    """What both clients put into every call's metadata."""

    def __init__(self, source_agent: str, session_id: str, token: str | None) -> None:
        self._static = [("a2a-source-agent", source_agent)] if source_agent else []
        if session_id:
            self._static.append(("a2a-session-id", session_id))
        if token:
            self._static.append(("authorization", f"Bearer {token}"))

    def metadata(self, trace_id: str | None) -> tuple[tuple[str, str | bytes], ...]:
        return tuple(([("a2a-trace-id", trace_id)] if trace_id else []) + self._static)


class TokenStream:
    """Async iterator of text deltas; once exhausted, `done` holds usage, finish reason, latency and the
    assembled tool calls and reasoning, and `text` the whole streamed text. `events()` iterates every
    event instead (text, tool-call fragments, reasoning text, then `done`)."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[llm_pb2.StreamRequest, llm_pb2.StreamResponse]) -> None:
        self._call = call
        self.done: llm_pb2.StreamDone | None = None
        self._text: list[str] = []

    @property
    def text(self) -> str:
        """The text delivered so far."""
        return "".join(self._text)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        async for event in self.events():
            if event.WhichOneof("event") == "delta":
                yield event.delta

    async def events(self) -> AsyncIterator[llm_pb2.StreamResponse]:
        try:
            async for event in self._call:
                kind = event.WhichOneof("event")
                if kind == "done":
                    self.done = event.done
                elif kind == "delta":
                    self._text.append(event.delta)
                yield event
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    async def trace_id(self) -> str:
        """The trace id the gateway echoed in the initial metadata."""
        for key, value in await self._call.initial_metadata() or ():
            if key == "a2a-trace-id":
                return str(value)
        return ""

    def cancel(self) -> None:
        self._call.cancel()


class AsyncLLMClient:
    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        source_agent: str = "",
        session_id: str = "",
        timeout: float | None = 120.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        channel: grpc.aio.Channel | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        """`tls`/`root_certificates` for a TLS server (`private_key` and `certificate_chain`, PEM, for
        mTLS); `token` is sent as `authorization: Bearer`."""
        if channel is None:
            credentials = _credentials(tls, root_certificates, private_key, certificate_chain)
            channel = (
                grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
                if credentials is not None
                else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            )
        self._channel = channel
        self._stub = llm_pb2_grpc.LLMServiceStub(self._channel)
        self._context = _Context(source_agent, session_id, token)
        self._timeout = timeout

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    def _metadata(self, trace_id: str | None) -> tuple[tuple[str, str | bytes], ...]:
        return self._context.metadata(trace_id)

    async def complete(
        self,
        prompt: Messages,
        *,
        model: str = "",
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        tools: Sequence[llm_pb2.Tool] = (),
        tool_choice: ToolChoiceSpec | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: llm_pb2.ResponseFormat | None = None,
        reasoning: llm_pb2.Reasoning | None = None,
        seed: int | None = None,
        user: str = "",
        tier: str | int | None = None,
        complexity: str | int | None = None,
        trace_id: str | None = None,
        timeout: float | None = None,
    ) -> llm_pb2.CompleteResponse:
        """One completion. `tools`, `tool_choice` (`"auto"`, `"none"`, `"required"` or a tool's name),
        `response_format` and `reasoning` take what llm_grpc_client.agents builds. `tier` (`fast`,
        `balanced`, `premium`) or `complexity` (`simple`, `moderate`, `complex`) let the gateway pick the
        cheapest allowed model when `model` is empty."""
        request = llm_pb2.CompleteRequest(
            **_request_fields(
                prompt,
                {
                    "model": model,
                    "system": system,
                    "temperature": temperature,
                    "max_tokens": max_tokens,
                    "top_p": top_p,
                    "stop": stop,
                    "tools": tools,
                    "tool_choice": tool_choice,
                    "parallel_tool_calls": parallel_tool_calls,
                    "response_format": response_format,
                    "reasoning": reasoning,
                    "seed": seed,
                    "user": user,
                    "tier": tier,
                    "complexity": complexity,
                },
            )
        )
        try:
            response: llm_pb2.CompleteResponse = await self._stub.Complete(
                request, metadata=self._metadata(trace_id), timeout=timeout or self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response

    def stream(
        self,
        prompt: Messages,
        *,
        model: str = "",
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        tools: Sequence[llm_pb2.Tool] = (),
        tool_choice: ToolChoiceSpec | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: llm_pb2.ResponseFormat | None = None,
        reasoning: llm_pb2.Reasoning | None = None,
        seed: int | None = None,
        user: str = "",
        tier: str | int | None = None,
        complexity: str | int | None = None,
        trace_id: str | None = None,
        timeout: float | None = None,
    ) -> TokenStream:
        """A streamed completion; options as `complete`."""
        request = llm_pb2.StreamRequest(
            **_request_fields(
                prompt,
                {
                    "model": model,
                    "system": system,
                    "temperature": temperature,
                    "max_tokens": max_tokens,
                    "top_p": top_p,
                    "stop": stop,
                    "tools": tools,
                    "tool_choice": tool_choice,
                    "parallel_tool_calls": parallel_tool_calls,
                    "response_format": response_format,
                    "reasoning": reasoning,
                    "seed": seed,
                    "user": user,
                    "tier": tier,
                    "complexity": complexity,
                },
            )
        )
        call = self._stub.Stream(request, metadata=self._metadata(trace_id), timeout=timeout or self._timeout)
        return TokenStream(call)

    async def list_models(self) -> llm_pb2.ListModelsResponse:
        try:
            response: llm_pb2.ListModelsResponse = await self._stub.ListModels(
                llm_pb2.ListModelsRequest(), metadata=self._metadata(None), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response

    async def check_health(self) -> llm_pb2.CheckHealthResponse:
        try:
            response: llm_pb2.CheckHealthResponse = await self._stub.CheckHealth(
                llm_pb2.CheckHealthRequest(), metadata=self._metadata(None), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response

    async def get_quota(self, model: str = "") -> llm_pb2.GetQuotaResponse:
        """This caller's rate limits and budgets: limit, used, remaining, reset time (for `model`, or all)."""
        try:
            response: llm_pb2.GetQuotaResponse = await self._stub.GetQuota(
                llm_pb2.GetQuotaRequest(model=model), metadata=self._metadata(None), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response

    async def select_model(
        self, tier: str | int | None = None, complexity: str | int | None = None
    ) -> llm_pb2.SelectModelResponse:
        """The cheapest allowed model of a tier (`fast`, `balanced`, `premium`) or for a task
        complexity (`simple`, `moderate`, `complex`); the tier wins when both are given."""
        try:
            response: llm_pb2.SelectModelResponse = await self._stub.SelectModel(
                _select_request(tier, complexity), metadata=self._metadata(None), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response

    async def get_metrics(self) -> llm_pb2.GetMetricsResponse:
        """The gateway's totals since start: calls, tokens, cost, errors, per provider and model."""
        try:
            response: llm_pb2.GetMetricsResponse = await self._stub.GetMetrics(
                llm_pb2.GetMetricsRequest(), metadata=self._metadata(None), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response


def _select_request(tier: str | int | None, complexity: str | int | None) -> llm_pb2.SelectModelRequest:
    return llm_pb2.SelectModelRequest(
        tier=llm_pb2.Tier.ValueType(enum_value(llm_pb2.Tier, "TIER_", tier)),
        complexity=llm_pb2.Complexity.ValueType(enum_value(llm_pb2.Complexity, "COMPLEXITY_", complexity)),
    )


class LLMClient:
    """The blocking twin of AsyncLLMClient, for scripts and threads without an event loop."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        source_agent: str = "",
        session_id: str = "",
        timeout: float | None = 120.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        credentials = _credentials(tls, root_certificates, private_key, certificate_chain)
        self._channel = (
            grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = llm_pb2_grpc.LLMServiceStub(self._channel)
        self._context = _Context(source_agent, session_id, token)
        self._timeout = timeout
        self.last_done: llm_pb2.StreamDone | None = None
        """The `done` event of the last stream that ran to its end."""

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def complete(
        self, prompt: Messages, *, trace_id: str | None = None, timeout: float | None = None, **options: Any
    ) -> llm_pb2.CompleteResponse:
        """Options as AsyncLLMClient.complete: model, system, temperature, max_tokens, top_p, stop, tools,
        tool_choice, parallel_tool_calls, response_format, reasoning, seed, user."""
        try:
            response: llm_pb2.CompleteResponse = self._stub.Complete(
                llm_pb2.CompleteRequest(**_request_fields(prompt, options)),
                metadata=self._context.metadata(trace_id),
                timeout=timeout or self._timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response

    def stream(
        self, prompt: Messages, *, trace_id: str | None = None, timeout: float | None = None, **options: Any
    ) -> Iterator[str]:
        """Text deltas as they arrive; afterwards `last_done` holds usage, finish reason, tool calls."""
        self.last_done = None
        call = self._stub.Stream(
            llm_pb2.StreamRequest(**_request_fields(prompt, options)),
            metadata=self._context.metadata(trace_id),
            timeout=timeout or self._timeout,
        )
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "done":
                    self.last_done = event.done
                elif kind == "delta":
                    yield event.delta
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def list_models(self) -> llm_pb2.ListModelsResponse:
        try:
            response: llm_pb2.ListModelsResponse = self._stub.ListModels(
                llm_pb2.ListModelsRequest(), metadata=self._context.metadata(None), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response

    def check_health(self) -> llm_pb2.CheckHealthResponse:
        try:
            response: llm_pb2.CheckHealthResponse = self._stub.CheckHealth(
                llm_pb2.CheckHealthRequest(), metadata=self._context.metadata(None), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response

    def get_quota(self, model: str = "") -> llm_pb2.GetQuotaResponse:
        """This caller's rate limits and budgets: limit, used, remaining, reset time (for `model`, or all)."""
        try:
            response: llm_pb2.GetQuotaResponse = self._stub.GetQuota(
                llm_pb2.GetQuotaRequest(model=model),
                metadata=self._context.metadata(None),
                timeout=self._timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response

    def select_model(
        self, tier: str | int | None = None, complexity: str | int | None = None
    ) -> llm_pb2.SelectModelResponse:
        """As AsyncLLMClient.select_model."""
        try:
            response: llm_pb2.SelectModelResponse = self._stub.SelectModel(
                _select_request(tier, complexity),
                metadata=self._context.metadata(None),
                timeout=self._timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response

    def get_metrics(self) -> llm_pb2.GetMetricsResponse:
        """As AsyncLLMClient.get_metrics."""
        try:
            response: llm_pb2.GetMetricsResponse = self._stub.GetMetrics(
                llm_pb2.GetMetricsRequest(), metadata=self._context.metadata(None), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response
