"""Core types ⇄ the Chat Completions wire shapes: one function per direction (the request body, a
response body, a stream chunk). No I/O and no SDK objects: the adapter posts what `request_body` builds
through the SDK's own client and hands back what it parsed.

Mapping (docs/providers.md has the table for all three providers):
- parts: text → `text`; image → `image_url` (a `data:` URL for inline bytes); document → `file` with
  `file_data` as a `data:` URL. Assistant tool calls → `tool_calls`; role TOOL → role `tool`.
- reasoning: effort → `reasoning_effort`; a budget → the effort whose spend is nearest (below 2048
  low, below 8192 medium, else high): Chat Completions takes no token budget. Reasoning parts are not
  sent back (the API keeps no reasoning state in chat completions).
- `user` → `safety_identifier` (at most 64 characters: a longer id is sent as its SHA-256).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

from server.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ReasoningConfig,
    ReasoningEffort,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    Usage,
)

ROLES = {Role.SYSTEM: "system", Role.USER: "user", Role.ASSISTANT: "assistant", Role.TOOL: "tool"}
SAFETY_IDENTIFIER_LENGTH = 64
BUDGET_EFFORTS = ((2048, "low"), (8192, "medium"))
"""A thinking budget as Chat Completions' effort: below each bound, that effort; above all, high."""


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The agents' part of a Chat Completions body: messages, tools, tool choice, response format,
    reasoning effort, seed and end-user id (sampling and limits are the adapter's)."""
    body: dict[str, Any] = {"messages": [m for m in map(_message, request.messages) if m is not None]}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in request.tools
        ]
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None and request.tools:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.response_format is not None and (fmt := _response_format(request.response_format)) is not None:
        body["response_format"] = fmt
    if request.reasoning is not None:
        body["reasoning_effort"] = effort(request.reasoning)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.user:
        body["safety_identifier"] = safety_identifier(request.user)
    return body


def _message(message: Message) -> dict[str, Any] | None:
    """One message as the API takes it; None for an empty turn (it carries nothing)."""
    role = ROLES[message.role]
    if message.role is Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()}
    parts = message.content_parts()
    if message.role is Role.ASSISTANT and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.text() or None,
            "tool_calls": [_tool_call(call) for call in message.tool_calls],
        }
    if not parts:
        return None
    if all(isinstance(p, TextPart) for p in parts):
        return {"role": role, "content": message.text()}
    return {"role": role, "content": [_part(p) for p in parts]}


def _part(part: ContentPart) -> dict[str, Any]:
    match part:
        case TextPart(text):
            return {"type": "text", "text": text}
        case ImagePart(data, mime_type, url):
            return {"type": "image_url", "image_url": {"url": url or data_url(mime_type, data)}}
        case DocumentPart(data, mime_type, title):
            return {
                "type": "file",
                "file": {"filename": title or "document.pdf", "file_data": data_url(mime_type, data)},
            }


def data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.mode is ToolChoiceMode.REQUIRED and choice.tool_name:
        return {"type": "function", "function": {"name": choice.tool_name}}
    return choice.mode.value  # auto | none | required: the API's own words


def _response_format(fmt: ResponseFormat) -> dict[str, Any] | None:
    match fmt.type:
        case ResponseFormatType.JSON_OBJECT:
            return {"type": "json_object"}
        case ResponseFormatType.JSON_SCHEMA:
            spec: dict[str, Any] = {"name": fmt.name, "schema": dict(fmt.schema or {})}
            if fmt.strict:
                spec["strict"] = True
            return {"type": "json_schema", "json_schema": spec}
    return None


def effort(reasoning: ReasoningConfig) -> str:
    if reasoning.effort is not None:
        return reasoning.effort.value
    budget = reasoning.budget_tokens or 0
    if reasoning.budget_tokens == 0:
        # No thinking asked for: `none` (gpt-5.1 and later; "gpt-5.1 defaults to none, which does not
        # perform reasoning", openai/openai-ruby lib/openai/models/reasoning_effort.rb). Models that
        # cannot stop thinking (gpt-5, gpt-5-mini) have `thinking_off = false` in the catalogue and are
        # refused before any call, never sent `low` in its place.
        return "none"
    return next((effort for bound, effort in BUDGET_EFFORTS if budget < bound), ReasoningEffort.HIGH.value)


def safety_identifier(user: str) -> str:
    if len(user) <= SAFETY_IDENTIFIER_LENGTH:
        return user
    return hashlib.sha256(user.encode()).hexdigest()


def tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The tool calls of a response message."""
    calls = []
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        calls.append(
            ToolCall(call.get("id") or "", function.get("name") or "", function.get("arguments") or "{}")
        )
    return tuple(calls)


def usage(reported: dict[str, Any]) -> Usage:
    """Usage with the cached (and, where reported, cache-written) prompt tokens and reasoning tokens."""
    prompt = reported.get("prompt_tokens_details") or {}
    completion = reported.get("completion_tokens_details") or {}
    return Usage(
        reported.get("prompt_tokens") or 0,
        reported.get("completion_tokens") or 0,
        prompt.get("cached_tokens") or 0,
        prompt.get("cache_write_tokens") or 0,
        completion.get("reasoning_tokens") or 0,
    )


def chunk_deltas(choice: dict[str, Any]) -> Iterator[TextDelta | ToolCallDelta]:
    """The deltas of one streamed choice: its text, then its tool-call fragments."""
    delta = choice.get("delta") or {}
    if text := delta.get("content"):
        yield TextDelta(text)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        yield ToolCallDelta(
            index=call.get("index") or 0,
            id=call.get("id") or "",
            name=function.get("name") or "",
            arguments_delta=function.get("arguments") or "",
        )
