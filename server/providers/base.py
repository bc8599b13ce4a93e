"""The interface every provider adapter implements, and what they share."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import httpx2
import structlog

from server.core.errors import (
    ContextLengthExceeded,
    ModelRetired,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
)
from server.core.types import CallOptions, ChatRequest, Completion, FinishReason, ProviderName, StreamEvent

log = structlog.get_logger("llm_grpc.provider")


@dataclass(slots=True, frozen=True)
class ProviderSettings:
    """What an adapter needs to build its one SDK client for the life of the process."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    max_connections: int = 2000
    """Connection pool size: at or above the concurrency the gateway must carry per provider."""
    default_max_tokens: int = 4096
    """Used where the API requires max_tokens (Anthropic) and the caller left it unset."""
    azure_endpoint: str | None = None
    """OpenAI kind only: an Azure OpenAI resource (https://<name>.openai.azure.com) instead of OpenAI."""
    api_version: str = "2024-10-21"
    """With `azure_endpoint`: the Azure OpenAI API version."""
    vertex_project: str | None = None
    """Anthropic kind only: Claude on Google Vertex AI in this project (`api_key`: an access token, or
    empty for Application Default Credentials)."""
    vertex_region: str = "global"
    probe_model: str | None = None
    """A model of this provider the health probe may name, where the probe needs one (Vertex AI)."""


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

    async def list_models(self, timeout: float) -> list[str]:
        """Every model id the provider serves to this key, through the SDK's `models.list` (all pages)."""
        ...

    async def aclose(self) -> None:
        """Release the SDK client and its connection pool."""
        ...


def finish_reason(provider: ProviderName, raw: str | None, table: Mapping[str, FinishReason]) -> FinishReason:
    """The core finish reason of a provider's raw one. Each adapter's table lists every value its SDK
    defines; one the table does not know (a newer API) is OTHER, and logged with its raw value."""
    if raw is None:
        return FinishReason.UNSPECIFIED
    known = table.get(raw)
    if known is None:
        log.warning("provider.unknown_finish_reason", provider=str(provider), finish_reason=raw)
        return FinishReason.OTHER
    return known


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


# The error `type` (Anthropic, OpenAI) or `code` (OpenAI) of an error body, as the HTTP status it stands
# for: an error event inside a stream that began with HTTP 200 is classified by it as a unary error is.
STATUS_OF_ERROR_KIND = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
QUOTA_KINDS = frozenset({"insufficient_quota", "billing_error"})
CONTEXT_KINDS = frozenset({"context_length_exceeded"})
# The providers' own words for a prompt over the context window (Anthropic: "prompt is too long: N tokens
# > M maximum", or "input length and `max_tokens` exceed context limit: N + K > M"; Gemini: "The input
# token count (N) exceeds the maximum number of tokens allowed (M)."; OpenAI's code says it, its message
# "maximum context length") and for exhausted credit (Anthropic answers 400 invalid_request_error "Your
# credit balance is too low").
_CONTEXT_WORDS = re.compile(
    r"prompt is too long|exceed context limit|input token count.*exceeds the maximum|maximum context length",
    re.I | re.S,
)
_CREDIT_WORDS = re.compile(r"credit balance is too low", re.I)


@dataclass(slots=True, frozen=True)
class ErrorBody:
    """What a provider error body says: its message and its `type` / `code` (empty when absent)."""

    message: str = ""
    kind: str = ""
    code: str = ""

    @classmethod
    def of(cls, body: object) -> ErrorBody:
        """Read {"error": {"message", "type", "code"}} or the inner object alone."""
        inner = body.get("error", body) if isinstance(body, Mapping) else None
        if not isinstance(inner, Mapping):
            return cls()
        message, kind, code = inner.get("message"), inner.get("type"), inner.get("code")
        return cls(
            message if isinstance(message, str) else "",
            kind if isinstance(kind, str) else "",
            code if isinstance(code, str) else "",
        )


