"""Caller input rules. Every violation of a request is collected and reported at once."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from server.core.catalogue import Complexity, ModelInfo, Tier
from server.core.errors import FieldViolation, InvalidRequest
from server.core.reasoning import refusals as reasoning_refusals
from server.core.structured import MAX_SCHEMA_BYTES, schema_limit_problem, schema_problem
from server.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ReasoningConfig,
    ReasoningEffort,
    ReasoningPart,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)

MAX_MODEL_LENGTH = 64
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Tool and response-schema names: what OpenAI, Anthropic and Gemini all accept."""
MAX_TOOL_CALL_ID_LENGTH = 256
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The image types all three providers take."""
DOCUMENT_TYPES = ("application/pdf",)
"""The document types all three providers take (OpenAI chat completions: PDF only)."""
MAX_CACHE_BREAKPOINTS = 4
"""Anthropic's limit of cache_control blocks per request."""

Bad = Callable[[str, str], None]


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
    max_image_bytes: int = 5 * 1024 * 1024
    """One inline image (Anthropic's limit per image)."""
    max_document_bytes: int = 10 * 1024 * 1024
    """One inline document."""
    max_attachment_bytes: int = 20 * 1024 * 1024
    """All inline images and documents of a request together (Gemini's inline request limit)."""
    max_tools: int = 128
    """Tools in one request (OpenAI's limit)."""


@dataclass(slots=True, frozen=True)
class DraftMessage:
    """A message as the caller sent it: `role` is None when unspecified or unknown."""

    role: Role | None
    content: str
    parts: Sequence[ContentPart | None] = ()
    """None: a part that set none of text, image or document."""
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str = ""
    reasoning: Sequence[ReasoningPart] = ()
    cache_breakpoint: bool = False


@dataclass(slots=True, frozen=True)
class DraftTool:
    """A tool as the caller sent it: its schema still JSON text."""

    name: str
    description: str = ""
    parameters_json: str = ""


@dataclass(slots=True, frozen=True)
class DraftToolChoice:
    mode: str = ""
    """A ToolChoiceMode value, empty (the default) or an unknown marker (refused)."""
    tool_name: str = ""


@dataclass(slots=True, frozen=True)
class DraftResponseFormat:
    type: str = ""
    """A ResponseFormatType value, empty (text) or an unknown marker (refused)."""
    name: str = ""
    schema_json: str = ""
    strict: bool = False


@dataclass(slots=True, frozen=True)
class DraftReasoning:
    effort: str = ""
    """A ReasoningEffort value, empty or an unknown marker (refused)."""
    budget_tokens: int | None = None


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
    tools: Sequence[DraftTool] = ()
    tool_choice: DraftToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: DraftResponseFormat | None = None
    reasoning: DraftReasoning | None = None
    seed: int | None = None
    user: str = ""
    """The end user's opaque id."""


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
                bad(f"messages[{index}].role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL")
        if not any(
            message.content.strip() or message.parts or message.tool_calls for message in draft.messages
        ):
            bad("messages", "at least one message must have content")
        _check_messages(draft.messages, limits, bad)
    _check_tools(draft, limits, bad)
    _check_response_format(draft.response_format, bad)
    _check_reasoning(draft.reasoning, bad)
    if draft.user and (problem := context_value_problem(draft.user, limits.max_metadata_value_length)):
        bad("user", problem)
    size = _text_bytes(draft)
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


def _text_bytes(draft: DraftRequest) -> int:
    """Bytes of every field a request carries but the inline image and document data (which have their
    own limits): every string (UTF-8) and every opaque bytes field (signatures, redacted thinking), so
    nothing a caller sends escapes the request limit (issue #23: a 3 MiB Document.title, a 3 MB
    ToolCall.signature and Image.url were not counted)."""
    size = sum(len(s.encode()) for s in draft.stop)  # model and user have limits of their own
    for m in draft.messages:
        size += len(m.content.encode()) + len(m.tool_call_id.encode())
        for part in m.parts:
            if isinstance(part, TextPart):
                size += len(part.text.encode())
            elif isinstance(part, ImagePart):
                size += len(part.url.encode()) + len(part.mime_type.encode())
            elif isinstance(part, DocumentPart):
                size += len(part.title.encode()) + len(part.mime_type.encode())
        size += sum(
            len(c.arguments_json.encode()) + len(c.id.encode()) + len(c.name.encode()) + len(c.signature)
            for c in m.tool_calls
        )
        size += sum(
            len(r.text.encode()) + len(r.signature) + len(r.redacted_data) + len((r.provider or "").encode())
            for r in m.reasoning
        )
    for tool in draft.tools:
        size += len(tool.name.encode()) + len(tool.description.encode()) + len(tool.parameters_json.encode())
    if draft.tool_choice is not None:
        size += len(draft.tool_choice.mode.encode()) + len(draft.tool_choice.tool_name.encode())
    if draft.response_format is not None:
        size += len(draft.response_format.schema_json.encode()) + len(draft.response_format.name.encode())
        size += len(draft.response_format.type.encode())
    if draft.reasoning is not None:
        size += len(draft.reasoning.effort.encode())
    return size


