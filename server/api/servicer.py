"""The llm.v1.LLMService servicer: thin. It turns protobuf into core drafts, metadata into a
RequestContext, core results into protobuf, and every error into a gRPC status with rich details."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any, NoReturn

import grpc
import structlog
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.api import convert
from server.api.context import TRACE_ID_KEY, context_from_metadata
from server.api.status import internal_status, to_status
from server.core.auth import Authenticator
from server.core.catalogue import TIER_FOR_COMPLEXITY, ModelInfo, Tier
from server.core.errors import FieldViolation, GatewayError, InvalidRequest, MalformedRequest
from server.core.gateway import Gateway
from server.core.health import Health, HealthMonitor
from server.core.limits import BUDGETS, MICRO, LimitKind, Standing
from server.core.types import Delta, RequestContext, StreamSummary
from server.observability.metrics import Metrics, snapshot
from server.observability.redact import Redactor

log = structlog.get_logger("llm_grpc.api")

ServicerContext = grpc.aio.ServicerContext[Any, Any]

_TIERS = convert.TIERS
_TIERS_OUT = {tier: llm_pb2.Tier.ValueType(number) for number, tier in _TIERS.items()}
_COMPLEXITIES = convert.COMPLEXITIES
_QUOTA_KINDS = {
    LimitKind.REQUESTS_PER_MINUTE: llm_pb2.QUOTA_KIND_REQUESTS_PER_MINUTE,
    LimitKind.TOKENS_PER_MINUTE: llm_pb2.QUOTA_KIND_TOKENS_PER_MINUTE,
    LimitKind.CONCURRENT: llm_pb2.QUOTA_KIND_CONCURRENT_CALLS,
    LimitKind.USD_PER_DAY: llm_pb2.QUOTA_KIND_USD_PER_DAY,
    LimitKind.USD_PER_MONTH: llm_pb2.QUOTA_KIND_USD_PER_MONTH,
}
_HEALTH = {
    Health.UNKNOWN: llm_pb2.HEALTH_STATUS_UNKNOWN,
    Health.SERVING: llm_pb2.HEALTH_STATUS_SERVING,
    Health.NOT_SERVING: llm_pb2.HEALTH_STATUS_NOT_SERVING,
}


def _model(info: ModelInfo) -> llm_pb2.Model:
    return llm_pb2.Model(
        id=info.id,
        provider=info.provider.value,
        tier=_TIERS_OUT[info.tier],
        context_window=info.context_window,
        max_output_tokens=info.max_output_tokens,
        input_usd_per_million=info.input_per_mtok,
        output_usd_per_million=info.output_per_mtok,
        cached_input_usd_per_million=info.cached_input_per_mtok,
        cache_write_usd_per_million=info.cache_write_per_mtok,
        deprecated=info.deprecated,
        retirement_date=info.retires.isoformat() if info.retires is not None else "",
        capabilities=llm_pb2.ModelCapabilities(**asdict(info.capabilities)),
    )


class LLMServicer(llm_pb2_grpc.LLMServiceServicer):
    def __init__(
        self,
        gateway: Gateway,
        health: HealthMonitor,
        metrics: Metrics,
        redactor: Redactor,
        authenticator: Authenticator | None = None,
    ) -> None:
        self._auth = authenticator
        self._gateway = gateway
        self._metrics = metrics
        self._health = health
        self._redact = redactor

    async def _begin(self, context: ServicerContext, call: _Call, method: str) -> RequestContext:
        """Read the A2A context, authenticate and authorise the caller, bind the context to every log
        line of the call, and echo the trace id. With a token, the source agent is its subject."""
        structlog.contextvars.clear_contextvars()
        metadata = context.invocation_metadata() or ()
        ctx = context_from_metadata(metadata, self._gateway.limits.max_metadata_value_length)
        call.trace_id = ctx.trace_id
        structlog.contextvars.bind_contextvars(
            trace_id=ctx.trace_id, source_agent=ctx.source_agent, session_id=ctx.session_id, method=method
        )
        if self._auth is not None:
            authorization = next((str(v) for k, v in metadata if k == "authorization"), None)
            principal = self._auth.authenticate(authorization)
            if ctx.source_agent and ctx.source_agent != principal.subject:
                log.warning("source_agent.mismatch", claimed=ctx.source_agent, subject=principal.subject)
            structlog.contextvars.bind_contextvars(source_agent=principal.subject)
            models = self._auth.authorize(principal, method)
            ctx = replace(ctx, source_agent=principal.subject, models=models, roles=principal.roles)
        await context.send_initial_metadata(((TRACE_ID_KEY, ctx.trace_id),))
        return ctx

    async def Complete(
        self, request: llm_pb2.CompleteRequest, context: ServicerContext
    ) -> llm_pb2.CompleteResponse:
        with _call_errors(self._redact) as call:
            ctx = await self._begin(context, call, "Complete")
            result = await self._gateway.complete(convert.draft(request), ctx, context.time_remaining())
            return convert.complete_response(result, ctx)
        return await _abort(context, call)

    # grpc.aio's writer API rather than an async generator: the gateway awaits each write under the
    # call's deadline, so a caller that stops reading cannot hold a slot past it (a generator is
    # suspended at `yield` while grpc writes, out of the gateway's reach). The generated stub knows
    # only the generator form, hence the override ignore.
    async def Stream(  # type: ignore[override]
        self, request: llm_pb2.StreamRequest, context: ServicerContext
    ) -> None:
        async def send(event: Delta | StreamSummary) -> None:
            try:
                await context.write(convert.stream_response(event, ctx))
            except grpc.aio.InternalError as error:
                # grpc fails a write to a call whose caller cancelled or left (its ExecuteBatchError, which
                # it ignores for generator handlers): to the gateway that is the caller going away.
                raise asyncio.CancelledError from error

        with _call_errors(self._redact) as call:
            ctx = await self._begin(context, call, "Stream")
            await self._gateway.stream(convert.draft(request), ctx, context.time_remaining(), send)
            return
        await _abort(context, call)

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: ServicerContext
    ) -> llm_pb2.ListModelsResponse:
        with _call_errors(self._redact) as call:
            ctx = await self._begin(context, call, "ListModels")
            return llm_pb2.ListModelsResponse(
                models=[_model(info) for info in self._gateway.models(ctx)],
                default_model=self._gateway.allowlist.default_model,
            )
        return await _abort(context, call)

    async def SelectModel(
        self, request: llm_pb2.SelectModelRequest, context: ServicerContext
    ) -> llm_pb2.SelectModelResponse:
        with _call_errors(self._redact) as call:
            ctx = await self._begin(context, call, "SelectModel")
            selection = self._gateway.select(_requested_tier(request), ctx)
            return llm_pb2.SelectModelResponse(
                model=selection.model.id,
                provider=selection.model.provider.value,
                tier=_TIERS_OUT[selection.model.tier],
                reason=selection.reason,
            )
        return await _abort(context, call)

    async def CheckHealth(
        self, request: llm_pb2.CheckHealthRequest, context: ServicerContext
    ) -> llm_pb2.CheckHealthResponse:
        with _call_errors(self._redact) as call:
            await self._begin(context, call, "CheckHealth")
            return self._health_response()
        return await _abort(context, call)

    def _health_response(self) -> llm_pb2.CheckHealthResponse:
        providers = []
        for name, state in self._health.snapshot().items():
            entry = llm_pb2.ProviderHealth(
                provider=name.value,
                status=_HEALTH[state.status],
                latency_ms=state.latency_ms,
                error=self._redact(state.error),
            )
            if state.checked_at is not None:
                entry.check_time.CopyFrom(_timestamp(state.checked_at))
            providers.append(entry)
        return llm_pb2.CheckHealthResponse(status=_HEALTH[self._health.overall()], providers=providers)

    async def GetMetrics(
        self, request: llm_pb2.GetMetricsRequest, context: ServicerContext
    ) -> llm_pb2.GetMetricsResponse:
        with _call_errors(self._redact) as call:
            await self._begin(context, call, "GetMetrics")
            return self._metrics_response()
        return await _abort(context, call)

    async def GetQuota(
        self, request: llm_pb2.GetQuotaRequest, context: ServicerContext
    ) -> llm_pb2.GetQuotaResponse:
        with _call_errors(self._redact) as call:
            ctx = await self._begin(context, call, "GetQuota")
            identity, standings = await self._gateway.quotas(ctx, request.model)
            return llm_pb2.GetQuotaResponse(identity=identity, quotas=[_quota(s) for s in standings])
        return await _abort(context, call)

    def _metrics_response(self) -> llm_pb2.GetMetricsResponse:
        totals = snapshot(self._metrics)
        return llm_pb2.GetMetricsResponse(
            total_requests=totals.total_requests,
            total_tokens=totals.total_tokens,
            mean_latency_ms=totals.mean_latency_ms,
            providers=[
                llm_pb2.ProviderMetrics(
                    provider=name, requests=p.requests, tokens=p.tokens, errors=p.errors, cost_usd=p.cost_usd
                )
                for name, p in sorted(totals.providers.items())
            ],
            governance_violations=totals.governance_violations,
            total_cost_usd=totals.total_cost_usd,
            models=[
                llm_pb2.ModelMetrics(
                    model=model, provider=provider, requests=t.requests, tokens=t.tokens, cost_usd=t.cost_usd
                )
                for (provider, model), t in sorted(totals.models.items())
            ],
        )


def _quota(standing: Standing) -> llm_pb2.Quota:
    check = standing.check
    scale = MICRO if check.kind in BUDGETS else 1
    quota = llm_pb2.Quota(
        kind=_QUOTA_KINDS[check.kind],
        scope=check.scope,
        limit=check.limit / scale,
        used=standing.used / scale,
        remaining=max(0, check.limit - standing.used) / scale,
    )
    if standing.reset_at is not None:
        quota.reset_time.CopyFrom(_timestamp(standing.reset_at))
    return quota


def _requested_tier(request: llm_pb2.SelectModelRequest) -> Tier:
    """The tier asked for: `tier` wins, else the complexity's tier; neither known is refused."""
    tier = _TIERS.get(request.tier)
    if tier is not None:
        return tier
    complexity = _COMPLEXITIES.get(request.complexity)
    if complexity is not None:
        return TIER_FOR_COMPLEXITY[complexity]
    raise InvalidRequest([FieldViolation("tier", "set a known tier or complexity")])


