"""The emulators' per-key rate limits through the official SDKs: the providers' own headers on every
answer and their own 429 bodies past a limit (sources in server/emulators/ratelimits.py and beside each
emulator's `rate_limited`)."""

from __future__ import annotations

import datetime

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from server.emulators.anthropic import AnthropicEmulator
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator
from server.emulators.ratelimits import RateLimits
from server.providers.ratelimits import duration_seconds

KEY = "sk-rate-limited-0123456789abcdef"


async def test_openai_sends_its_headers_then_its_tpm_429() -> None:
    emulator = OpenAIEmulator(api_key=KEY, rate_limits=RateLimits(requests=10, tokens=120))
    client = openai.AsyncOpenAI(api_key=KEY, base_url=await emulator.start(), max_retries=0)
    try:
        ok = await client.chat.completions.with_raw_response.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=100
        )
        with pytest.raises(openai.RateLimitError) as refused:
            # The first counts its real output now (3 tokens): 4 used, and 1 + 118 more do not fit.
            await client.chat.completions.create(
                model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=118
            )
    finally:
        await client.close()
        await emulator.stop()

    assert ok.headers["x-ratelimit-limit-requests"] == "10"
    assert ok.headers["x-ratelimit-remaining-requests"] == "9"
    assert ok.headers["x-ratelimit-limit-tokens"] == "120"
    assert duration_seconds(ok.headers["x-ratelimit-reset-tokens"]) is not None
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["code"] == "rate_limit_exceeded"
    assert body["type"] == "tokens"
    assert body["param"] is None
    assert body["message"].startswith("Rate limit reached for gpt-5.4-mini in organization ")
    assert (
        "on tokens per min (TPM): Limit 120, Used 4, Requested 119. Please try again in " in body["message"]
    )
    assert emulator.rate_limits is not None
    assert emulator.rate_limits.counts()["refused"] == 1


async def test_anthropic_sends_its_headers_then_its_429_with_retry_after() -> None:
    emulator = AnthropicEmulator(
        api_key=KEY, rate_limits=RateLimits(requests=1, input_tokens=1000, output_tokens=500)
    )
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=await emulator.start(), max_retries=0)
    message: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    try:
        ok = await client.messages.with_raw_response.create(
            model="claude-haiku-4-5",
            messages=message,
            max_tokens=100,
        )
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(model="claude-haiku-4-5", messages=message, max_tokens=100)
    finally:
        await client.close()
        await emulator.stop()

    assert ok.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert ok.headers["anthropic-ratelimit-input-tokens-limit"] == "1000"
    assert ok.headers["anthropic-ratelimit-output-tokens-limit"] == "500"
    reset = datetime.datetime.fromisoformat(ok.headers["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    assert refused.value.response.headers["retry-after"] == "60"
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "rate_limit_error"
    assert error["message"].startswith("This request would exceed the rate limit for your organization")
    assert "of 1 requests per minute" in error["message"]


async def test_gemini_answers_resource_exhausted_and_sends_no_headers() -> None:
    emulator = GeminiEmulator(api_key=KEY, rate_limits=RateLimits(requests=1))
    client = genai.Client(api_key=KEY, http_options={"base_url": await emulator.start()})
    try:
        await client.aio.models.generate_content(model="gemini-3.1-flash-lite", contents="hi")
        with pytest.raises(genai_errors.ClientError) as refused:
            await client.aio.models.generate_content(model="gemini-3.1-flash-lite", contents="hi")
    finally:
        await emulator.stop()

    assert refused.value.code == 429
    assert refused.value.status == "RESOURCE_EXHAUSTED"
    kinds = [d["@type"] for d in refused.value.details["error"]["details"]]
    assert "type.googleapis.com/google.rpc.RetryInfo" in kinds
    assert not any(
        k.startswith(("x-ratelimit", "anthropic-ratelimit")) for k in emulator.requests[-1].headers
    )