def _check_messages(messages: Sequence[DraftMessage], limits: Limits, bad: Bad) -> None:
    """Content parts, tool calls and their answers, reasoning parts and cache breakpoints.

    Every tool call of an assistant message must be answered by ROLE_TOOL messages right after it
    (before the next non-tool message), each call once: what OpenAI and Anthropic both require.
    """
    attachments = 0
    pending: dict[str, str] = {}
    """The latest assistant message's calls not answered yet: id → field of the call."""
    answered: dict[str, int] = {}
    seen_ids: set[str] = set()
    for index, message in enumerate(messages):
        at = f"messages[{index}]"
        if message.role is not Role.TOOL and pending:
            for field in pending.values():
                bad(field, f"has no ROLE_TOOL answer before {at}")
            pending.clear()
        attachments += _check_parts(at, message, limits, bad)
        if message.tool_calls and message.role is not Role.ASSISTANT:
            bad(f"{at}.tool_calls", "only ROLE_ASSISTANT messages carry tool calls")
        for number, call in enumerate(message.tool_calls):
            field = f"{at}.tool_calls[{number}]"
            _check_tool_call(field, call, bad)
            if call.id in seen_ids:
                bad(f"{field}.id", f"{call.id!r} is used by another tool call")
            elif call.id:
                seen_ids.add(call.id)
                if message.role is Role.ASSISTANT:
                    pending[call.id] = field
        if message.role is Role.TOOL:
            _check_tool_answer(at, message, pending, answered, index, bad)
        elif message.tool_call_id:
            bad(f"{at}.tool_call_id", "only ROLE_TOOL messages answer a tool call")
        if message.reasoning and message.role is not Role.ASSISTANT:
            bad(f"{at}.reasoning", "only ROLE_ASSISTANT messages carry reasoning")
    for field in pending.values():
        bad(field, "has no ROLE_TOOL answer; answer every tool call before asking for the next turn")
    if attachments > limits.max_attachment_bytes:
        limit = limits.max_attachment_bytes
        bad("messages", f"inline images and documents are {attachments} bytes; the limit is {limit}")
    breakpoints = sum(1 for m in messages if m.cache_breakpoint)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        bad("messages", f"at most {MAX_CACHE_BREAKPOINTS} messages may set cache_breakpoint")


def _check_tool_answer(
    at: str, message: DraftMessage, pending: dict[str, str], answered: dict[str, int], index: int, bad: Bad
) -> None:
    call_id = message.tool_call_id
    if not call_id:
        bad(f"{at}.tool_call_id", "a ROLE_TOOL message must name the tool call it answers")
    elif call_id in pending:
        del pending[call_id]
        answered[call_id] = index
    elif call_id in answered:
        bad(f"{at}.tool_call_id", f"{call_id!r} is already answered by messages[{answered[call_id]}]")
    else:
        bad(f"{at}.tool_call_id", f"{call_id!r} answers no tool call of the assistant message before it")
    for number, part in enumerate(message.parts):
        if not isinstance(part, TextPart | None):
            bad(f"{at}.parts[{number}]", "a tool result is text only")


