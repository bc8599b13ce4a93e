"""An emulator of the OpenAI Chat Completions API (`POST /v1/chat/completions`, JSON and SSE;
`GET /v1/models`), refusing what the real API refuses."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from server.emulators.base import Directives, Emulator, parse_directives, plan_reply

REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
KNOWN_PARAMS = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stream",
    "stream_options",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "metadata",
    "store",
    "service_tier",
    "modalities",
    "prediction",
    "audio",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "web_search_options",
}
FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
MODELS = (
    "gpt-5.5",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.4-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
)
# The model each alias is served by, as the API names it in `model`.
SNAPSHOTS = {
    "gpt-5.5": "gpt-5.5-2026-04-23",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
}
# Shut down (openai SDK's ChatModel deprecation notes): the API answers 404 model_not_found.
RETIRED = frozenset(
    {"gpt-4-32k", "gpt-3.5-turbo-0613", "o1-preview", "o1-mini", "o1", "o3-mini", "o4-mini", "gpt-4.1-nano"}
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information "
    "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
# In-stream error events by kind: (message, type, code).
STREAM_ERRORS = {
    "server": ("The server had an error while processing your request.", "server_error", None),
    "overloaded": ("The server had an error while processing your request.", "server_error", None),
    "rate_limit": ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    "invalid_request": ("Invalid request.", "invalid_request_error", None),
    "quota": (QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota"),
}
ERRORS = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind, default_code = ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    if code == "insufficient_quota":
        kind = code
    body = {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}
    return web.json_response(body, status=status, headers=headers)


def _problems(body: Any) -> tuple[str, str | None, str | None] | None:
    """The first rule the body breaks, as (message, param, code), or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None, None
    for key in body:
        if key not in KNOWN_PARAMS:
            return f"Unrecognized request argument supplied: {key}", key, None
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return "you must provide a model parameter", "model", None
    if not isinstance(messages, list) or not messages:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"Invalid value for 'messages[{index}].role'.", f"messages[{index}].role", "invalid_value"
        content = message.get("content")
        if not isinstance(content, str | list) and not (content is None and message["role"] == "assistant"):
            return (
                f"Invalid type for 'messages[{index}].content'.",
                f"messages[{index}].content",
                "invalid_type",
            )
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or not low <= value <= high):
            return f"Invalid '{name}': expected a number between {low} and {high}.", name, "invalid_value"
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            return f"Invalid '{name}': integer below minimum value (1).", name, "integer_below_min_value"
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        return "max_tokens and max_completion_tokens cannot both be set.", "max_tokens", None
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        return (
            "Invalid 'stop': array too long. Expected an array with maximum length 4.",
            "stop",
            "array_above_max_length",
        )
    if "stream_options" in body and not body.get("stream"):
        return (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    if model.startswith(REASONING_PREFIXES):
        if "max_tokens" in body:
            return (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        for name in ("temperature", "top_p"):
            if name in body and body[name] != 1:
                return (
                    f"Unsupported value: '{name}' does not support {body[name]} with this model. "
                    "Only the default (1) value is supported.",
                    name,
                    "unsupported_value",
                )
        if "stop" in body:
            return (
                "Unsupported parameter: 'stop' is not supported with this model.",
                "stop",
                "unsupported_parameter",
            )
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _not_found(model: str) -> web.Response:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


class OpenAIEmulator(Emulator):
    name = "openai"
    request_id_header = "x-request-id"

    def default_snapshots(self) -> dict[str, str]:
        return dict(SNAPSHOTS)

    def url_for(self, host: str, port: int) -> str:
        return f"http://{host}:{port}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
            # Azure OpenAI: the deployment (the model id) in the path, api-version in the query.
            web.post("/openai/deployments/{deployment}/chat/completions", self._azure_chat),
            web.get("/openai/models", self._models),
        ]

    def _authorised(self, request: web.Request) -> bool:
        """OpenAI takes `Authorization: Bearer <key>`, Azure OpenAI `api-key: <key>`."""
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}" or (
            request.path.startswith("/openai/") and request.headers.get("api-key") == self.api_key
        )

    def _refuse_key(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        masked = f"{given[:3]}{'*' * max(0, len(given) - 7)}{given[-4:]}" if len(given) > 7 else "***"
        return _error(
            401,
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if not self._authorised(request):
            return self._refuse_key(request)
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if "api-version" not in request.query:
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        if isinstance(body, dict):
            body["model"] = request.match_info["deployment"]  # the deployment decides, whatever the body says
        return await self._answer(request, body)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, await self.record(request))

    async def _answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        if not self._authorised(request):
            return self._refuse_key(request)
        problem = _problems(body)
        if problem is not None:
            message, param, code = problem
            return _error(400, message, param=param, code=code)
        if body["model"] in RETIRED:
            return _not_found(body["model"])
        messages = body["messages"]
        last_user = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            return self._failure(request, directives, body["model"])
        stop = body.get("stop") or []
        reply = plan_reply(
            [parse_directives(_text(m.get("content")))[0] for m in messages],
            last_user,
            directives,
            max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
            stop=[stop] if isinstance(stop, str) else stop,
        )
        if directives.context_window is not None and reply.prompt_tokens > directives.context_window:
            return _error(
                400,
                f"This model's maximum context length is {directives.context_window} tokens. However, "
                f"your messages resulted in {reply.prompt_tokens} tokens. Please reduce the length of the "
                "messages.",
                param="messages",
                code="context_length_exceeded",
            )
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        identity = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": self.served_as.get(body["model"], body["model"]),
            "system_fingerprint": "fp_emulator",
        }
        finish = FINISH.get(reply.finish, reply.finish)
        if not body.get("stream"):
            for _ in reply.tokens:
                await self.pace(directives)
            choice = {
                "index": 0,
                "finish_reason": finish,
                "logprobs": None,
                "message": {"role": "assistant", "content": reply.text, "refusal": None},
            }
            reported = {} if directives.no_usage else {"usage": usage}
            return web.json_response(
                {**identity, "object": "chat.completion", "choices": [choice], **reported}
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(
            request, identity, reply.tokens, finish, usage if include_usage else None, directives
        )

    def _failure(self, request: web.Request, directives: Directives, model: str) -> web.Response:
        """The directive's failure: a `fail` kind in the API's own shape, else the bare `status`."""
        match directives.fail:
            case "quota" | "billing":
                return _error(429, QUOTA_MESSAGE, code="insufficient_quota")
            case "auth":
                return self._refuse_key(request)
            case "retired":
                return _not_found(model)
        status = directives.status or 500
        return _error(
            status,
            self.failure_message(request, directives, f"emulated failure {status}"),
            headers=self.retry_headers(directives),
        )

    async def _stream(
        self,
        request: web.Request,
        identity: dict[str, Any],
        tokens: list[str],
        finish: str,
        usage: dict[str, Any] | None,
        directives: Directives,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        extra = {"usage": None} if usage is not None else {}

        async def send(choices: list[dict[str, Any]], **more: Any) -> None:
            chunk = {**identity, "object": "chat.completion.chunk", "choices": choices, **extra, **more}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        with self.streaming():
            await send([choice({"role": "assistant", "content": "", "refusal": None})])
            for index, token in enumerate(tokens):
                if directives.drop_after is not None and index >= directives.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if directives.malformed_after is not None and index >= directives.malformed_after:
                    await self.send_malformed(response)
                    return response
                if directives.error_after is not None and index >= directives.error_after:
                    message, kind, code = STREAM_ERRORS[directives.error or "server"]
                    error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
                    await response.write(f"data: {json.dumps(error)}\n\n".encode())
                    await response.write_eof()
                    return response
                await self.pace(directives)
                await send([choice({"content": token})])
            await send([choice({}, finish)])
            if usage is not None and not directives.no_usage:
                await send([], usage=usage)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response
