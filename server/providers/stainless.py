"""The shared base of the adapters on the two Stainless-generated SDKs, `openai` and `anthropic`: the
same client machinery, error classes and streaming. Both call the SDK's own `post()` (its auth, base URL,
headers, timeouts, SSE decoding and error classes) with the JSON body the API documents: the typed
`create` methods cost about a third of the gateway's CPU per call transforming parameters and building
response objects (docs/benchmarks.md). A subclass says how to build the client, the request body, and
how to read the response and the stream's events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar

import httpx2

from server.core.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from server.core.types import CallOptions, ChatRequest, Completion, ProviderName, StreamEvent
from server.providers.base import ErrorBody, ProviderSettings, caused_by_refused_connection, error_for_status
from server.providers.ratelimits import learned_from


class StainlessProvider:
    """A provider adapter on a Stainless SDK. Subclasses set `sdk`, `path`, `request_id_header` and
    implement `_client`, `_params`, `_completion`, `_events`, `probe` and `list_models`."""

    sdk: ClassVar[ModuleType]
    path: ClassVar[str]
    """The API path of the one call (chat completions, messages)."""
    request_id_header: ClassVar[str]

    def __init__(self, settings: ProviderSettings) -> None:
        self.name: ProviderName = settings.name
        # aiohttp transport: measurably less CPU per call than the default httpx one (docs/benchmarks.md).
        http_client = self.sdk.DefaultAioHttpClient(
            limits=httpx2.Limits(
                max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
            )
        )
        self._client = self._build_client(settings, http_client)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={str(self._client.base_url)!r})"

    def _build_client(self, settings: ProviderSettings, http_client: Any) -> Any:
        raise NotImplementedError

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        """The request as the API takes it; raises ProviderBadRequest for what the API would refuse."""
        raise NotImplementedError

    def _path(self, request: ChatRequest) -> str:
        """The API path of this request's call (an instance that speaks two wire APIs picks per model)."""
        return self.path

    def _stream_params(self, request: ChatRequest, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "stream": True}

    def _completion(self, request: ChatRequest, body: Mapping[str, Any], request_id: str) -> Completion:
        raise NotImplementedError

    def _events(
        self, request: ChatRequest, events: AsyncIterator[object], request_id: str
    ) -> AsyncGenerator[StreamEvent, None]:
        """The core events of the SDK's decoded SSE events (dicts): deltas, then one StreamEnd."""
        raise NotImplementedError

    async def complete(self, request: ChatRequest, options: CallOptions) -> Completion:
        params = self._params(request)  # outside the SDK error mapping: a refusal here is the caller's
        with self._errors():
            # The SDK's response wrapper rather than the parsed body alone: its headers carry the
            # provider's request id.
            response = await self._client.post(
                self._path(request),
                cast_to=self.sdk.AsyncAPIResponse[object],
                body=params,
                options=_request_options(options),
            )
            body = await response.parse()
        request_id = response.headers.get(self.request_id_header) or ""
        if options.rate_limits is not None:
            options.rate_limits.extend(learned_from(response.headers))
        return self._completion(request, body if isinstance(body, Mapping) else {}, request_id)

    async def stream(self, request: ChatRequest, options: CallOptions) -> AsyncGenerator[StreamEvent, None]:
        params = self._stream_params(request, self._params(request))
        with self._errors():
            events = await self._client.post(
                self._path(request),
                cast_to=object,
                body=params,
                options=_request_options(options),
                stream=True,
                stream_cls=self.sdk.AsyncStream[object],
            )
        request_id = events.response.headers.get(self.request_id_header) or ""
        if options.rate_limits is not None:
            options.rate_limits.extend(learned_from(events.response.headers))
        try:
            with self._errors(request_id, in_stream=True):
                async for event in self._events(request, events, request_id):
                    yield event
        finally:
            await events.close()

    async def aclose(self) -> None:
        await self._client.close()

    @contextmanager
    def _errors(self, request_id: str = "", *, in_stream: bool = False) -> Iterator[None]:
        """Map every SDK error, at the call and during the stream (whose `request_id` an in-stream
        error event does not repeat), to the core's errors."""
        try:
            yield
        except ProviderError:
            raise
        except Exception as error:
            mapped = map_stainless_error(
                self.name, error, self.sdk, request_id=request_id or None, in_stream=in_stream
            )
            if mapped is None:
                raise
            raise mapped from None


def _request_options(options: CallOptions) -> dict[str, Any]:
    return {"headers": options.headers, "timeout": options.timeout}


def map_stainless_error(
    provider: ProviderName,
    error: Exception,
    sdk: ModuleType,
    *,
    request_id: str | None = None,
    in_stream: bool = False,
) -> ProviderError | None:
    """The core error for an exception of the `openai` or `anthropic` SDK (both generated by Stainless,
    with the same error classes) or of their HTTP transport; None for anything else.

    Covers the call and the stream iteration alike: an error event inside a stream that began with
    HTTP 200 is classified by its error type as the same error would be at the call (an `overloaded_error`
    is UNAVAILABLE, a `rate_limit_error` RESOURCE_EXHAUSTED, ...); a connection cut mid-stream and an event
    that is not JSON are UNAVAILABLE. `request_id` is the stream's, for errors that carry no response."""
    if isinstance(error, sdk.APITimeoutError):
        if caused_by_refused_connection(error):  # the vendored aiohttp transport's ConnectTimeout
            return ProviderUnavailable(provider, "connection failed (refused)", request_id=request_id)
        return ProviderTimeout(provider, "the request timed out", request_id=request_id)
    if isinstance(error, sdk.APIConnectionError):
        cause = error.__cause__ or error.__context__
        return ProviderUnavailable(
            provider, f"connection failed ({type(cause or error).__name__})", request_id=request_id
        )
    if isinstance(error, sdk.APIStatusError):
        body = ErrorBody.of(error.body)
        message = body.message or getattr(error, "api_message", None) or ""
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        return error_for_status(
            provider,
            error.status_code,  # 200 for an Anthropic `error` event: classified by its type
            message if error.status_code >= 400 else f"stream failed: {message}",
            headers,
            kind=body.kind,
            code=body.code,
            request_id=getattr(error, "request_id", None) or _body_request_id(error.body) or request_id,
        )
    if isinstance(error, sdk.APIError):  # OpenAI: an error event in a stream that began with HTTP 200
        body = ErrorBody.of(error.body)
        return error_for_status(
            provider,
            200,
            f"stream failed: {body.message or 'an error event'}",
            {},
            kind=body.kind,
            code=body.code,
            request_id=request_id,
        )
    if isinstance(error, httpx2.TimeoutException):  # raised by the transport while a stream is read
        return ProviderTimeout(provider, "the stream timed out", request_id=request_id)
    if isinstance(error, httpx2.TransportError):
        return ProviderUnavailable(
            provider, f"connection failed mid-stream ({type(error).__name__})", request_id=request_id
        )
    if in_stream and isinstance(error, ValueError):  # an SSE event whose data is not JSON
        return ProviderUnavailable(
            provider, "the provider sent a malformed stream event", request_id=request_id
        )
    return None


def _body_request_id(body: object) -> str | None:
    """Anthropic repeats the request id in its error body (`request_id`)."""
    value = body.get("request_id") if isinstance(body, Mapping) else None
    return value if isinstance(value, str) and value else None
