"""Protobuf ⇄ core translation of the calls' payloads: a request into a core draft, a result or a
stream event into its response. No behaviour here, only mapping (tables over branches)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from llm_grpc.v1 import llm_pb2
from server.core.catalogue import Complexity, Tier
from server.core.errors import FieldViolation, InvalidRequest
from server.core.types import (
    ContentPart,
    Delta,
    DocumentPart,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningPart,
    RequestContext,
    ResponseFormatType,
    Result,
    Role,
    StreamSummary,
    StructuredOutput,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoiceMode,
    Usage,
)
from server.core.validation import (
    DraftMessage,
    DraftReasoning,
    DraftRequest,
    DraftResponseFormat,
    DraftTool,
    DraftToolChoice,
)
from server.providers.registry import SPECS

ROLES = {
    llm_pb2.ROLE_SYSTEM: Role.SYSTEM,
    llm_pb2.ROLE_USER: Role.USER,
    llm_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    llm_pb2.ROLE_TOOL: Role.TOOL,
}
TIERS: dict[int, Tier] = {
    llm_pb2.TIER_FAST: Tier.FAST,
    llm_pb2.TIER_BALANCED: Tier.BALANCED,
    llm_pb2.TIER_PREMIUM: Tier.PREMIUM,
}
COMPLEXITIES: dict[int, Complexity] = {
    llm_pb2.COMPLEXITY_SIMPLE: Complexity.SIMPLE,
    llm_pb2.COMPLEXITY_MODERATE: Complexity.MODERATE,
    llm_pb2.COMPLEXITY_COMPLEX: Complexity.COMPLEX,
}
TOOL_CHOICE_MODES: dict[int, ToolChoiceMode] = {
    llm_pb2.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    llm_pb2.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    llm_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
RESPONSE_FORMAT_TYPES: dict[int, ResponseFormatType] = {
    llm_pb2.RESPONSE_FORMAT_TYPE_TEXT: ResponseFormatType.TEXT,
    llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: ResponseFormatType.JSON_OBJECT,
    llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: ResponseFormatType.JSON_SCHEMA,
}
REASONING_EFFORTS: dict[int, ReasoningEffort] = {
    llm_pb2.REASONING_EFFORT_LOW: ReasoningEffort.LOW,
    llm_pb2.REASONING_EFFORT_MEDIUM: ReasoningEffort.MEDIUM,
    llm_pb2.REASONING_EFFORT_HIGH: ReasoningEffort.HIGH,
}

REASONING_PROVIDERS = tuple(SPECS)
"""The provider kinds whose opaque reasoning state may come back (each adapter sends only its own)."""
"""The provider kinds whose reasoning parts a message may carry back (the adapters name their kind)."""
FINISH_REASONS = {
    FinishReason.UNSPECIFIED: llm_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: llm_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: llm_pb2.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: llm_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.TOOL_CALLS: llm_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.OTHER: llm_pb2.FINISH_REASON_OTHER,
}


def enum_name(table: Mapping[int, enum.Enum], number: int) -> str:
    """The core value of a request enum: empty when unspecified, a refusable marker when unknown."""
    if number == 0:
        return ""
    known = table.get(number)
    return str(known.value) if known is not None else f"unknown({number})"


# --- proto → core ---------------------------------------------------------------------------------


def draft(request: llm_pb2.CompleteRequest | llm_pb2.StreamRequest) -> DraftRequest:
    """The request as the core's draft: unknown enum values kept as refusable markers, JSON kept as
    text, so that validation can name every problem at once."""
    return DraftRequest(
        model=request.model,
        messages=[_message(index, m) for index, m in enumerate(request.messages)],
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        stop=list(request.stop),
        tier=enum_name(TIERS, request.tier),
        complexity=enum_name(COMPLEXITIES, request.complexity),
        tools=[DraftTool(t.name, t.description, t.parameters_json) for t in request.tools],
        tool_choice=DraftToolChoice(
            enum_name(TOOL_CHOICE_MODES, request.tool_choice.mode), request.tool_choice.tool_name
        )
        if request.HasField("tool_choice")
        else None,
        parallel_tool_calls=request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None,
        response_format=_response_format(request.response_format)
        if request.HasField("response_format")
        else None,
        reasoning=_reasoning(request.reasoning) if request.HasField("reasoning") else None,
        seed=request.seed if request.HasField("seed") else None,
        user=request.user,
    )


def _message(index: int, message: llm_pb2.Message) -> DraftMessage:
    return DraftMessage(
        role=ROLES.get(message.role),
        content=message.content,
        parts=[_part(p) for p in message.parts],
        tool_calls=[
            ToolCall(c.id, c.name, c.arguments_json, c.signature, c.item_id) for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id,
        reasoning=[
            _reasoning_part(f"messages[{index}].reasoning[{n}]", r) for n, r in enumerate(message.reasoning)
        ],
        cache_breakpoint=message.cache_breakpoint,
    )


def _part(part: llm_pb2.ContentPart) -> ContentPart | None:
    which = part.WhichOneof("part")
    if which == "text":
        return TextPart(part.text)
    if which == "image":
        return ImagePart(data=part.image.data, mime_type=part.image.mime_type, url=part.image.url)
    if which == "document":
        document = part.document
        return DocumentPart(data=document.data, mime_type=document.mime_type, title=document.title)
    return None


def _reasoning_part(field: str, part: llm_pb2.ReasoningPart) -> ReasoningPart:
    if part.provider and part.provider not in REASONING_PROVIDERS:
        names = ", ".join(REASONING_PROVIDERS)
        raise InvalidRequest([FieldViolation(f"{field}.provider", f"must be one of {names}, or empty")])
    return ReasoningPart(part.text, part.signature, part.redacted_data, part.provider or None, part.id)


def _response_format(response_format: llm_pb2.ResponseFormat) -> DraftResponseFormat:
    return DraftResponseFormat(
        type=enum_name(RESPONSE_FORMAT_TYPES, response_format.type),
        name=response_format.name,
        schema_json=response_format.schema_json,
        strict=response_format.strict,
    )


def _reasoning(reasoning: llm_pb2.Reasoning) -> DraftReasoning:
    which = reasoning.WhichOneof("control")
    if which == "effort":
        return DraftReasoning(effort=enum_name(REASONING_EFFORTS, reasoning.effort))
    if which == "budget_tokens":
        return DraftReasoning(budget_tokens=reasoning.budget_tokens)
    return DraftReasoning()


# --- core → proto ---------------------------------------------------------------------------------


def usage(value: Usage) -> llm_pb2.Usage:
    return llm_pb2.Usage(
        prompt_tokens=value.prompt_tokens,
        completion_tokens=value.completion_tokens,
        total_tokens=value.total_tokens,
        usage_estimated=value.estimated,
        cached_input_tokens=value.cached_prompt_tokens,
        cache_write_tokens=value.cache_write_tokens,
        reasoning_tokens=value.reasoning_tokens,
    )


def tool_calls(calls: Sequence[ToolCall]) -> list[llm_pb2.ToolCall]:
    return [
        llm_pb2.ToolCall(
            id=c.id, name=c.name, arguments_json=c.arguments_json, signature=c.signature, item_id=c.item_id
        )
        for c in calls
    ]


def reasoning(parts: Sequence[ReasoningPart]) -> list[llm_pb2.ReasoningPart]:
    return [
        llm_pb2.ReasoningPart(
            text=p.text,
            signature=p.signature,
            redacted_data=p.redacted_data,
            provider=p.provider or "",
            id=p.id,
        )
        for p in parts
    ]


def structured_output(check: StructuredOutput | None) -> llm_pb2.StructuredOutput | None:
    return (
        None
        if check is None
        else llm_pb2.StructuredOutput(
            valid=check.valid, error=check.error, unchecked_reason=check.unchecked_reason
        )
    )


def complete_response(result: Result, ctx: RequestContext) -> llm_pb2.CompleteResponse:
    completion = result.completion
    return llm_pb2.CompleteResponse(
        content=completion.content,
        usage=usage(completion.usage),
        latency_ms=result.latency_ms,
        provider=result.provider,
        model=result.model,
        trace_id=ctx.trace_id,
        finish_reason=FINISH_REASONS[completion.finish_reason],
        cost_usd=result.cost_usd,
        served_model=result.served_model,
        tool_calls=tool_calls(completion.tool_calls),
        reasoning=reasoning(completion.reasoning),
        structured_output=structured_output(result.structured_output),
        response_id=completion.response_id,
    )


def stream_done(summary: StreamSummary, ctx: RequestContext) -> llm_pb2.StreamDone:
    return llm_pb2.StreamDone(
        usage=usage(summary.usage),
        finish_reason=FINISH_REASONS[summary.finish_reason],
        latency_ms=summary.latency_ms,
        time_to_first_token_ms=summary.time_to_first_token_ms,
        provider=summary.provider,
        model=summary.model,
        trace_id=ctx.trace_id,
        cost_usd=summary.cost_usd,
        served_model=summary.served_model or summary.model,
        tool_calls=tool_calls(summary.tool_calls),
        reasoning=reasoning(summary.reasoning),
        structured_output=structured_output(summary.structured_output),
        response_id=summary.response_id,
    )


def stream_response(event: Delta | StreamSummary, ctx: RequestContext) -> llm_pb2.StreamResponse:
    if isinstance(event, TextDelta):
        return llm_pb2.StreamResponse(delta=event.text)
    if isinstance(event, ToolCallDelta):
        return llm_pb2.StreamResponse(
            tool_call=llm_pb2.ToolCallDelta(
                index=event.index, id=event.id, name=event.name, arguments_delta=event.arguments_delta
            )
        )
    if isinstance(event, ReasoningDelta):
        return llm_pb2.StreamResponse(reasoning_delta=event.text)
    return llm_pb2.StreamResponse(done=stream_done(event, ctx))
