"""One error hierarchy for the whole gateway. Each class names its canonical status code (the
google.rpc.Code space that gRPC shares); `server/api/status.py` turns an error into a gRPC status.

    GatewayError
    ├── InvalidRequest          caller input breaks a rule          → INVALID_ARGUMENT + BadRequest
    │   └── UnsupportedByModel  a field the model does not accept   → INVALID_ARGUMENT + BadRequest
    ├── MalformedRequest        request bytes are not the message    → INVALID_ARGUMENT
    ├── ModelNotAllowed         model outside the allowlist          → PERMISSION_DENIED + ErrorInfo
    ├── NoModelFits             no allowed model for a tier          → FAILED_PRECONDITION
    ├── Overloaded              provider's in-flight limit reached   → RESOURCE_EXHAUSTED + RetryInfo
    ├── CallerOverLimit         caller's own in-flight limit reached → RESOURCE_EXHAUSTED + QuotaFailure
    ├── ServerDraining          the server is shutting down          → UNAVAILABLE
    ├── DeadlineExceeded        caller deadline / request timeout    → DEADLINE_EXCEEDED
    └── ProviderError           anything a provider call raised (always names the provider)
        ├── ProviderBadRequest  provider 400/413/422                 → INVALID_ARGUMENT
        │   └── ContextLengthExceeded  the prompt is over the model's context window
        │                                                            → INVALID_ARGUMENT
        ├── ProviderAuthError   provider refused the gateway's key   → UNAVAILABLE (failover; unhealthy)
        ├── QuotaExhausted      billing / credit / daily quota gone  → RESOURCE_EXHAUSTED (failover)
        ├── ModelRetired        the provider does not know the model → FAILED_PRECONDITION (failover)
        ├── ProviderRateLimited 429 after retries                    → RESOURCE_EXHAUSTED + RetryInfo
        ├── ProviderUnavailable 5xx, 529, connection failure         → UNAVAILABLE
        ├── CircuitOpen         provider cooling down after failures → UNAVAILABLE
        └── ProviderTimeout     the provider did not answer in time  → DEADLINE_EXCEEDED

Only `ProviderRateLimited` and `ProviderUnavailable` are retried. Those marked (failover) and the
retryable ones may move to an operator's fallback model (`server/core/gateway.py` FAILOVER_ERRORS): the
provider, the key or the model cannot serve now, while the request itself is fine. Every
`ProviderError` carries, where known, the model it was for and the provider's own request id (ErrorInfo
metadata `model`, `provider_request_id`): the id support desks ask for.

Messages never contain a key: adapters build them from the provider's error body, and
`server/observability/redact.py` scrubs anything key-shaped on the way out all the same.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from server.core.types import ProviderName


class Code(enum.IntEnum):
    """The canonical status codes the gateway answers with (values as in google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class Origin(enum.StrEnum):
    """Who caused a call's outcome, as metrics and the call's log line report it: the caller (its
    input, credentials, limits, deadline or cancellation), the gateway itself, or the provider."""

    CALLER = "caller"
    GATEWAY = "gateway"
    PROVIDER = "provider"


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose. `reason` is the ErrorInfo reason."""

    reason = "GATEWAY_ERROR"
    code = Code.INTERNAL
    origin = Origin.GATEWAY

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def metadata(self) -> dict[str, str]:
        """Every dynamic value of the message, for google.rpc.ErrorInfo.metadata."""
        return {}


MESSAGE_VIOLATIONS = 5
"""Violations spelled out in an InvalidRequest's message; BadRequest lists more."""


@dataclass(slots=True, frozen=True)
class FieldViolation:
    field: str
    description: str


_LIMIT = re.compile(r"\[limit ([a-z_]+)\]")


class InvalidRequest(GatewayError):
    reason = "INVALID_REQUEST"
    code = Code.INVALID_ARGUMENT
    origin = Origin.CALLER

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        shown = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:MESSAGE_VIOLATIONS])
        more = len(self.violations) - MESSAGE_VIOLATIONS
        super().__init__(shown + (f" (and {more} more; see BadRequest)" if more > 0 else ""))

    def metadata(self) -> dict[str, str]:
        meta = {"fields": ",".join(dict.fromkeys(v.field for v in self.violations))}
        # A violation of a named limit (a schema's size, nesting, `$ref`s) says which, as `[limit name]`.
        limits = [found.group(1) for v in self.violations if (found := _LIMIT.search(v.description))]
        if limits:
            meta["limits"] = ",".join(dict.fromkeys(limits))
        return meta


