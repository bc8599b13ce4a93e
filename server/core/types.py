"""The core's own small types. The servicers translate protobuf to these; the adapters translate these
to each provider's SDK. Nothing here knows gRPC or an SDK."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    """The result of a tool call: `tool_call_id` names the call it answers."""


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    OTHER = "other"


IMAGE_TOKEN_BOUND = 4096
"""More than one image costs on any of the three providers (their largest sizes and finest detail)."""


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
    thinking: str = "budget"
    """How it takes an amount of thinking: budget | adaptive | both | levels (server/core/reasoning.py)."""
    effort: bool = False
    """Takes an effort (Anthropic `output_config.effort`)."""
    thinking_levels: tuple[str, ...] = ()
    """With thinking `levels`: the levels it takes (Gemini 3 `thinking_level`, lower case)."""
    thinking_off: bool = True
    """Can be asked not to think (a budget of 0)."""
    forced_tool_thinking: bool = True
    """Accepts a forced tool choice while thinking on a token budget."""


@dataclass(slots=True, frozen=True)
class TextPart:
    text: str


@dataclass(slots=True, frozen=True)
class ImagePart:
    """An image, inline (`data` with `mime_type`) or by `url` (then `data` is empty)."""

    data: bytes = b""
    mime_type: str = ""
    url: str = ""


@dataclass(slots=True, frozen=True)
class DocumentPart:
    """A document (PDF), inline."""

    data: bytes
    mime_type: str = "application/pdf"
    title: str = ""


ContentPart = TextPart | ImagePart | DocumentPart


@dataclass(slots=True, frozen=True)
class ToolCall:
    """The model's call of one tool; arguments as the JSON text the model produced."""

    id: str
    name: str
    arguments_json: str = "{}"
    signature: bytes = b""
    """Opaque provider state attached to the call (Gemini `thought_signature`), sent back unchanged."""
    item_id: str = ""
    """The provider's id of the output item that carried the call, where it differs from the call's id
    (OpenAI Responses `fc_…`; `id` is its `call_id`), sent back unchanged."""

    def arguments(self) -> Any:
        """The arguments parsed (an adapter whose SDK wants a dict); `{}` when the text is empty."""
        return json.loads(self.arguments_json) if self.arguments_json else {}


@dataclass(slots=True, frozen=True)
class ReasoningPart:
    """A piece of a model's reasoning and the opaque state its provider needs on the next turn."""

    text: str = ""
    signature: bytes = b""
    """Anthropic thinking `signature`, Gemini `thought_signature`."""
    redacted_data: bytes = b""
    """Anthropic `redacted_thinking` data."""
    provider: ProviderName | None = None
    """Who produced it; adapters send a provider only its own parts."""
    id: str = ""
    """The provider's id of the reasoning item (OpenAI Responses `rs_…`; its `encrypted_content` is the
    signature), sent back with it."""


@dataclass(slots=True, frozen=True)
class Message:
    role: Role
    content: str
    parts: tuple[ContentPart, ...] = ()
    """Multimodal content after `content` (read `content_parts()` for both, in order)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Assistant messages: the tools the model called in this turn."""
    tool_call_id: str = ""
    """Tool messages: the id of the call this result answers."""
    reasoning: tuple[ReasoningPart, ...] = ()
    """Assistant messages: the reasoning a response returned, sent back for the provider's next turn."""
    cache_breakpoint: bool = False
    """Cache the prompt up to the end of this message (Anthropic `cache_control`; others cache alone)."""

    def content_parts(self) -> tuple[ContentPart, ...]:
        """`content` as a first text part (when not empty), then `parts`."""
        return ((TextPart(self.content),) if self.content else ()) + self.parts

    def text(self) -> str:
        """All the message's text: `content` and its text parts, joined."""
        return "".join(p.text for p in self.content_parts() if isinstance(p, TextPart))


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """A function the model may call. `parameters` is the JSON Schema of its arguments (an object
    schema, keys in the caller's order)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoiceMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


@dataclass(slots=True, frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    tool_name: str = ""
    """With REQUIRED: the one tool the model must call."""


class ResponseFormatType(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(slots=True, frozen=True)
class ResponseFormat:
    type: ResponseFormatType = ResponseFormatType.TEXT
    name: str = "response"
    schema: Mapping[str, Any] | None = None
    """JSON_SCHEMA: the answer's JSON Schema."""
    strict: bool = False


