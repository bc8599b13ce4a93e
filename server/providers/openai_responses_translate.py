"""Core types ⇄ the Responses API wire shapes (`POST /v1/responses`): the request body, a response body,
a stream's events. No I/O and no SDK objects: the adapter (server/providers/openai_responses.py) posts
what `request_body` builds through the SDK's own client and hands back what it parsed.

Field names and types are the installed SDK's (`openai/types/responses/response_create_params.py` and
the `*_param.py` files it imports; `response.py`, `response_stream_event.py` for what comes back); the
shapes that come back follow recorded real traffic (pydantic/pydantic-ai
`tests/models/cassettes/test_openai_responses/test_openai_responses_thinking_with_tool_calls.yaml`,
`test_openai_responses_phase_streamed_on_part_start.yaml`, `test_openai_responses_thinking_part_iter.yaml`).

Mapping (docs/providers.md has the table):
- stateless: `store: false`; a reasoning model's request asks `include: ["reasoning.encrypted_content"]`,
  so each `reasoning` output item comes back as a ReasoningPart (`id` the item's `rs_…` id, `signature`
  its `encrypted_content`, `text` its summary) and is replayed, in order, before the items of the turn
  it preceded. Items are never referred to by id alone: with `store: false` the API keeps nothing
  ("Item with id 'rs_…' not found. Items are not persisted when `store` is set to false.",
  can1357/oh-my-pi#41), so a reasoning part without its encrypted content is not sent.
- only OpenAI's own reasoning goes back to it; another provider's parts are left out.
- assistant tool calls → `function_call` items (`call_id` the call's id; `id` the `fc_…` item id when the
  call came from this API, omitted otherwise: the API refuses an item id of another shape, "Invalid
  'input[N].id': 'call_…'. Expected an ID that begins with 'fc'.", Wei-Shaw/sub2api#3785,
  nodetool-ai/nodetool#4252); role TOOL → `function_call_output`.
- parts: text → `input_text`; image → `input_image` (`detail` is required: "auto"); document →
  `input_file` with `file_data` as a `data:` URL.
- tools → flat `function` tools with `strict: false`: the field is required (`function_tool_param.py`)
  and the API's default is strict, which would refuse the ordinary JSON Schemas Chat Completions takes.
- response format → `text.format`; reasoning → `reasoning.effort` (a budget → the nearest effort, as
  for Chat Completions) and `reasoning.summary: "auto"` so the summary comes back as reasoning text;
  `max_tokens` → `max_output_tokens`; `user` → `safety_identifier`. The API takes no `stop` (refused by
  the adapter) and no `seed` (best-effort in the contract: not sent; neither is in
  `response_create_params.py`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from server.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    ReasoningPart,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    Usage,
)
from server.providers.base import finish_reason
from server.providers.openai_translate import data_url, effort, safety_identifier

KIND = "openai"
"""The provider kind reasoning parts name: only OpenAI's own are sent back."""
ENCRYPTED_REASONING = "reasoning.encrypted_content"
FUNCTION_CALL_ID_PREFIX = "fc_"
REASONING_ID_PREFIX = "rs_"
ROLES = {Role.SYSTEM: "system", Role.USER: "user", Role.ASSISTANT: "assistant"}
# Why a response is incomplete (`Response.incomplete_details.reason` in openai/types/responses/response.py:
# max_output_tokens, max_messages, content_filter, steered); one not listed is OTHER, logged with its value.
INCOMPLETE_REASONS = {
    "max_output_tokens": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "max_messages": FinishReason.OTHER,
    "steered": FinishReason.OTHER,
}


def request_body(request: ChatRequest, *, summaries: bool = True) -> dict[str, Any]:
    """The Responses API body of a request (without `stream`); `summaries`: ask for the reasoning's
    summary when the request sets reasoning (OpenAI refuses it to an organization it has not verified:
    "Your organization must be verified to generate reasoning summaries. ...", param `reasoning.summary`,
    code `unsupported_value`; continuedev/continue#9283, OpenHands/software-agent-sdk#987)."""
    body: dict[str, Any] = {
        "model": request.model,
        "input": [item for message in request.messages for item in _items(message)],
        "store": False,
    }
    if request.capabilities.reasoning:
        body["include"] = [ENCRYPTED_REASONING]
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "parameters": dict(tool.parameters),
                "strict": False,
            }
            for tool in request.tools
        ]
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.response_format is not None and (fmt := _format(request.response_format)) is not None:
        body["text"] = {"format": fmt}
    if request.reasoning is not None:
        body["reasoning"] = {"effort": effort(request.reasoning)}
        if summaries:
            body["reasoning"]["summary"] = "auto"
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    for name, value in (("temperature", request.temperature), ("top_p", request.top_p)):
        if value is not None:
            body[name] = value
    if request.user:
        body["safety_identifier"] = safety_identifier(request.user)
    return body


def _items(message: Message) -> Iterator[dict[str, Any]]:
    """The input items of one message: a tool result is a `function_call_output`; an assistant turn is
    its own reasoning items, its text, then its `function_call`s (the order the API produced them)."""
    if message.role is Role.TOOL:
        yield {"type": "function_call_output", "call_id": message.tool_call_id, "output": message.text()}
        return
    if message.role is Role.ASSISTANT:
        for part in message.reasoning:
            if (item := _reasoning_item(part)) is not None:
                yield item
        if text := message.text():
            yield {"role": "assistant", "content": text}
        for call in message.tool_calls:
            yield _function_call(call)
        return
    parts = message.content_parts()
    if not parts:
        return
    if all(isinstance(p, TextPart) for p in parts):
        yield {"role": ROLES[message.role], "content": message.text()}
    else:
        yield {"role": ROLES[message.role], "content": [_part(p) for p in parts]}


