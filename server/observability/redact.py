"""Scrub secrets from any text before it reaches a log line, an error message or a response."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Shapes of provider keys and bearer credentials; exact configured keys are scrubbed as well. A
# credential is a run of token characters: help text such as "send `authorization: Bearer <JWT>`"
# has none after the label, and stays as it is.
_VALUE_CHAR = r"[A-Za-z0-9._~+/=\-]"
_KEY_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"  # OpenAI
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google API keys
)
# A labelled credential: the label is kept, only the value goes.
_LABELLED = re.compile(
    r"(?P<label>(?i:bearer)\s+"
    r"|(?i:(?:x-api-key|x-goog-api-key|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?))"
    rf"{_VALUE_CHAR}{{8,}}"
)


# Every match of the two patterns above contains one of these (lower-cased): text without any of them
# and without a configured secret has nothing to redact, which is found without running the patterns.
_TRIGGERS = ("sk-", "aiza", "bearer", "key", "authorization")


class Redactor:
    """Replaces configured secret values and anything shaped like a provider key with [REDACTED]."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))

    def clean(self, text: str) -> bool:
        """Whether `text` certainly holds nothing to redact: no configured secret, and none of the
        substrings every key shape or credential label contains. A few substring scans instead of the
        patterns (a log line's values: ~1 µs instead of ~20 µs)."""
        lowered = text.lower()
        return not any(trigger in lowered for trigger in _TRIGGERS) and not any(
            secret in text for secret in self._secrets
        )

    def __call__(self, text: str) -> str:
        if self.clean(text):
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _KEY_SHAPES.sub(REDACTED, text)
        return _LABELLED.sub(lambda match: match.group("label") + REDACTED, text)
