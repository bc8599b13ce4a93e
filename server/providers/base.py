"""The interface every provider adapter implements, and what they share."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Protocol

import httpx2

from server.core.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
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


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The provider's requested wait: `retry-after-ms` (milliseconds) first, then `retry-after`
    (seconds or an HTTP date), as the official SDKs read them. None when absent or unreadable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def error_for_status(
    provider: ProviderName, status: int, message: str, headers: Mapping[str, str]
) -> ProviderError:
    """The core error for a provider's HTTP error status. `message` is the provider's own text from the
    error body; for an authentication failure it is replaced, since it may echo part of the key."""
    retry_after = retry_after_seconds(headers)
    if status in (401, 403):
        return ProviderAuthError(
            provider,
            "the provider refused the gateway's API key (an operator must fix it)",
            status_code=status,
        )
    if status == 429:
        return ProviderRateLimited(
            provider, message or "rate limited", status_code=status, retry_after=retry_after
        )
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(
            provider, message or f"HTTP {status}", status_code=status, retry_after=retry_after
        )
    return ProviderBadRequest(provider, message or f"HTTP {status}", status_code=status)


def body_message(body: object) -> str:
    """The `message` of a provider error body ({"error": {"message": ...}} or {"message": ...})."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return ""


def caused_by_refused_connection(error: BaseException) -> bool:
    """Whether a timeout error really hides a failed connection: the SDKs' vendored aiohttp transport
    reports a refused connection as a ConnectTimeout. Walks the cause chain for a non-timeout OSError."""
    seen: BaseException | None = error.__cause__ or error.__context__
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def map_stainless_error(provider: ProviderName, error: Exception, sdk: ModuleType) -> ProviderError | None:
    """The core error for an exception of the `openai` or `anthropic` SDK (both generated by Stainless,
    with the same error classes) or of their HTTP transport; None for anything else.

    Covers the call and the stream iteration alike: an error event inside a stream that began with
    HTTP 200 and a connection cut mid-stream are UNAVAILABLE, an event that is not JSON too."""
    if isinstance(error, sdk.APITimeoutError):
        if caused_by_refused_connection(error):  # the vendored aiohttp transport's ConnectTimeout
            return ProviderUnavailable(provider, "connection failed (refused)")
        return ProviderTimeout(provider, "the request timed out")
    if isinstance(error, sdk.APIConnectionError):
        cause = error.__cause__ or error.__context__
        return ProviderUnavailable(provider, f"connection failed ({type(cause or error).__name__})")
    if isinstance(error, sdk.APIStatusError):
        message = getattr(error, "api_message", None) or body_message(error.body)
        if error.status_code < 400:  # Anthropic: an `error` event in a stream that began with HTTP 200
            return ProviderUnavailable(provider, f"stream failed: {message}")
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        return error_for_status(provider, error.status_code, message, headers)
    if isinstance(error, sdk.APIError):  # OpenAI: an error event in a stream that began with HTTP 200
        return ProviderUnavailable(provider, f"stream failed: {body_message(error.body)}")
    if isinstance(error, httpx2.TimeoutException):  # raised by the transport while a stream is read
        return ProviderTimeout(provider, "the stream timed out")
    if isinstance(error, httpx2.TransportError):
        return ProviderUnavailable(provider, f"connection failed mid-stream ({type(error).__name__})")
    if isinstance(error, ValueError):  # an SSE event whose data is not JSON
        return ProviderUnavailable(provider, "the provider sent a malformed stream event")
    return None
