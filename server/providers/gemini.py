"""Google Gemini adapter on the official `google-genai` SDK (Gemini Developer API, `client.aio`).

What the SDK (google-genai 3.x) does that shapes this adapter:
- `client.aio` sends over aiohttp when it is installed, by default through one session per event loop
  with an unlimited connector. We hand it our own session, sized from `max_connections`; the SDK then
  leaves closing it to us. An aiohttp session belongs to the loop it is made on, so the client is built
  on first use, inside the gateway's loop, not in the constructor (which may run before any loop).
- Retries: with `HttpRetryOptions(attempts=1)` on the client it makes one attempt. Without retry options
  it would still retry a failed connection once on its own, after sleeping 1-10 s.
- `generate_content_stream` sends nothing until its iterator is first advanced, so HTTP errors surface at
  our first `__anext__`, inside the same error mapping as the rest of the stream.
- Closing the SDK's stream generator leaves the aiohttp response open until the garbage collector runs
  (the generators it wraps reference one another in a cycle), so `stream` closes the response itself.
- Automatic continuation (the SDK re-requesting with a continuation token) and automatic function
  calling would make requests outside the gateway's retry and deadline accounting: both are off.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
from google import genai
from google.genai import errors, types
from google.genai.client import AsyncClient
from google.oauth2.credentials import Credentials

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
    ToolCall,
)
from server.emulators.gemini import GeminiEmulator
from server.providers import gemini_translate as translate
from server.providers.base import (
    ProviderSettings,
    ProviderSpec,
    error_for_status,
    finish_reason,
    retry_after_seconds,
)

MAX_STOP_SEQUENCES = 5
"""GenerationConfig.stopSequences: "the set of character sequences (up to 5)" (API reference)."""

FINISH_REASONS = {
    "FINISH_REASON_UNSPECIFIED": FinishReason.UNSPECIFIED,
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    # Stopped at the per-request token limit with more to say (automatic continuation is off): truncated.
    "CONTINUATION": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "IMAGE_RECITATION": FinishReason.CONTENT_FILTER,
    "ESCALATION": FinishReason.CONTENT_FILTER,
    "MODEL_ARMOR": FinishReason.CONTENT_FILTER,
    "PUP_LIMITED_DISABLED": FinishReason.CONTENT_FILTER,
    # A tool call that failed is not a tool call the caller can act on.
    "MALFORMED_FUNCTION_CALL": FinishReason.OTHER,
    "UNEXPECTED_TOOL_CALL": FinishReason.OTHER,
    "TOO_MANY_TOOL_CALLS": FinishReason.OTHER,
    "LANGUAGE": FinishReason.OTHER,
    "OTHER": FinishReason.OTHER,
    "IMAGE_OTHER": FinishReason.OTHER,
    "NO_IMAGE": FinishReason.OTHER,
    "MISSING_THOUGHT_SIGNATURE": FinishReason.OTHER,
    "MALFORMED_RESPONSE": FinishReason.OTHER,
}
"""Every value of the SDK's `types.FinishReason`; only STOP is a complete answer."""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
REQUEST_ID_HEADERS = ("x-goog-request-id", "x-request-id")
"""Where a Gemini error names its request, when it does (a success names it in `responseId`)."""


class GeminiProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self.name: ProviderName = settings.name
        self._settings = settings
        self._client: genai.Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._opening: dict[asyncio.Task[Any], list[aiohttp.ClientResponse]] = {}
        """Streams waiting for their first chunk, by the task that sends their request."""

    def __repr__(self) -> str:
        return f"GeminiProvider(name={self.name!r}, base_url={self._settings.base_url!r})"

    async def complete(self, request: ChatRequest, options: CallOptions) -> Completion:
        contents, config = self._params(request, options)
        with self._errors():
            response = await self._aio().models.generate_content(
                model=request.model, contents=contents, config=config
            )
        reader = translate.Reader()
        for _ in reader.deltas(response):
            pass
        return Completion(
            "".join(reader.text),
            translate.usage(response.usage_metadata),
            _tool_finish(_finish(response), reader.tool_calls()),
            served_model=response.model_version or "",
            request_id=response.response_id or "",
            tool_calls=reader.tool_calls(),
            response_id=response.response_id or "",
            reasoning=tuple(reader.reasoning),
        )

    async def stream(self, request: ChatRequest, options: CallOptions) -> AsyncGenerator[StreamEvent, None]:
        contents, config = self._params(request, options)
        with self._errors():
            chunks = await self._aio().models.generate_content_stream(
                model=request.model, contents=contents, config=config
            )
        usage: types.GenerateContentResponseUsageMetadata | None = None
        finish: FinishReason | None = None
        served, request_id = "", ""
        opened: list[aiohttp.ClientResponse] = []
        reader = translate.Reader()
        try:
            with self._errors():
                chunk = await self._first_chunk(chunks, opened)
                while chunk is not None:
                    for delta in reader.deltas(chunk):
                        yield delta
                    if chunk.usage_metadata is not None:  # a running total: the last one counts
                        usage = chunk.usage_metadata
                    served = served or chunk.model_version or ""
                    request_id = request_id or chunk.response_id or ""
                    if (reason := _finish(chunk)) is not FinishReason.UNSPECIFIED:
                        finish = reason
                    chunk = await anext(chunks, None)
        except ProviderError as error:
            # Cut after chunks that named the response: the error names it too (the id support asks for).
            error.request_id = error.request_id or request_id or None
            raise
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            # The SDK's inner generators reference one another in a cycle: closing its outer one leaves
            # the aiohttp response open until the garbage collector runs. Close it here, at once.
            for response in opened:
                response.close()
        if finish is None:
            raise ProviderUnavailable(self.name, "the stream ended without a finish reason")
        yield StreamEnd(
            translate.usage(usage),
            _tool_finish(finish, reader.tool_calls()),
            served,
            request_id,
            tool_calls=reader.tool_calls(),
            response_id=request_id,
            reasoning=tuple(reader.reasoning),
        )

    async def probe(self, timeout: float) -> None:
        config = types.ListModelsConfig(page_size=1, http_options=types.HttpOptions(timeout=_ms(timeout)))
        with self._errors():
            await self._aio().models.list(config=config)  # the first page only

    async def list_models(self, timeout: float) -> list[str]:
        config = types.ListModelsConfig(page_size=1000, http_options=types.HttpOptions(timeout=_ms(timeout)))
        with self._errors():
            pager = await self._aio().models.list(config=config)
            # `models/<id>` (Developer API) or `publishers/google/models/<id>` (Vertex AI).
            return [model.name.rpartition("/")[2] async for model in pager if model.name]

    async def aclose(self) -> None:
        client, session = self._client, self._session
        self._client, self._session = None, None
        if client is not None:
            await client.aio.aclose()
            client.close()  # the sync transport the SDK builds alongside; it never opened a connection
        if session is not None:
            await session.close()

    async def _first_chunk(
        self, chunks: AsyncIterator[types.GenerateContentResponse], opened: list[aiohttp.ClientResponse]
    ) -> types.GenerateContentResponse | None:
        """Advance a new stream to its first chunk, which sends the HTTP request, and collect the aiohttp
        response it opens into `opened`. A task waits for one thing at a time, so while it waits here
        every response that reaches `_on_response` in this task belongs to this stream."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - streams always run inside a task
            raise RuntimeError("a Gemini stream must be read inside an asyncio task")
        self._opening[task] = opened
        try:
            return await anext(chunks, None)
        finally:
            del self._opening[task]

    async def _on_response(
        self, _session: aiohttp.ClientSession, _context: object, params: aiohttp.TraceRequestEndParams
    ) -> None:
        """aiohttp trace hook, called in the sending task as a response's headers arrive."""
        task = asyncio.current_task()
        if task is not None and (opened := self._opening.get(task)) is not None:
            opened.append(params.response)

    def _aio(self) -> AsyncClient:
        """The one SDK client, built on first use (see the module docstring for why not earlier)."""
        if self._client is None:
            tracing = aiohttp.TraceConfig()
            tracing.on_request_end.append(self._on_response)
            # trust_env as the SDK's own session has it: HTTPS_PROXY and friends apply.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                trust_env=True,
                trace_configs=[tracing],
            )
            http_options = types.HttpOptions(
                base_url=self._settings.base_url,
                retry_options=types.HttpRetryOptions(attempts=1),
                aiohttp_client=self._session,
            )
            if self._settings.vertex_project is not None:
                # Vertex AI: project and location from the settings (read once at start), credentials
                # a given OAuth token or Application Default Credentials (google-auth).
                token = self._settings.api_key
                self._client = genai.Client(
                    vertexai=True,
                    project=self._settings.vertex_project or None,
                    location=self._settings.vertex_region,
                    # google-auth (a google-genai dependency) leaves this constructor untyped.
                    credentials=Credentials(token=token) if token else None,  # type: ignore[no-untyped-call]
                    http_options=http_options,
                )
            else:
                self._client = genai.Client(
                    vertexai=False,  # the Developer API whatever GOOGLE_GENAI_USE_VERTEXAI says
                    api_key=self._settings.api_key,
                    http_options=http_options,
                )
        return self._client.aio

    def _params(
        self, request: ChatRequest, options: CallOptions
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        """The request as the Gemini API takes it; refuses what the API would refuse."""
        system = "\n\n".join(m.text() for m in request.messages if m.role is Role.SYSTEM and m.text())
        # User and model turns of parts, function calls and responses: server/providers/gemini_translate.py.
        contents = translate.contents(request)
        if len(request.stop) > MAX_STOP_SEQUENCES:
            raise ProviderBadRequest(
                self.name,
                f"at most {MAX_STOP_SEQUENCES} stop sequences are supported; got {len(request.stop)}",
            )
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            top_p=request.top_p,
            max_output_tokens=request.max_tokens,
            stop_sequences=list(request.stop) or None,
            automatic_continuation=False,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            http_options=types.HttpOptions(headers=options.headers, timeout=_ms(options.timeout)),
            **translate.config_fields(request),
        )
        return contents, config

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Map every SDK and transport error, at the call and during the stream, to the core's errors."""
        try:
            yield
        except ProviderError:
            raise
        except errors.APIError as error:
            raise self._status_error(error) from None
        except (errors.UnknownApiResponseError, json.JSONDecodeError):  # e.g. an SSE event that is not JSON
            raise ProviderUnavailable(self.name, "the provider sent a malformed response") from None
        except TimeoutError:  # aiohttp's total timeout, and its ServerTimeoutError / ConnectionTimeoutError
            raise ProviderTimeout(self.name, "the request timed out") from None
        except (aiohttp.ClientError, OSError) as error:  # refused, reset, or cut off mid-stream
            raise ProviderUnavailable(self.name, f"connection failed ({type(error).__name__})") from None

    def _status_error(self, error: errors.APIError) -> ProviderError:
        """An HTTP error status, or an error event inside a stream that began with HTTP 200 (classified
        by the code it carries, as the same error would be at the call)."""
        message = error.message if isinstance(error.message, str) else ""
        code = error.code if isinstance(error.code, int) else 500
        if _http_status(error.response) == 200:
            message = f"stream failed: {message or 'an error event'}"
        if "API_KEY_INVALID" in _detail_values(error.details, "reason"):
            code = 401  # Gemini refuses a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID
        headers = _headers(error.response)
        if retry_after_seconds(headers) is None and (delay := _retry_delay(error.details)) is not None:
            headers["retry-after"] = delay
        return error_for_status(
            self.name,
            code,
            message,
            headers,
            request_id=next((headers[h] for h in REQUEST_ID_HEADERS if headers.get(h)), None),
            quota_exhausted=code == 429 and _daily_quota(error.details),
        )


