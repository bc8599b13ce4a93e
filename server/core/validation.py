"""Caller input rules. Every violation of a request is collected and reported at once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from server.core.catalogue import Complexity, ModelInfo, Tier
from server.core.errors import FieldViolation, InvalidRequest
from server.core.types import ChatRequest, Message, Role

MAX_MODEL_LENGTH = 64


@dataclass(slots=True, frozen=True)
class Limits:
    """The input limits; their values (and defaults) are configuration's (server/config.py)."""

    max_request_bytes: int
    """Total UTF-8 bytes of message content and stop sequences."""
    max_messages: int
    max_stop_sequences: int
    max_stop_length: int
    max_metadata_value_length: int
    """A2A metadata values: they go on into provider HTTP headers and log lines."""


@dataclass(slots=True, frozen=True)
class DraftMessage:
    """A message as the caller sent it: `role` is None when unspecified or unknown."""

    role: Role | None
    content: str


@dataclass(slots=True, frozen=True)
class DraftRequest:
    """A request as the caller sent it, before validation and model resolution."""

    model: str
    messages: Sequence[DraftMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: Sequence[str] = ()
    tier: str = ""
    """A Tier value, or empty; anything else is refused."""
    complexity: str = ""
    """A Complexity value, or empty; anything else is refused."""


def validate(draft: DraftRequest, limits: Limits) -> list[FieldViolation]:
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(field, description))

    if len(draft.model) > MAX_MODEL_LENGTH:
        bad("model", f"must be at most {MAX_MODEL_LENGTH} characters")
    if not draft.messages:
        bad("messages", "at least one message is required")
    elif len(draft.messages) > limits.max_messages:
        bad("messages", f"at most {limits.max_messages} messages are allowed")
    else:
        for index, message in enumerate(draft.messages):
            if message.role is None:
                bad(f"messages[{index}].role", "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT")
        if not any(message.content.strip() for message in draft.messages):
            bad("messages", "at least one message must have content")
    size = sum(len(m.content.encode()) for m in draft.messages) + sum(len(s.encode()) for s in draft.stop)
    if size > limits.max_request_bytes:
        bad("messages", f"request content is {size} bytes; the limit is {limits.max_request_bytes}")
    if draft.temperature is not None and not (
        math.isfinite(draft.temperature) and 0.0 <= draft.temperature <= 2.0
    ):
        bad("temperature", "must be between 0 and 2")
    if draft.top_p is not None and not (math.isfinite(draft.top_p) and 0.0 <= draft.top_p <= 1.0):
        bad("top_p", "must be between 0 and 1")
    if draft.max_tokens is not None and draft.max_tokens <= 0:
        bad("max_tokens", "must be greater than 0")
    if len(draft.stop) > limits.max_stop_sequences:
        bad("stop", f"at most {limits.max_stop_sequences} stop sequences are allowed")
    if draft.tier and draft.tier not in Tier.__members__.values():
        bad("tier", "must be TIER_FAST, TIER_BALANCED or TIER_PREMIUM")
    if draft.complexity and draft.complexity not in Complexity.__members__.values():
        bad("complexity", "must be COMPLEXITY_SIMPLE, COMPLEXITY_MODERATE or COMPLEXITY_COMPLEX")
    for index, sequence in enumerate(draft.stop):
        if not sequence:
            bad(f"stop[{index}]", "must not be empty")
        elif len(sequence) > limits.max_stop_length:
            bad(f"stop[{index}]", f"must be at most {limits.max_stop_length} characters")
    return violations


def check(draft: DraftRequest, limits: Limits) -> None:
    """Raise InvalidRequest naming every rule `draft` breaks."""
    violations = validate(draft, limits)
    if violations:
        raise InvalidRequest(violations)


def unsupported(draft: DraftRequest, model: ModelInfo) -> list[FieldViolation]:
    """What in a checked draft `model` does not accept, by its catalogue flags (never by its name)."""
    caps = model.capabilities
    problems = [
        FieldViolation(name, f"{model.id} does not accept {name}; leave it unset")
        for name, value, accepted in (
            ("temperature", draft.temperature, caps.temperature),
            ("top_p", draft.top_p, caps.top_p),
        )
        if value is not None and not accepted
    ]
    if draft.stop and not caps.stop_sequences:
        problems.append(FieldViolation("stop", f"{model.id} does not accept stop sequences"))
    if not caps.blank_turns:
        problems += [
            FieldViolation(f"messages[{index}].content", f"{model.id} refuses a message of only whitespace")
            for index, message in enumerate(draft.messages)
            if message.content and not message.content.strip()
        ]
    if not caps.assistant_prefill:
        turns = [
            (index, m) for index, m in enumerate(draft.messages) if m.content and m.role is not Role.SYSTEM
        ]
        if turns and turns[-1][1].role is Role.ASSISTANT:
            problems.append(
                FieldViolation(
                    f"messages[{turns[-1][0]}].role",
                    f"{model.id} refuses a final assistant message (prefill); end with a user message",
                )
            )
    return problems


def to_request(draft: DraftRequest, model: ModelInfo) -> ChatRequest:
    """The request adapters see, for a checked draft and its resolved, allowed `model`."""
    return ChatRequest(
        model=model.id,
        messages=tuple(Message(m.role, m.content) for m in draft.messages if m.role is not None),
        temperature=draft.temperature,
        max_tokens=draft.max_tokens,
        top_p=draft.top_p,
        stop=tuple(draft.stop),
        capabilities=model.capabilities,
        output_limit=model.max_output_tokens,
    )


def context_value_problem(value: str, max_length: int) -> str | None:
    """What is wrong with a value bound for logs and provider HTTP headers (an A2A metadata value, a
    token's subject), or None: at most `max_length` printable ASCII characters."""
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if not value.isprintable() or not value.isascii():
        return "must be printable ASCII"
    return None


def check_context_value(field: str, value: str, max_length: int) -> None:
    """A2A metadata values are bounded so a caller cannot blow up logs and provider headers."""
    problem = context_value_problem(value, max_length)
    if problem is not None:
        raise InvalidRequest([FieldViolation(field, problem)])
