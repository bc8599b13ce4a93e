"""What the providers' rate-limit response headers say, as `capacity.Learned`s (limit and remaining per
limit). Read only for models whose capacity is governed (LLM_DEPLOYMENTS); server/core/capacity.py
brings the shared count up to what the provider says is used.

Sources:
- OpenAI: `x-ratelimit-limit-requests`, `x-ratelimit-limit-tokens`, `x-ratelimit-remaining-requests`,
  `x-ratelimit-remaining-tokens`, `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens`; the resets
  are durations (`6m0s`, `1s`, `12ms`). developers.openai.com/api/docs/guides/rate-limits ("Rate limits in
  headers"); real values quoted in https://community.openai.com/t/how-to-get-rate-limit-reset-time-for-
  response-api/1268905 (`x-ratelimit-limit-requests: 5000`, `x-ratelimit-reset-requests: 12ms`, ...).
- Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
  the resets RFC 3339 timestamps. platform.claude.com/docs/en/api/rate-limits ("Response headers"); a
  recorded real response with all twelve: tidyllm's fixture
  tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R (cran/tidyllm, `anthropic-ratelimit-
  input-tokens-limit = "80000"`, `...-reset = "2025-08-21T12:40:59Z"`).
- Gemini sends none: its limits are configured only (ai.google.dev/gemini-api/docs/rate-limits).
- `retry-after` / `retry-after-ms` on a 429 are read where every error is (providers/base.py
  `retry_after_seconds`, as openai/_base_client.py and anthropic/_base_client.py `_parse_retry_after_header`
  read them).

The reset times are not needed to learn: a bucket refilled continuously over the minute (what the
providers describe) is fully described by its limit and what remains, and a 429's cooldown takes the
provider's Retry-After. `reset_seconds` parses them for the emulators' tests and the docs' examples.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

from server.core.capacity import Dim, Learned

_OPENAI = {Dim.REQUESTS: "requests", Dim.TOKENS: "tokens"}
_ANTHROPIC = {
    Dim.REQUESTS: "requests",
    Dim.TOKENS: "tokens",
    Dim.INPUT_TOKENS: "input-tokens",
    Dim.OUTPUT_TOKENS: "output-tokens",
}
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?"
)


def learned_from(headers: Mapping[str, str]) -> list[Learned]:
    """Every limit the headers name with both its limit and what remains (lower-case header names)."""
    found = []
    for dim, name in _OPENAI.items():
        if (pair := _pair(headers, f"x-ratelimit-limit-{name}", f"x-ratelimit-remaining-{name}")) is not None:
            found.append(Learned(dim, *pair))
    for dim, name in _ANTHROPIC.items():
        prefix = f"anthropic-ratelimit-{name}"
        if (pair := _pair(headers, f"{prefix}-limit", f"{prefix}-remaining")) is not None:
            found.append(Learned(dim, *pair))
    return found


def _pair(headers: Mapping[str, str], limit: str, remaining: str) -> tuple[int, int] | None:
    try:
        return int(headers[limit]), int(headers[remaining])
    except (KeyError, ValueError):
        return None


def duration_seconds(value: str) -> float | None:
    """OpenAI's reset durations (`6m0s`, `1s`, `20ms`, `1h2m3s`, `0.5s`) in seconds; None if unreadable."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or not value.strip():
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def reset_seconds(value: str, now: datetime.datetime) -> float | None:
    """A reset header in seconds from `now`: an OpenAI duration or an Anthropic RFC 3339 time."""
    duration = duration_seconds(value)
    if duration is not None:
        return duration
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (moment - now).total_seconds())
