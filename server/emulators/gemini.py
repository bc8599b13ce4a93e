"""An emulator of the Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
`GET models`), camelCase JSON as the real API speaks it, refusing what the real API refuses."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from server.emulators.base import Directives, Emulator, parse_directives, plan_reply

# Current SDKs call /v1, older ones /v1beta; the emulator serves both.
API_VERSIONS = ("/v1", "/v1beta")
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
CONFIG_KEYS = {
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
}
BODY_KEYS = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
    "labels",
}


def _error(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}
    if details:
        body["error"]["details"] = details
    return web.json_response(body, status=status, headers=headers)


def _parts_text(content: Any) -> str:
    parts = content.get("parts", []) if isinstance(content, dict) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    for key in body:
        if key not in BODY_KEYS:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for index, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{index}])"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty."
        if any(isinstance(p, dict) and "text" in p and not p["text"] for p in parts):
            return f"* GenerateContentRequest.contents[{index}].parts: text part must not be empty."
    system = body.get("systemInstruction")
    if system is not None and (not isinstance(system, dict) or not system.get("parts")):
        return "* GenerateContentRequest.system_instruction.parts: must not be empty."
    config = body.get("generationConfig", {})
    for key in config:
        if key not in CONFIG_KEYS:
            return f"Invalid JSON payload received. Unknown name \"{key}\" at 'generation_config'."
    temperature, top_p = config.get("temperature"), config.get("topP")
    if temperature is not None and not 0 <= temperature <= 2:
        return "* GenerateContentRequest.generation_config.temperature: must be in the range [0.0, 2.0]."
    if top_p is not None and not 0 <= top_p <= 1:
        return "* GenerateContentRequest.generation_config.top_p: must be in the range [0.0, 1.0]."
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and max_tokens < 1:
        return "* GenerateContentRequest.generation_config.max_output_tokens: must be positive."
    if len(config.get("stopSequences", [])) > 5:
        return (
            "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed."
        )
    return None


class GeminiEmulator(Emulator):
    name = "gemini"

    def routes(self) -> list[web.RouteDef]:
        routes = [web.post(f"{version}/models/{{call}}", self._generate) for version in API_VERSIONS]
        return routes + [web.get(f"{version}/models", self._models) for version in API_VERSIONS]

    def _refusal(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key == self.api_key:
            return None
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        return _error(400, "API key not valid. Please pass a valid API key.", [info])

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        ids = ["gemini-2.0-flash-exp", "gemini-1.5-pro", "gemini-2.5-flash", "gemini-2.5-pro"]
        models = [
            {
                "name": f"models/{m}",
                "displayName": m,
                "version": "001",
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }
            for m in ids
        ]
        return web.json_response({"models": models})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        model, _, method = request.match_info["call"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"Method not found: {method}")
        if (problem := _problem(body)) is not None:
            return _error(400, problem)
        contents = body["contents"]
        last_user = next((_parts_text(c) for c in reversed(contents) if c.get("role", "user") == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            assert directives.status is not None
            details = []
            if directives.status == 429 and directives.retry_after is not None:
                details.append(
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{directives.retry_after}s",
                    }
                )
            return _error(
                directives.status,
                f"emulated failure {directives.status}",
                details,
                self.retry_headers(directives),
            )
        config = body.get("generationConfig", {})
        texts = [parse_directives(_parts_text(c))[0] for c in contents]
        texts += [_parts_text(body["systemInstruction"])] if "systemInstruction" in body else []
        reply = plan_reply(
            texts,
            last_user,
            directives,
            max_tokens=config.get("maxOutputTokens"),
            stop=config.get("stopSequences", []),
        )
        finish = FINISH.get(reply.finish, reply.finish)
        usage = {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": reply.completion_tokens,
            "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
        }
        identity = {"modelVersion": model, "responseId": uuid.uuid4().hex[:20]}
        if method == "generateContent":
            for _ in reply.tokens:
                await self.pace(directives)
            candidate = {
                "content": {"parts": [{"text": reply.text}], "role": "model"},
                "finishReason": finish,
                "index": 0,
            }
            return web.json_response({"candidates": [candidate], "usageMetadata": usage, **identity})
        if request.query.get("alt") != "sse":
            return _error(400, "this emulator streams only with alt=sse")
        return await self._stream(request, reply.tokens, finish, usage, identity, directives)

    async def _stream(
        self,
        request: web.Request,
        tokens: list[str],
        finish: str,
        usage: dict[str, int],
        identity: dict[str, str],
        directives: Directives,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())

        with self.streaming():
            for index, token in enumerate(tokens):
                if directives.drop_after is not None and index >= directives.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if directives.malformed_after is not None and index >= directives.malformed_after:
                    await self.send_malformed(response)
                    return response
                if directives.error_after is not None and index >= directives.error_after:
                    await send(
                        {
                            "error": {
                                "code": 503,
                                "message": "The model is overloaded.",
                                "status": "UNAVAILABLE",
                            }
                        }
                    )
                    await response.write_eof()
                    return response
                await self.pace(directives)
                candidate: dict[str, Any] = {
                    "content": {"parts": [{"text": token}], "role": "model"},
                    "index": 0,
                }
                last = index == len(tokens) - 1
                if last:
                    candidate["finishReason"] = finish
                chunk: dict[str, Any] = {"candidates": [candidate], **identity}
                chunk["usageMetadata"] = usage if last else {"promptTokenCount": usage["promptTokenCount"]}
                await send(chunk)
            if not tokens:
                await send(
                    {
                        "candidates": [
                            {
                                "content": {"parts": [{"text": ""}], "role": "model"},
                                "finishReason": finish,
                                "index": 0,
                            }
                        ],
                        "usageMetadata": usage,
                        **identity,
                    }
                )
            await response.write_eof()
        return response
