"""The Responses API (`POST /v1/responses`) for an OpenAI instance: the request, the response and the
stream's events. The instance (server/providers/openai.py) owns the one SDK client and picks this wire
API or Chat Completions per model, by the catalogue's `api`; both post through the SDK's own `post()`
(the raw path of server/providers/stainless.py), so this path costs what Chat Completions costs.

Stream events (`openai/types/responses/response_stream_event.py`; order and shapes as recorded in
pydantic/pydantic-ai `tests/models/cassettes/test_openai_responses/`
`test_openai_responses_phase_streamed_on_part_start.yaml`):
`response.created` names the response and the served model; `response.output_item.added` opens an item
(a `function_call` with its `call_id` and name); `response.output_text.delta`,
`response.function_call_arguments.delta` and `response.reasoning_summary_text.delta` carry deltas;
`response.output_item.done` closes an item whole (a reasoning item with its final `encrypted_content`);
the stream ends with `response.completed` or `response.incomplete` (the whole response, usage included),
or fails with `response.failed` (its `response.error`) or an `error` event (`code`, `message`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from server.core.errors import ProviderBadRequest, ProviderUnavailable
from server.core.types import (
    ChatRequest,
    Completion,
    ReasoningDelta,
    ReasoningPart,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from server.providers import openai_responses_translate as translate
from server.providers.base import error_for_status

RESPONSES = "/responses"
WIRE_API = "responses"
"""The catalogue's `api` value for this wire API."""

log = structlog.get_logger("llm_grpc.provider")


class ResponsesWire:
    """The Responses API's request, response and stream for one provider instance."""

    path = RESPONSES

    def __init__(self, name: str, *, summaries: bool = True) -> None:
        self.name = name
        self.summaries = summaries
        """Ask for reasoning summaries (OPENAI_REASONING_SUMMARIES): OpenAI refuses them to an
        organization it has not verified."""

    def params(self, request: ChatRequest) -> dict[str, Any]:
        """The request body. The API takes no stop sequences (`response_create_params.py`): refused,
        never dropped (the catalogue refuses them first: a model on this API has `stop_sequences =
        false`). It takes no seed either: the contract's seed is best-effort, "where the provider takes
        one" (docs/agents.md), so it is not sent, as for Anthropic."""
        if request.stop:
            raise ProviderBadRequest(
                self.name, "stop sequences are not supported by the Responses API this model is served on"
            )
        return translate.request_body(request, summaries=self.summaries)

    def stream_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "stream": True}

    def completion(self, request: ChatRequest, body: Mapping[str, Any], request_id: str) -> Completion:
        if body.get("status") == "failed":  # HTTP 200 with a failed response: its error says why
            raise self._failed(body.get("error"), request_id)
        text, calls, reasoning = translate.output(body)
        reported = body.get("usage")
        if not isinstance(reported, Mapping):
            log.warning("provider.usage_missing", provider=self.name, model=request.model)
        return Completion(
            content=text,
            usage=translate.usage(reported)
            if isinstance(reported, Mapping)
            else estimated_usage(request, len(text)),
            finish_reason=translate.finish(body, bool(calls), self.name),
            served_model=_string(body.get("model")),
            request_id=request_id,
            tool_calls=calls,
            response_id=_string(body.get("id")),
            reasoning=reasoning,
        )

    async def events(
        self, request: ChatRequest, events: AsyncIterator[object], request_id: str
    ) -> AsyncGenerator[StreamEvent, None]:
        state = _StreamState()
        async for event in events:
            if not isinstance(event, Mapping):
                continue
            for out in state.read(event):
                yield out
            if state.error is not None:
                raise self._failed(state.error, request_id)
            if state.final is not None:
                break
        final = state.final
        if final is None:
            raise ProviderUnavailable(self.name, "the stream ended without a final response event")
        reported = final.get("usage")
        if isinstance(reported, Mapping):
            usage = translate.usage(reported)
        else:  # never a silent zero cost: an estimate, marked as one
            usage = estimated_usage(request, state.generated)
            log.warning("provider.usage_missing", provider=self.name, model=request.model)
        calls = state.tool_calls()
        yield StreamEnd(
            usage,
            translate.finish(final, bool(calls), self.name),
            state.served or _string(final.get("model")),
            request_id,
            tool_calls=calls,
            response_id=state.response_id or _string(final.get("id")),
            reasoning=tuple(state.reasoning),
        )

    def _failed(self, error: object, request_id: str) -> Exception:
        """The core error of a failed response (`response.error`: `code`, `message`) or of an `error`
        event (`code`, `message` at its top level), classified by its code as a unary error is."""
        inner = error if isinstance(error, Mapping) else {}
        code = _string(inner.get("code"))
        message = _string(inner.get("message")) or "the response failed"
        return error_for_status(
            self.name, 200, f"stream failed: {message}", {}, kind=code, code=code, request_id=request_id
        )


