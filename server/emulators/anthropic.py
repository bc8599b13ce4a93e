"""An emulator of the Anthropic Messages API (`POST /v1/messages`, JSON and SSE; `GET /v1/models`),
refusing what the real API refuses."""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from aiohttp import web

from server.emulators import anthropic_rules as thinking_rules
from server.emulators.anthropic_rules import blocks_of, request_problem, text_of
from server.emulators.base import (
    Directives,
    Emulator,
    Reply,
    count_tokens,
    new_request_id,
    parse_directives,
    plan_reply,
)
from server.emulators.ratelimits import RateLimits, Refusal
from server.emulators.scripting import (
    PlannedCall,
    ToolSpec,
    json_reply,
    plan_calls,
    result_reply,
    sign,
    thinking_text,
    thinking_tokens,
)

VERTEX_MODELS = "publishers/anthropic/models"
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "tool_use": "tool_use",
}
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


class AnthropicEmulator(Emulator):
    name = "anthropic"
    request_id_header = "request-id"

    def rate_limit_headers(self, limits: RateLimits, key: str) -> dict[str, str]:
        return limits.anthropic_headers(key)

    def rate_limited(self, refusal: Refusal, model: str) -> web.Response:
        """Anthropic's 429 for a rate limit: `{"type":"error","error":{"type":"rate_limit_error",
        "message":"This request would exceed the rate limit for your organization (…) of 20,000 input
        tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. …"}}`
        (https://github.com/OpenHands/OpenHands/issues/9259, https://github.com/bhouston/mycoder/issues/62),
        with `retry-after` in seconds ("the number of seconds to wait", platform.claude.com/docs/en/api/
        rate-limits). The requests and output-token messages follow the same pattern."""
        unit = {"requests": "requests", "tokens": "tokens", "input-tokens": "input tokens"}.get(
            refusal.limit_name, "output tokens"
        )
        message = (
            f"This request would exceed the rate limit for your organization "
            f"(00000000-0000-4000-8000-000000000000) of {refusal.limit:,} {unit} per minute. For details, "
            "refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
            "current usage. Please reduce the prompt length or the maximum tokens requested, or try again "
            "later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your "
            "options for a rate limit increase."
        )
        return _error(429, message, {"retry-after": str(max(1, math.ceil(refusal.retry_after)))})

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
            tokens = sum(count_tokens(text_of(m.get("content"))) for m in body.get("messages") or [])
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
        if (problem := request_problem(body, version)) is not None:
            return _error(400, problem)
        if body["model"] in RETIRED:
            return _error(404, f"model: {body['model']}")
        messages = body["messages"]
        last_user = next((text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            return self._failure(request, directives, body["model"])
        system = body.get("system")
        texts = [parse_directives(text_of(m.get("content")))[0] for m in messages]
        texts += [json.dumps(b) for m in messages for b in blocks_of(m.get("content")) if b["type"] != "text"]
        texts += [json.dumps(t) for t in body.get("tools") or ()]
        texts += [text_of(system)] if system else []
        stops = body.get("stop_sequences", [])
        calls = self._calls(body, directives)
        reply = plan_reply(
            texts, last_user, directives, max_tokens=body["max_tokens"], stop=stops, text=_scripted_text(body)
        )
        if calls:
            arguments = sum(count_tokens(json.dumps(c.arguments)) for c in calls)
            reply = Reply(
                tokens=[], finish="tool_use", prompt_tokens=reply.prompt_tokens, extra_tokens=arguments
            )
        produced = reply.completion_tokens
        limited = self.over_rate_limit(
            request, body["model"], reply.prompt_tokens, body["max_tokens"], produced
        )
        if limited is not None:
            return limited
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
        thinking = self._thinking(body, directives)
        cache_read, cache_write = self._cache(body, texts)
        blocks: list[dict[str, Any]] = []
        if thinking is not None:
            blocks.append(thinking)
        if calls:
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in calls]
        else:
            blocks.append({"type": "text", "text": reply.text})
        # Billed thinking: all of it, also when its text is not shown (`display: omitted`).
        thought = thinking_billed(body, directives) if thinking is not None else 0
        usage = {
            "input_tokens": reply.prompt_tokens - cache_read - cache_write,
            "output_tokens": reply.completion_tokens + thought,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
            "output_tokens_details": {"thinking_tokens": thought},
            "service_tier": "standard",
        }
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.served_as.get(body["model"], body["model"]),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1, "output_tokens_details": {"thinking_tokens": 0}},
        }
        if not body.get("stream"):
            for _ in reply.tokens:
                await self.pace(directives)
            message.update(content=blocks, stop_reason=stop_reason, stop_sequence=stop_sequence, usage=usage)
            return web.json_response(message)
        return await self._stream(
            request,
            message,
            _stream_blocks(blocks, reply.tokens),
            stop_reason,
            stop_sequence,
            usage,
            directives,
        )

    def _calls(self, body: dict[str, Any], directives: Directives) -> list[PlannedCall]:
        """tool_use blocks to answer with: when tools are offered, the choice allows them, and the last
        turn is the user's own words (not tool results)."""
        tools = [
            ToolSpec(t["name"], t.get("input_schema") or {})
            for t in body.get("tools") or ()
            if t.get("type") in (None, "custom")
        ]
        choice = body.get("tool_choice") or {"type": "auto"}
        last = body["messages"][-1]
        answering = any(b["type"] == "tool_result" for b in blocks_of(last.get("content")))
        if not tools or choice["type"] == "none" or last["role"] != "user" or answering:
            return []
        if directives.no_tool and choice["type"] == "auto":
            return []
        self._turn += 1
        return plan_calls(
            tools,
            [choice["name"]] if choice["type"] == "tool" else None,
            directives,
            parallel=not choice.get("disable_parallel_tool_use", False),
            id_prefix="toolu_emu",
            turn=self._turn,
        )

    def _thinking(self, body: dict[str, Any], directives: Directives) -> dict[str, Any] | None:
        """A signed thinking block when thinking is on: by budget (`enabled`) or effort (`adaptive`)."""
        config = body.get("thinking") or {}
        if config.get("type") not in ("enabled", "adaptive"):
            return None
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            return None  # adaptive with a forced tool: "thinking is skipped" (thinking-tool-workflows page)
        text = thinking_text(thinking_billed(body, directives))
        # Opus 4.7 and later omit the text unless asked (`display`): the signature still comes.
        shown = text if thinking_rules.shows_thinking(body) else ""
        return {"type": "thinking", "thinking": shown, "signature": sign(shown)}

    def _cache(self, body: dict[str, Any], texts: list[str]) -> tuple[int, int]:
        """(read, written) prompt-cache tokens: each cache_control breakpoint (tools, then system, then
        messages) closes a prefix; a prefix seen before is read, a new one of at least 1024 tokens is
        written."""
        prefixes: list[tuple[Any, int]] = []
        seen: list[Any] = []
        tokens = 0
        ordered: list[Any] = [*(body.get("tools") or ())]
        system = body.get("system")
        ordered += (
            system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
        )
        for message in body["messages"]:
            ordered += [{"role": message["role"], **b} for b in blocks_of(message.get("content"))]
        automatic = body.get("cache_control") is not None
        for number, block in enumerate(ordered):
            seen.append(block)
            tokens += (
                count_tokens(block.get("text") or "")
                if block.get("type") == "text"
                else count_tokens(json.dumps(block))
            )
            if block.get("cache_control") or (automatic and number == len(ordered) - 1):
                prefixes.append((list(seen), tokens))
        total = sum(count_tokens(t) for t in texts)
        read = min(self.prompt_cache.hit(prefixes), total)
        written = self.prompt_cache.remember(prefixes)
        return read, max(0, min(written - read, total - read))

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
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]],
        stop_reason: str,
        stop_sequence: str | None,
        usage: dict[str, Any],
        directives: Directives,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode())

        async def send_error() -> None:
            kind, text = STREAM_ERRORS[directives.error or "overloaded"]
            await send("error", {"error": {"type": kind, "message": text}})

        with self.streaming():
            await send("message_start", {"message": message})
            sent = 0
            for index, (start, deltas) in enumerate(blocks):
                await send("content_block_start", {"index": index, "content_block": start})
                if index == 0:
                    await send("ping", {})
                for delta in deltas:
                    if await self.interrupted(request, response, directives, sent, send_error):
                        return response
                    sent += 1
                    await self.pace(directives)
                    await send("content_block_delta", {"index": index, "delta": delta})
                await send("content_block_stop", {"index": index})
            await send(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    # Cumulative, as the API sends it: the whole usage so far, not the output alone.
                    "usage": usage,
                },
            )
            await send("message_stop", {})
            await response.write_eof()
        return response


