"""Typed exceptions built from the gateway's gRPC status and its google.rpc rich details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass
class LLMError(Exception):
    """Any error status from the gateway. `reason` and `metadata` come from google.rpc.ErrorInfo."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_delay: float | None = None
    quota_violations: list[tuple[str, str]] = field(default_factory=list)
    """google.rpc.QuotaFailure: (subject, description) pairs: who reached which limit."""

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(LLMError):
    """The request broke a rule; `field_violations` lists (field, description) pairs."""


class ModelNotAllowed(LLMError):
    """The model is outside the gateway's allowlist."""

    @property
    def allowed_models(self) -> list[str]:
        return [m for m in self.metadata.get("allowed_models", "").split(",") if m]


class RateLimited(LLMError):
    """The provider still rate-limits after the gateway's retries; wait `retry_delay` seconds."""


class QuotaExceeded(RateLimited):
    """The caller's own rate limit, concurrency limit or budget is used up (see `quota_violations`, and
    GetQuota); wait `retry_delay` seconds."""


class Unavailable(LLMError):
    """The provider (or the gateway) cannot serve now; safe to retry later."""


class DeadlineExceeded(LLMError):
    """The deadline passed before the answer."""


class ProviderError(LLMError):
    """The provider refused the gateway itself (e.g. its key); not the caller's fault."""


_BY_CODE: dict[grpc.StatusCode, type[LLMError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: ProviderError,
}
_BY_REASON: dict[str, type[LLMError]] = {
    "MODEL_NOT_ALLOWED": ModelNotAllowed,
    # UNAVAILABLE since the gateway stopped calling a refused key INTERNAL: still the operator's problem.
    "PROVIDER_AUTH_FAILED": ProviderError,
    "RATE_LIMIT_EXCEEDED": QuotaExceeded,
    "TOKEN_RATE_LIMIT_EXCEEDED": QuotaExceeded,
    "CONCURRENCY_LIMIT_EXCEEDED": QuotaExceeded,
    "BUDGET_EXCEEDED": QuotaExceeded,
    "CALLER_CONCURRENCY_LIMIT": QuotaExceeded,
}


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> LLMError:
    """The typed exception for a failed call, with every rich detail the status carried."""
    reason, metadata, violations, retry_delay = "", {}, [], None
    quota: list[tuple[str, str]] = []
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            quota = [(v.subject, v.description) for v in failure.violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    code: grpc.StatusCode = error.code()
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, LLMError)
    return cls(
        code=code,
        message=error.details() or "",
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
        quota_violations=quota,
    )
