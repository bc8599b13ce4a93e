"""The gateway facade: validate → governance → pick provider → call (with retries) → account.

It knows no gRPC and no SDK. The servicer hands it drafts of requests and the caller's remaining time;
the adapters behind it speak the core types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from server.core.admission import Admission
from server.core.catalogue import TIER_FOR_COMPLEXITY, Catalogue, Complexity, ModelInfo, Selection, Tier
from server.core.circuit import CircuitBreaker
from server.core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    FieldViolation,
    InvalidRequest,
    ModelNotAllowed,
    Overloaded,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from server.core.governance import Allowlist
from server.core.registry import ModelRegistry
from server.core.retry import RetryPolicy, call_with_retries
from server.core.types import (
    CallOptions,
    ChatRequest,
    ProviderName,
    RequestContext,
    Result,
    StreamEvent,
    StreamSummary,
    TextDelta,
)
from server.core.validation import DraftRequest, Limits, check, to_request
from server.observability.calls import CallRecord
from server.observability.metrics import Metrics
from server.providers.base import Provider

log = structlog.get_logger("llm_grpc.gateway")

T = TypeVar("T")

# Failover (when configured) only for errors that say "this provider cannot serve now".
FAILOVER_ERRORS = (ProviderUnavailable, ProviderRateLimited, Overloaded, CircuitOpen)


@dataclass(slots=True)
class _Opened(Generic[T]):
    """A call that got through: its accounting, who serves it, what the attempt returned, its slot."""

    call: CallRecord
    provider: ProviderName
    result: T
    slot: AsyncExitStack


class Gateway:
    def __init__(
        self,
        *,
        allowlist: Allowlist,
        registry: ModelRegistry,
        providers: Mapping[ProviderName, Provider],
        retry: RetryPolicy,
        limits: Limits,
        request_timeout: float,
        metrics: Metrics,
        admission: Admission,
        circuit: CircuitBreaker,
        catalogue: Catalogue,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self._fallbacks = {model: tuple(chain) for model, chain in (fallbacks or {}).items()}
        self._circuit = circuit
        self.allowlist = allowlist
        self._admission = admission
        self._registry = registry
        self._providers = dict(providers)
        self._retry = retry
        self._limits = limits
        self._request_timeout = request_timeout
        self._metrics = metrics

    @property
    def limits(self) -> Limits:
        return self._limits

    def models(self, ctx: RequestContext | None = None) -> list[ModelInfo]:
        """Every model allowed to the caller, from the catalogue (the start-up check put each in it)."""
        return [self.catalogue.get(model) for model in self._allowed(ctx)]

    def select(self, tier: Tier, ctx: RequestContext | None = None) -> Selection:
        """The cheapest model of `tier` allowed to the caller whose provider is configured."""
        return self.catalogue.select(tier, self._allowed(ctx), self._providers.keys())

    def _allowed(self, ctx: RequestContext | None) -> tuple[str, ...]:
        """The allowlist, narrowed by the caller's roles when they narrow it."""
        if ctx is None or ctx.models is None:
            return self.allowlist.models
        return tuple(m for m in self.allowlist.models if m in ctx.models)

    async def complete(
        self, draft: DraftRequest, ctx: RequestContext, time_remaining: float | None
    ) -> Result:
        started = time.perf_counter()
        deadline = self._deadline(time_remaining)
        opened = await self._open(
            "Complete",
            ctx.source_agent,
            self._candidates(draft, ctx),
            deadline,
            started,
            lambda request, provider, seconds_left: provider.complete(request, _options(ctx, seconds_left)),
        )
        await opened.slot.aclose()
        completion, call = opened.result, opened.call
        cost = self.catalogue.get(call.model).cost(completion.usage)
        call.succeed(completion.usage, cost)
        return Result(completion, opened.provider, call.model, call.elapsed_ms(), cost)

    async def stream(
        self,
        draft: DraftRequest,
        ctx: RequestContext,
        time_remaining: float | None,
        send: Callable[[TextDelta | StreamSummary], Awaitable[None]],
    ) -> None:
        """Hand `send` the deltas as the provider produces them, then one StreamSummary.

        Retries and failover happen only while opening the stream, before anything reaches the caller.
        The deadline bounds the whole call, `send` included: a caller that stops reading blocks `send`
        (HTTP/2 flow control), and when the deadline passes the provider stream is closed, the slot
        given back and DeadlineExceeded raised, wherever the call was waiting.
        """
        started = time.perf_counter()
        deadline = self._deadline(time_remaining)
        opened = await self._open(
            "Stream",
            ctx.source_agent,
            self._candidates(draft, ctx),
            deadline,
            started,
            lambda request, provider, seconds_left: _open_stream(
                provider, request, _options(ctx, seconds_left)
            ),
        )
        call = opened.call
        events, event = opened.result
        relay = _Relay()
        try:
            async with opened.slot, aclosing(events), relay.within(deadline):
                while isinstance(event, TextDelta):
                    if call.first_token_ms is None:
                        call.first_token()
                    await relay.to_caller(send(event))
                    event = await relay.from_provider(anext(events), opened.provider)
                cost = self.catalogue.get(call.model).cost(event.usage)
                await relay.to_caller(
                    send(
                        StreamSummary(
                            usage=event.usage,
                            finish_reason=event.finish_reason,
                            provider=opened.provider,
                            model=call.model,
                            latency_ms=call.elapsed_ms(),
                            time_to_first_token_ms=call.first_token_ms
                            if call.first_token_ms is not None
                            else call.elapsed_ms(),
                            cost_usd=cost,
                        )
                    )
                )
        except BaseException as error:
            self._circuit.record(opened.provider, error)  # a failure after the stream opened counts too
            call.fail(error)
            raise
        call.succeed(event.usage, cost)

    async def _open(
        self,
        method: str,
        caller: str,
        candidates: list[tuple[ChatRequest, Provider]],
        deadline: float,
        started: float,
        attempt: Callable[[ChatRequest, Provider, float], Awaitable[T]],
    ) -> _Opened[T]:
        """Run `attempt` on the first candidate, with retries; on UNAVAILABLE or RESOURCE_EXHAUSTED move
        to the next (an operator's explicit fallback chain). The caller owns the returned slot."""
        for index, (request, provider) in enumerate(candidates):
            call = CallRecord(self._metrics, method, request.model, provider.name, started)
            slot = AsyncExitStack()
            try:
                await slot.enter_async_context(
                    self._admission.slot(provider.name, caller, _seconds_until(deadline))
                )
                result = await self._with_retries(
                    call,
                    provider.name,
                    deadline,
                    lambda seconds_left, r=request, p=provider: attempt(r, p, seconds_left),  # type: ignore[misc]
                )
            except BaseException as error:
                await slot.aclose()
                call.fail(error)
                if index + 1 == len(candidates) or not isinstance(error, FAILOVER_ERRORS):
                    raise
                self._metrics.failover(request.model, candidates[index + 1][0].model)
                log.warning(
                    "provider.failover",
                    from_model=request.model,
                    to_model=candidates[index + 1][0].model,
                    reason=error.reason,
                )
                continue
            return _Opened(call, provider.name, result, slot)
        raise RuntimeError("no candidate model")  # pragma: no cover - candidates is never empty

    def _candidates(self, draft: DraftRequest, ctx: RequestContext) -> list[tuple[ChatRequest, Provider]]:
        """The chosen model, then its configured fallbacks (those that can honour max_tokens)."""
        request, provider = self._prepare(draft, ctx)
        candidates = [(request, provider)]
        for model in self._fallbacks.get(request.model, ()):
            if ctx.models is not None and model not in ctx.models:
                continue  # never fail over to a model the caller's roles do not allow
            if (
                draft.max_tokens is not None
                and draft.max_tokens > self.catalogue.get(model).max_output_tokens
            ):
                continue
            provider_name = self._registry.provider_for(model)
            if provider_name is not None and provider_name in self._providers:
                candidates.append((to_request(draft, model), self._providers[provider_name]))
        return candidates

    def _prepare(self, draft: DraftRequest, ctx: RequestContext) -> tuple[ChatRequest, Provider]:
        check(draft, self._limits)
        model = self._choose_model(draft, ctx)
        info = self.catalogue.get(model)
        if draft.max_tokens is not None and draft.max_tokens > info.max_output_tokens:
            raise InvalidRequest(
                [FieldViolation("max_tokens", f"{model} produces at most {info.max_output_tokens} tokens")]
            )
        provider_name = self._registry.provider_for(model)
        if provider_name is None or provider_name not in self._providers:
            # The start-up check makes this unreachable for allowed models: reaching it is a bug.
            raise RuntimeError(f"allowed model {model!r} has no configured provider")
        return to_request(draft, model), self._providers[provider_name]

    def _choose_model(self, draft: DraftRequest, ctx: RequestContext) -> str:
        """An explicit model (if allowed) wins; then the tier; then the complexity; then the default."""
        if not draft.model and (draft.tier or draft.complexity):
            tier = Tier(draft.tier) if draft.tier else TIER_FOR_COMPLEXITY[Complexity(draft.complexity)]
            return self.select(tier, ctx).model.id
        try:
            model = self.allowlist.resolve(draft.model)
            if ctx.models is not None and model not in ctx.models:
                raise ModelNotAllowed(model, self._allowed(ctx))
            return model
        except ModelNotAllowed:
            self._metrics.governance_violation(draft.model, ctx.source_agent)
            log.warning("governance.violation", model=draft.model, source_agent=ctx.source_agent)
            raise

    def _deadline(self, time_remaining: float | None) -> float:
        """The call's deadline in event-loop time: the caller's, or LLM_REQUEST_TIMEOUT if sooner."""
        budget = (
            self._request_timeout if time_remaining is None else min(time_remaining, self._request_timeout)
        )
        return asyncio.get_running_loop().time() + budget

    async def _with_retries(
        self,
        call: CallRecord,
        provider: ProviderName,
        deadline: float,
        attempt: Callable[[float], Awaitable[T]],
    ) -> T:
        async def timed_attempt(seconds_left: float) -> T:
            self._circuit.before_call(provider)
            started = time.perf_counter()
            try:
                result = await attempt(seconds_left)
            except BaseException as error:
                self._circuit.record(provider, error)
                raise
            finally:
                call.provider_s += time.perf_counter() - started
            self._circuit.record(provider, None)
            return result

        def on_retry(error: ProviderError, delay: float) -> None:
            call.retry(error.reason.lower(), delay)

        return await call_with_retries(timed_attempt, self._retry, deadline, on_retry)


