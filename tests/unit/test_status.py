"""Core errors → gRPC status (`server/api/status.py`): each error class's code, ErrorInfo reason and
metadata, and the details that apply (BadRequest, RetryInfo, QuotaFailure) — one table row per class, and
a check that no class of the hierarchy is missing from the table."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

import server.core.auth
import server.core.errors
import server.core.limits
from server.api.status import ERROR_DOMAIN, MAX_STATUS_BYTES, internal_status, to_status
from server.core.auth import MethodNotAllowed, Unauthenticated
from server.core.errors import (
    CallerOverLimit,
    CircuitOpen,
    ContextLengthExceeded,
    DeadlineExceeded,
    FieldViolation,
    GatewayError,
    InvalidRequest,
    MalformedRequest,
    ModelNotAllowed,
    ModelRetired,
    NoModelFits,
    Overloaded,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    ServerDraining,
    UnsupportedByModel,
)
from server.core.limits import CallerLimitReached, Check, LimitKind, LimitsUnavailable
from server.observability.redact import REDACTED, Redactor

OPENAI = "openai"
KEY = "sk-test-openai-0123456789abcdef"


@dataclass
class Rendered:
    code: int
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    quota: dict[str, str] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)


def _render(status: grpc.Status) -> Rendered:
    """The google.rpc.Status a client would read from the trailers."""
    [(key, raw)] = [(k, v) for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    assert key == "grpc-status-details-bin"
    proto = status_pb2.Status.FromString(raw)
    assert proto.code == status.code.value[0]
    result = Rendered(code=proto.code, message=proto.message)
    for detail in proto.details:
        result.kinds.append(detail.TypeName().rsplit(".", 1)[-1])
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason, result.domain, result.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            result.quota = {v.subject: v.description for v in quota.violations}
    return result


def _budget_check() -> Check:
    return Check(
        key="k", kind=LimitKind.USD_PER_DAY, scope="caller", limit=5_000_000, cost=10, expires_at=0.0
    )


BAD = [FieldViolation("temperature", "must be between 0 and 2")]
# error, code, reason, detail kinds after ErrorInfo, metadata
TABLE: list[tuple[GatewayError, int, str, list[str], dict[str, str]]] = [
    (
        InvalidRequest(BAD),
        code_pb2.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        ["BadRequest"],
        {"fields": "temperature"},
    ),
    (
        UnsupportedByModel("o3", [FieldViolation("top_p", "o3 does not accept top_p")]),
        code_pb2.INVALID_ARGUMENT,
        "UNSUPPORTED_BY_MODEL",
        ["BadRequest"],
        {"fields": "top_p", "model": "o3"},
    ),
    (
        MalformedRequest("llm.v1.CompleteRequest"),
        code_pb2.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        [],
        {"message_type": "llm.v1.CompleteRequest"},
    ),
    (
        ModelNotAllowed("gpt-9", ["a", "b"]),
        code_pb2.PERMISSION_DENIED,
        "MODEL_NOT_ALLOWED",
        [],
        {"model": "gpt-9", "allowed_models": "a,b"},
    ),
    (
        NoModelFits("premium", "none"),
        code_pb2.FAILED_PRECONDITION,
        "NO_MODEL_FOR_TIER",
        [],
        {"tier": "premium"},
    ),
    (
        Overloaded(OPENAI, 8, 0.5),
        code_pb2.RESOURCE_EXHAUSTED,
        "GATEWAY_OVERLOADED",
        ["RetryInfo"],
        {"provider": "openai", "limit": "8"},
    ),
    (
        CallerOverLimit("planner", 2),
        code_pb2.RESOURCE_EXHAUSTED,
        "CALLER_CONCURRENCY_LIMIT",
        ["QuotaFailure", "RetryInfo"],
        {"caller": "planner", "limit": "2"},
    ),
    (DeadlineExceeded("late"), code_pb2.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", [], {}),
    (ServerDraining(), code_pb2.UNAVAILABLE, "SERVER_DRAINING", [], {}),
    (
        ProviderError(OPENAI, "odd", status_code=418),
        code_pb2.UNAVAILABLE,
        "PROVIDER_ERROR",
        [],
        {"provider": "openai", "http_status": "418"},
    ),
    (
        ProviderBadRequest(OPENAI, "bad", status_code=400, request_id="req_1", model="gpt-5.4-mini"),
        code_pb2.INVALID_ARGUMENT,
        "PROVIDER_REJECTED_REQUEST",
        [],
        {"provider": "openai", "http_status": "400", "provider_request_id": "req_1", "model": "gpt-5.4-mini"},
    ),
    (
        ContextLengthExceeded(OPENAI, "too long", status_code=400),
        code_pb2.INVALID_ARGUMENT,
        "CONTEXT_LENGTH_EXCEEDED",
        [],
        {"provider": "openai", "http_status": "400"},
    ),
    (
        ProviderAuthError(OPENAI, "refused", status_code=401),
        code_pb2.UNAVAILABLE,
        "PROVIDER_AUTH_FAILED",
        [],
        {"provider": "openai", "http_status": "401"},
    ),
    (
        QuotaExhausted(OPENAI, "billing", status_code=429),
        code_pb2.RESOURCE_EXHAUSTED,
        "QUOTA_EXHAUSTED",
        [],
        {"provider": "openai", "http_status": "429"},
    ),
    (
        ModelRetired(OPENAI, "gone", status_code=404),
        code_pb2.FAILED_PRECONDITION,
        "MODEL_RETIRED",
        [],
        {"provider": "openai", "http_status": "404"},
    ),
    (
        ProviderRateLimited(OPENAI, "slow", status_code=429, retry_after=7.0),
        code_pb2.RESOURCE_EXHAUSTED,
        "PROVIDER_RATE_LIMITED",
        ["RetryInfo"],
        {"provider": "openai", "http_status": "429"},
    ),
    (
        ProviderUnavailable(OPENAI, "503", status_code=503),
        code_pb2.UNAVAILABLE,
        "PROVIDER_UNAVAILABLE",
        [],
        {"provider": "openai", "http_status": "503"},
    ),
    (CircuitOpen(OPENAI, 12.0), code_pb2.UNAVAILABLE, "PROVIDER_CIRCUIT_OPEN", [], {"provider": "openai"}),
    (
        ProviderTimeout(OPENAI, "slow"),
        code_pb2.DEADLINE_EXCEEDED,
        "PROVIDER_TIMEOUT",
        [],
        {"provider": "openai"},
    ),
    (Unauthenticated("the token has expired"), code_pb2.UNAUTHENTICATED, "UNAUTHENTICATED", [], {}),
    (
        MethodNotAllowed("GetMetrics", ["agent"]),
        code_pb2.PERMISSION_DENIED,
        "METHOD_NOT_ALLOWED",
        [],
        {"method": "GetMetrics", "roles": "agent"},
    ),
    (
        CallerLimitReached("planner", _budget_check(), None),
        code_pb2.RESOURCE_EXHAUSTED,
        "BUDGET_EXCEEDED",
        ["QuotaFailure", "RetryInfo"],
        {"identity": "planner", "limit": "usd_per_day", "scope": "caller", "value": "$5"},
    ),
    (LimitsUnavailable(), code_pb2.UNAVAILABLE, "LIMITS_UNAVAILABLE", ["RetryInfo"], {}),
]


@pytest.mark.parametrize(
    ("error", "code", "reason", "details", "metadata"), TABLE, ids=[type(row[0]).__name__ for row in TABLE]
)
def test_each_error_class_maps_to_its_code_reason_details_and_metadata(
    error: GatewayError, code: int, reason: str, details: list[str], metadata: dict[str, str]
) -> None:
    rendered = _render(to_status(error, Redactor()))

    assert rendered.code == code
    assert rendered.message == error.message
    assert (rendered.reason, rendered.domain) == (reason, ERROR_DOMAIN)
    assert rendered.kinds == ["ErrorInfo", *details]
    assert rendered.metadata == metadata


def _subclasses(cls: type[GatewayError]) -> set[type[GatewayError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_the_table_covers_every_error_class_of_the_core() -> None:
    modules = {server.core.errors.__name__, server.core.auth.__name__, server.core.limits.__name__}
    classes = {c for c in _subclasses(GatewayError) if c.__module__ in modules}

    assert classes <= {type(row[0]) for row in TABLE}


def test_retry_info_carries_the_providers_own_delay_else_the_default() -> None:
    limited = _render(to_status(ProviderRateLimited(OPENAI, "slow", retry_after=7.0), Redactor()))
    unknown = _render(to_status(ProviderRateLimited(OPENAI, "slow"), Redactor()))
    circuit = _render(to_status(CallerLimitReached("p", _budget_check(), 2.5), Redactor()))

    assert limited.retry_delay == 7.0
    assert unknown.retry_delay == 1.0
    assert circuit.retry_delay == 2.5


def test_bad_request_and_quota_failure_say_which_field_and_which_limit() -> None:
    bad = _render(to_status(InvalidRequest(BAD), Redactor()))
    quota = _render(to_status(CallerOverLimit("planner", 2), Redactor()))

    assert bad.violations == {"temperature": "must be between 0 and 2"}
    assert quota.quota == {"planner": "calls in flight per caller: at most 2 (LLM_MAX_IN_FLIGHT_PER_CALLER)"}


def test_keys_are_scrubbed_from_message_metadata_and_violations() -> None:
    leaky = ProviderBadRequest(OPENAI, f"Incorrect API key provided: {KEY}", request_id=KEY)
    bad = InvalidRequest([FieldViolation("stop[0]", f"contains {KEY}")])

    shown = [_render(to_status(leaky, Redactor([KEY]))), _render(to_status(bad, Redactor([KEY])))]

    assert KEY not in repr(shown)
    assert REDACTED in shown[0].message
    assert shown[0].metadata["provider_request_id"] == REDACTED
    assert shown[1].violations == {"stop[0]": f"contains {REDACTED}"}


def test_a_huge_invalid_request_still_fits_in_the_trailers() -> None:
    many = [FieldViolation(f"messages[{i}].role", "x" * 500) for i in range(200)]

    status = to_status(InvalidRequest(many), Redactor())

    rendered = _render(status)
    assert len(dict(status.trailing_metadata)["grpc-status-details-bin"]) <= MAX_STATUS_BYTES
    assert "more violations not listed" in rendered.violations["request"]


def test_an_internal_error_names_only_its_trace_id() -> None:
    rendered = _render(internal_status("abc123"))

    assert rendered.code == code_pb2.INTERNAL
    assert rendered.message == "internal error in the gateway (trace id abc123)"
    assert (rendered.reason, rendered.metadata) == ("INTERNAL", {"trace_id": "abc123"})