@dataclass(slots=True)
class _Call:
    call_id: str = ""
    name: str = ""
    item_id: str = ""
    arguments: list[str] = field(default_factory=list)
    final: str | None = None


@dataclass(slots=True)
class _StreamState:
    """What a stream's events have said so far."""

    served: str = ""
    response_id: str = ""
    generated: int = 0
    calls: dict[int, _Call] = field(default_factory=dict)
    """Function calls by their output index."""
    reasoning: list[ReasoningPart] = field(default_factory=list)
    final: Mapping[str, Any] | None = None
    error: object = None

    def read(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        """The core events of one stream event (most carry none)."""
        kind = event.get("type")
        if kind == "response.output_text.delta":
            text = _string(event.get("delta"))
            self.generated += len(text)
            return [TextDelta(text)] if text else []
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event)
        if kind == "response.reasoning_summary_text.delta":
            text = _string(event.get("delta"))
            return [ReasoningDelta(text)] if text else []
        if kind == "response.output_item.added":
            return self._added(event)
        if kind == "response.output_item.done":
            self._done(event)
        elif kind == "response.created":
            response = event.get("response") or {}
            self.served = _string(response.get("model"))
            self.response_id = _string(response.get("id"))
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response")
            self.final = response if isinstance(response, Mapping) else {}
        elif kind == "response.failed":
            self.error = (event.get("response") or {}).get("error") or {}
        elif kind == "error":
            self.error = event
        return []

    def _added(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        item = event.get("item") or {}
        if item.get("type") != "function_call":
            return []
        index = len(self.calls)
        call = _Call(_string(item.get("call_id")), _string(item.get("name")), _string(item.get("id")))
        self.calls[_index(event)] = call
        return [ToolCallDelta(index=index, id=call.call_id, name=call.name)]

    def _arguments(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        position = _index(event)
        call = self.calls.get(position)
        delta = _string(event.get("delta"))
        if call is None or not delta:
            return []
        call.arguments.append(delta)
        self.generated += len(delta)
        return [ToolCallDelta(index=list(self.calls).index(position), arguments_delta=delta)]

    def _done(self, event: Mapping[str, Any]) -> None:
        item = event.get("item") or {}
        if item.get("type") == "reasoning":
            self.reasoning.append(translate.reasoning_part(item))
        elif item.get("type") == "function_call" and (call := self.calls.get(_index(event))) is not None:
            call.final = _string(item.get("arguments")) or None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(c.call_id, c.name, c.final or "".join(c.arguments) or "{}", item_id=c.item_id)
            for _, c in sorted(self.calls.items())
        )


def _index(event: Mapping[str, Any]) -> int:
    value = event.get("output_index")
    return value if isinstance(value, int) else 0


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def estimated_usage(request: ChatRequest, generated_chars: int) -> Usage:
    """About four characters a token (OpenAI's rule of thumb for English text), rounded up."""
    prompt_chars = sum(len(m.content) for m in request.messages)
    return Usage(-(-prompt_chars // 4), -(-generated_chars // 4), estimated=True)
