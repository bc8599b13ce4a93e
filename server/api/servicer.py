"""The llm.v1.LLMService servicer: thin. It turns protobuf into core drafts and core results into
protobuf; context, authentication, accounting and errors are the call pipeline's (pipeline.py)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import grpc
import structlog
from google.protobuf import timestamp_pb2

from llm_grpc.v1 import llm_pb2
from server.api import convert
from server.core.capacity import Dim
from server.core.catalogue import TIER_FOR_COMPLEXITY, LongPromptTier, ModelInfo, Tier
from server.core.errors import FieldViolation, InvalidRequest
from server.core.gateway import Gateway
from server.core.health import Health, HealthMonitor
from server.core.limits import BUDGETS, MICRO, LimitKind, Standing
from server.core.types import Delta, RequestContext, StreamSummary
from server.observability.metrics import Metrics, snapshot
from server.observability.redact import Redactor

log = structlog.get_logger("llm_grpc.api")

ServicerContext = grpc.aio.ServicerContext[Any, Any]

_TIERS_OUT = {tier: llm_pb2.Tier.ValueType(number) for number, tier in convert.TIERS.items()}
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
        provider=info.provider,
        tier=_TIERS_OUT[info.tier],
        context_window=info.context_window,
        max_output_tokens=info.max_output_tokens,
        input_usd_per_million=info.input_per_mtok,
        output_usd_per_million=info.output_per_mtok,
        cached_input_usd_per_million=info.cached_input_per_mtok,
        cache_write_usd_per_million=info.cache_write_per_mtok,
        deprecated=info.deprecated,
        retirement_date=info.retires.isoformat() if info.retires is not None else "",
        capabilities=llm_pb2.ModelCapabilities(
            # The contract's flags; the thinking fields stay server-side (docs/providers.md lists them).
            **{k: v for k, v in asdict(info.capabilities).items() if k in CAPABILITY_FIELDS}
        ),
        long_prompt=_long_prompt(info.long_prompt),
    )


def _long_prompt(tier: LongPromptTier | None) -> llm_pb2.LongPromptPrices | None:
    if tier is None:
        return None
    return llm_pb2.LongPromptPrices(
        above_prompt_tokens=tier.above,
        input_usd_per_million=tier.input_per_mtok,
        output_usd_per_million=tier.output_per_mtok,
        cached_input_usd_per_million=tier.cached_input_per_mtok,
        cache_write_usd_per_million=tier.cache_write_per_mtok,
    )


CAPABILITY_FIELDS = frozenset(llm_pb2.ModelCapabilities.DESCRIPTOR.fields_by_name)


class LLMServicer:
    """One method per RPC of the contract, each (request, caller context, grpc context) → response.
    `server.api.pipeline.add_to_server` registers them behind the call pipeline."""

    def __init__(self, gateway: Gateway, health: HealthMonitor, metrics: Metrics, redactor: Redactor) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._health = health
        self._redact = redactor

    async def Complete(
        self, request: llm_pb2.CompleteRequest, ctx: RequestContext, context: ServicerContext
    ) -> llm_pb2.CompleteResponse:
        result = await self._gateway.complete(convert.draft(request), ctx, context.time_remaining())
        return convert.complete_response(result, ctx)

    # grpc.aio's writer API rather than an async generator: the gateway awaits each write under the
    # call's deadline, so a caller that stops reading cannot hold a slot past it (a generator is
    # suspended at `yield` while grpc writes, out of the gateway's reach).
    async def Stream(
        self, request: llm_pb2.StreamRequest, ctx: RequestContext, context: ServicerContext
    ) -> None:
        async def send(event: Delta | StreamSummary) -> None:
            try:
                await context.write(convert.stream_response(event, ctx))
            except grpc.aio.InternalError as error:
                # grpc fails a write to a call whose caller cancelled or left (its ExecuteBatchError, which
                # it ignores for generator handlers): to the gateway that is the caller going away.
                raise asyncio.CancelledError from error

        await self._gateway.stream(convert.draft(request), ctx, context.time_remaining(), send)

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, ctx: RequestContext, context: ServicerContext
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(
            models=[_model(info) for info in self._gateway.models(ctx)],
            default_model=self._gateway.allowlist.default_model,
        )

    async def SelectModel(
        self, request: llm_pb2.SelectModelRequest, ctx: RequestContext, context: ServicerContext
    ) -> llm_pb2.SelectModelResponse:
        selection = self._gateway.select(_requested_tier(request), ctx)
        return llm_pb2.SelectModelResponse(
            model=selection.model.id,
            provider=selection.model.provider,
            tier=_TIERS_OUT[selection.model.tier],
            reason=selection.reason,
        )

    async def CheckHealth(
        self, request: llm_pb2.CheckHealthRequest, ctx: RequestContext, context: ServicerContext
    ) -> llm_pb2.CheckHealthResponse:
        providers = []
        for name, state in self._health.snapshot().items():
            entry = llm_pb2.ProviderHealth(
                provider=name,
                status=_HEALTH[state.status],
                latency_ms=state.latency_ms,
                error=self._redact(state.error),
            )
            if state.checked_at is not None:
                entry.check_time.CopyFrom(_timestamp(state.checked_at))
            providers.append(entry)
        return llm_pb2.CheckHealthResponse(
            status=_HEALTH[self._health.overall()],
            providers=providers,
            deployments=await self._deployments(),
        )

    async def _deployments(self) -> list[llm_pb2.DeploymentHealth]:
        """Each governed deployment against its provider's limits (none when LLM_DEPLOYMENTS is empty).
        A capacity store that cannot be reached leaves the list empty rather than failing the check."""
        capacity = self._gateway.capacity
        if capacity is None:
            return []
        states = await capacity.states()
        queued = capacity.queue_lengths()
        return [
            llm_pb2.DeploymentHealth(
                model=state.model,
                provider=state.provider,
                limits=[
                    llm_pb2.DeploymentLimit(kind=dim.name.lower(), limit=limit, used=used)
                    for dim, limit, used in zip(Dim, state.limits, state.used, strict=True)
                    if limit
                ],
                cooldown_seconds=state.cooling_for,
                queued=queued.get(state.model, 0),
            )
            for state in states
        ]

    async def GetQuota(
        self, request: llm_pb2.GetQuotaRequest, ctx: RequestContext, context: ServicerContext
    ) -> llm_pb2.GetQuotaResponse:
        identity, standings = await self._gateway.quotas(ctx, request.model)
        return llm_pb2.GetQuotaResponse(identity=identity, quotas=[_quota(s) for s in standings])

    async def GetMetrics(
        self, request: llm_pb2.GetMetricsRequest, ctx: RequestContext, context: ServicerContext
    ) -> llm_pb2.GetMetricsResponse:
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
    tier = convert.TIERS.get(request.tier)
    if tier is not None:
        return tier
    complexity = convert.COMPLEXITIES.get(request.complexity)
    if complexity is not None:
        return TIER_FOR_COMPLEXITY[complexity]
    raise InvalidRequest([FieldViolation("tier", "set a known tier or complexity")])


def _timestamp(unix_seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(unix_seconds * 1e9))
    return stamp
