"""Anthropic adapter on the official `anthropic` SDK (Messages API)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import ModuleType
from typing import Any, ClassVar

import anthropic
from anthropic import AsyncAnthropic, AsyncAnthropicVertex

from server.core.errors import ProviderBadRequest, ProviderUnavailable
from server.core.types import (
    ChatRequest,
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
)
from server.emulators.anthropic import AnthropicEmulator
from server.providers import anthropic_translate as translate
from server.providers.base import ProviderSettings, ProviderSpec, finish_reason
from server.providers.stainless import StainlessProvider

# The SDK's own POST (server/providers/stainless.py says why); here it also avoids the typed method's
# warning on every call to a deprecated model.
MESSAGES = "/v1/messages"
REQUEST_ID_HEADER = "request-id"
REASONING_DEFAULT_MAX_TOKENS = 16384
"""max_tokens for a reasoning model when the caller sets none (LLM_DEFAULT_MAX_TOKENS if larger)."""
# Every stop_reason the SDK defines (anthropic.types.StopReason). `pause_turn` (a long server-tool turn
# paused, to be continued by another request) is not a finished answer: OTHER, never STOP.
FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
    "tool_use": FinishReason.TOOL_CALLS,
    "pause_turn": FinishReason.OTHER,
}


class AnthropicProvider(StainlessProvider):
    sdk: ClassVar[ModuleType] = anthropic
    path = MESSAGES
    request_id_header = REQUEST_ID_HEADER

    def __init__(self, settings: ProviderSettings) -> None:
        self._default_max_tokens = settings.default_max_tokens
        self._probe_model = settings.probe_model
        super().__init__(settings)

    def _build_client(
        self, settings: ProviderSettings, http_client: Any
    ) -> AsyncAnthropic | AsyncAnthropicVertex:
        if settings.vertex_project is not None:
            # Claude on Vertex AI: the SDK's own client sends a call for `model` to
            # .../publishers/anthropic/models/{model}:rawPredict (or :streamRawPredict) with the Vertex
            # API version in the body and an OAuth token (ADC, or the one given); the rest is the same.
            return AsyncAnthropicVertex(
                project_id=settings.vertex_project,
                region=settings.vertex_region,
                access_token=settings.api_key or None,
                base_url=settings.base_url,
                max_retries=0,
                http_client=http_client,
            )
        return AsyncAnthropic(
            api_key=settings.api_key, base_url=settings.base_url, max_retries=0, http_client=http_client
        )

    def _completion(self, request: ChatRequest, body: Mapping[str, Any], request_id: str) -> Completion:
        content = translate.reply(body.get("content"))
        return Completion(
            content.text,
            translate.usage(body.get("usage") or {}),
            _finish(body.get("stop_reason")),
            served_model=_served_model(body),
            request_id=request_id,
            tool_calls=content.tool_calls,
            response_id=_response_id(body),
            reasoning=content.reasoning,
        )

    async def _events(
        self, request: ChatRequest, events: AsyncIterator[object], request_id: str
    ) -> AsyncGenerator[StreamEvent, None]:
        start_usage: dict[str, Any] = {}
        stop_reason: str | None = None
        served, response_id = "", ""
        state = translate.StreamState()
        async for event in events:
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind in ("content_block_start", "content_block_delta"):
                for delta in state.deltas(event):
                    yield delta
            elif kind == "message_start":
                started = event.get("message") or {}
                start_usage = started.get("usage") or {}
                served, response_id = _served_model(started), _response_id(started)
            elif kind == "message_delta":
                stop_reason = (event.get("delta") or {}).get("stop_reason")
                # The usage of message_delta is cumulative (input and cache counts too, which server
                # tools can raise after message_start): it overrides message_start's.
                start_usage = {**start_usage, **(event.get("usage") or {})}
        if stop_reason is None:
            raise ProviderUnavailable(self.name, "the stream ended without a stop reason")
        yield StreamEnd(
            translate.usage(start_usage),
            _finish(stop_reason),
            served,
            request_id,
            tool_calls=state.calls.calls(),
            response_id=response_id,
            reasoning=state.reasoning.parts(),
        )

    async def probe(self, timeout: float) -> None:
        with self._errors():
            if isinstance(self._client, AsyncAnthropicVertex):
                # Vertex AI has no models list for Claude: count the tokens of a word, free of charge.
                await self._client.post(
                    "/v1/messages/count_tokens",
                    cast_to=object,
                    body={"model": self._probe_model, "messages": [{"role": "user", "content": "ping"}]},
                    options={"timeout": timeout},
                )
            else:
                await self._client.models.list(limit=1, timeout=timeout)

    async def list_models(self, timeout: float) -> list[str]:
        if isinstance(self._client, AsyncAnthropicVertex):
            raise ProviderBadRequest(self.name, "Claude on Vertex AI offers no models list to check against")
        with self._errors():
            return [model.id async for model in self._client.models.list(limit=1000, timeout=timeout)]

    def _max_tokens(self, request: ChatRequest) -> int:
        """The API requires max_tokens. The default leaves a reasoning model room to think (its thinking
        counts against max_tokens), within the model's output limit."""
        default = self._default_max_tokens
        if request.capabilities.reasoning:
            default = max(default, REASONING_DEFAULT_MAX_TOKENS)
        return min(default, request.output_limit) if request.output_limit is not None else default

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        """The request as the Messages API takes it; refuses what the API would refuse."""
        max_tokens = request.max_tokens if request.max_tokens is not None else self._max_tokens(request)
        # System, turns of content blocks, tools, thinking, output format, end-user id:
        # server/providers/anthropic_translate.py.
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": max_tokens,
            **translate.request_body(request, max_tokens),
        }
        # API version 2026-10-21 (what SDK 2.x sends) refuses every sampling parameter: the catalogue
        # says so for each Claude model, and the facade refused the request up front.
        for name, value in (("temperature", request.temperature), ("top_p", request.top_p)):
            if value is not None:
                params[name] = value
        if request.stop:
            if any(not s.strip() for s in request.stop):
                raise ProviderBadRequest(self.name, "stop sequences must contain non-whitespace characters")
            params["stop_sequences"] = list(request.stop)
        return params


def _served_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) else ""


def _response_id(body: Mapping[str, Any]) -> str:
    """The id of the message (`msg_…`)."""
    value = body.get("id")
    return value if isinstance(value, str) else ""


def _finish(reason: str | None) -> FinishReason:
    return finish_reason("anthropic", reason, FINISH_REASONS)


SPEC = ProviderSpec(
    kind="anthropic",
    key_settings=("ANTHROPIC_API_KEY",),
    base_url_setting="ANTHROPIC_BASE_URL",
    key_pattern=re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    default_base_url="https://api.anthropic.com",
    factory=AnthropicProvider,
    emulator=lambda key: AnthropicEmulator(api_key=key),
)
