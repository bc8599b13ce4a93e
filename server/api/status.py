"""Core errors → gRPC status with google.rpc rich details (the code is the error class's own)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.core.errors import CallerOverLimit, GatewayError, InvalidRequest, Overloaded, ProviderRateLimited
from server.observability.redact import Redactor

ERROR_DOMAIN = "llm-grpc.llm.v1"
DEFAULT_RETRY_DELAY_S = 1.0


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: GatewayError, redact: Redactor) -> grpc.Status:
    """The gRPC status of `error`: code, redacted message, ErrorInfo and the details that apply."""
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason,
                domain=ERROR_DOMAIN,
                metadata={key: redact(value) for key, value in error.metadata().items()},
            )
        )
    ]
    if isinstance(error, InvalidRequest):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, CallerOverLimit):
        details.append(_pack(_quota_failure(error, redact)))
    if isinstance(error, ProviderRateLimited | Overloaded | CallerOverLimit):
        delay = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_DELAY_S
        retry_delay = duration_pb2.Duration()
        retry_delay.FromNanoseconds(int(delay * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=retry_delay)))
    status = status_pb2.Status(code=int(error.code), message=redact(error.message), details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _quota_failure(error: CallerOverLimit, redact: Redactor) -> error_details_pb2.QuotaFailure:
    """Who ran out of what: the caller, and the limit it reached."""
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=redact(error.subject), description=error.description
            )
        ]
    )


def internal_status(trace_id: str) -> grpc.Status:
    """For a bug: say so without leaking its text; the log line with the same trace id has the rest."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error in the gateway (trace id {trace_id})",
        details=[
            _pack(
                error_details_pb2.ErrorInfo(
                    reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"trace_id": trace_id}
                )
            )
        ],
    )
    result: grpc.Status = rpc_status.to_status(status)
    return result
