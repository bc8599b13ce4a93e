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


# Every match of _LABELLED contains one of these (lower-cased), and every match of a key shape its
# literal prefix: text without any of them and without a configured secret has nothing to redact,
# which a few substring scans find without running the patterns.
_LABEL_TRIGGERS = ("bearer", "key", "authorization")
_LITERAL_RUN = re.compile(r"[A-Za-z0-9-]+")


def literal_prefix(shape: re.Pattern[str]) -> str | None:
    """The lower-cased text every match of `shape` starts with, or None when that cannot be told
    simply (no literal start, or an alternation outside any group)."""
    pattern = shape.pattern
    depth, escaped, in_class = 0, False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return None
    run = _LITERAL_RUN.match(pattern)
    if run is None:
        return None
    prefix = run.group()
    if pattern[len(prefix) : len(prefix) + 1] in ("?", "*", "+", "{"):  # the last char is quantified
        prefix = prefix[:-1]
    return prefix.lower() or None


class Redactor:
    """Replaces configured secret values and anything shaped like a provider key with [REDACTED]."""

    def __init__(self, secrets: Iterable[str] = (), key_shapes: Iterable[re.Pattern[str]] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))
        # Longest shapes first, so a specific one (sk-ant-...) wins over a general one (sk-...).
        key_shapes = tuple(key_shapes)
        shapes = sorted((shape.pattern for shape in key_shapes), key=len, reverse=True)
        self._key_shapes = re.compile("|".join(shapes)) if shapes else None
        prefixes = [literal_prefix(shape) for shape in key_shapes]
        self._triggers: tuple[str, ...] | None = (
            None
            if None in prefixes
            else (*_LABEL_TRIGGERS, *(prefix for prefix in prefixes if prefix is not None))
        )
        """None: some key shape has no literal prefix to look for, so every text runs the patterns."""

    def clean(self, text: str) -> bool:
        """Whether `text` certainly holds nothing to redact: no configured secret, and none of the
        substrings every key shape or credential label contains. A few substring scans instead of the
        patterns (a log line's values: ~1 µs instead of ~20 µs)."""
        if self._triggers is None:
            return False
        lowered = text.lower()
        return not any(trigger in lowered for trigger in self._triggers) and not any(
            secret in text for secret in self._secrets
        )

    def __call__(self, text: str) -> str:
        if self.clean(text):
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self._key_shapes is not None:
            text = self._key_shapes.sub(REDACTED, text)
        return _LABELLED.sub(lambda match: match.group("label") + REDACTED, text)
