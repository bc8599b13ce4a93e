"""The one call pipeline: what every LLMService RPC needs, done once, refused calls included.

For each call, in order: a fresh log context; the drain's count of calls in flight (refused while the
server shuts down, server/api/draining.py); the A2A context from metadata (read once, bound to every log
line through structlog's context variables, handed to the servicer); authentication and authorisation
of the method; the trace id echoed in the metadata (a stream's initial metadata, which its caller reads
before the first event; a unary call's trailing metadata, which grpc sends with the response and the
status in one batch: an initial-metadata batch of its own cost a unary call about 8 % of its CPU and an
event-loop hop, docs/benchmarks.md); the request parsed from its bytes inside the
gateway's own error mapping (grpc's deserializer would answer a malformed message, or invalid UTF-8 in a
string, with UNKNOWN); the servicer method; and at the end one `RpcRecord` with the final code and
origin, and any exception turned into a gRPC status with rich details. A servicer method only translates
protobuf to core types and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message

from llm_grpc.v1 import llm_pb2
from server.api.context import TRACE_ID_KEY, context_from_metadata
from server.api.draining import Drain
from server.api.status import internal_status, to_status
from server.core.auth import Authenticator
from server.core.errors import GatewayError, MalformedRequest
from server.core.types import RequestContext
from server.observability.calls import RpcRecord
from server.observability.metrics import Metrics
from server.observability.redact import Redactor
from server.observability.tracing import Tracing

log = structlog.get_logger("llm_grpc.api")

ServicerContext = grpc.aio.ServicerContext[Any, Any]
Metadata = Iterable[tuple[str, str | bytes]]
Method = Callable[[Any, RequestContext, ServicerContext], Awaitable[Any]]
"""A servicer method: (request message, the caller's context, the grpc context) → response (or None for
a stream, which writes its responses with `context.write`)."""

SERVICE = llm_pb2.DESCRIPTOR.services_by_name["LLMService"]


class Pipeline:
    def __init__(
        self,
        metrics: Metrics,
        redact: Redactor,
        authenticator: Authenticator | None,
        max_metadata_value_length: int,
        *,
        tracing: Tracing | None,
        drain: Drain,
    ) -> None:
        self._tracing = tracing
        self._drain = drain
        self._metrics = metrics
        self._redact = redact
        self._auth = authenticator
        self._max_metadata = max_metadata_value_length

    def handler(
        self, name: str, method: Method, request_type: type[Message], *, streaming: bool = False
    ) -> Callable[[bytes, ServicerContext], Awaitable[Any]]:
        """The grpc handler of one RPC: raw request bytes in, `method` run inside the pipeline. The
        trace id goes in the initial metadata of a `streaming` RPC, in the trailing metadata otherwise."""

        async def handle(raw: bytes, context: ServicerContext) -> Any:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(method=name)
            trace_id = ""
            metadata = context.invocation_metadata() or ()
            with RpcRecord(self._metrics, name, self._tracing, metadata) as record:
                entered = False
                try:
                    self._drain.enter()
                    entered = True
                    ctx = self._context(metadata)
                    trace_id = record.trace_id = ctx.trace_id
                    ctx = self._authenticate(metadata, ctx, name)
                    if streaming:
                        await context.send_initial_metadata(((TRACE_ID_KEY, trace_id),))
                    result = await method(_parse(raw, request_type), ctx, context)
                except (asyncio.CancelledError, GeneratorExit) as error:
                    record.finish(error)
                    raise
                except Exception as error:  # every error ends as a status; a bug as INTERNAL, logged
                    record.finish(error)
                    status = (
                        to_status(error, self._redact)
                        if isinstance(error, GatewayError)
                        else internal_status(trace_id or "none")
                    )
                else:
                    record.finish(None)
                    if not streaming:
                        context.set_trailing_metadata(((TRACE_ID_KEY, trace_id),))
                    return result
                finally:
                    if entered:
                        self._drain.leave()
            trailing = tuple(status.trailing_metadata)
            if trace_id and not streaming:
                trailing += ((TRACE_ID_KEY, trace_id),)
            await context.abort(status.code, status.details, trailing_metadata=trailing)
            return None  # unreachable: abort raises

        return handle

    def _context(self, metadata: Metadata) -> RequestContext:
        ctx = context_from_metadata(metadata, self._max_metadata)
        structlog.contextvars.bind_contextvars(
            trace_id=ctx.trace_id, source_agent=ctx.source_agent, session_id=ctx.session_id
        )
        return ctx

    def _authenticate(self, metadata: Metadata, ctx: RequestContext, method: str) -> RequestContext:
        """With authentication on, the caller is the token's subject (the source agent in logs, metrics
        and provider headers), with the models its roles allow for `method`."""
        if self._auth is None:
            return ctx
        authorization = next((str(v) for k, v in metadata if k == "authorization"), None)
        principal = self._auth.authenticate(authorization)
        if ctx.source_agent and ctx.source_agent != principal.subject:
            log.warning("source_agent.mismatch", claimed=ctx.source_agent, subject=principal.subject)
        structlog.contextvars.bind_contextvars(source_agent=principal.subject)
        models = self._auth.authorize(principal, method)
        return replace(ctx, source_agent=principal.subject, models=models, roles=principal.roles)


def _parse(raw: bytes, request_type: type[Message]) -> Any:
    try:
        return request_type.FromString(raw)
    except Exception:  # DecodeError, or whatever else the protobuf runtime raises on hostile bytes
        raise MalformedRequest(request_type.DESCRIPTOR.full_name) from None


def add_to_server(servicer: object, pipeline: Pipeline, server: grpc.aio.Server) -> None:
    """Register every LLMService method of `servicer` (one method per RPC, named as in the contract)
    behind the pipeline. Requests arrive as bytes and are parsed inside it."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for rpc in SERVICE.methods:
        request_type: type[Message] = getattr(llm_pb2, rpc.input_type.name)
        serialize = getattr(llm_pb2, rpc.output_type.name).SerializeToString
        handle = pipeline.handler(
            rpc.name, getattr(servicer, rpc.name), request_type, streaming=rpc.server_streaming
        )
        make = (
            grpc.unary_stream_rpc_method_handler
            if rpc.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[rpc.name] = make(handle, response_serializer=serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    # As the generated code does: registered methods skip the generic lookup per call (not in the stubs).
    server.add_registered_method_handlers(SERVICE.full_name, handlers)  # type: ignore[attr-defined]