def _timestamp(unix_seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(unix_seconds * 1e9))
    return stamp


class _Call:
    """What one call's error handling needs: its trace id (once known) and the status to abort with."""

    __slots__ = ("status", "trace_id")

    def __init__(self) -> None:
        self.trace_id = ""
        self.status: grpc.Status | None = None


@contextmanager
def _call_errors(redact: Redactor) -> Iterator[_Call]:
    """Turn whatever the call raised into the status to abort with; cancellation passes through."""
    call = _Call()
    try:
        yield call
    except GatewayError as error:
        log.info("call.refused", code=error.code.name, reason=error.reason, error=error.message)
        call.status = to_status(error, redact)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception:
        log.exception("internal.error")
        call.status = internal_status(call.trace_id or "none")


async def _abort(context: ServicerContext, call: _Call) -> NoReturn:
    status = call.status if call.status is not None else internal_status(call.trace_id or "none")
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def add_to_server(servicer: LLMServicer, server: grpc.aio.Server, redact: Redactor) -> None:
    """Register LLMService, parsing each request inside the gateway's own error mapping: grpc's own
    deserializer would answer a malformed message (or invalid UTF-8 in a string) with UNKNOWN."""
    service = llm_pb2.DESCRIPTOR.services_by_name["LLMService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type: type[Message] = getattr(llm_pb2, method.input_type.name)
        serialize = getattr(llm_pb2, method.output_type.name).SerializeToString
        implementation = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(implementation, request_type, redact), response_serializer=serialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(implementation, request_type, redact), response_serializer=serialize
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # As the generated code does: registered methods skip the generic lookup per call (not in the stubs).
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


def _unary(
    implementation: Callable[[Any, ServicerContext], Awaitable[Message]],
    request_type: type[Message],
    redact: Redactor,
) -> Callable[[bytes, ServicerContext], Awaitable[Message]]:
    async def handle(raw: bytes, context: ServicerContext) -> Message:
        return await implementation(await _parse(raw, request_type, context, redact), context)

    return handle


def _streaming(
    implementation: Callable[[Any, ServicerContext], Awaitable[None]],
    request_type: type[Message],
    redact: Redactor,
) -> Callable[[bytes, ServicerContext], Awaitable[None]]:
    """A server-streaming handler that writes its responses with `context.write` (see Stream)."""

    async def handle(raw: bytes, context: ServicerContext) -> None:
        await implementation(await _parse(raw, request_type, context, redact), context)

    return handle


async def _parse(raw: bytes, request_type: type[Message], context: ServicerContext, redact: Redactor) -> Any:
    try:
        return request_type.FromString(raw)
    except Exception:  # DecodeError, or whatever else the protobuf runtime raises on hostile bytes
        error = MalformedRequest(request_type.DESCRIPTOR.full_name)
        log.info("call.refused", code=error.code.name, reason=error.reason, size=len(raw))
        status = to_status(error, redact)
        await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
        raise AssertionError("unreachable: abort raises") from None  # pragma: no cover
