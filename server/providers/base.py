"""The interface every provider adapter implements, and what they share."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from server.core.types import CallOptions, ChatRequest, Completion, ProviderName, StreamEvent


@dataclass(slots=True, frozen=True)
class ProviderSettings:
    """What an adapter needs to build its one SDK client for the life of the process."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    max_connections: int = 2000
    """Connection pool size: at or above the concurrency the gateway must carry per provider."""
    default_max_tokens: int = 4096
    """Used where the API requires max_tokens (Anthropic) and the caller left it unset."""


class Provider(Protocol):
    """A provider adapter: translates core types to one SDK and back, and maps its errors.

    Contract:
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

    async def aclose(self) -> None:
        """Release the SDK client and its connection pool."""
        ...
