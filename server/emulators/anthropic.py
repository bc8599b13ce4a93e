"""An emulator of the Anthropic Messages API (`POST /v1/messages`, JSON and SSE; `GET /v1/models`),
refusing what the real API refuses."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from server.emulators.base import (
    Directives,
    Emulator,
    count_tokens,
    new_request_id,
    parse_directives,
    plan_reply,
)

KNOWN_PARAMS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
}
# From API version 2026-10-21 the Messages API refuses temperature, top_p and top_k, even at defaults.
SAMPLING_REMOVED = "2026-10-21"
VERTEX_MODELS = "publishers/anthropic/models"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
MODELS = ("claude-opus-4-7", "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-5")
# The model each alias is served by, as the API names it in `model`.
SNAPSHOTS = {"claude-haiku-4-5": "claude-haiku-4-5-20251001", "claude-opus-4-5": "claude-opus-4-5-20251101"}
# Retired models: the API answers 404 not_found_error naming the model.
RETIRED = frozenset(
    {"claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022", "claude-3-opus-20240229", "claude-2.1"}
)
CREDIT_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade "
    "or purchase credits."
)
# In-stream error events by kind: (type, message).
STREAM_ERRORS = {
    "overloaded": ("overloaded_error", "Overloaded"),
    "server": ("api_error", "Internal server error"),
    "rate_limit": ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "invalid_request": ("invalid_request_error", "Invalid request"),
    "quota": ("billing_error", CREDIT_TOO_LOW),
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error as the API sends it: the body names the request as the `request-id` header does."""
    kind = ERROR_TYPES.get(status, "api_error")
    request_id = new_request_id()
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return web.json_response(body, status=status, headers={**(headers or {}), "request-id": request_id})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _problem(body: Any, version: str) -> str | None:
    """The first rule the body breaks, in the API's own words, or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    for key in body:
        if key not in KNOWN_PARAMS:
            return f"{key}: Extra inputs are not permitted"
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if isinstance(content, str) and not content:
            return f"messages.{index}: text content blocks must be non-empty"
        if isinstance(content, list) and any(b.get("type") == "text" and not b.get("text") for b in content):
            return f"messages.{index}: text content blocks must be non-empty"
    last = messages[-1]
    if last["role"] == "assistant" and _text(last.get("content")) != _text(last.get("content")).rstrip():
        return "messages: final assistant content cannot end with trailing whitespace"
    for name in ("temperature", "top_p", "top_k"):
        if name in body and version >= SAMPLING_REMOVED:
            return f"{name}: Extra inputs are not permitted"
        value = body.get(name)
        if (
            name != "top_k"
            and value is not None
            and (not isinstance(value, int | float) or not 0 <= value <= 1)
        ):
            return f"{name}: Input should be less than or equal to 1"
    if not model.startswith("claude-3") and "temperature" in body and "top_p" in body:
        return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or any(not isinstance(s, str) or not s.strip() for s in stops):
        return "stop_sequences: each stop sequence must contain non-whitespace characters"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list of text blocks"
    return None


class AnthropicEmulator(Emulator):
    name = "anthropic"
    request_id_header = "request-id"

    def default_snapshots(self) -> dict[str, str]:
        return dict(SNAPSHOTS)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self._messages),
            web.get("/v1/models", self._models),
            # Claude on Vertex AI: the model and the method in the path, the API version in the body.
            web.post(f"/v1/projects/{{project}}/locations/{{region}}/{VERTEX_MODELS}/{{call}}", self._vertex),
        ]

    async def _vertex(self, request: web.Request) -> web.StreamResponse:
        """rawPredict / streamRawPredict / count-tokens as Vertex AI serves Claude: an OAuth bearer token
        (here: the emulator's key), `anthropic_version` in the body instead of the header (the SDK sends
        its API version there), no `model` in the body."""
        body = await self.record(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            message = "Request had invalid authentication credentials."
            google = {"code": 401, "message": message, "status": "UNAUTHENTICATED"}
            return web.json_response({"error": google}, status=401)
        model, _, method = request.match_info["call"].partition(":")
        version = body.pop("anthropic_version", None) if isinstance(body, dict) else None
        if not isinstance(version, str):
            return _error(400, "anthropic_version: Field required")
        if model == "count-tokens" and method == "rawPredict":
            tokens = sum(count_tokens(_text(m.get("content"))) for m in body.get("messages") or [])
            return web.json_response({"input_tokens": tokens})
        if "model" in body:
            return _error(400, "model: Extra inputs are not permitted")
        if method not in ("rawPredict", "streamRawPredict"):
            return _error(404, f"unknown method {method}")
        if (method == "streamRawPredict") != bool(body.get("stream")):
            return _error(400, "stream: streamRawPredict streams, rawPredict does not")
        return await self._answer(request, {**body, "model": model}, version)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        return await self._answer(request, body, request.headers["anthropic-version"])

    def _refusal(self, request: web.Request) -> web.Response | None:
        # The key arrives as x-api-key (older SDKs) or as a bearer token (current SDKs).
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            return _error(401, "invalid x-api-key")  # the API's own words
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        ids = [SNAPSHOTS.get(m, m) for m in MODELS]
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2024-10-22T00:00:00Z"} for m in ids
        ]
        return web.json_response({"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]})

    async def _answer(self, request: web.Request, body: Any, version: str) -> web.StreamResponse:
        if (problem := _problem(body, version)) is not None:
            return _error(400, problem)
        if body["model"] in RETIRED:
            return _error(404, f"model: {body['model']}")
        messages = body["messages"]
        last_user = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            return self._failure(request, directives, body["model"])
        system = body.get("system")
        texts = [parse_directives(_text(m.get("content")))[0] for m in messages]
        texts += [_text(system)] if system else []
        stops = body.get("stop_sequences", [])
        reply = plan_reply(texts, last_user, directives, max_tokens=body["max_tokens"], stop=stops)
        if directives.context_window is not None and reply.prompt_tokens > directives.context_window:
            return _error(
                400, f"prompt is too long: {reply.prompt_tokens} tokens > {directives.context_window} maximum"
            )
        window = directives.context_window
        if window is not None and reply.prompt_tokens + body["max_tokens"] > window:
            return _error(
                400,
                f"input length and `max_tokens` exceed context limit: {reply.prompt_tokens} + "
                f"{body['max_tokens']} > {window}, decrease input length or `max_tokens` and try again",
            )
        stop_reason = STOP_REASONS.get(reply.finish, reply.finish)
        full = "emulator reply: " + last_user if directives.reply is None else directives.reply
        stop_sequence = next((s for s in stops if s in full), None) if reply.finish == "stop" else None
        if stop_sequence is not None:
            stop_reason = "stop_sequence"
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.served_as.get(body["model"], body["model"]),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if not body.get("stream"):
            for _ in reply.tokens:
                await self.pace(directives)
            message.update(
                content=[{"type": "text", "text": reply.text}],
                stop_reason=stop_reason,
                stop_sequence=stop_sequence,
                usage={**message["usage"], "output_tokens": reply.completion_tokens},
            )
            return web.json_response(message)
        return await self._stream(request, message, reply.tokens, stop_reason, stop_sequence, directives)

    def _failure(self, request: web.Request, directives: Directives, model: str) -> web.Response:
        """The directive's failure: a `fail` kind in the API's own shape, else the bare `status`."""
        match directives.fail:
            case "quota":
                return _error(400, CREDIT_TOO_LOW)  # sic: 400 invalid_request_error, as the API sends it
            case "billing":
                return _error(402, CREDIT_TOO_LOW)
            case "auth":
                return _error(401, "invalid x-api-key")
            case "retired":
                return _error(404, f"model: {model}")
        status = directives.status or 500
        return _error(
            status,
            self.failure_message(request, directives, f"emulated failure {status}"),
            self.retry_headers(directives),
        )

    async def _stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        tokens: list[str],
        stop_reason: str,
        stop_sequence: str | None,
        directives: Directives,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode())

        with self.streaming():
            await send("message_start", {"message": message})
            await send("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            await send("ping", {})
            for index, token in enumerate(tokens):
                if directives.drop_after is not None and index >= directives.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if directives.malformed_after is not None and index >= directives.malformed_after:
                    await self.send_malformed(response)
                    return response
                if directives.error_after is not None and index >= directives.error_after:
                    kind, text = STREAM_ERRORS[directives.error or "overloaded"]
                    await send("error", {"error": {"type": kind, "message": text}})
                    await response.write_eof()
                    return response
                await self.pace(directives)
                await send(
                    "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": token}}
                )
            await send("content_block_stop", {"index": 0})
            await send(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    # Cumulative, as the API sends it: the whole usage so far, not the output alone.
                    "usage": {**message["usage"], "output_tokens": len(tokens)},
                },
            )
            await send("message_stop", {})
            await response.write_eof()
        return response
