"""The core's own small types. The servicers translate protobuf to these; the adapters translate these
to each provider's SDK. Nothing here knows gRPC or an SDK."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    OTHER = "other"


ProviderName = str
"""A provider *instance* as configuration names it: "openai", "anthropic", "gemini" for the standard
three, or an operator's own name for another endpoint of a kind (server/providers/registry.py)."""


@dataclass(slots=True, frozen=True)
class Capabilities:
    """What a model accepts and does. The adapters and the facade read these flags, never model names."""

    reasoning: bool = False
    """Thinks before answering: its output tokens include thinking, so max_tokens needs room for it."""
    temperature: bool = True
    top_p: bool = True
    stop_sequences: bool = True
    tools: bool = True
    structured_output: bool = True
    image_input: bool = True
    document_input: bool = False
    prompt_caching: bool = False
    assistant_prefill: bool = True
    """Accepts a final assistant turn, which the model continues."""
    blank_turns: bool = True
    """Accepts a turn whose text is only whitespace."""


@dataclass(slots=True, frozen=True)
class Message:
    role: Role
    content: str


@dataclass(slots=True, frozen=True)
class ChatRequest:
    """A validated request. `model` is always a concrete, allowed model id by the time an adapter sees it."""

    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    capabilities: Capabilities = field(default_factory=lambda: Capabilities())
    """The model's, from the catalogue: what the adapter may send (never guessed from the name)."""
    output_limit: int | None = None
    """The model's maximum output tokens, from the catalogue."""


@dataclass(slots=True, frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Of prompt_tokens, those the provider served from its prompt cache (priced lower)."""
    cache_write_tokens: int = 0
    """Of prompt_tokens, those the provider wrote to its prompt cache (priced higher by some)."""
    estimated: bool = False
    """The provider reported no usage; these counts are the gateway's estimate."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True, frozen=True)
class Completion:
    """What an adapter returns for a unary call."""

    content: str
    usage: Usage
    finish_reason: FinishReason
    served_model: str = ""
    """The model the provider says served the call (OpenAI/Anthropic `model`, Gemini `modelVersion`)."""
    request_id: str = ""
    """The provider's own id of the request (OpenAI `x-request-id`, Anthropic `request-id`, Gemini
    `responseId`), for support cases and log correlation."""


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of generated text, relayed as the provider produced it."""

    text: str


@dataclass(slots=True, frozen=True)
class StreamEnd:
    """The last event an adapter's stream yields: the provider's own usage and finish reason."""

    usage: Usage
    finish_reason: FinishReason
    served_model: str = ""
    request_id: str = ""


StreamEvent = TextDelta | StreamEnd


@dataclass(slots=True, frozen=True)
class RequestContext:
    """Agent-to-agent context of one call; goes to logs and to the provider as HTTP headers."""

    trace_id: str
    source_agent: str = ""
    session_id: str = ""
    models: frozenset[str] | None = None
    """The models the caller's roles allow (within the allowlist); None: every allowed model."""
    roles: tuple[str, ...] = ()
    """The roles of the caller's token (empty without authentication): they choose its limits."""

    def provider_headers(self) -> dict[str, str]:
        """The A2A context as the HTTP headers every provider request carries."""
        headers = {"X-Trace-ID": self.trace_id}
        if self.source_agent:
            headers["X-Source-Agent"] = self.source_agent
        if self.session_id:
            headers["X-Session-ID"] = self.session_id
        return headers


@dataclass(slots=True, frozen=True)
class CallOptions:
    """Per-attempt options the facade hands an adapter."""

    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    """Seconds this attempt may take: what is left of the call's deadline."""


@dataclass(slots=True, frozen=True)
class Result:
    """A served unary call, as the facade returns it to the edge."""

    completion: Completion
    provider: ProviderName
    model: str
    latency_ms: float
    cost_usd: float

    @property
    def served_model(self) -> str:
        """What the provider says served the call; the requested model when it did not say."""
        return self.completion.served_model or self.model


@dataclass(slots=True, frozen=True)
class StreamSummary:
    """The close of a served stream, as the facade returns it to the edge."""

    usage: Usage
    finish_reason: FinishReason
    provider: ProviderName
    model: str
    latency_ms: float
    time_to_first_token_ms: float
    cost_usd: float
    served_model: str = ""
    """What the provider says served the stream; the requested model when it did not say."""
