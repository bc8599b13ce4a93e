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
from typing import Generic, Protocol, TypeVar

from server.core.admission import Admission
from server.core.capacity import Capacity, CapacityUnavailable, Learned, Lease, Need, UpstreamCapacity
from server.core.catalogue import TIER_FOR_COMPLEXITY, Catalogue, Complexity, ModelInfo, Selection, Tier
from server.core.circuit import CircuitBreaker
from server.core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    FieldViolation,
    InvalidRequest,
    ModelNotAllowed,
    ModelRetired,
    Overloaded,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    QuotaExhausted,
    UnsupportedByModel,
)
from server.core.governance import Allowlist
from server.core.limits import ANONYMOUS, Limiter, Standing, Ticket, Worst, micro_usd, prompt_token_bound
from server.core.ports import CallObserver, Provider, ProviderCall
from server.core.retry import RetryPolicy, call_with_retries
from server.core.structured import OutputChecker
from server.core.types import (
    CallOptions,
    ChatRequest,
    Delta,
    ProviderName,
    RequestContext,
    Result,
    StreamEnd,
    StreamEvent,
    StreamSummary,
    TextDelta,
    ToolCallDelta,
)
from server.core.validation import MAX_MODEL_LENGTH, DraftRequest, Limits, check, to_request, unsupported

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Failover (when configured) only for errors that say "this provider, key or model cannot serve now",
# never for one that says the request itself is wrong (another model would refuse it too).
FAILOVER_ERRORS = (
    ProviderUnavailable,
    ProviderRateLimited,
    Overloaded,
    CircuitOpen,
    ProviderAuthError,
    QuotaExhausted,
    ModelRetired,
    UpstreamCapacity,
    CapacityUnavailable,
)


class _Attempt(Protocol[T_co]):
    """One attempt at a provider: the request, the provider, seconds left, trace headers, and where the
    adapter puts what the rate-limit headers said (None: not read)."""

    def __call__(
        self,
        request: ChatRequest,
        provider: Provider,
        seconds_left: float,
        trace: Mapping[str, str],
        sink: list[object] | None = None,
    ) -> Awaitable[T_co]: ...


_NO_RETRIES = RetryPolicy(max_retries=0, base_delay=0.0, max_delay=0.0)
"""A governed model's call retries by moving to a deployment with capacity, reserving again."""


@dataclass(slots=True)
class _Opened(Generic[T]):
    """A call that got through: its accounting, who serves it, what the attempt returned, its slot."""

    call: ProviderCall
    provider: ProviderName
    result: T
    slot: AsyncExitStack
    lease: Lease | None = None
    """Capacity held on the deployment that serves (a governed model, server/core/capacity.py)."""


class _Spend:
    """Whether a failed call may still have been billed: an attempt was sent and then cancelled, timed
    out or lost its connection (an error status from the provider, or a refusal before sending, is not
    billed)."""

    __slots__ = ("maybe_billed",)

    def __init__(self) -> None:
        self.maybe_billed = False

    def after_failed_attempt(self, error: BaseException) -> None:
        answered = isinstance(error, ProviderError) and error.status_code is not None
        refused_before_sending = isinstance(error, ProviderBadRequest) and error.status_code is None
        if not (answered or refused_before_sending):
            self.maybe_billed = True