def _check_parts(at: str, message: DraftMessage, limits: Limits, bad: Bad) -> int:
    """Check a message's content parts; return the bytes of its inline images and documents."""
    size = 0
    for number, part in enumerate(message.parts):
        field = f"{at}.parts[{number}]"
        if part is None:
            bad(field, "must set text, image or document")
        elif isinstance(part, TextPart):
            if not part.text:
                bad(f"{field}.text", "must not be empty")
        elif message.role is not Role.USER:
            bad(field, "images and documents are accepted in ROLE_USER messages only")
        elif isinstance(part, ImagePart):
            size += len(part.data)
            _check_image(f"{field}.image", part, limits, bad)
        else:
            size += len(part.data)
            _check_document(f"{field}.document", part, limits, bad)
    return size


def _check_image(field: str, image: ImagePart, limits: Limits, bad: Bad) -> None:
    if image.url:
        if not image.url.startswith("https://"):
            bad(f"{field}.url", "must be an https:// URL (send the image's bytes in data otherwise)")
        if image.mime_type and image.mime_type not in IMAGE_TYPES:
            bad(f"{field}.mime_type", f"must be one of {', '.join(IMAGE_TYPES)}")
        return
    if not image.data:
        bad(field, "must set data or url")
        return
    if image.mime_type not in IMAGE_TYPES:
        bad(f"{field}.mime_type", f"must be one of {', '.join(IMAGE_TYPES)}")
    if len(image.data) > limits.max_image_bytes:
        bad(f"{field}.data", f"is {len(image.data)} bytes; the limit is {limits.max_image_bytes}")


def _check_document(field: str, document: DocumentPart, limits: Limits, bad: Bad) -> None:
    if not document.data:
        bad(f"{field}.data", "must not be empty")
    if document.mime_type not in DOCUMENT_TYPES:
        bad(f"{field}.mime_type", f"must be one of {', '.join(DOCUMENT_TYPES)}")
    if len(document.data) > limits.max_document_bytes:
        bad(f"{field}.data", f"is {len(document.data)} bytes; the limit is {limits.max_document_bytes}")


def _check_tool_call(field: str, call: ToolCall, bad: Bad) -> None:
    if not call.id:
        bad(f"{field}.id", "must not be empty")
    elif len(call.id) > MAX_TOOL_CALL_ID_LENGTH or not call.id.isprintable() or not call.id.isascii():
        bad(f"{field}.id", f"must be at most {MAX_TOOL_CALL_ID_LENGTH} printable ASCII characters")
    if not NAME.fullmatch(call.name):
        bad(f"{field}.name", "must be 1 to 64 of a-z A-Z 0-9 _ -")
    if call.arguments_json and not isinstance(_json(call.arguments_json), dict):
        bad(f"{field}.arguments_json", "must be a JSON object")


def _check_tools(draft: DraftRequest, limits: Limits, bad: Bad) -> None:
    if len(draft.tools) > limits.max_tools:
        bad("tools", f"at most {limits.max_tools} tools are allowed")
    names: set[str] = set()
    for index, tool in enumerate(draft.tools):
        field = f"tools[{index}]"
        if not NAME.fullmatch(tool.name):
            bad(f"{field}.name", "must be 1 to 64 of a-z A-Z 0-9 _ -")
        elif tool.name in names:
            bad(f"{field}.name", f"{tool.name!r} is defined twice")
        names.add(tool.name)
        if tool.parameters_json and (problem := _object_schema_problem(tool.parameters_json)):
            bad(f"{field}.parameters_json", problem)
    choice = draft.tool_choice
    if choice is not None:
        if choice.mode not in ("", *(m.value for m in ToolChoiceMode)):
            bad("tool_choice.mode", "must be TOOL_CHOICE_MODE_AUTO, _NONE or _REQUIRED")
        if choice.tool_name:
            if choice.mode not in ("", ToolChoiceMode.REQUIRED.value):
                bad("tool_choice.tool_name", "goes with mode TOOL_CHOICE_MODE_REQUIRED (or unspecified) only")
            if choice.tool_name not in names:
                bad("tool_choice.tool_name", f"{choice.tool_name!r} is not one of the request's tools")
        elif not draft.tools and choice.mode not in ("", ToolChoiceMode.NONE.value):
            bad("tool_choice", "needs tools")
    if draft.parallel_tool_calls is not None and not draft.tools:
        bad("parallel_tool_calls", "needs tools")


