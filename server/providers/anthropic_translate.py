"""Core types ⇄ the Messages API wire shapes: one function per direction (the request body, a response
body, a stream event). No I/O and no SDK objects.

Mapping (docs/providers.md has the table for all three providers):
- parts: text → `text`; image → `image` with a `base64` (media_type, data) or `url` source; document →
  `document` with a `base64` PDF source and its title. Consecutive turns of one role are combined (the
  API combines them too); role TOOL results become `tool_result` blocks of the user turn after the
  assistant's `tool_use` blocks, as the API requires.
- reasoning, by the model's thinking mode (catalogue; server/core/reasoning.py maps effort ⇄ budget):
  an effort on a model with adaptive thinking → `thinking: {type: adaptive, display: summarized}` +
  `output_config.effort`; a budget (or an effort on a budget-only model, as low 1024, medium 4096, high
  16384 tokens) → `thinking: {type: enabled, budget_tokens}` (at least 1024, below max_tokens); a budget
  of 0 → no `thinking` (Claude's thinking is off unless asked for). Adaptive thinking asks for `display:
  summarized` because Opus 4.7 and later return empty thinking text unless asked (SDK
  `types/thinking_config_adaptive_param.py`: "The default depends on the model"). Thinking blocks (text
  and `signature`) and `redacted_thinking` come back as reasoning parts and are sent back first in their
  assistant turn, unchanged, as multi-turn tool use with thinking requires; another provider's reasoning
  parts are never sent (their signatures mean nothing to Claude).
- response format: json_schema → `output_config.format` (every object schema closed with
  `additionalProperties: false`, which the API requires); json_object → the schema of any object is not
  expressible so: an instruction in the system prompt, checked by the gateway like any answer.
- a cache breakpoint on a message → `cache_control: ephemeral` on its last block.
- `user` → `metadata.user_id`; `seed` has no equivalent and is not sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.core.errors import ProviderBadRequest
from server.core.reasoning import plan as thinking_plan
from server.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningPart,
    ResponseFormatType,
    Role,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoiceMode,
    Usage,
)
from server.providers.assembly import ReasoningAssembler, ToolCallAssembler

KIND = "anthropic"
"""The provider kind: reasoning parts it produced name it, and only its own are sent back."""
MIN_THINKING_BUDGET = 1024
"""`budget_tokens` "Must be ≥1024 and less than `max_tokens`" (SDK types/thinking_config_enabled_param.py)."""
DISPLAY = "summarized"
"""`thinking.display` (SDK types/thinking_config_adaptive_param.py, thinking_config_enabled_param.py):
`summarized` returns the thinking text, which the caller asked for by asking for reasoning."""
JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else."
EPHEMERAL = {"type": "ephemeral"}


def thinking_budget(request: ChatRequest) -> int | None:
    """The thinking budget a request sends (None: no budget); a small one gets the API's minimum."""
    plan = thinking_plan(request.capabilities, request.reasoning)
    if plan is None or plan.budget is None:
        return None
    return max(MIN_THINKING_BUDGET, plan.budget)


def request_body(request: ChatRequest, max_tokens: int) -> dict[str, Any]:
    """The agents' part of a Messages body: system, messages, tools, tool choice, thinking, output
    format and end-user id. `max_tokens`: what the adapter would send; thinking raises it above the
    budget when the caller set none."""
    system = _system(request)
    body: dict[str, Any] = {"messages": _turns(request.messages)}
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": dict(t.parameters),
            }
            for t in request.tools
        ]
        if (choice := _tool_choice(request)) is not None:
            body["tool_choice"] = choice
    plan = thinking_plan(request.capabilities, request.reasoning)
    output_config: dict[str, Any] = {}
    budget = thinking_budget(request)
    if budget is not None:
        if request.max_tokens is not None and request.max_tokens <= budget:
            raise ProviderBadRequest(
                KIND,
                f"max_tokens ({request.max_tokens}) must be greater than the thinking budget ({budget})",
            )
        if _unthought_tool_turn(request.messages):
            # Manual thinking refuses to continue a tool turn that does not start with Claude's thinking
            # ("When `thinking` is enabled, a final `assistant` message must start with a thinking block",
            # dev.to/ji_ai/return-claudes-thinking-blocks-or-your-agent-breaks-2lpm); adaptive thinking
            # takes it. Said here, before any call, rather than thinking quietly switched off.
            raise ProviderBadRequest(
                KIND,
                "a thinking budget cannot continue a tool turn Claude did not think in (its tool calls "
                "carry no Claude thinking, e.g. they came from another provider): ask for an effort on a "
                "model with adaptive thinking, or for no reasoning, until the tool turn ends",
            )
        # No `display`: the models that take a budget (4.5, 4.6) return summarized thinking by default.
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if request.max_tokens is None:  # room to answer after thinking
            body["max_tokens"] = max(max_tokens, budget + MIN_THINKING_BUDGET)
    elif plan is not None and plan.effort is not None:
        # Adaptive thinking: Claude decides how much to think, steered by the effort (SDK
        # types/output_config_param.py: low | medium | high | xhigh | max). Recorded as accepted in
        # pydantic/pydantic-ai tests/models/cassettes/test_anthropic/test_anthropic_opus_48_features.yaml.
        body["thinking"] = {"type": "adaptive", "display": DISPLAY}
        output_config["effort"] = plan.effort.value
    fmt = request.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA:
        output_config["format"] = {"type": "json_schema", "schema": closed(fmt.schema or {})}
    if output_config:
        body["output_config"] = output_config
    if request.user:
        body["metadata"] = {"user_id": request.user}
    return body