def thinking_billed(body: dict[str, Any], directives: Directives) -> int:
    """The tokens the emulator thinks for a request with thinking on: by effort or budget."""
    effort = (body.get("output_config") or {}).get("effort") or "medium"
    budget = (body.get("thinking") or {}).get("budget_tokens")
    return directives.reasoning_tokens or thinking_tokens(effort, budget)


def _stream_blocks(
    blocks: list[dict[str, Any]], tokens: list[str]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each content block as a stream sends it: its content_block_start and its deltas (text by token,
    thinking then its signature, tool input as JSON fragments)."""
    streamed: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for block in blocks:
        match block["type"]:
            case "text":
                deltas = [{"type": "text_delta", "text": token} for token in tokens]
                streamed.append(({"type": "text", "text": ""}, deltas))
            case "thinking":
                words = re.findall(r"\S+\s*", block["thinking"])
                deltas = [{"type": "thinking_delta", "thinking": w} for w in words]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
                streamed.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
            case "tool_use":
                text = json.dumps(block["input"])
                deltas = [
                    {"type": "input_json_delta", "partial_json": text[i : i + 8]}
                    for i in range(0, len(text), 8)
                ]
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                streamed.append((start, deltas))
    return streamed


def _scripted_text(body: dict[str, Any]) -> str | None:
    """The answer to tool results that end the conversation, JSON for an output format, else None."""
    last = body["messages"][-1]
    results = [b for b in blocks_of(last.get("content")) if b.get("type") == "tool_result"]
    if last["role"] == "user" and results:
        names = {
            b.get("id"): b.get("name")
            for m in body["messages"]
            for b in blocks_of(m.get("content"))
            if b.get("type") == "tool_use"
        }
        return result_reply(
            [(str(names.get(r["tool_use_id"])), text_of(r.get("content", ""))) for r in results]
        )
    output = (body.get("output_config") or {}).get("format")
    if output is not None:
        return json_reply(output["schema"])
    return None