def _check_response_format(response_format: DraftResponseFormat | None, bad: Bad) -> None:
    if response_format is None:
        return
    kind = response_format.type
    if kind not in ("", *(t.value for t in ResponseFormatType)):
        bad("response_format.type", "must be RESPONSE_FORMAT_TYPE_TEXT, _JSON_OBJECT or _JSON_SCHEMA")
    elif kind == ResponseFormatType.JSON_SCHEMA.value:
        if not response_format.schema_json:
            bad("response_format.schema_json", "is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
        elif problem := _object_schema_problem(response_format.schema_json):
            bad("response_format.schema_json", problem)
        if response_format.name and not NAME.fullmatch(response_format.name):
            bad("response_format.name", "must be 1 to 64 of a-z A-Z 0-9 _ -")
    else:
        for name, value in (
            ("name", response_format.name),
            ("schema_json", response_format.schema_json),
            ("strict", response_format.strict),
        ):
            if value:
                bad(f"response_format.{name}", "goes with RESPONSE_FORMAT_TYPE_JSON_SCHEMA only")


def _check_reasoning(reasoning: DraftReasoning | None, bad: Bad) -> None:
    if reasoning is None:
        return
    if reasoning.effort and reasoning.effort not in (e.value for e in ReasoningEffort):
        bad("reasoning.effort", "must be REASONING_EFFORT_LOW, _MEDIUM or _HIGH")
    if reasoning.budget_tokens is not None and reasoning.budget_tokens < 0:
        bad("reasoning.budget_tokens", "must not be negative")


_NOT_JSON = object()


def _json(text: str) -> Any:
    """Parsed JSON text, or _NOT_JSON: also for NaN and Infinity (not JSON, and refused by the providers'
    HTTP clients) and for nesting too deep to parse."""
    try:
        return json.loads(text, parse_constant=_not_a_number)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


SCHEMA_VERDICTS = 1024
"""How many schemas' verdicts are remembered (by SHA-256 of their text: a few hundred bytes each)."""
_schema_verdicts: OrderedDict[bytes, str | None] = OrderedDict()


def _object_schema_problem(text: str) -> str | None:
    """What keeps `text` from being the JSON text of a JSON Schema for an object, or None. The verdict
    depends on the text alone and an agent sends the same tools on every turn, while checking a schema
    against its metaschema cost ~0.6 ms of a call's CPU (docs/benchmarks.md): the last SCHEMA_VERDICTS
    verdicts are kept, by the text's digest."""
    key = hashlib.sha256(text.encode()).digest()
    if key in _schema_verdicts:
        _schema_verdicts.move_to_end(key)
        return _schema_verdicts[key]
    verdict = _schema_verdict(text)
    _schema_verdicts[key] = verdict
    if len(_schema_verdicts) > SCHEMA_VERDICTS:
        _schema_verdicts.popitem(last=False)
    return verdict


def _schema_verdict(text: str) -> str | None:
    """The verdict itself. The schema's limits (size, nesting, `$ref`s: server/core/structured.py) come
    first: they bound everything after."""
    size = len(text.encode())
    schema = _json(text) if size <= MAX_SCHEMA_BYTES else {}
    if schema is _NOT_JSON:
        return "must be JSON text"
    if not isinstance(schema, dict):
        return "must be a JSON object (a JSON Schema)"
    if limit := schema_limit_problem(schema, size):
        return f"{limit.message} [limit {limit.limit}]"
    if problem := schema_problem(schema):
        return f"is not a valid JSON Schema: {problem}"
    if schema.get("type", "object") != "object":
        return 'must describe an object ("type": "object")'
    return None


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
    problems += _unsupported_features(draft, model)
    if not caps.blank_turns:
        problems += [
            FieldViolation(f"messages[{index}].content", f"{model.id} refuses a message of only whitespace")
            for index, message in enumerate(draft.messages)
            if message.content and not message.content.strip()
        ]
    if not caps.assistant_prefill:
        turns = [
            (index, m)
            for index, m in enumerate(draft.messages)
            if (m.content or m.parts) and m.role is not Role.SYSTEM
        ]
        if turns and turns[-1][1].role is Role.ASSISTANT:
            problems.append(
                FieldViolation(
                    f"messages[{turns[-1][0]}].role",
                    f"{model.id} refuses a final assistant message (prefill); end with a user message",
                )
            )
    return problems


def _unsupported_features(draft: DraftRequest, model: ModelInfo) -> list[FieldViolation]:
    """Tools, structured output, images, documents and reasoning control the model does not take."""
    caps = model.capabilities
    problems: list[FieldViolation] = []

    def refuse(field: str, what: str) -> None:
        problems.append(FieldViolation(field, f"{model.id} does not accept {what}"))

    if not caps.tools:
        if draft.tools:
            refuse("tools", "tools")
        problems += [
            FieldViolation(f"messages[{index}]", f"{model.id} does not accept tool calls or tool results")
            for index, m in enumerate(draft.messages)
            if m.tool_calls or m.role is Role.TOOL
        ]
    if (
        not caps.structured_output
        and draft.response_format is not None
        and draft.response_format.type
        in (ResponseFormatType.JSON_OBJECT.value, ResponseFormatType.JSON_SCHEMA.value)
    ):
        refuse("response_format", "structured output (a JSON response format)")
    if draft.reasoning is not None and not caps.reasoning:
        refuse("reasoning", "reasoning control (it is not a reasoning model)")
    # What its thinking mode cannot honour (no thinking on a model that always thinks, ...):
    # server/core/reasoning.py.
    for field, what in reasoning_refusals(caps, _reasoning(draft.reasoning), _tool_choice(draft.tool_choice)):
        refuse(field, what)
    for index, message in enumerate(draft.messages):
        for number, part in enumerate(message.parts):
            if isinstance(part, ImagePart) and not caps.image_input:
                refuse(f"messages[{index}].parts[{number}].image", "images")
            elif isinstance(part, DocumentPart) and not caps.document_input:
                refuse(f"messages[{index}].parts[{number}].document", "documents")
    return problems


def to_request(draft: DraftRequest, model: ModelInfo) -> ChatRequest:
    """The request adapters see, for a checked draft and its resolved, allowed `model`."""
    return ChatRequest(
        model=model.id,
        messages=tuple(_message(m, m.role) for m in draft.messages if m.role is not None),
        temperature=draft.temperature,
        max_tokens=draft.max_tokens,
        top_p=draft.top_p,
        stop=tuple(draft.stop),
        capabilities=model.capabilities,
        output_limit=model.max_output_tokens,
        tools=tuple(_tool(t) for t in draft.tools),
        tool_choice=_tool_choice(draft.tool_choice),
        parallel_tool_calls=draft.parallel_tool_calls,
        response_format=_response_format(draft.response_format),
        reasoning=_reasoning(draft.reasoning),
        seed=draft.seed,
        user=draft.user,
        wire_api=model.api,
    )


def _message(draft: DraftMessage, role: Role) -> Message:
    return Message(
        role=role,
        content=draft.content,
        parts=tuple(p for p in draft.parts if p is not None),
        tool_calls=tuple(
            call if call.arguments_json else replace(call, arguments_json="{}") for call in draft.tool_calls
        ),
        tool_call_id=draft.tool_call_id,
        reasoning=tuple(draft.reasoning),
        cache_breakpoint=draft.cache_breakpoint,
    )


def _tool(draft: DraftTool) -> ToolSpec:
    if not draft.parameters_json:
        return ToolSpec(draft.name, draft.description)
    return ToolSpec(draft.name, draft.description, json.loads(draft.parameters_json))


def _tool_choice(draft: DraftToolChoice | None) -> ToolChoice | None:
    if draft is None or (not draft.mode and not draft.tool_name):
        return None
    if draft.tool_name:
        return ToolChoice(ToolChoiceMode.REQUIRED, draft.tool_name)
    return ToolChoice(ToolChoiceMode(draft.mode))


def _response_format(draft: DraftResponseFormat | None) -> ResponseFormat | None:
    if draft is None or draft.type in ("", ResponseFormatType.TEXT.value):
        return None
    kind = ResponseFormatType(draft.type)
    if kind is ResponseFormatType.JSON_OBJECT:
        return ResponseFormat(kind)
    return ResponseFormat(kind, draft.name or "response", json.loads(draft.schema_json), draft.strict)


def _reasoning(draft: DraftReasoning | None) -> ReasoningConfig | None:
    if draft is None or (not draft.effort and draft.budget_tokens is None):
        return None
    return ReasoningConfig(ReasoningEffort(draft.effort) if draft.effort else None, draft.budget_tokens)


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