def _ms(seconds: float) -> int:
    """HttpOptions.timeout is in whole milliseconds; at least 1, since 0 would mean no timeout."""
    return max(1, round(seconds * 1000))


def _finish(response: types.GenerateContentResponse) -> FinishReason:
    # A prompt the provider blocks outright comes back with prompt_feedback.block_reason and no candidates:
    # the caller gets an empty reply that ends in CONTENT_FILTER, as for a reply blocked part way (an
    # error would make the gateway retry a prompt that will be blocked again).
    if response.prompt_feedback is not None and response.prompt_feedback.block_reason is not None:
        return FinishReason.CONTENT_FILTER
    if not response.candidates or response.candidates[0].finish_reason is None:
        return FinishReason.UNSPECIFIED
    reason = response.candidates[0].finish_reason
    return finish_reason("gemini", getattr(reason, "value", str(reason)), FINISH_REASONS)


def _tool_finish(finish: FinishReason, calls: tuple[ToolCall, ...]) -> FinishReason:
    """Gemini ends a turn of function calls with STOP: for the caller it is a turn of tool calls."""
    return FinishReason.TOOL_CALLS if calls and finish is FinishReason.STOP else finish


def _http_status(response: object) -> int | None:
    """The HTTP status an SDK error came with: aiohttp's `status`, else `status_code` (always 200 on the
    SDK's wrapper of a stream, whose in-stream error events carry a code of their own)."""
    status = getattr(response, "status", None)
    if not isinstance(status, int):
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _headers(response: object) -> dict[str, str]:
    headers = getattr(response, "headers", None)
    if not isinstance(headers, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _detail_values(body: Any, key: str, type_suffix: str = "") -> list[str]:
    """`key` of each google.rpc detail in an error body ({"error": {"details": [...]}}) whose @type ends
    with `type_suffix`."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    details = inner.get("details") if isinstance(inner, dict) else None
    if not isinstance(details, list):
        return []
    return [
        str(d[key])
        for d in details
        if isinstance(d, dict) and key in d and str(d.get("@type", "")).endswith(type_suffix)
    ]


def _daily_quota(body: Any) -> bool:
    """Whether a 429 is a spent per-day quota (a google.rpc.QuotaFailure violation whose quotaId is per
    day, e.g. `GenerateRequestsPerDayPerProjectPerModel-FreeTier`): waiting seconds will not help."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    details = inner.get("details") if isinstance(inner, dict) else None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith(
            "google.rpc.QuotaFailure"
        ):
            continue
        for violation in detail.get("violations") or ():
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


def _retry_delay(body: Any) -> str | None:
    """google.rpc.RetryInfo.retryDelay ("2s", "0.5s") from an error body, as seconds."""
    for delay in _detail_values(body, "retryDelay", "google.rpc.RetryInfo"):
        if match := _DURATION.match(delay):
            return match.group(1)
    return None


SPEC = ProviderSpec(
    kind="gemini",
    key_settings=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    base_url_setting="GEMINI_BASE_URL",
    key_pattern=re.compile(r"AIza[0-9A-Za-z_\-]{20,}"),
    default_base_url="https://generativelanguage.googleapis.com",
    factory=GeminiProvider,
    emulator=lambda key: GeminiEmulator(api_key=key),
)
