"""The providers' per-key rate limits, as the emulators enforce them: requests, tokens, input and output
tokens per minute, each a bucket refilled continuously over the minute ("your capacity is continuously
replenished up to your maximum limit, rather than being reset at fixed intervals": Anthropic,
platform.claude.com/docs/en/api/rate-limits; OpenAI's limits likewise, developers.openai.com/api/docs/
guides/rate-limits). A request is charged its prompt tokens and its max_tokens when it arrives, and its
output is corrected to what it really produced when it ends ("OTPM rate limits are estimated based on
max_tokens at the beginning of each request and adjusted at the end of the request": the Anthropic page;
OpenAI documents only the estimate at arrival, so the emulators treat both alike).

Each emulator answers a request over a limit with its provider's own 429 (openai.py, anthropic.py,
gemini.py say where each body comes from) and stamps every answer with its provider's rate-limit headers
(`RateLimits.headers`). Off unless configured (`--rpm`, `--tpm`, `--itpm`, `--otpm` of
`python -m server.emulators`, or `rate_limits=` of an emulator): a default emulator has no limits.
Counters (`served`, `refused`) let a test see how many requests got through and how many were refused,
also from another process at `GET /_emulator/ratelimits`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 60.0

REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS = "requests", "tokens", "input-tokens", "output-tokens"


@dataclass(slots=True, frozen=True)
class Refusal:
    limit_name: str
    """requests | tokens | input-tokens | output-tokens"""
    limit: int
    used: int
    requested: int
    retry_after: float


@dataclass
class RateLimits:
    """Limits per minute for every key (None: no such limit)."""

    requests: int | None = None
    tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    clock: Callable[[], float] = time.time
    served: int = 0
    """Requests admitted (sent on to be answered)."""
    refused: int = 0
    """Requests answered 429 for a rate limit."""
    left_after_last: dict[str, int] = field(default_factory=dict)
    """What each limit had left right after the last admitted request: with the bucket never full
    between, what was offered and not used (a test reads throughput from it, not from a clock)."""
    _tats: dict[tuple[str, str], float] = field(default_factory=dict)

    def _limits(self) -> dict[str, int | None]:
        return {
            REQUESTS: self.requests,
            TOKENS: self.tokens,
            INPUT_TOKENS: self.input_tokens,
            OUTPUT_TOKENS: self.output_tokens,
        }

    def admit(self, key: str, input_tokens: int, max_output: int) -> Refusal | None:
        """Charge one request (its prompt and its max output), or refuse it and charge nothing."""
        now = self.clock()
        costs = {
            REQUESTS: 1,
            TOKENS: input_tokens + max_output,
            INPUT_TOKENS: input_tokens,
            OUTPUT_TOKENS: max_output,
        }
        for name, limit in self._limits().items():
            if limit is None:
                continue
            tat = max(self._tats.get((key, name), now), now)
            after = tat + costs[name] * WINDOW_S / limit
            if after - now > WINDOW_S + 1e-6:
                self.refused += 1
                used = round((tat - now) * limit / WINDOW_S)
                return Refusal(name, limit, used, costs[name], after - now - WINDOW_S)
        for name, limit in self._limits().items():
            if limit is not None:
                tat = max(self._tats.get((key, name), now), now)
                self._tats[(key, name)] = tat + costs[name] * WINDOW_S / limit
        self.served += 1
        for name in self._limits():
            if (state := self.remaining(key, name)) is not None:
                self.left_after_last[name] = state[1]
        return None

    def correct_output(self, key: str, charged: int, produced: int) -> None:
        """A request ended: its output counts what it produced, not its max_tokens."""
        now = self.clock()
        for name in (TOKENS, OUTPUT_TOKENS):
            limit = self._limits()[name]
            if limit is not None and (key, name) in self._tats:
                self._tats[(key, name)] -= max(charged - produced, 0) * WINDOW_S / limit
                if self._tats[(key, name)] <= now:
                    del self._tats[(key, name)]

    def remaining(self, key: str, name: str) -> tuple[int, int, float] | None:
        """(limit, remaining, seconds until full again) of one limit, or None when it is not set."""
        limit = self._limits()[name]
        if limit is None:
            return None
        now = self.clock()
        ahead = max(self._tats.get((key, name), now) - now, 0.0)
        return limit, max(limit - round(ahead * limit / WINDOW_S + 0.4999), 0), ahead

    def openai_headers(self, key: str) -> dict[str, str]:
        """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as durations (`6m0s`, `1s`,
        `20ms`): developers.openai.com/api/docs/guides/rate-limits, and the real values quoted in
        https://community.openai.com/t/how-to-get-rate-limit-reset-time-for-response-api/1268905."""
        headers = {}
        for name in (REQUESTS, TOKENS):
            if (state := self.remaining(key, name)) is not None:
                limit, left, reset = state
                headers[f"x-ratelimit-limit-{name}"] = str(limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(left)
                headers[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        return headers

    def anthropic_headers(self, key: str) -> dict[str, str]:
        """`anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`, the
        reset an RFC 3339 time: platform.claude.com/docs/en/api/rate-limits, and a recorded real response
        (cran/tidyllm tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R)."""
        headers = {}
        now = self.clock()
        for name in (REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS):
            if (state := self.remaining(key, name)) is not None:
                limit, left, reset = state
                at = datetime.datetime.fromtimestamp(now + reset, datetime.UTC)
                headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
                headers[f"anthropic-ratelimit-{name}-remaining"] = str(left)
                headers[f"anthropic-ratelimit-{name}-reset"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return headers

    def counts(self) -> dict[str, object]:
        return {"served": self.served, "refused": self.refused, "left_after_last": self.left_after_last}


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes its resets (Go's time.Duration): `6m0s`, `1.5s`, `20ms`."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text