def _seconds_until(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


def _options(ctx: RequestContext, seconds_left: float) -> CallOptions:
    return CallOptions(headers=ctx.provider_headers(), timeout=seconds_left)


async def _open_stream(
    provider: Provider, request: ChatRequest, options: CallOptions
) -> tuple[AsyncGenerator[StreamEvent, None], StreamEvent]:
    """Start a provider stream and wait for its first event, so errors surface while we can still retry."""
    events = provider.stream(request, options)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        await events.aclose()
        raise ProviderUnavailable(provider.name, "the stream ended before its first event") from None
    except BaseException:
        await events.aclose()
        raise
    return events, first


class _Relay:
    """Where a stream's relay is waiting (on the provider or on the caller), under one deadline for
    both, so that running out says which side was slow."""

    __slots__ = ("waiting_on_caller",)

    def __init__(self) -> None:
        self.waiting_on_caller = False

    @asynccontextmanager
    async def within(self, deadline: float) -> AsyncIterator[None]:
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                yield
        except TimeoutError:
            if not scope.expired():
                raise
            if self.waiting_on_caller:
                raise DeadlineExceeded("the deadline passed while the caller was not reading") from None
            raise DeadlineExceeded("the deadline passed while the stream was running") from None

    async def to_caller(self, sent: Awaitable[None]) -> None:
        self.waiting_on_caller = True
        await sent
        self.waiting_on_caller = False

    async def from_provider(self, next_event: Awaitable[StreamEvent], provider: ProviderName) -> StreamEvent:
        """The stream's next event; a stream that just stops is a failure."""
        try:
            return await next_event
        except StopAsyncIteration:
            raise ProviderUnavailable(provider, "the stream ended without its final event") from None
