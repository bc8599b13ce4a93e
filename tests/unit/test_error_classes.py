"""The one classification of provider errors (`error_for_status`), on the providers' real bodies."""

from __future__ import annotations

import pytest

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
from server.providers.base import ErrorBody, error_for_status

OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
ANTHROPIC_CREDIT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
        "to upgrade or purchase credits.",
    },
}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, OPENAI_QUOTA, QuotaExhausted),
        (400, ANTHROPIC_CREDIT, QuotaExhausted),
        (402, {"type": "error", "error": {"type": "billing_error", "message": "billing"}}, QuotaExhausted),
        (
            429,
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
            ProviderRateLimited,
        ),
        (
            401,
            {"error": {"message": "Incorrect API key provided: sk-...", "code": "invalid_api_key"}},
            ProviderAuthError,
        ),
        (403, {"type": "error", "error": {"type": "permission_error", "message": "no"}}, ProviderAuthError),
        (
            404,
            {"error": {"message": "The model `gpt-4-32k` does not exist", "code": "model_not_found"}},
            ModelRetired,
        ),
        (
            404,
            {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-2.1"}},
            ModelRetired,
        ),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 128000 tokens.",
                    "code": "context_length_exceeded",
                }
            },
            ContextLengthExceeded,
        ),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 208310 tokens > 200000 maximum",
                },
            },
            ContextLengthExceeded,
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "The input token count (1200000) exceeds the maximum number of tokens "
                    "allowed (1048576).",
                    "status": "INVALID_ARGUMENT",
                }
            },
            ContextLengthExceeded,
        ),
        (
            400,
            {"error": {"message": "Invalid 'temperature'", "type": "invalid_request_error"}},
            ProviderBadRequest,
        ),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ProviderUnavailable,
        ),
        (500, {"error": {"message": "boom", "type": "server_error"}}, ProviderUnavailable),
        # An error event inside a stream that began with HTTP 200: its type decides.
        (
            200,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ProviderUnavailable,
        ),
        (
            200,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            ProviderRateLimited,
        ),
        (
            200,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            ProviderBadRequest,
        ),
        (200, {"type": "error", "error": {"type": "billing_error", "message": "billing"}}, QuotaExhausted),
        (200, {"error": {"message": "?", "type": "something_new"}}, ProviderUnavailable),
    ],
)
def test_provider_error_bodies_map_to_their_class(
    status: int, body: dict[str, object], expected: type[ProviderError]
) -> None:
    parsed = ErrorBody.of(body)

    error = error_for_status(
        "anthropic",
        status,
        parsed.message,
        {},
        kind=parsed.kind,
        code=parsed.code,
        request_id="req_1",
    )

    assert type(error) is expected
    assert error.metadata()["provider_request_id"] == "req_1"


def test_refused_key_message_never_repeats_the_providers_text() -> None:
    error = error_for_status("openai", 401, "Incorrect API key provided: sk-abc***wxyz", {})

    assert "sk-abc" not in error.message


def test_context_error_names_the_models_window_once_the_model_is_known() -> None:
    error = error_for_status("openai", 400, "too long", {}, code="context_length_exceeded")

    error.for_model("gpt-5.4-mini", 1000000)

    metadata = error.metadata()
    assert "1000000" in error.message
    assert (metadata["model"], metadata["context_window"]) == ("gpt-5.4-mini", "1000000")