class MalformedRequest(GatewayError):
    """The request bytes are not a valid protobuf message of the method's type (or hold invalid UTF-8)."""

    reason = "MALFORMED_REQUEST"
    code = Code.INVALID_ARGUMENT
    origin = Origin.CALLER

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type
        super().__init__(
            f"the request is not a valid {message_type} message (malformed protobuf or a string field "
            "that is not UTF-8)"
        )

    def metadata(self) -> dict[str, str]:
        return {"message_type": self.message_type}


class UnsupportedByModel(InvalidRequest):
    """The request uses something the model does not accept (catalogue capability flags): refused
    before any provider call rather than silently dropped or left to the provider to refuse."""

    reason = "UNSUPPORTED_BY_MODEL"

    def __init__(self, model: str, violations: Sequence[FieldViolation]) -> None:
        self.model = model
        super().__init__(violations)

    def metadata(self) -> dict[str, str]:
        return {**super().metadata(), "model": self.model}


class ModelNotAllowed(GatewayError):
    reason = "MODEL_NOT_ALLOWED"
    code = Code.PERMISSION_DENIED
    origin = Origin.CALLER

    def __init__(self, model: str, allowed: Sequence[str]) -> None:
        self.model = model
        self.allowed = tuple(allowed)
        super().__init__(f"model {model!r} is not allowed; allowed models: {', '.join(self.allowed)}")

    def metadata(self) -> dict[str, str]:
        return {"model": self.model, "allowed_models": ",".join(self.allowed)}


class Overloaded(GatewayError):
    """The gateway already has its limit of calls in flight to this provider."""

    reason = "GATEWAY_OVERLOADED"
    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, provider: ProviderName, limit: int, waited: float) -> None:
        self.provider = provider
        self.limit = limit
        self.retry_after = 1.0
        super().__init__(
            f"{provider}: the gateway has {limit} calls in flight to this provider "
            f"(waited {waited:g}s for a slot)"
        )

    def metadata(self) -> dict[str, str]:
        return {"provider": str(self.provider), "limit": str(self.limit)}


class CallerOverLimit(GatewayError):
    """The caller already has its limit of calls in flight; other callers are unaffected."""

    reason = "CALLER_CONCURRENCY_LIMIT"
    code = Code.RESOURCE_EXHAUSTED
    origin = Origin.CALLER

    def __init__(self, caller: str, limit: int) -> None:
        self.caller = caller
        self.limit = limit
        self.retry_after = 1.0
        super().__init__(
            f"{self.subject} has reached its limit of calls in flight ({limit}); retry when one of them ends"
        )

    @property
    def subject(self) -> str:
        """Who hit the limit: the source agent, or `anonymous` for the bucket of callers without one."""
        return self.caller or "anonymous"

    @property
    def description(self) -> str:
        """Which limit was hit (for google.rpc.QuotaFailure)."""
        return f"calls in flight per caller: at most {self.limit} (LLM_MAX_IN_FLIGHT_PER_CALLER)"

    def metadata(self) -> dict[str, str]:
        return {"caller": self.subject, "limit": str(self.limit)}


class NoModelFits(GatewayError):
    """Selection by tier or complexity found no allowed model with a configured provider."""

    reason = "NO_MODEL_FOR_TIER"
    code = Code.FAILED_PRECONDITION
    origin = Origin.CALLER

    def __init__(self, tier: str, why: str) -> None:
        self.tier = tier
        super().__init__(f"cannot select a model: {why}")

    def metadata(self) -> dict[str, str]:
        return {"tier": self.tier}


