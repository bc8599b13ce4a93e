"""Core errors → gRPC status with google.rpc rich details (the code is the error class's own)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.core.capacity import CapacityUnavailable, UpstreamCapacity
from server.core.errors import (
    CallerOverLimit,
    FieldViolation,
    GatewayError,
    InvalidRequest,
    Overloaded,
    ProviderRateLimited,
)
from server.core.limits import CallerLimitReached, LimitsUnavailable
from server.observability.redact import Redactor

ERROR_DOMAIN = "llm-grpc.llm.v1"
DEFAULT_RETRY_DELAY_S = 1.0
MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 100
MAX_DESCRIPTION_CHARS = 200
MAX_MESSAGE_CHARS = 400
MAX_METADATA_VALUE_CHARS = 300
MAX_STATUS_BYTES = 3500


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: GatewayError, redact: Redactor) -> grpc.Status:
    """The gRPC status of `error`: code, redacted message, ErrorInfo and the details that apply.

    Bounded whatever the error holds: at most MAX_VIOLATIONS field violations (then one entry saying how
    many more), clipped texts, and a whole status under MAX_STATUS_BYTES, so that it always fits in the
    trailers (8 KB by default in gRPC, and base64 makes the details a third larger)."""
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason,
                domain=ERROR_DOMAIN,
                metadata={
                    key: _clip(redact(value), MAX_METADATA_VALUE_CHARS)
                    for key, value in error.metadata().items()
                },
            )
        )
    ]
    if isinstance(error, CallerOverLimit | CallerLimitReached):
        details.append(_pack(_quota_failure(error.subject, error.description, redact)))
    never_fits = isinstance(error, CallerLimitReached) and not error.fits_later
    if not never_fits and isinstance(
        error,
        ProviderRateLimited
        | Overloaded
        | CallerOverLimit
        | CallerLimitReached
        | LimitsUnavailable
        | UpstreamCapacity
        | CapacityUnavailable,
    ):
        delay = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_DELAY_S
        retry_delay = duration_pb2.Duration()
        retry_delay.FromNanoseconds(int(delay * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=retry_delay)))
    message = _clip(redact(error.message), MAX_MESSAGE_CHARS)
    status = status_pb2.Status(code=int(error.code), message=message, details=details)
    if isinstance(error, InvalidRequest):
        keep = MAX_VIOLATIONS
        while True:  # fewer listed violations until the whole status fits
            bad_request = _pack(_bad_request(error.violations, keep, redact))
            if keep <= 1 or status.ByteSize() + bad_request.ByteSize() + 8 <= MAX_STATUS_BYTES:
                break
            keep //= 2
        status.details.append(bad_request)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _bad_request(
    violations: Sequence[FieldViolation], keep: int, redact: Redactor
) -> error_details_pb2.BadRequest:
    listed = [
        error_details_pb2.BadRequest.FieldViolation(
            field=_clip(v.field, MAX_FIELD_CHARS),
            description=_clip(redact(v.description), MAX_DESCRIPTION_CHARS),
        )
        for v in violations[:keep]
    ]
    if len(violations) > keep:
        listed.append(
            error_details_pb2.BadRequest.FieldViolation(
                field="request",
                description=f"{len(violations) - keep} more violations not listed "
                f"({len(violations)} in all); fix these and retry to see the rest",
            )
        )
    return error_details_pb2.BadRequest(field_violations=listed)


def _clip(text: str, limit: int) -> str:
    """`text` in at most `limit` UTF-8 bytes (gRPC percent-encodes each non-ASCII byte of a message)."""
    if len(text.encode()) <= limit:
        return text
    return text.encode()[: limit - 40].decode(errors="ignore") + f"… ({len(text)} characters in all)"


def _quota_failure(subject: str, description: str, redact: Redactor) -> error_details_pb2.QuotaFailure:
    """Who ran out of what: the caller, and the limit it reached."""
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(subject=redact(subject), description=description)
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
