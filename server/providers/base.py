"""What every provider adapter shares: its settings, its spec (what the rest of the gateway knows of a
provider kind), the error mapping of provider HTTP errors, and the base of the two Stainless-generated
SDKs (openai, anthropic). The interface itself, `Provider`, is the core's (server/core/ports.py)."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from server.core.errors import (
    ContextLengthExceeded,
    ModelRetired,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    QuotaExhausted,
)
from server.core.ports import Provider
from server.core.types import FinishReason, ProviderName
from server.emulators.base import Emulator

log = structlog.get_logger("llm_grpc.provider")


@dataclass(slots=True, frozen=True)
class ProviderSpec:
    """Everything the gateway knows of a provider *kind*; each adapter module exports one (`SPEC`) and
    server/providers/registry.py lists them. Configuration, redaction, demo mode and app wiring derive
    from the registry, so adding a provider touches no list elsewhere (docs/adding-a-provider.md)."""

    kind: str
    """The kind's name; also the name of its standard instance ("openai")."""
    key_settings: tuple[str, ...]
    """The settings (environment variables) its key is read from, first set wins; Settings has a field
    of the same name, lower-cased."""
    base_url_setting: str
    """The setting that points the standard instance elsewhere (an emulator, a proxy)."""
    key_pattern: re.Pattern[str]
    """The shape of this provider's keys: scrubbed from every log line, error and response."""
    default_base_url: str
    """Where the SDK sends requests when no base URL is set (documentation; the SDK knows it too)."""
    factory: Callable[[ProviderSettings], Provider]
    """Builds the adapter (its one SDK client) for an instance."""
    emulator: Callable[[str], Emulator]
    """Builds the bundled emulator of this provider's HTTP API for a key (demo mode and tests)."""


@dataclass(slots=True, frozen=True)
class ProviderSettings:
    """What an adapter needs to build its one SDK client for the life of the process: one configured
    provider instance."""

    name: ProviderName
    """The instance's name (the kind's name for the standard instance, or the operator's own)."""
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
    reasoning_summaries: bool = True
    """OpenAI kind, Responses API: ask for reasoning summaries when a request sets reasoning."""
    vertex_project: str | None = None
    """Anthropic kind only: Claude on Google Vertex AI in this project (`api_key`: an access token, or
    empty for Application Default Credentials)."""
    vertex_region: str = "global"
    probe_model: str | None = None
    """A model of this provider the health probe may name, where the probe needs one (Vertex AI)."""


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