def _unthought_tool_turn(messages: tuple[Message, ...]) -> bool:
    """Whether the conversation ends with tool results answering an assistant turn that carries no
    thinking of Claude's own (another provider's turn, or one whose thinking the caller dropped)."""
    index = len(messages)
    while index > 0 and messages[index - 1].role is Role.TOOL:
        index -= 1
    if index == len(messages) or index == 0:
        return False
    turn = messages[index - 1]
    own = [r for r in turn.reasoning if r.provider in (None, KIND)]
    return turn.role is Role.ASSISTANT and bool(turn.tool_calls) and not own


def _system(request: ChatRequest) -> str | list[dict[str, Any]]:
    """System text; text blocks when a system message marks a cache breakpoint."""
    systems = [m for m in request.messages if m.role is Role.SYSTEM and m.text()]
    fmt = request.response_format
    extra = (
        [JSON_OBJECT_INSTRUCTION] if fmt is not None and fmt.type is ResponseFormatType.JSON_OBJECT else []
    )
    if not any(m.cache_breakpoint for m in systems):
        return "\n\n".join([m.text() for m in systems] + extra)
    blocks: list[dict[str, Any]] = []
    for message in systems:
        block: dict[str, Any] = {"type": "text", "text": message.text()}
        if message.cache_breakpoint:
            block["cache_control"] = dict(EPHEMERAL)
        blocks.append(block)
    return blocks + [{"type": "text", "text": text} for text in extra]


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    parallel = {"disable_parallel_tool_use": True} if request.parallel_tool_calls is False else {}
    if choice is None:
        return {"type": "auto", **parallel} if parallel else None
    match choice.mode:
        case ToolChoiceMode.NONE:
            return {"type": "none"}
        case ToolChoiceMode.REQUIRED if choice.tool_name:
            return {"type": "tool", "name": choice.tool_name, **parallel}
        case ToolChoiceMode.REQUIRED:
            return {"type": "any", **parallel}
    return {"type": "auto", **parallel}


def _turns(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """User and assistant turns of content blocks; tool results in the user turn after their calls."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        blocks = _blocks(message)
        if not blocks:
            continue  # the API refuses empty text blocks; an empty turn carries nothing
        if message.cache_breakpoint:
            blocks[-1]["cache_control"] = dict(EPHEMERAL)
        role = "assistant" if message.role is Role.ASSISTANT else "user"
        if turns and turns[-1]["role"] == role:
            if role == "user" and blocks[0]["type"] == "tool_result":
                # Tool results lead their user turn (the API reads them there).
                results = [b for b in turns[-1]["content"] if b["type"] == "tool_result"]
                others = [b for b in turns[-1]["content"] if b["type"] != "tool_result"]
                turns[-1]["content"] = results + blocks + others
            else:
                turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[-1]["role"] == "assistant":
        # A final assistant turn is a prefill, and the API refuses one that ends in whitespace.
        last = turns[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                turns[-1]["content"].pop()
                if not turns[-1]["content"]:
                    turns.pop()
    if not turns:
        raise ProviderBadRequest(KIND, "at least one user or assistant message with content is required")
    return [_compact(turn) for turn in turns]


def _compact(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn of one plain text block as the string shorthand the API documents (the same request)."""
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role is Role.TOOL:
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if text := message.text():
            result["content"] = text
        return [result]
    blocks: list[dict[str, Any]] = []
    if message.role is Role.ASSISTANT:
        # Only Claude's own reasoning goes back: another provider's signature means nothing here.
        blocks += [_reasoning_block(r) for r in message.reasoning if r.provider in (None, KIND)]
    blocks += [_part(p) for p in message.content_parts() if not (isinstance(p, TextPart) and not p.text)]
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments()} for c in message.tool_calls
    ]
    return blocks


