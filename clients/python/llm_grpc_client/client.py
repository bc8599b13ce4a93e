"""AsyncLLMClient: complete, stream, list models, check health — A2A context put into metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from llm_grpc_client.errors import from_rpc_error

Messages = str | Sequence[llm_pb2.Message]


def _messages(prompt: Messages, system: str | None) -> list[llm_pb2.Message]:
    messages = [llm_pb2.Message(role=llm_pb2.ROLE_SYSTEM, content=system)] if system else []
    if isinstance(prompt, str):
        messages.append(llm_pb2.Message(role=llm_pb2.ROLE_USER, content=prompt))
    else:
        messages.extend(prompt)
    return messages


class TokenStream:
    """Async iterator of text deltas; once exhausted, `done` holds usage, finish reason and latency."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[llm_pb2.StreamRequest, llm_pb2.StreamResponse]) -> None:
        self._call = call
        self.done: llm_pb2.StreamDone | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        try:
            async for event in self._call:
                if event.HasField("done"):
                    self.done = event.done
                else:
                    yield event.delta
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
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._channel = channel if channel is not None else grpc.aio.insecure_channel(target)
        self._stub = llm_pb2_grpc.LLMServiceStub(self._channel)
        self._source_agent = source_agent
        self._session_id = session_id
        self._timeout = timeout

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    def _metadata(self, trace_id: str | None) -> list[tuple[str, str]]:
        metadata = [("a2a-trace-id", trace_id)] if trace_id else []
        if self._source_agent:
            metadata.append(("a2a-source-agent", self._source_agent))
        if self._session_id:
            metadata.append(("a2a-session-id", self._session_id))
        return metadata

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
        trace_id: str | None = None,
        timeout: float | None = None,
    ) -> llm_pb2.CompleteResponse:
        request = llm_pb2.CompleteRequest(
            model=model,
            messages=_messages(prompt, system),
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=list(stop),
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
        trace_id: str | None = None,
        timeout: float | None = None,
    ) -> TokenStream:
        request = llm_pb2.StreamRequest(
            model=model,
            messages=_messages(prompt, system),
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=list(stop),
        )
        call = self._stub.Stream(request, metadata=self._metadata(trace_id), timeout=timeout or self._timeout)
        return TokenStream(call)

    async def list_models(self) -> llm_pb2.ListModelsResponse:
        try:
            response: llm_pb2.ListModelsResponse = await self._stub.ListModels(
                llm_pb2.ListModelsRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response

    async def check_health(self) -> llm_pb2.CheckHealthResponse:
        try:
            response: llm_pb2.CheckHealthResponse = await self._stub.CheckHealth(
                llm_pb2.CheckHealthRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return response
