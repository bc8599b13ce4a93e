"""The drain notice: between SIGTERM and the listener closing, the server keeps answering so that health
probes and gRPC clients that watch `grpc.health.v1` see NOT_SERVING instead of a refused connection.

grpc's own `server.stop(grace)` closes the listener and sends GOAWAY at once: from then on a health
probe, even over a connection that is already open, fails to connect. So `App.stop` first turns the
health service NOT_SERVING and starts this drain; during it every call but the health service's is
refused with UNAVAILABLE (`SERVER_DRAINING`, retryable elsewhere) and the calls already in flight run
on. The notice ends when they have all finished, or after at most a few seconds (a client pinned to this
connection needs GOAWAY to move to another replica, and only closing the listener sends it); then the
grpc server stops with what is left of the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.status import ERROR_DOMAIN

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
"""Answered during the drain: its NOT_SERVING is the point of the notice."""

DRAINING_REASON = "SERVER_DRAINING"


def _draining_status() -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=DRAINING_REASON, domain=ERROR_DOMAIN))
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message="the server is shutting down; retry on another replica",
            details=[info],
        )
    )
    return status


if TYPE_CHECKING:  # grpc-stubs makes the interceptor generic; the runtime class is not subscriptable
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class Drain(_Interceptor):
    """Counts the calls in flight; once `start`ed, refuses new ones (the health service excepted)."""

    def __init__(self) -> None:
        self._draining = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Calls in flight (health checks not counted)."""
        return self._active

    async def notice(self, timeout: float) -> float:
        """Refuse new calls from now on and wait until no call is in flight, for at most `timeout`
        seconds; the seconds waited."""
        self._draining = True
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
        return time.monotonic() - started

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        return _wrapped(handler, self._refuse if self._draining else self._count)

    def _enter(self) -> None:
        self._active += 1
        self._idle.clear()

    def _exit(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def _count(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behaviour):

            async def counted_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                self._enter()
                try:
                    async for response in behaviour(request, context):
                        yield response
                finally:
                    self._exit()

            return counted_stream

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self._enter()
            try:
                return await behaviour(request, context)
            finally:
                self._exit()

        return counted

    def _refuse(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        status = _draining_status()

        async def refused(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)

        if inspect.isasyncgenfunction(behaviour):

            async def refused_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                await refused(request, context)
                yield  # pragma: no cover  (abort raises; this makes the function an async generator)

            return refused_stream
        return refused


_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _wrapped(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behaviour wrapped (whichever of the four kinds it is)."""
    for kind, factory in _FACTORIES.items():
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return factory(
                wrap(behaviour),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