class Gateway:
    def __init__(
        self,
        *,
        allowlist: Allowlist,
        providers: Mapping[ProviderName, Provider],
        retry: RetryPolicy,
        limits: Limits,
        request_timeout: float,
        observer: CallObserver,
        admission: Admission,
        circuit: CircuitBreaker,
        catalogue: Catalogue,
        limiter: Limiter,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        checker: OutputChecker | None = None,
        capacity: Capacity | None = None,
        default_max_tokens: int = 4096,
    ) -> None:
        self.capacity = capacity
        self._default_max_tokens = default_max_tokens
        self.catalogue = catalogue
        self.checker = checker if checker is not None else OutputChecker()
        self._limiter = limiter
        self._fallbacks = {model: tuple(chain) for model, chain in (fallbacks or {}).items()}
        self._circuit = circuit
        self.allowlist = allowlist
        self._admission = admission
        self._providers = dict(providers)
        self._retry = retry
        self._limits = limits
        self._request_timeout = request_timeout
        self._observer = observer

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
        return self.allowlist.allowed_for(ctx.models if ctx is not None else None)

    async def complete(
        self, draft: DraftRequest, ctx: RequestContext, time_remaining: float | None
    ) -> Result:
        started = time.perf_counter()
        deadline = self._deadline(time_remaining)
        candidates = self._candidates(draft, ctx)
        ticket = await self._reserve(ctx, candidates)
        spend = _Spend()
        try:
            opened = await self._open(
                "Complete",
                ctx.source_agent,
                candidates,
                deadline,
                _caller_bound(time_remaining, self._request_timeout),
                started,
                spend,
                lambda request, provider, seconds_left, trace, sink=None: provider.complete(
                    request, _options(ctx, seconds_left, trace, sink)
                ),
            )
            await opened.slot.aclose()
        except BaseException:
            await self._unserved(ticket, spend)
            raise
        completion, call = opened.result, opened.call
        cost = self.catalogue.get(call.model).cost(completion.usage)
        try:
            if ticket is not None:  # None: no caller limits (the default), nothing to settle
                await self._limiter.settle(
                    ticket, completion.usage.total_tokens, micro_usd(cost), self._scopes(call.model)
                )
        finally:  # the deployment's capacity too, even when the caller's settlement failed
            if opened.lease is not None and self.capacity is not None:
                await self.capacity.settle(opened.lease, completion.usage)
        call.succeed(
            completion.usage,
            cost,
            completion.served_model,
            completion.request_id,
            completion.finish_reason.name,
        )
        structured = await self.checker.check(
            completion.content, candidates[0][0].response_format, completion.finish_reason
        )
        return Result(completion, opened.provider, call.model, call.elapsed_ms(), cost, structured)

    async def stream(
        self,
        draft: DraftRequest,
        ctx: RequestContext,
        time_remaining: float | None,
        send: Callable[[Delta | StreamSummary], Awaitable[None]],
    ) -> None:
        """Hand `send` the deltas as the provider produces them, then one StreamSummary.

        Retries and failover happen only while opening the stream, before anything reaches the caller.
        The deadline bounds the whole call, `send` included: a caller that stops reading blocks `send`
        (HTTP/2 flow control), and when the deadline passes the provider stream is closed, the slot
        given back and DeadlineExceeded raised, wherever the call was waiting.
        """
        started = time.perf_counter()
        deadline = self._deadline(time_remaining)
        caller_bound = _caller_bound(time_remaining, self._request_timeout)
        candidates = self._candidates(draft, ctx)
        ticket = await self._reserve(ctx, candidates)
        spend = _Spend()
        try:
            opened = await self._open(
                "Stream",
                ctx.source_agent,
                candidates,
                deadline,
                caller_bound,
                started,
                spend,
                lambda request, provider, seconds_left, trace, sink=None: _open_stream(
                    provider, request, _options(ctx, seconds_left, trace, sink)
                ),
            )
        except BaseException:
            await self._unserved(ticket, spend)
            raise
        call = opened.call
        events, event = opened.result
        relay = _Relay()
        streamed = 0
        try:
            async with opened.slot, aclosing(events), relay.within(deadline):
                text: list[str] = []
                while not isinstance(event, StreamEnd):
                    if call.first_token_ms is None:
                        call.first_token()
                    streamed += _streamed_bytes(event, text)
                    await relay.to_caller(send(event))
                    event = await relay.from_provider(anext(events), opened.provider)
                cost = self.catalogue.get(call.model).cost(event.usage)
                # Settled before `done` is sent: a caller that has its `done` finds its limits freed.
                if ticket is not None:
                    await self._limiter.settle(
                        ticket, event.usage.total_tokens, micro_usd(cost), self._scopes(call.model)
                    )
                if opened.lease is not None and self.capacity is not None:
                    await self.capacity.settle(opened.lease, event.usage)
                structured = await self.checker.check(
                    "".join(text), candidates[0][0].response_format, event.finish_reason
                )
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
                            served_model=event.served_model or call.model,
                            tool_calls=event.tool_calls,
                            reasoning=event.reasoning,
                            response_id=event.response_id,
                            structured_output=structured,
                        )
                    )
                )
        except BaseException as error:
            # A failure after the stream opened counts too, unless the caller's own deadline ended it.
            self._circuit.record(opened.provider, error, trial=False, caller_deadline=caller_bound)
            self._annotate(error, call.model)
            call.fail(error)
            await self._settle_cut(ticket, call.model, candidates[0][0], streamed)
            if opened.lease is not None and self.capacity is not None:
                await self.capacity.release(opened.lease, sent=True)
            raise
        call.succeed(event.usage, cost, event.served_model, event.request_id, event.finish_reason.name)

    async def _open(
        self,
        method: str,
        caller: str,
        candidates: list[tuple[ChatRequest, Provider]],
        deadline: float,
        caller_bound: bool,
        started: float,
        spend: _Spend,
        attempt: _Attempt[T],
    ) -> _Opened[T]:
        """Run `attempt` on the first candidate, with retries; on UNAVAILABLE or RESOURCE_EXHAUSTED move
        to the next (an operator's explicit fallback chain). The caller owns the returned slot."""
        spent_on_providers = 0.0  # by the candidates tried before: not gateway overhead either
        for index, (request, provider) in enumerate(candidates):
            if self.capacity is not None and self.capacity.plan_for(request.model) is not None:
                try:
                    return await self._open_governed(
                        method, caller, request, deadline, caller_bound, started, spend, attempt
                    )
                except BaseException as error:
                    if index + 1 == len(candidates) or not isinstance(error, FAILOVER_ERRORS):
                        raise
                    self._observer.failover(request.model, candidates[index + 1][0].model, error.reason)
                    continue
            call = self._observer.provider_call(method, request.model, provider.name, started)
            call.waited_on_provider(spent_on_providers)
            slot = AsyncExitStack()
            try:
                await slot.enter_async_context(
                    self._admission.slot(provider.name, caller, _seconds_until(deadline))
                )
                result = await self._with_retries(
                    call,
                    provider.name,
                    deadline,
                    caller_bound,
                    spend,
                    lambda seconds_left, trace, r=request, p=provider: attempt(r, p, seconds_left, trace),  # type: ignore[misc]
                )
            except BaseException as error:
                await slot.aclose()
                self._annotate(error, request.model)
                call.fail(error)
                spent_on_providers = call.provider_s
                if index + 1 == len(candidates) or not isinstance(error, FAILOVER_ERRORS):
                    raise
                self._observer.failover(request.model, candidates[index + 1][0].model, error.reason)
                continue
            return _Opened(call, provider.name, result, slot)
        raise RuntimeError("no candidate model")  # pragma: no cover - candidates is never empty

    async def _open_governed(
        self,
        method: str,
        caller: str,
        request: ChatRequest,
        deadline: float,
        caller_bound: bool,
        started: float,
        spend: _Spend,
        attempt: _Attempt[T],
    ) -> _Opened[T]:
        """A model whose capacity is governed: reserve on a deployment with headroom (or wait in the fair
        queue), send there; a 429 or an unavailable deployment cools it down (a 429) and the call moves to
        another deployment (each move reserves again: every request sent is counted), within the deadline
        and at most LLM_MAX_RETRIES times."""
        capacity = self.capacity
        if capacity is None:  # pragma: no cover - _open calls this only for a governed model
            raise RuntimeError("no capacity for a governed model")
        info = self.catalogue.get(request.model)
        output = request.max_tokens if request.max_tokens is not None else self._default_max_tokens
        need = Need(min(_prompt_bound(request), info.context_window), output)
        spent_on_providers = 0.0
        moves = 0
        while True:
            lease = await capacity.acquire(request.model, need, caller, deadline)
            provider = self._providers[lease.provider]
            call = self._observer.provider_call(method, request.model, provider.name, started)
            call.waited_on_provider(spent_on_providers)
            slot = AsyncExitStack()
            learned: list[object] = []
            sent = _Spend()
            try:
                await slot.enter_async_context(
                    self._admission.slot(provider.name, caller, _seconds_until(deadline))
                )
                result = await self._with_retries(
                    call,
                    provider.name,
                    deadline,
                    caller_bound,
                    sent,
                    lambda seconds_left, trace, p=provider, sink=learned: attempt(  # type: ignore[misc]
                        request, p, seconds_left, trace, sink
                    ),
                    retry=_NO_RETRIES,
                )
                # Served from here on: whatever happens next, the provider bills it (a cancellation
                # while learning must not refund the caller's budget).
                sent.maybe_billed = True
                await capacity.learn(lease, [x for x in learned if isinstance(x, Learned)])
            except BaseException as error:
                await slot.aclose()
                answered = isinstance(error, ProviderError) and error.status_code is not None
                spend.maybe_billed = spend.maybe_billed or sent.maybe_billed
                await capacity.release(lease, sent=answered or sent.maybe_billed)
                if isinstance(error, ProviderRateLimited):
                    await capacity.rate_limited(lease, error.retry_after)
                self._annotate(error, request.model)
                call.fail(error)
                spent_on_providers = call.provider_s
                moves += 1
                if not isinstance(error, ProviderRateLimited | ProviderUnavailable) or moves > (
                    self._retry.max_retries
                ):
                    raise
                if isinstance(error, ProviderUnavailable):  # a 429's deployment cools; a 5xx backs off
                    delay = self._retry.backoff(moves - 1)
                    if _seconds_until(deadline) <= delay:
                        raise
                    await asyncio.sleep(delay)
                continue
            return _Opened(call, provider.name, result, slot, lease)

    def _annotate(self, error: BaseException, model: str) -> None:
        """Name the model (and its limits) in a provider error, which an SDK error mapping cannot."""
        if isinstance(error, ProviderError) and model in self.catalogue:
            error.for_model(model, self.catalogue.get(model).context_window)

    def _candidates(self, draft: DraftRequest, ctx: RequestContext) -> list[tuple[ChatRequest, Provider]]:
        """The chosen model, then its configured fallbacks (those that can honour max_tokens)."""
        request, provider = self._prepare(draft, ctx)
        candidates = [(request, provider)]
        for model in self._fallbacks.get(request.model, ()):
            if ctx.models is not None and model not in ctx.models:
                continue  # never fail over to a model the caller's roles do not allow
            info = self.catalogue.get(model)
            if (
                draft.max_tokens is not None
                and not info.min_output_tokens <= draft.max_tokens <= info.max_output_tokens
            ) or unsupported(draft, info):
                continue  # a fallback that would refuse the request is no fallback
            if (name := self._serving(info)) in self._providers:  # the catalogue is the truth
                candidates.append((to_request(draft, info), self._providers[name]))
        return candidates

    def _prepare(self, draft: DraftRequest, ctx: RequestContext) -> tuple[ChatRequest, Provider]:
        check(draft, self._limits)
        model = self._choose_model(draft, ctx)
        info = self.catalogue.get(model)
        if draft.max_tokens is not None and draft.max_tokens > info.max_output_tokens:
            raise InvalidRequest(
                [FieldViolation("max_tokens", f"{model} produces at most {info.max_output_tokens} tokens")]
            )
        if draft.max_tokens is not None and draft.max_tokens < info.min_output_tokens:
            raise InvalidRequest(
                [
                    FieldViolation(
                        "max_tokens",
                        f"{model} takes max_tokens of at least {info.min_output_tokens} (its API's minimum)",
                    )
                ]
            )
        if problems := unsupported(draft, info):
            raise UnsupportedByModel(model, problems)
        name = self._serving(info)
        if name not in self._providers:  # the catalogue is the truth; prefixes had to agree
            # The start-up check makes this unreachable for allowed models: reaching it is a bug.
            raise RuntimeError(f"allowed model {model!r} has no configured provider")
        return to_request(draft, info), self._providers[name]

    def _serving(self, info: ModelInfo) -> ProviderName:
        """The provider instance that serves the model: the catalogue's, or (deployments configured) the
        first deployment's until capacity picks one per call."""
        deployments = self.capacity.plan_for(info.id) if self.capacity is not None else None
        return deployments[0].provider if deployments else info.provider

    def _choose_model(self, draft: DraftRequest, ctx: RequestContext) -> str:
        """An explicit model (if allowed) wins; then the tier; then the complexity; then the default."""
        if not draft.model and (draft.tier or draft.complexity):
            tier = Tier(draft.tier) if draft.tier else TIER_FOR_COMPLEXITY[Complexity(draft.complexity)]
            return self.select(tier, ctx).model.id
        try:
            return self.allowlist.resolve(draft.model, ctx.models)
        except ModelNotAllowed:
            self._observer.governance_violation(draft.model, ctx.source_agent)
            raise

    async def _reserve(
        self, ctx: RequestContext, candidates: list[tuple[ChatRequest, Provider]]
    ) -> Ticket | None:
        """Charge the call's worst case to the caller's limits: an upper bound of the prompt's tokens plus
        the most output it can be billed (`_output_bound`), at the dearest candidate's dearest prices (the
        long-prompt tier when the bound passes its threshold, the cache-write price where a message sets
        a cache breakpoint), in the scopes of every candidate (the model and its fallbacks: any of them
        may serve). docs/limits.md: how a reservation prices the worst case."""
        if not self._limiter.active:
            return None
        request = candidates[0][0]
        prompt = _prompt_bound(request)
        cache_writes = any(message.cache_breakpoint for message in request.messages)
        worst_usd = 0.0
        worst_tokens = 0
        targets = []
        for candidate, _ in candidates:
            info = self.catalogue.get(candidate.model)
            output = _output_bound(candidate, info.max_output_tokens)
            # A provider bills no more prompt than its window holds (a document's bound can be larger).
            bounded = min(prompt, info.context_window)
            worst_tokens = max(worst_tokens, bounded + output)
            worst_usd = max(worst_usd, info.worst_cost(bounded, output, cache_writes=cache_writes))
            targets.append((candidate.model, info.tier.value))
        identity = ctx.source_agent or ANONYMOUS
        worst = Worst(worst_tokens, micro_usd(worst_usd))
        return await self._limiter.reserve(identity, ctx.roles, targets, worst)

    def _scopes(self, model: str) -> tuple[str, ...]:
        """The limit scopes of the model that served a call."""
        return ("all", f"model:{model}", f"tier:{self.catalogue.get(model).tier.value}")

    async def _unserved(self, ticket: Ticket | None, spend: _Spend) -> None:
        """Settle a call that failed before a provider served it: given back when no attempt can have been
        billed, kept at its worst case when one may have been (cancelled or timed out once sent)."""
        if spend.maybe_billed:
            await self._limiter.keep(ticket)
        else:
            await self._limiter.refund(ticket)

    async def _settle_cut(
        self, ticket: Ticket | None, model: str, request: ChatRequest, streamed: int
    ) -> None:
        """A stream cut before its usage arrived: settle an upper bound of what the provider will bill (the
        prompt's bound, and one token per byte streamed). A reasoning model's thinking is billed but never
        streamed: its reservation is kept whole."""
        if ticket is None:
            return
        if self.catalogue.get(model).capabilities.reasoning:
            await self._limiter.keep(ticket)
            return
        info = self.catalogue.get(model)
        prompt = min(_prompt_bound(request), info.context_window)
        cache_writes = any(message.cache_breakpoint for message in request.messages)
        cost = info.worst_cost(prompt, streamed, cache_writes=cache_writes)
        await self._limiter.settle(ticket, prompt + streamed, micro_usd(cost), self._scopes(model))

    async def quotas(self, ctx: RequestContext, model: str) -> tuple[str, list[Standing]]:
        """The caller's identity and where it stands against each of its limits (for `model`, or all)."""
        identity = ctx.source_agent or ANONYMOUS
        if model:
            if len(model) > MAX_MODEL_LENGTH:
                raise InvalidRequest(
                    [FieldViolation("model", f"must be at most {MAX_MODEL_LENGTH} characters")]
                )
            # Refuses, as a call would, a model the caller may not use.
            self._choose_model(DraftRequest(model=model, messages=()), ctx)
            tier = self.catalogue.get(model).tier.value
            return identity, await self._limiter.standing(identity, ctx.roles, model, tier)
        standing = await self._limiter.standing_all(identity, ctx.roles, self._allowed(ctx))
        return identity, standing

    def _deadline(self, time_remaining: float | None) -> float:
        """The call's deadline in event-loop time: the caller's, or LLM_REQUEST_TIMEOUT if sooner."""
        budget = (
            self._request_timeout if time_remaining is None else min(time_remaining, self._request_timeout)
        )
        return asyncio.get_running_loop().time() + budget

    async def _with_retries(
        self,
        call: ProviderCall,
        provider: ProviderName,
        deadline: float,
        caller_bound: bool,
        spend: _Spend,
        attempt: Callable[[float, Mapping[str, str]], Awaitable[T]],
        retry: RetryPolicy | None = None,
    ) -> T:
        async def timed_attempt(seconds_left: float) -> T:
            trial = self._circuit.before_call(provider, seconds_left)
            started = time.perf_counter()
            try:
                with call.attempt() as trace:
                    result = await attempt(seconds_left, trace)
            except BaseException as error:
                self._circuit.record(provider, error, trial=trial, caller_deadline=caller_bound)
                spend.after_failed_attempt(error)
                raise
            finally:
                call.waited_on_provider(time.perf_counter() - started)
            self._circuit.record(provider, None, trial=trial)
            return result

        def on_retry(error: ProviderError, delay: float) -> None:
            call.retry(error.reason.lower(), delay)

        return await call_with_retries(timed_attempt, retry or self._retry, deadline, on_retry)


