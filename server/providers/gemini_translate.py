"""Core types ⇄ google-genai's request and response types: one function per direction (contents and
config, a response or stream chunk). No I/O.

Mapping (docs/providers.md has the table for all three providers):
- parts: text → `text`; inline image or document → `inline_data`; an image URL → `file_data` (its MIME
  type from the part, else from the URL's extension). Assistant tool calls → `function_call` parts, each
  with the `thought_signature` the API gave it (Gemini 3 refuses a replayed call without it); role TOOL →
  a `function_response` part in a user turn, named after the call it answers (its `response` the result
  as a JSON object, or `{"output": text}`).
- Gemini names no call ids on the Developer API: the adapter names them `gemini-call-<n>` and never sends
  those back (a call id the API did give is sent back).
- reasoning, by the model's thinking mode (catalogue; server/core/reasoning.py maps effort ⇄ budget ⇄
  level): Gemini 3 (`levels`) → `thinking_level` from the model's own levels (a budget as the nearest
  effort, a budget of 0 as MINIMAL where the model has it); Gemini 2.5 (`budget`) → `thinking_budget`
  (an effort as its budget). Never both: the API refuses them together. Always with `include_thoughts`,
  so thought summaries come back as reasoning parts (with their signatures, sent back on the next turn).
  Finish STOP with function calls is TOOL_CALLS.
- another provider's history: its reasoning parts are not sent; a function call Gemini did not sign
  (another provider's, or a caller's own) goes with the signature Google documents for that case,
  `skip_thought_signature_validator` (DUMMY_SIGNATURE), so Gemini 3 does not refuse the turn.
- response format: json_object → `response_mime_type: application/json`; json_schema → that and
  `response_json_schema`. `seed` → `seed`. Parallel tool calls and `user` have no equivalent.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.genai import types

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
from server.providers.assembly import ToolCallAssembler

KIND = "gemini"
"""The provider kind: reasoning parts it produced name it, and only its own are sent back."""
SYNTHETIC_ID = "gemini-call-"
"""Prefix of the call ids the adapter makes up where the API gives none."""
THINKING_LEVELS = {
    "minimal": types.ThinkingLevel.MINIMAL,
    "low": types.ThinkingLevel.LOW,
    "medium": types.ThinkingLevel.MEDIUM,
    "high": types.ThinkingLevel.HIGH,
    "xhigh": types.ThinkingLevel.XHIGH,
}
"""google-genai `types.ThinkingLevel` (the catalogue's `thinking_levels` names them in lower case)."""
DUMMY_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")
"""What Google documents for a function call without a Gemini signature (history from another model),
as the JSON value `"thoughtSignature": "skip_thought_signature_validator"` (the SDK sends `bytes` fields
base64url-encoded, so these are the bytes whose encoding is that string):
"You can set the following dummy signatures of either "context_engineering_is_the_way_to_go" or
"skip_thought_signature_validator"" (ai.google.dev/gemini-api/docs/thought-signatures#faqs), and Vertex AI
"You can set thought_signature to skip_thought_signature_validator"
(cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures): this one works on both. Quoted so in
pydantic/pydantic-ai `pydantic_ai_slim/pydantic_ai/models/gemini.py`."""
TOOL_MODES = {
    ToolChoiceMode.AUTO: types.FunctionCallingConfigMode.AUTO,
    ToolChoiceMode.NONE: types.FunctionCallingConfigMode.NONE,
    ToolChoiceMode.REQUIRED: types.FunctionCallingConfigMode.ANY,
}


def contents(request: ChatRequest) -> list[types.Content]:
    """The conversation as Gemini contents: user and model turns (consecutive turns of one role
    combined: the API has refused non-alternating turns), tool results as function responses."""
    names = {call.id: call.name for m in request.messages for call in m.tool_calls}
    # Gemini 3 (thinking levels) refuses a function call turn without a signature; 2.5 does not check.
    signed = request.capabilities.thinking == "levels"
    result: list[types.Content] = []
    for message in request.messages:
        if message.role is Role.SYSTEM:
            continue
        parts = _parts(message, names, signed)
        if not parts:
            continue  # the API refuses an empty text part; an empty turn carries nothing
        role = "model" if message.role is Role.ASSISTANT else "user"
        if result and result[-1].role == role and result[-1].parts is not None:
            result[-1].parts.extend(parts)
        else:
            result.append(types.Content(role=role, parts=parts))
    if not result:
        raise ProviderBadRequest(KIND, "at least one user or assistant message with content is required")
    return result


def _parts(message: Message, names: dict[str, str], signed: bool) -> list[types.Part]:
    if message.role is Role.TOOL:
        answer = types.FunctionResponse(
            name=names.get(message.tool_call_id, ""),
            response=_result(message.text()),
            id=_sent_id(message.tool_call_id),
        )
        return [types.Part(function_response=answer)]
    parts: list[types.Part] = []
    signatures: list[bytes] = []
    if message.role is Role.ASSISTANT:
        for reasoning in message.reasoning:
            if reasoning.provider not in (None, KIND):
                continue  # another provider's reasoning means nothing here
            if reasoning.text:
                parts.append(
                    types.Part(
                        text=reasoning.text, thought=True, thought_signature=reasoning.signature or None
                    )
                )
            elif reasoning.signature:
                signatures.append(reasoning.signature)
    content = [_part(p) for p in message.content_parts() if not (isinstance(p, TextPart) and not p.text)]
    if content and signatures and content[-1].text is not None:
        content[-1].thought_signature = signatures[0]  # the signature Gemini put on its answer's text
    parts += content
    parts += [
        types.Part(
            function_call=types.FunctionCall(name=c.name, args=c.arguments(), id=_sent_id(c.id)),
            thought_signature=_call_signature(c, first=signed and index == 0),
        )
        for index, c in enumerate(message.tool_calls)
    ]
    return parts


def _call_signature(call: ToolCall, *, first: bool) -> bytes | None:
    """The call's own signature; for the first call of a turn Gemini did not sign, the documented dummy
    (Gemini 3 checks the first call of each step; the others of a parallel turn carry none)."""
    if call.signature:
        return call.signature
    return DUMMY_SIGNATURE if first else None


def _sent_id(call_id: str) -> str | None:
    """A call id as sent back: one the API gave, never one the adapter made up."""
    return None if not call_id or call_id.startswith(SYNTHETIC_ID) else call_id


def _result(text: str) -> dict[str, Any]:
    """A tool result as a function response: the JSON object it is, else `{"output": text}`."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past what the parser can take
        return {"output": text}
    return value if isinstance(value, dict) else {"output": value}


def _part(part: ContentPart) -> types.Part:
    match part:
        case TextPart(text):
            return types.Part(text=text)
        case ImagePart(data, mime_type, url) if url:
            guessed = mime_type or mimetypes.guess_type(url)[0] or "image/jpeg"
            return types.Part(file_data=types.FileData(file_uri=url, mime_type=guessed))
        case ImagePart(data, mime_type, _) | DocumentPart(data, mime_type, _):
            return types.Part(inline_data=types.Blob(data=data, mime_type=mime_type))
    raise AssertionError(part)  # pragma: no cover - the union is exhaustive


def config_fields(request: ChatRequest) -> dict[str, Any]:
    """The agents' part of GenerateContentConfig: tools, tool config, response format, thinking, seed."""
    fields: dict[str, Any] = {}
    if request.tools:
        declarations = [
            types.FunctionDeclaration(
                name=t.name, description=t.description or None, parameters_json_schema=dict(t.parameters)
            )
            for t in request.tools
        ]
        fields["tools"] = [types.Tool(function_declarations=declarations)]
        if request.tool_choice is not None:
            choice = request.tool_choice
            allowed = (
                [choice.tool_name] if choice.mode is ToolChoiceMode.REQUIRED and choice.tool_name else None
            )
            fields["tool_config"] = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(
                    mode=TOOL_MODES[choice.mode], allowed_function_names=allowed
                )
            )
    fmt = request.response_format
    if fmt is not None and fmt.type is not ResponseFormatType.TEXT:
        fields["response_mime_type"] = "application/json"
        if fmt.type is ResponseFormatType.JSON_SCHEMA and fmt.schema is not None:
            fields["response_json_schema"] = dict(fmt.schema)
    plan = thinking_plan(request.capabilities, request.reasoning)
    if plan is not None and plan.level is not None:
        fields["thinking_config"] = types.ThinkingConfig(
            thinking_level=THINKING_LEVELS[plan.level], include_thoughts=True
        )
    elif plan is not None:
        # A budget, or 0 to stop thinking (only where the catalogue says the model can: core refusals).
        budget = 0 if plan.off else plan.budget
        fields["thinking_config"] = types.ThinkingConfig(thinking_budget=budget, include_thoughts=budget != 0)
    if request.seed is not None:
        fields["seed"] = request.seed
    return fields


def usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    """Thinking is billed as output, so thoughts count as completion (and reasoning) tokens; the prompt
    count includes the cached tokens."""
    if metadata is None:
        return Usage()
    thoughts = metadata.thoughts_token_count or 0
    return Usage(
        metadata.prompt_token_count or 0,
        (metadata.candidates_token_count or 0) + thoughts,
        metadata.cached_content_token_count or 0,
        0,
        thoughts,
    )


@dataclass(slots=True)
class Reader:
    """Reads responses (a unary one, or a stream's chunks in order): text, function calls with their
    signatures and ids, thoughts and the signatures Gemini attaches to text."""

    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    reasoning: list[ReasoningPart] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def deltas(
        self, response: types.GenerateContentResponse
    ) -> Iterator[TextDelta | ToolCallDelta | ReasoningDelta]:
        if not response.candidates or response.candidates[0].content is None:
            return
        for part in response.candidates[0].content.parts or ():
            if part.function_call is not None:
                call = part.function_call
                index = len(self.calls.calls())
                arguments = json.dumps(call.args or {}, separators=(",", ":"))
                # Gemini names no call id: one made up, unique across the conversation (the contract pairs
                # tool results by id; `_sent_id` never sends it back).
                made_up = f"{SYNTHETIC_ID}{uuid.uuid4().hex[:16]}"
                delta = ToolCallDelta(index, call.id or made_up, call.name or "", arguments)
                yield self.calls.add(delta, part.thought_signature or b"")
            elif part.thought:
                self.reasoning.append(
                    ReasoningPart(part.text or "", part.thought_signature or b"", b"", KIND)
                )
                if part.text:
                    yield ReasoningDelta(part.text)
            else:
                if part.thought_signature:
                    self.reasoning.append(ReasoningPart("", part.thought_signature, b"", KIND))
                if part.text:
                    self.text.append(part.text)
                    yield TextDelta(part.text)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.calls.calls()