def _reasoning_block(part: ReasoningPart) -> dict[str, Any]:
    """Anthropic's signatures and redacted data are ASCII (base64) text it sent; bytes that are not were
    not sent by it, and go as they are (latin-1 keeps every byte) for the API to refuse as its own 400."""
    if part.redacted_data:
        return {"type": "redacted_thinking", "data": part.redacted_data.decode("latin-1")}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature.decode("latin-1")}


def _part(part: ContentPart) -> dict[str, Any]:
    match part:
        case TextPart(text):
            return {"type": "text", "text": text}
        case ImagePart(data, mime_type, url):
            if url:
                return {"type": "image", "source": {"type": "url", "url": url}}
            return {"type": "image", "source": _base64(mime_type, data)}
        case DocumentPart(data, mime_type, title):
            document: dict[str, Any] = {"type": "document", "source": _base64(mime_type, data)}
            if title:
                document["title"] = title
            return document


def _base64(mime_type: str, data: bytes) -> dict[str, str]:
    return {"type": "base64", "media_type": mime_type, "data": base64.b64encode(data).decode()}


def closed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `schema` with every object schema closed (`additionalProperties: false`), as the API's
    structured outputs require; an explicit `additionalProperties` is kept."""
    copy: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, Mapping):
            copy[key] = {k: closed(v) if isinstance(v, Mapping) else v for k, v in value.items()}
        elif key in ("items", "additionalItems", "not") and isinstance(value, Mapping):
            copy[key] = closed(value)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            copy[key] = [closed(v) if isinstance(v, Mapping) else v for v in value]
        else:
            copy[key] = value
    if (copy.get("type") == "object" or "properties" in copy) and "additionalProperties" not in copy:
        copy["additionalProperties"] = False
    return copy


@dataclass(slots=True, frozen=True)
class Reply:
    """What a response's content blocks carry."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    reasoning: tuple[ReasoningPart, ...]


def reply(blocks: Any) -> Reply:
    """The text, tool calls and reasoning (with signatures) of a response's content blocks."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    reasoning: list[ReasoningPart] = []
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        match block.get("type"):
            case "text":
                texts.append(block.get("text") or "")
            case "tool_use":
                arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
                calls.append(ToolCall(block.get("id") or "", block.get("name") or "", arguments))
            case "thinking":
                signature = (block.get("signature") or "").encode()
                reasoning.append(ReasoningPart(block.get("thinking") or "", signature, b"", KIND))
            case "redacted_thinking":
                data = (block.get("data") or "").encode()
                reasoning.append(ReasoningPart("", b"", data, KIND))
    return Reply("".join(texts), tuple(calls), tuple(reasoning))


def usage(reported: dict[str, Any]) -> Usage:
    """Anthropic counts cached prompt tokens apart from input_tokens; the core counts them in. Thinking
    is part of output_tokens; `output_tokens_details.thinking_tokens` says how much."""
    cache_read = reported.get("cache_read_input_tokens") or 0
    cache_write = reported.get("cache_creation_input_tokens") or 0
    thinking = (reported.get("output_tokens_details") or {}).get("thinking_tokens") or 0
    return Usage(
        (reported.get("input_tokens") or 0) + cache_read + cache_write,
        reported.get("output_tokens") or 0,
        cache_read,
        cache_write,
        thinking,
    )


@dataclass(slots=True)
class StreamState:
    """What a stream's events build up: tool calls and reasoning by content block."""

    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    reasoning: ReasoningAssembler = field(default_factory=lambda: ReasoningAssembler(KIND))
    _tool_index: dict[int, int] = field(default_factory=dict)
    """Content block index → tool call index (0, 1, ... in the order the calls start)."""

    def deltas(self, event: dict[str, Any]) -> Iterator[TextDelta | ToolCallDelta | ReasoningDelta]:
        """The deltas a content_block_start / content_block_delta event carries."""
        index = event.get("index") or 0
        if event.get("type") == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tool_index[index] = len(self._tool_index)
                yield self.calls.add(
                    ToolCallDelta(self._tool_index[index], block.get("id") or "", block.get("name") or "")
                )
            elif block.get("type") == "redacted_thinking":
                self.reasoning.redacted(index, (block.get("data") or "").encode())
            return
        delta = event.get("delta") or {}
        match delta.get("type"):
            case "text_delta" if delta.get("text"):
                yield TextDelta(delta["text"])
            case "input_json_delta" if index in self._tool_index:
                fragment = delta.get("partial_json") or ""
                yield self.calls.add(ToolCallDelta(self._tool_index[index], arguments_delta=fragment))
            case "thinking_delta":
                self.reasoning.text(index, delta.get("thinking") or "")
                if delta.get("thinking"):
                    yield ReasoningDelta(delta["thinking"])
            case "signature_delta":
                self.reasoning.signature(index, (delta.get("signature") or "").encode())