def _caller_bound(time_remaining: float | None, request_timeout: float) -> bool:
    """Whether the caller's deadline, not the gateway's LLM_REQUEST_TIMEOUT, bounds the call: a timeout
    then is the caller's choice, not the provider's failure (a caller with 50 ms deadlines must not open
    the circuit for everyone)."""
    return time_remaining is not None and time_remaining < request_timeout


def _seconds_until(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


def _prompt_bound(request: ChatRequest) -> int:
    """The most prompt tokens `request` can be billed for: its text and its attachments."""
    return (
        prompt_token_bound(request.prompt_texts(), len(request.messages)) + request.attachment_token_bound()
    )


def _output_bound(request: ChatRequest, model_max: int) -> int:
    """The most completion tokens `request` can be billed: max_tokens (the model's maximum when unset),
    reasoning included (OpenAI's max_completion_tokens and Anthropic's max_tokens count thinking), plus a
    thinking budget the request names: Google documents Gemini's thinking as billed on top of the output
    (https://ai.google.dev/gemini-api/docs/thinking: "response pricing is the sum of output tokens and
    thinking tokens") while googleapis/python-genai#2062 reports max_output_tokens capping both on
    Gemini 3; the reservation takes the larger reading."""
    output = request.max_tokens if request.max_tokens is not None else model_max
    if request.reasoning is not None and request.reasoning.budget_tokens:
        output += request.reasoning.budget_tokens
    return output


def _streamed_bytes(delta: Delta, text: list[str]) -> int:
    """What a delta adds to the generated output (kept as text for the structured-output check)."""
    if isinstance(delta, TextDelta):
        text.append(delta.text)
        return len(delta.text.encode())
    if isinstance(delta, ToolCallDelta):
        return len(delta.arguments_delta.encode())
    return len(delta.text.encode())


def _options(
    ctx: RequestContext, seconds_left: float, trace: Mapping[str, str], sink: list[object] | None = None
) -> CallOptions:
    return CallOptions(headers={**ctx.provider_headers(), **trace}, timeout=seconds_left, rate_limits=sink)


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