def error_for_status(
    provider: ProviderName,
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    kind: str = "",
    code: str = "",
    request_id: str | None = None,
    quota_exhausted: bool = False,
) -> ProviderError:
    """The core error for a provider's error: its HTTP status (for an error event in a stream that began
    with 200, the status its `kind` stands for), its body's message, `type` and `code`, and headers.
    `message` is replaced for an authentication failure, since it may echo part of the key."""
    if status < 400:
        status = STATUS_OF_ERROR_KIND.get(code) or STATUS_OF_ERROR_KIND.get(kind) or 500
    retry_after = retry_after_seconds(headers)
    common: dict[str, Any] = {"status_code": status, "request_id": request_id}
    text = message or f"HTTP {status}"
    if quota_exhausted or QUOTA_KINDS & {kind, code} or _CREDIT_WORDS.search(message):
        return QuotaExhausted(provider, f"quota or credit exhausted: {text}", **common)
    if CONTEXT_KINDS & {kind, code} or (status in (400, 413) and _CONTEXT_WORDS.search(message)):
        return ContextLengthExceeded(provider, text, **common)
    if status in (401, 403):
        return ProviderAuthError(
            provider, "the provider refused the gateway's API key (an operator must fix it)", **common
        )
    if status == 404:
        return ModelRetired(provider, f"the provider does not serve this model: {text}", **common)
    if status == 429:
        return ProviderRateLimited(provider, message or "rate limited", retry_after=retry_after, **common)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(provider, text, retry_after=retry_after, **common)
    return ProviderBadRequest(provider, text, **common)


def body_message(body: object) -> str:
    """The `message` of a provider error body ({"error": {"message": ...}} or {"message": ...})."""
    return ErrorBody.of(body).message


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


def map_stainless_error(
    provider: ProviderName, error: Exception, sdk: ModuleType, *, request_id: str | None = None
) -> ProviderError | None:
    """The core error for an exception of the `openai` or `anthropic` SDK (both generated by Stainless,
    with the same error classes) or of their HTTP transport; None for anything else.

    Covers the call and the stream iteration alike: an error event inside a stream that began with
    HTTP 200 is classified by its error type as the same error would be at the call (an `overloaded_error`
    is UNAVAILABLE, a `rate_limit_error` RESOURCE_EXHAUSTED, ...); a connection cut mid-stream and an event
    that is not JSON are UNAVAILABLE. `request_id` is the stream's, for errors that carry no response."""
    if isinstance(error, sdk.APITimeoutError):
        if caused_by_refused_connection(error):  # the vendored aiohttp transport's ConnectTimeout
            return ProviderUnavailable(provider, "connection failed (refused)", request_id=request_id)
        return ProviderTimeout(provider, "the request timed out", request_id=request_id)
    if isinstance(error, sdk.APIConnectionError):
        cause = error.__cause__ or error.__context__
        return ProviderUnavailable(
            provider, f"connection failed ({type(cause or error).__name__})", request_id=request_id
        )
    if isinstance(error, sdk.APIStatusError):
        body = ErrorBody.of(error.body)
        message = body.message or getattr(error, "api_message", None) or ""
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        return error_for_status(
            provider,
            error.status_code,  # 200 for an Anthropic `error` event: classified by its type
            message if error.status_code >= 400 else f"stream failed: {message}",
            headers,
            kind=body.kind,
            code=body.code,
            request_id=getattr(error, "request_id", None) or _body_request_id(error.body) or request_id,
        )
    if isinstance(error, sdk.APIError):  # OpenAI: an error event in a stream that began with HTTP 200
        body = ErrorBody.of(error.body)
        return error_for_status(
            provider,
            200,
            f"stream failed: {body.message or 'an error event'}",
            {},
            kind=body.kind,
            code=body.code,
            request_id=request_id,
        )
    if isinstance(error, httpx2.TimeoutException):  # raised by the transport while a stream is read
        return ProviderTimeout(provider, "the stream timed out", request_id=request_id)
    if isinstance(error, httpx2.TransportError):
        return ProviderUnavailable(
            provider, f"connection failed mid-stream ({type(error).__name__})", request_id=request_id
        )
    if isinstance(error, ValueError):  # an SSE event whose data is not JSON
        return ProviderUnavailable(
            provider, "the provider sent a malformed stream event", request_id=request_id
        )
    return None


def _body_request_id(body: object) -> str | None:
    """Anthropic repeats the request id in its error body (`request_id`)."""
    value = body.get("request_id") if isinstance(body, Mapping) else None
    return value if isinstance(value, str) and value else None
