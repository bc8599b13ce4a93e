"""Core pieces that have rules of their own: prefix routing, backoff bounds, redaction."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.core.retry import RetryPolicy
from server.observability.redact import REDACTED, Redactor
from server.providers.registry import SPECS


@pytest.mark.parametrize("retry", [0, 1, 2, 5, 10])
def test_backoff_stays_within_half_and_whole_of_its_ceiling(retry: int) -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=8.0)
    ceiling = min(8.0, 0.5 * 2**retry)

    delays = [policy.backoff(retry) for _ in range(200)]

    assert all(ceiling / 2 <= d <= ceiling for d in delays)


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwx",
        "x-api-key: sk-ant-api03-abcdefghijklmnop",
        "key=AIzaSyA1234567890abcdefghijklmnopqrs",
        "Authorization: Bearer abcdefghijklmnop",
    ],
)
def test_redactor_scrubs_key_shaped_values(text: str) -> None:
    redacted = Redactor(key_shapes=[spec.key_pattern for spec in SPECS.values()])(text)

    assert REDACTED in redacted
    assert "abcdefghijklmnop" not in redacted


def test_redactor_scrubs_configured_secrets_of_any_shape() -> None:
    redact = Redactor(["plain-secret-value"])

    assert redact("the key was plain-secret-value!") == f"the key was {REDACTED}!"


def test_fallbacks_are_read_from_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_FALLBACKS", '{"claude-sonnet-4-6": ["gpt-5.4", "gemini-3.5-flash"]}')

    settings = Settings()

    assert settings.llm_fallbacks == {"claude-sonnet-4-6": ("gpt-5.4", "gemini-3.5-flash")}
