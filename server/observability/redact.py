"""Scrub secrets from any text before it reaches a log line, an error message or a response."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Exact configured secrets are scrubbed, and anything shaped like a provider key (each provider's spec
# gives its shape, server/providers/registry.py) or a labelled credential. A credential is a run of
# token characters: help text such as "send `authorization: Bearer <JWT>`" has none after the label,
# and stays as it is.
_VALUE_CHAR = r"[A-Za-z0-9._~+/=\-]"
# A labelled credential: the label is kept, only the value goes.
_LABELLED = re.compile(
    r"(?P<label>(?i:bearer)\s+"
    r"|(?i:(?:x-api-key|x-goog-api-key|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?))"
    rf"{_VALUE_CHAR}{{8,}}"
)


class Redactor:
    """Replaces configured secret values and anything shaped like a provider key with [REDACTED]."""

    def __init__(self, secrets: Iterable[str] = (), key_shapes: Iterable[re.Pattern[str]] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))
        # Longest shapes first, so a specific one (sk-ant-...) wins over a general one (sk-...).
        shapes = sorted((shape.pattern for shape in key_shapes), key=len, reverse=True)
        self._key_shapes = re.compile("|".join(shapes)) if shapes else None

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self._key_shapes is not None:
            text = self._key_shapes.sub(REDACTED, text)
        return _LABELLED.sub(lambda match: match.group("label") + REDACTED, text)
