"""OpenAI adapter on the official `openai` SDK: one instance (one client, one connection pool) that speaks
two wire APIs, picked per model by the catalogue's `api`: Chat Completions (here and in
server/providers/openai_translate.py: what OpenAI-compatible servers speak, and the default) and the
Responses API (server/providers/openai_responses.py: OpenAI's own reasoning models)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import ModuleType
from typing import Any, ClassVar

import openai
import structlog
from openai import AsyncAzureOpenAI, AsyncOpenAI

from server.core.errors import ProviderBadRequest, ProviderUnavailable
from server.core.types import (
    ChatRequest,
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from server.emulators.openai import OpenAIEmulator
from server.providers import openai_translate as translate
from server.providers.assembly import ToolCallAssembler
from server.providers.base import ProviderSettings, ProviderSpec, finish_reason
from server.providers.openai_responses import WIRE_API as RESPONSES_API
from server.providers.openai_responses import ResponsesWire
from server.providers.stainless import StainlessProvider

CHAT_COMPLETIONS = "/chat/completions"
MAX_STOP_SEQUENCES = 4
REQUEST_ID_HEADER = "x-request-id"
# Every finish_reason the SDK defines (ChatCompletion.Choice.finish_reason).
FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}

log = structlog.get_logger("llm_grpc.provider")


class OpenAIProvider(StainlessProvider):
    sdk: ClassVar[ModuleType] = openai
    path = CHAT_COMPLETIONS
    request_id_header = REQUEST_ID_HEADER

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        self._responses = ResponsesWire(self.name, summaries=settings.reasoning_summaries)

    def _path(self, request: ChatRequest) -> str:
        return self._responses.path if request.wire_api == RESPONSES_API else CHAT_COMPLETIONS

    def _build_client(self, settings: ProviderSettings, http_client: Any) -> AsyncOpenAI:
        if settings.azure_endpoint is not None:
            # Azure OpenAI: the SDK's own client maps `model` to /openai/deployments/{model}/..., adds
            # api-version and sends the key as `api-key`; the rest of the adapter is the same.
            return AsyncAzureOpenAI(
                azure_endpoint=settings.azure_endpoint,
                api_version=settings.api_version,
                api_key=settings.api_key,
                max_retries=0,
                http_client=http_client,
            )
        return AsyncOpenAI(
            api_key=settings.api_key, base_url=settings.base_url, max_retries=0, http_client=http_client
        )

    def _completion(self, request: ChatRequest, body: Mapping[str, Any], request_id: str) -> Completion:
        if request.wire_api == RESPONSES_API:
            return self._responses.completion(request, body, request_id)
        choice = _first_choice(body)
        message = choice.get("message") or {}
        content = message.get("content") or ""
        reported = body.get("usage")
        if not isinstance(reported, dict):  # never a silent zero cost: an estimate, marked as one
            log.warning("provider.usage_missing", provider=self.name, model=request.model)
        return Completion(
            content=content,
            usage=_usage(reported) if isinstance(reported, dict) else _estimated_usage(request, len(content)),
            finish_reason=_finish(choice.get("finish_reason")),
            served_model=_served_model(body),
            request_id=request_id,
            tool_calls=translate.tool_calls(message),
            response_id=_response_id(body),
        )

    def _stream_params(self, request: ChatRequest, params: dict[str, Any]) -> dict[str, Any]:
        if request.wire_api == RESPONSES_API:
            return self._responses.stream_params(params)
        return {**params, "stream": True, "stream_options": {"include_usage": True}}

    def _events(
        self, request: ChatRequest, events: AsyncIterator[object], request_id: str
    ) -> AsyncGenerator[StreamEvent, None]:
        if request.wire_api == RESPONSES_API:
            return self._responses.events(request, events, request_id)
        return self._chat_events(request, events, request_id)

    async def _chat_events(
        self, request: ChatRequest, events: AsyncIterator[object], request_id: str
    ) -> AsyncGenerator[StreamEvent, None]:
        finish: str | None = None
        usage = Usage()
        served = ""
        reported, generated = False, 0
        calls, response_id = ToolCallAssembler(), ""
        async for chunk in events:
            if not isinstance(chunk, dict):
                continue
            served = served or _served_model(chunk)
            response_id = response_id or _response_id(chunk)
            for choice in chunk.get("choices") or ():
                for delta in translate.chunk_deltas(choice):
                    if isinstance(delta, TextDelta):
                        generated += len(delta.text)
                        yield delta
                    else:
                        generated += len(delta.arguments_delta)
                        yield calls.add(delta)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            if chunk.get("usage"):  # the last chunk, with include_usage
                usage = _usage(chunk["usage"])
                reported = True
        if finish is None:
            raise ProviderUnavailable(self.name, "the stream ended without a finish reason")
        if not reported:
            # Never a silent zero cost: an estimate, marked as one (Usage.usage_estimated).
            usage = _estimated_usage(request, generated)
            log.warning("provider.usage_missing", provider=self.name, model=request.model)
        yield StreamEnd(
            usage, _finish(finish), served, request_id, tool_calls=calls.calls(), response_id=response_id
        )

    async def probe(self, timeout: float) -> None:
        with self._errors():
            await self._client.models.list(timeout=timeout)

    async def list_models(self, timeout: float) -> list[str]:
        with self._errors():
            return [model.id async for model in self._client.models.list(timeout=timeout)]

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        """The request as the model's wire API takes it. What the model does not accept (temperature
        on a reasoning model, ...) the facade refused already, by the catalogue's flags."""
        if request.wire_api == RESPONSES_API:
            return self._responses.params(request)
        # Messages (empty turns dropped, as for the other providers), tools, response format, reasoning,
        # seed and end-user id: server/providers/openai_translate.py.
        params: dict[str, Any] = {"model": request.model, **translate.request_body(request)}
        if request.max_tokens is not None:
            # max_completion_tokens: the current name, and the only one reasoning models take.
            params["max_completion_tokens"] = request.max_tokens
        for name, value in (("temperature", request.temperature), ("top_p", request.top_p)):
            if value is not None:
                params[name] = value
        if request.stop:
            if len(request.stop) > MAX_STOP_SEQUENCES:
                raise ProviderBadRequest(
                    self.name, f"at most {MAX_STOP_SEQUENCES} stop sequences are supported"
                )
            params["stop"] = list(request.stop)
        return params


def _first_choice(body: Mapping[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}


def _estimated_usage(request: ChatRequest, generated_chars: int) -> Usage:
    """About four characters a token (OpenAI's rule of thumb for English text), rounded up."""
    prompt_chars = sum(len(m.content) for m in request.messages)
    return Usage(-(-prompt_chars // 4), -(-generated_chars // 4), estimated=True)


def _served_model(body: object) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def _usage(usage: Any) -> Usage:
    return translate.usage(usage) if isinstance(usage, dict) else Usage()


def _response_id(body: object) -> str:
    """The id of the completion (`chatcmpl-…`); every chunk of a stream repeats it."""
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def _finish(reason: str | None) -> FinishReason:
    return finish_reason("openai", reason, FINISH_REASONS)


SPEC = ProviderSpec(
    kind="openai",
    key_settings=("OPENAI_API_KEY",),
    base_url_setting="OPENAI_BASE_URL",
    key_pattern=re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"),
    default_base_url="https://api.openai.com/v1",
    factory=OpenAIProvider,
    emulator=lambda key: OpenAIEmulator(api_key=key),
)
