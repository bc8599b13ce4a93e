"""Google Gemini adapter on the official `google-genai` SDK (Gemini Developer API, `client.aio`)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2
from google import genai
from google.genai import errors, types

from server.core.errors import ProviderBadRequest, ProviderError, ProviderTimeout, ProviderUnavailable
from server.core.types import (
    CallOptions,
    ChatRequest,
    Completion,
    FinishReason,
    ProviderName,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from server.providers.base import ProviderSettings, error_for_status

MAX_STOP_SEQUENCES = 5
_FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "FINISH_REASON_UNSPECIFIED": FinishReason.UNSPECIFIED,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiProvider:
    name = ProviderName.GEMINI

    def __init__(self, settings: ProviderSettings) -> None:
        # One attempt: the gateway retries inside the caller's deadline. Without retry options the SDK
        # retries connection errors once on its own, after sleeping 1-10 s.
        options = types.HttpOptions(
            base_url=settings.base_url, retry_options=types.HttpRetryOptions(attempts=1)
        )
        self._client = genai.Client(api_key=settings.api_key, http_options=options)
        self._base_url = settings.base_url

    def __repr__(self) -> str:
        return f"GeminiProvider(base_url={self._base_url!r})"

    async def complete(self, request: ChatRequest, options: CallOptions) -> Completion:
        contents, config = self._params(request, options)
        with self._errors():
            response = await self._client.aio.models.generate_content(
                model=request.model, contents=contents, config=config
            )
        return Completion(response.text or "", _usage(response.usage_metadata), _finish(response))

    async def stream(self, request: ChatRequest, options: CallOptions) -> AsyncGenerator[StreamEvent, None]:
        contents, config = self._params(request, options)
        with self._errors():
            chunks = await self._client.aio.models.generate_content_stream(
                model=request.model, contents=contents, config=config
            )
        usage_metadata: Any = None
        finish = FinishReason.UNSPECIFIED
        seen_finish = False
        try:
            with self._errors():
                async for chunk in chunks:
                    text = _chunk_text(chunk)
                    if text:
                        yield TextDelta(text)
                    if chunk.usage_metadata is not None:  # cumulative; the last one is the whole count
                        usage_metadata = chunk.usage_metadata
                    reason = _finish(chunk)
                    if reason is not FinishReason.UNSPECIFIED or _blocked(chunk):
                        finish, seen_finish = reason, True
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        if not seen_finish:
            raise ProviderUnavailable(self.name, "the stream ended without a finish reason")
        yield StreamEnd(_usage(usage_metadata), finish)

    async def probe(self, timeout: float) -> None:
        with self._errors():
            await self._client.aio.models.list(
                config=types.ListModelsConfig(
                    page_size=1, http_options=types.HttpOptions(timeout=int(timeout * 1000))
                )
            )

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    def _params(
        self, request: ChatRequest, options: CallOptions
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        """The request as the Gemini API takes it; refuses what the API would refuse."""
        system = "\n\n".join(m.content for m in request.messages if m.role is Role.SYSTEM and m.content)
        contents: list[types.Content] = []
        for message in request.messages:
            # System text goes to system_instruction; the API refuses empty parts.
            if message.role is Role.SYSTEM or not message.content:
                continue
            role = "model" if message.role is Role.ASSISTANT else "user"
            if contents and contents[-1].role == role:  # one content per turn: merge consecutive turns
                assert contents[-1].parts is not None
                contents[-1].parts.append(types.Part(text=message.content))
            else:
                contents.append(types.Content(role=role, parts=[types.Part(text=message.content)]))
        if not contents:
            raise ProviderBadRequest(
                self.name, "at least one user or assistant message with content is required"
            )
        if len(request.stop) > MAX_STOP_SEQUENCES:
            raise ProviderBadRequest(self.name, f"at most {MAX_STOP_SEQUENCES} stop sequences are supported")
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            top_p=request.top_p,
            max_output_tokens=request.max_tokens,
            stop_sequences=list(request.stop) or None,
            http_options=types.HttpOptions(
                headers=options.headers,
                timeout=max(1, int(options.timeout * 1000)),
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
        return contents, config

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Map every SDK error, at the call and during the stream, to the core's errors."""
        try:
            yield
        except ProviderError:
            raise
        except errors.APIError as error:
            raise self._status_error(error) from None
        except ValueError:  # an SSE event whose data is not JSON
            raise ProviderUnavailable(self.name, "the provider sent a malformed stream event") from None
        except (TimeoutError, httpx2.TimeoutException, aiohttp.ServerTimeoutError):
            raise ProviderTimeout(self.name, "the request timed out") from None
        except (aiohttp.ClientError, httpx2.TransportError, OSError) as error:
            raise ProviderUnavailable(self.name, f"connection failed ({type(error).__name__})") from None

    def _status_error(self, error: errors.APIError) -> ProviderError:
        message = error.message if isinstance(error.message, str) else ""
        code = error.code if isinstance(error.code, int) else 500
        if _is_key_refusal(error.details):  # Gemini answers a bad key with 400 API_KEY_INVALID
            code = 401
        headers = _headers(error.response)
        if (
            code == 429
            and "retry-after" not in headers
            and (delay := _retry_delay(error.details)) is not None
        ):
            headers["retry-after"] = delay
        if code < 400:  # an error object inside a stream that began with HTTP 200
            return ProviderUnavailable(self.name, f"stream failed: {message}")
        return error_for_status(self.name, code, message, headers)


def _chunk_text(response: types.GenerateContentResponse) -> str:
    """The text parts of the first candidate (not `response.text`, which warns on non-text parts)."""
    if not response.candidates or response.candidates[0].content is None:
        return ""
    parts = response.candidates[0].content.parts or []
    return "".join(part.text for part in parts if part.text and not part.thought)


def _blocked(response: types.GenerateContentResponse) -> bool:
    """A prompt the provider refused outright: no candidates, a block reason in prompt_feedback."""
    feedback = response.prompt_feedback
    return feedback is not None and feedback.block_reason is not None


def _finish(response: types.GenerateContentResponse) -> FinishReason:
    if _blocked(response):
        return FinishReason.CONTENT_FILTER
    if not response.candidates or response.candidates[0].finish_reason is None:
        return FinishReason.UNSPECIFIED
    reason = response.candidates[0].finish_reason
    return _FINISH_REASONS.get(getattr(reason, "value", str(reason)), FinishReason.OTHER)


def _usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    if metadata is None:
        return Usage()
    # Thinking tokens are billed as output, so they count as completion tokens.
    completion = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
    return Usage(metadata.prompt_token_count or 0, completion, metadata.cached_content_token_count or 0)


def _headers(response: Any) -> dict[str, str]:
    headers = getattr(response, "headers", None) or {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _details(body: Any) -> list[Any]:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("details"), list):
            return list(inner["details"])
    return []


def _is_key_refusal(body: Any) -> bool:
    return any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in _details(body))


def _retry_delay(body: Any) -> str | None:
    """google.rpc.RetryInfo.retryDelay ("2s") from the error body, as seconds."""
    for detail in _details(body):
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return match.group(1)
    return None