class ReasoningEffort(enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(slots=True, frozen=True)
class ReasoningConfig:
    """How much a reasoning model thinks: an effort level or a token budget (at most one is set)."""

    effort: ReasoningEffort | None = None
    budget_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class StructuredOutput:
    """The gateway's check of a structured answer against the request's ResponseFormat."""

    valid: bool
    error: str = ""
    unchecked_reason: str = ""
    """Set when the answer was not checked (the check's budget, an unresolvable `$ref`): why, as an
    UPPER_SNAKE reason (server/core/structured.py `Unchecked`); `valid` is then False."""


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
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    """None: the provider's default (auto when there are tools)."""
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    """None: free text."""
    reasoning: ReasoningConfig | None = None
    """None: the provider's default."""
    seed: int | None = None
    user: str = ""
    """The end user's opaque id, for providers that take one."""
    wire_api: str = "chat_completions"
    """The model's wire API, from the catalogue (`api`): OpenAI-kind adapters speak `responses` or
    `chat_completions` by it; the other kinds have one API and ignore it."""

    def prompt_texts(self) -> Iterator[str]:
        """Every text the prompt carries (messages, tool calls and results, tool and answer schemas): what
        a bound of the prompt's tokens counts."""
        for message in self.messages:
            yield message.text()
            yield message.tool_call_id
            for part in message.parts:  # text parts are in message.text()
                if isinstance(part, DocumentPart):
                    yield part.title
                elif isinstance(part, ImagePart):
                    yield part.url
            for call in message.tool_calls:
                yield call.id
                yield call.name
                yield call.arguments_json
            for reasoning in message.reasoning:
                yield reasoning.text
        for tool in self.tools:
            yield tool.name
            yield tool.description
            yield json.dumps(tool.parameters)
        if self.response_format is not None:
            yield self.response_format.name
            if self.response_format.schema is not None:
                yield json.dumps(self.response_format.schema)
        if self.tool_choice is not None and self.tool_choice.tool_name:
            yield self.tool_choice.tool_name

    def attachment_token_bound(self) -> int:
        """A bound of the tokens the prompt's images, documents and opaque provider state (tool-call and
        reasoning signatures, redacted thinking) cost: IMAGE_TOKEN_BOUND an image, one token per byte of a
        document (a page's text and its rendering cost less than its bytes) and of each signature."""
        bound = 0
        for message in self.messages:
            for part in message.parts:
                if isinstance(part, ImagePart):
                    bound += IMAGE_TOKEN_BOUND
                elif isinstance(part, DocumentPart):
                    bound += len(part.data)
            # Opaque state sent back to the provider: one token per byte, as for any byte it reads.
            bound += sum(len(call.signature) for call in message.tool_calls)
            bound += sum(len(part.signature) + len(part.redacted_data) for part in message.reasoning)
        return bound


@dataclass(slots=True, frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Of prompt_tokens, those the provider served from its prompt cache (priced lower)."""
    cache_write_tokens: int = 0
    """Of prompt_tokens, those the provider wrote to its prompt cache (priced higher by some)."""
    reasoning_tokens: int = 0
    """Of completion_tokens, those spent thinking."""
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
    tool_calls: tuple[ToolCall, ...] = ()
    response_id: str = ""
    """The provider's id of the response body (OpenAI `chatcmpl-…`, Anthropic `msg_…`, Gemini
    `responseId`)."""
    reasoning: tuple[ReasoningPart, ...] = ()


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of generated text, relayed as the provider produced it."""

    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A fragment of a tool call: the first of a call (by `index`) carries `id` and `name`, later ones
    append to its arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    """A piece of the model's thinking text, where the provider shows it."""

    text: str


@dataclass(slots=True, frozen=True)
class StreamEnd:
    """The last event an adapter's stream yields: the provider's own usage and finish reason, and the
    whole tool calls and reasoning (with signatures) the stream's deltas carried."""

    usage: Usage
    finish_reason: FinishReason
    served_model: str = ""
    request_id: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    response_id: str = ""
    reasoning: tuple[ReasoningPart, ...] = ()


Delta = TextDelta | ToolCallDelta | ReasoningDelta
"""What a stream relays to the caller as it comes."""

StreamEvent = TextDelta | ToolCallDelta | ReasoningDelta | StreamEnd


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
    rate_limits: list[object] | None = None
    """When set (a model whose capacity is governed, server/core/capacity.py), the adapter appends what
    the provider's rate-limit headers say (`capacity.Learned`s) to it; None: headers are not read."""


@dataclass(slots=True, frozen=True)
class Result:
    """A served unary call, as the facade returns it to the edge."""

    completion: Completion
    provider: ProviderName
    model: str
    latency_ms: float
    cost_usd: float
    structured_output: StructuredOutput | None = None
    """With a JSON response format: the gateway's check of the answer."""

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
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: tuple[ReasoningPart, ...] = ()
    response_id: str = ""
    structured_output: StructuredOutput | None = None
