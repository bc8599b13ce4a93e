"""The interfaces the core calls and others implement: ports, in the hexagonal sense.

    server/api ──▶ server/core ◀── server/providers      (adapters implement `Provider`)
                        ▲
                        └──────── server/observability   (metrics and logs implement `CallObserver`)

The core imports nothing of ours outside itself (an import-linter contract in pyproject.toml keeps it so):
whoever builds the gateway (`server/app.py`) hands it a provider per configured instance, an observer
and a clock.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from server.core.types import CallOptions, ChatRequest, Completion, ProviderName, StreamEvent, Usage

Clock = Callable[[], float]
"""Seconds, as `time.time` (wall clock, for budgets and windows) or `time.perf_counter` (durations)."""


class Provider(Protocol):
    """A provider adapter: translates core types to one SDK and back, and maps its errors.

    Contract:
    - `name` is the provider *instance* name from configuration (e.g. "openai", or "local-vllm" for a
      second endpoint of the OpenAI kind); every error it raises names it.
    - `complete` and `stream` raise only `server.core.errors.ProviderError` subclasses (a
      `ProviderError` never carries a key). `asyncio.CancelledError` passes through untouched.
    - `stream` yields `TextDelta`s and then exactly one `StreamEnd`. Errors that the provider reports
      before the first delta (HTTP status, an SSE `error` event) surface from the first `__anext__`,
      so the caller can still retry or fail over; errors later surface mid-iteration.
    - Closing the iterator (`aclose()`, or cancellation) closes the HTTP response at once.
    - Every HTTP request carries `options.headers` and honours `options.timeout`.
    - The SDK's own retries are off (`max_retries=0`): the facade retries, inside the caller's deadline.
    """

    name: ProviderName

    async def complete(self, request: ChatRequest, options: CallOptions) -> Completion: ...

    def stream(self, request: ChatRequest, options: CallOptions) -> AsyncGenerator[StreamEvent, None]: ...

    async def probe(self, timeout: float) -> None:
        """A cheap real call (list models) that raises a `ProviderError` when the provider is unhealthy."""
        ...

    async def list_models(self, timeout: float) -> list[str]:
        """Every model id the provider serves to this key, through the SDK's `models.list` (all pages)."""
        ...

    async def aclose(self) -> None:
        """Release the SDK client and its connection pool."""
        ...


class ProviderCall(Protocol):
    """The accounting of one call to one provider (a failover makes one per candidate): metrics and the
    call's log fields. `succeed` or `fail` ends it, exactly once."""

    model: str
    first_token_ms: float | None
    provider_s: float
    """Seconds spent on the provider so far (attempts and retry waits): not gateway overhead."""

    def elapsed_ms(self) -> float: ...

    def waited_on_provider(self, seconds: float) -> None:
        """Time spent on the provider (an attempt, a retry's wait): not gateway overhead."""
        ...

    def attempt(self) -> AbstractContextManager[Mapping[str, str]]:
        """One attempt at the provider (each retry is another): yields the HTTP headers that carry its
        trace context to the provider (W3C `traceparent`; none when tracing is off)."""
        ...

    def retry(self, reason: str, delay: float) -> None: ...

    def first_token(self) -> None: ...

    def succeed(
        self, usage: Usage, cost_usd: float, served_model: str, request_id: str, finish_reason: str
    ) -> None:
        """`served_model` and `request_id`: what the provider says served the call, and its id for it."""
        ...

    def fail(self, error: BaseException) -> None: ...


class CallObserver(Protocol):
    """What the gateway reports as it works; metrics and logs implement it (server/observability)."""

    def provider_call(self, method: str, model: str, provider: ProviderName, started: float) -> ProviderCall:
        """A call has its provider and is about to be sent (`started`: perf_counter at the RPC's start)."""
        ...

    def failover(self, from_model: str, to_model: str, reason: str) -> None: ...

    def governance_violation(self, model: str, source_agent: str) -> None: ...