def _reasoning_item(part: ReasoningPart) -> dict[str, Any] | None:
    """OpenAI's own reasoning item, with its encrypted content; None for anything else (another
    provider's reasoning, or one without the content a stateless request needs)."""
    if part.provider not in (None, KIND) or not part.id.startswith(REASONING_ID_PREFIX) or not part.signature:
        return None
    return {
        "type": "reasoning",
        "id": part.id,
        "encrypted_content": part.signature.decode("latin-1"),
        "summary": [{"type": "summary_text", "text": part.text}] if part.text else [],
    }


def _function_call(call: ToolCall) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments_json,
    }
    if call.item_id.startswith(FUNCTION_CALL_ID_PREFIX):
        item["id"] = call.item_id
    return item


def _part(part: ContentPart) -> dict[str, Any]:
    match part:
        case TextPart(text):
            return {"type": "input_text", "text": text}
        case ImagePart(data, mime_type, url):
            return {"type": "input_image", "image_url": url or data_url(mime_type, data), "detail": "auto"}
        case DocumentPart(data, mime_type, title):
            return {
                "type": "input_file",
                "filename": title or "document.pdf",
                "file_data": data_url(mime_type, data),
            }


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.mode is ToolChoiceMode.REQUIRED and choice.tool_name:
        return {"type": "function", "name": choice.tool_name}
    return choice.mode.value  # auto | none | required: the API's own words


def _format(fmt: ResponseFormat) -> dict[str, Any] | None:
    match fmt.type:
        case ResponseFormatType.JSON_OBJECT:
            return {"type": "json_object"}
        case ResponseFormatType.JSON_SCHEMA:
            spec: dict[str, Any] = {"type": "json_schema", "name": fmt.name, "schema": dict(fmt.schema or {})}
            if fmt.strict:
                spec["strict"] = True
            return spec
    return None


# --- what comes back ---------------------------------------------------------------------------------


def usage(reported: Mapping[str, Any]) -> Usage:
    """Usage with cached input tokens and reasoning tokens (`ResponseUsage`)."""
    inputs = reported.get("input_tokens_details") or {}
    outputs = reported.get("output_tokens_details") or {}
    return Usage(
        reported.get("input_tokens") or 0,
        reported.get("output_tokens") or 0,
        inputs.get("cached_tokens") or 0,
        0,
        outputs.get("reasoning_tokens") or 0,
    )


def finish(response: Mapping[str, Any], has_calls: bool, provider: str = KIND) -> FinishReason:
    """A finished response's finish reason: its status, and why an incomplete one stopped."""
    status = response.get("status")
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return finish_reason(provider, reason if isinstance(reason, str) else "", INCOMPLETE_REASONS)
    if status == "completed":
        if refused(response):
            return FinishReason.CONTENT_FILTER
        return FinishReason.TOOL_CALLS if has_calls else FinishReason.STOP
    return finish_reason(provider, status if isinstance(status, str) else "", {})


def refused(response: Mapping[str, Any]) -> bool:
    """Whether the model declined: a `refusal` content part in a message output item
    (openai/types/responses/response_output_refusal.py), which the contract reports as CONTENT_FILTER, as
    Anthropic's `refusal` stop reason is, rather than as an ordinary answer."""
    return any(
        isinstance(part, Mapping) and part.get("type") == "refusal"
        for item in response.get("output") or ()
        if isinstance(item, Mapping) and item.get("type") == "message"
        for part in item.get("content") or ()
    )


def reasoning_part(item: Mapping[str, Any]) -> ReasoningPart:
    """A `reasoning` output item as the part the next turn sends back."""
    summary = "\n\n".join(s.get("text") or "" for s in item.get("summary") or () if isinstance(s, Mapping))
    encrypted = item.get("encrypted_content")
    return ReasoningPart(
        text=summary,
        signature=encrypted.encode("latin-1") if isinstance(encrypted, str) else b"",
        provider=KIND,
        id=item.get("id") or "",
    )


def tool_call(item: Mapping[str, Any]) -> ToolCall:
    """A `function_call` output item."""
    return ToolCall(
        item.get("call_id") or "",
        item.get("name") or "",
        item.get("arguments") or "{}",
        item_id=item.get("id") or "",
    )


def message_text(item: Mapping[str, Any]) -> str:
    """The text of a `message` output item (its `output_text` parts; a `refusal` part's words)."""
    texts = []
    for part in item.get("content") or ():
        if isinstance(part, Mapping):
            texts.append(part.get("text") or part.get("refusal") or "")
    return "".join(texts)


def output(response: Mapping[str, Any]) -> tuple[str, tuple[ToolCall, ...], tuple[ReasoningPart, ...]]:
    """The text, tool calls and reasoning of a response's `output` items, in order."""
    text, calls, reasoning = [], [], []
    for item in response.get("output") or ():
        if not isinstance(item, Mapping):
            continue
        match item.get("type"):
            case "message":
                text.append(message_text(item))
            case "function_call":
                calls.append(tool_call(item))
            case "reasoning":
                reasoning.append(reasoning_part(item))
    return "".join(text), tuple(calls), tuple(reasoning)
