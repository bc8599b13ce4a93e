"""Builders for the agents' side of the contract: tools, tool results, images and documents, response
formats, reasoning control, and the assistant turn to send back after a response.

    weather = tool("get_weather", "The weather in a city.", {"type": "object", "properties": {...}})
    reply = await client.complete(messages, tools=[weather])
    messages += [assistant_turn(reply), *(tool_result(c.id, run(c)) for c in reply.tool_calls)]
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from llm_grpc.v1 import llm_pb2

Effort = Literal["low", "medium", "high"]
ToolChoiceSpec = str | llm_pb2.ToolChoice
"""`"auto"`, `"none"`, `"required"`, a tool's name (that tool must be called), or a ToolChoice."""

_MODES = {
    "auto": llm_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": llm_pb2.TOOL_CHOICE_MODE_NONE,
    "required": llm_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
_EFFORTS = {
    "low": llm_pb2.REASONING_EFFORT_LOW,
    "medium": llm_pb2.REASONING_EFFORT_MEDIUM,
    "high": llm_pb2.REASONING_EFFORT_HIGH,
}


def tool(name: str, description: str = "", parameters: Mapping[str, Any] | None = None) -> llm_pb2.Tool:
    """A tool the model may call; `parameters` is the JSON Schema of its arguments (an object schema)."""
    return llm_pb2.Tool(
        name=name,
        description=description,
        parameters_json=json.dumps(parameters) if parameters is not None else "",
    )


def tool_choice(choice: ToolChoiceSpec) -> llm_pb2.ToolChoice:
    if isinstance(choice, llm_pb2.ToolChoice):
        return choice
    mode = _MODES.get(choice)
    if mode is not None:
        return llm_pb2.ToolChoice(mode=mode)
    return llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_REQUIRED, tool_name=choice)


def arguments(call: llm_pb2.ToolCall) -> Any:
    """A tool call's arguments, parsed (`{}` when the model sent none)."""
    return json.loads(call.arguments_json) if call.arguments_json else {}


def tool_result(call_id: str, result: str | Mapping[str, Any] | list[Any]) -> llm_pb2.Message:
    """The ROLE_TOOL message answering tool call `call_id`; a non-string result is sent as JSON."""
    content = result if isinstance(result, str) else json.dumps(result)
    return llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=call_id, content=content)


def assistant_turn(
    response: llm_pb2.CompleteResponse | llm_pb2.StreamDone, content: str | None = None
) -> llm_pb2.Message:
    """The assistant message to put back in the conversation after a response: its text, its tool calls
    and its reasoning (with the provider's signatures, which the next turn needs). For a stream, pass
    `done` and the text the stream delivered."""
    text = content if content is not None else getattr(response, "content", "")
    return llm_pb2.Message(
        role=llm_pb2.ROLE_ASSISTANT,
        content=text,
        tool_calls=response.tool_calls,
        reasoning=response.reasoning,
    )


def text(value: str) -> llm_pb2.ContentPart:
    return llm_pb2.ContentPart(text=value)


def image(source: bytes | str | Path, mime_type: str = "") -> llm_pb2.ContentPart:
    """An image part: bytes (give `mime_type`), a file path (type from its name), or an https:// URL."""
    if isinstance(source, str) and source.startswith(("https://", "http://")):
        return llm_pb2.ContentPart(image=llm_pb2.Image(url=source, mime_type=mime_type))
    data, guessed = _read(source)
    return llm_pb2.ContentPart(image=llm_pb2.Image(data=data, mime_type=mime_type or guessed))


def document(source: bytes | str | Path, mime_type: str = "", title: str = "") -> llm_pb2.ContentPart:
    """A document part (PDF): bytes or a file path."""
    data, guessed = _read(source)
    return llm_pb2.ContentPart(
        document=llm_pb2.Document(data=data, mime_type=mime_type or guessed or "application/pdf", title=title)
    )


def user(content: str = "", *parts: llm_pb2.ContentPart) -> llm_pb2.Message:
    """A user message: text, then images, documents or more text."""
    return llm_pb2.Message(role=llm_pb2.ROLE_USER, content=content, parts=parts)


def json_object() -> llm_pb2.ResponseFormat:
    """Ask for any JSON object."""
    return llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)


def json_schema(
    schema: Mapping[str, Any], name: str = "response", strict: bool = False
) -> llm_pb2.ResponseFormat:
    """Ask for JSON matching `schema`; the response's `structured_output` says whether it does."""
    return llm_pb2.ResponseFormat(
        type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        name=name,
        schema_json=json.dumps(schema),
        strict=strict,
    )


def reasoning(effort: Effort | None = None, *, budget_tokens: int | None = None) -> llm_pb2.Reasoning:
    """Reasoning control: an effort level or a thinking budget in tokens."""
    if budget_tokens is not None:
        return llm_pb2.Reasoning(budget_tokens=budget_tokens)
    if effort is None:
        return llm_pb2.Reasoning()
    return llm_pb2.Reasoning(effort=_EFFORTS[effort])


def _read(source: bytes | str | Path) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, ""
    path = Path(source)
    return path.read_bytes(), mimetypes.guess_type(path.name)[0] or ""