class ServerDraining(GatewayError):
    """The server is shutting down (the drain notice, server/api/draining.py): retry on another replica."""

    reason = "SERVER_DRAINING"
    code = Code.UNAVAILABLE

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another replica")


class DeadlineExceeded(GatewayError):
    reason = "DEADLINE_EXCEEDED"
    code = Code.DEADLINE_EXCEEDED
    origin = Origin.CALLER


class ProviderError(GatewayError):
    reason = "PROVIDER_ERROR"
    code = Code.UNAVAILABLE
    origin = Origin.PROVIDER
    retryable = False

    def __init__(
        self,
        provider: ProviderName,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        model: str | None = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (Retry-After / retry-after-ms), when it said."""
        self.request_id = request_id
        """The provider's own id of the failed request (x-request-id, request-id, ...), when it sent one."""
        self.model = model
        self.detail = message
        super().__init__(f"{provider}: {message}")

    def for_model(self, model: str, context_window: int) -> None:
        """Name the model the failed call was for (the facade knows it; the mapping of an SDK error
        may not). Subclasses that state a model limit add it here."""
        if self.model is None:
            self.model = model

    def metadata(self) -> dict[str, str]:
        meta = {"provider": str(self.provider)}
        if self.model:
            meta["model"] = self.model
        if self.request_id:
            meta["provider_request_id"] = self.request_id
        if self.status_code is not None:
            meta["http_status"] = str(self.status_code)
        return meta


class ProviderBadRequest(ProviderError):
    reason = "PROVIDER_REJECTED_REQUEST"
    code = Code.INVALID_ARGUMENT


class ContextLengthExceeded(ProviderBadRequest):
    """The prompt (with max_tokens, for some providers) does not fit the model's context window."""

    reason = "CONTEXT_LENGTH_EXCEEDED"
    code = Code.INVALID_ARGUMENT
    context_window: int | None = None
    """The model's limit, from the catalogue (set by `for_model`)."""

    def for_model(self, model: str, context_window: int) -> None:
        super().for_model(model, context_window)
        if self.context_window is None:
            self.context_window = context_window
            self.message = (
                f"{self.provider}: the prompt is longer than {model}'s context window of "
                f"{context_window} tokens ({self.detail})"
            )

    def metadata(self) -> dict[str, str]:
        meta = super().metadata()
        if self.context_window is not None:
            meta["context_window"] = str(self.context_window)
        return meta


class ProviderAuthError(ProviderError):
    """The provider refused the gateway's own key: an operator must fix it; another provider may serve."""

    reason = "PROVIDER_AUTH_FAILED"
    code = Code.UNAVAILABLE


class QuotaExhausted(ProviderError):
    """Billing, credit or a daily quota is used up: retrying within the call cannot help."""

    reason = "QUOTA_EXHAUSTED"
    code = Code.RESOURCE_EXHAUSTED


class ModelRetired(ProviderError):
    """The provider does not serve the model (retired, renamed, or never there): HTTP 404."""

    reason = "MODEL_RETIRED"
    code = Code.FAILED_PRECONDITION


class ProviderRateLimited(ProviderError):
    reason = "PROVIDER_RATE_LIMITED"
    code = Code.RESOURCE_EXHAUSTED
    retryable = True


class ProviderUnavailable(ProviderError):
    reason = "PROVIDER_UNAVAILABLE"
    code = Code.UNAVAILABLE
    retryable = True


class CircuitOpen(ProviderError):
    """The provider failed too often lately; calls fail fast until its cool-down ends."""

    reason = "PROVIDER_CIRCUIT_OPEN"
    code = Code.UNAVAILABLE

    def __init__(self, provider: ProviderName, seconds_left: float) -> None:
        super().__init__(
            provider,
            f"failing fast after repeated failures; the next trial call in {seconds_left:.1f}s",
            retry_after=seconds_left,
        )


class ProviderTimeout(ProviderError):
    """The attempt used up its timeout, which is already the whole remaining budget: not retried."""

    reason = "PROVIDER_TIMEOUT"
    code = Code.DEADLINE_EXCEEDED
