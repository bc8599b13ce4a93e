"""The gateway facade: validate → governance → pick provider → call (with retries) → account.

It knows no gRPC and no SDK. The servicers hand it drafts of requests and the caller's remaining
time; the adapters behind it speak the core types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field

import structlog

from server.core.errors import DeadlineExceeded, GatewayError, ModelNotAllowed, ProviderUnavailable
from server.core.governance import Allowlist
from server.core.registry import ModelRegistry
from server.core.retry import RetryPolicy, call_with_retries
from server.core.types import (
    CallOptions,
    ChatRequest,
    Completion,
    ProviderName,
    RequestContext,
    Result,
    StreamEnd,
    StreamEvent,
    StreamSummary,
    TextDelta,
)
from server.core.validation import DraftRequest, Limits, check, to_request
from server.providers.base import Provider

log = structlog.get_logger("llm_grpc.gateway")


@dataclass(slots=True)
class _Call:
    """Accounting of one call, finished into the canonical log line."""

    method: str
    model: str
    provider: str
    started: float = field(default_factory=time.perf_counter)
    retries: int = 0
    first_token_ms: float | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


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
    ) -> None:
        self.allowlist = allowlist
        self._registry = registry
        self._providers = dict(providers)
        self._retry = retry
        self._limits = limits
        self._request_timeout = request_timeout

    def models(self) -> list[tuple[str, ProviderName]]:
        """Every allowed model with its provider (the start-up check guarantees each maps to one)."""
        return [(m, p) for m in self.allowlist.models if (p := self._registry.provider_for(m)) is not None]

    @property
    def providers(self) -> Mapping[ProviderName, Provider]:
        return self._providers

    async def complete(
        self, draft: DraftRequest, ctx: RequestContext, time_remaining: float | None
    ) -> Result:
        request, provider = self._prepare(draft, ctx)
        call = _Call("Complete", request.model, provider.name)
        deadline = self._deadline(time_remaining)

        async def attempt(seconds_left: float) -> Completion:
            return await provider.complete(request, self._options(ctx, seconds_left))

        try:
            completion = await call_with_retries(attempt, self._retry, deadline, self._on_retry(call))
        except BaseException as error:
            _log_failure(call, error)
            raise
        result = Result(completion, provider.name, request.model, call.elapsed_ms())
        _log_success(call, completion.usage.prompt_tokens, completion.usage.completion_tokens)
        return result

    async def stream(
        self, draft: DraftRequest, ctx: RequestContext, time_remaining: float | None
    ) -> AsyncIterator[TextDelta | StreamSummary]:
        """Deltas as the provider produces them, then one StreamSummary.

        Retries happen only while opening the stream, before anything has gone to the caller.
        """
        request, provider = self._prepare(draft, ctx)
        call = _Call("Stream", request.model, provider.name)
        deadline = self._deadline(time_remaining)
        try:
            events, first = await call_with_retries(
                lambda seconds_left: _open_stream(provider, request, self._options(ctx, seconds_left)),
                self._retry,
                deadline,
                self._on_retry(call),
            )
            async with aclosing(events):
                event: StreamEvent = first
                while isinstance(event, TextDelta):
                    if call.first_token_ms is None:
                        call.first_token_ms = call.elapsed_ms()
                    yield event
                    try:
                        async with asyncio.timeout_at(deadline):
                            event = await anext(events)
                    except StopAsyncIteration:
                        raise ProviderUnavailable(
                            provider.name, "the stream ended without its final event"
                        ) from None
                    except TimeoutError:
                        raise DeadlineExceeded("the deadline passed while the stream was running") from None
        except BaseException as error:
            _log_failure(call, error)
            raise
        if not isinstance(event, StreamEnd):  # pragma: no cover - the loop above leaves only StreamEnd
            raise RuntimeError("stream ended on an unexpected event")
        end = event
        _log_success(call, end.usage.prompt_tokens, end.usage.completion_tokens)
        yield StreamSummary(
            usage=end.usage,
            finish_reason=end.finish_reason,
            provider=provider.name,
            model=request.model,
            latency_ms=call.elapsed_ms(),
            time_to_first_token_ms=call.first_token_ms
            if call.first_token_ms is not None
            else call.elapsed_ms(),
        )

    def _prepare(self, draft: DraftRequest, ctx: RequestContext) -> tuple[ChatRequest, Provider]:
        check(draft, self._limits)
        try:
            model = self.allowlist.resolve(draft.model)
        except ModelNotAllowed:
            log.warning("governance.violation", model=draft.model, source_agent=ctx.source_agent)
            raise
        provider_name = self._registry.provider_for(model)
        if provider_name is None or provider_name not in self._providers:
            # The start-up check makes this unreachable for allowed models: reaching it is a bug.
            raise RuntimeError(f"allowed model {model!r} has no configured provider")
        return to_request(draft, model), self._providers[provider_name]

    def _deadline(self, time_remaining: float | None) -> float:
        budget = (
            self._request_timeout if time_remaining is None else min(time_remaining, self._request_timeout)
        )
        return asyncio.get_running_loop().time() + budget

    @staticmethod
    def _options(ctx: RequestContext, seconds_left: float) -> CallOptions:
        return CallOptions(headers=ctx.provider_headers(), timeout=seconds_left)

    @staticmethod
    def _on_retry(call: _Call) -> _RetryHook:
        return _RetryHook(call)


class _RetryHook:
    def __init__(self, call: _Call) -> None:
        self._call = call

    def __call__(self, error: GatewayError, delay: float) -> None:
        self._call.retries += 1
        log.info(
            "provider.retry",
            provider=self._call.provider,
            model=self._call.model,
            reason=error.reason,
            attempt=self._call.retries,
            delay_s=round(delay, 3),
        )


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


def _log_success(call: _Call, prompt_tokens: int, completion_tokens: int) -> None:
    log.info(
        "llm.call",
        method=call.method,
        model=call.model,
        provider=call.provider,
        status="OK",
        latency_ms=round(call.elapsed_ms(), 2),
        time_to_first_token_ms=None if call.first_token_ms is None else round(call.first_token_ms, 2),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        retries=call.retries,
    )


def _log_failure(call: _Call, error: BaseException) -> None:
    if isinstance(error, GatewayError):
        status = error.reason
    elif isinstance(error, asyncio.CancelledError | GeneratorExit):
        status = "CANCELLED"
    else:
        status = "INTERNAL"
    log.warning(
        "llm.call",
        method=call.method,
        model=call.model,
        provider=call.provider,
        status=status,
        error=str(error) if isinstance(error, GatewayError) else type(error).__name__,
        latency_ms=round(call.elapsed_ms(), 2),
        time_to_first_token_ms=None if call.first_token_ms is None else round(call.first_token_ms, 2),
        retries=call.retries,
    )
