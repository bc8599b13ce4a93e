"""The interfaces the core calls and others implement: ports, in the hexagonal sense.

    server/api ──▶ server/core ◀── server/providers      (adapters implement `Provider`)
                        ▲
                        └──────── server/observability   (metrics and logs implement `CallObserver`)

The core imports nothing of ours outside itself (an import-linter contract in pyproject.toml keeps it so):
whoever builds the gateway (`server/app.py`) hands it a provider per configured instance, an observer
and a clock.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
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


@dataclass(slots=True, frozen=True)
class Offer:
    """One deployment of a model as the capacity store sees it: its counters' key prefix, its weight and
    its configured limits per minute (requests, tokens, input tokens, output tokens; 0: not configured)."""

    key: str
    weight: float
    limits: tuple[int, int, int, int]


class CapacityStore(Protocol):
    """The providers' rate limits, counted for every replica (server/limits/capacity_*.py). Each operation
    is atomic. A limit of 0 in an offer means "use the limit learned from headers, if any, else none"."""

    async def take(
        self, offers: Sequence[Offer], costs: tuple[int, int, int, int], now: float
    ) -> tuple[int | None, float]:
        """Charge `costs` to the offer not cooling down where every limit fits them, the one with the most
        headroom left (times its weight): its index. None and the seconds until the earliest offer could
        fit, when none fits now."""
        ...

    async def adjust(self, offer: Offer, deltas: Sequence[int], now: float) -> None:
        """Correct a charge by `deltas` (actual minus reserved; negative gives back)."""
        ...

    async def learn(self, offer: Offer, dim: int, limit: int, remaining: int, now: float) -> None:
        """The provider says `limit` and `remaining` for one limit: remember the limit (used where none is
        configured) and count at least what it says is used."""
        ...

    async def cool(self, offer: Offer, until: float, now: float) -> None:
        """Send nothing to this offer before `until` (unix seconds) (a 429 arrived)."""
        ...

    async def usage(
        self, offer: Offer, now: float
    ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], float]:
        """The effective limits, what is used of each, and seconds of cooldown left."""
        ...

    async def aclose(self) -> None: ...
