"""The Gemini emulator speaks the Gemini API's wire format and refuses what the real API refuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from server.emulators.gemini import GeminiEmulator

KEY = "AIzaTest0123456789abcdefghijklmn"
MODEL = "gemini-3.1-flash-lite"


@pytest.fixture
async def emulator() -> AsyncIterator[GeminiEmulator]:
    started = GeminiEmulator(api_key=KEY)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def generate_url(emulator: GeminiEmulator, method: str = "generateContent", model: str = MODEL) -> str:
    return f"{emulator.base_url}/v1beta/models/{model}:{method}"


def body(text: str = "hi", **config: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        request["generationConfig"] = config
    return request


async def post(
    http: aiohttp.ClientSession, url: str, payload: Any, key: str | None = KEY, **headers: str
) -> tuple[int, Mapping[str, str], Any]:
    if key is not None:
        headers["x-goog-api-key"] = key
    async with http.post(url, json=payload, headers=headers) as response:
        return response.status, response.headers.copy(), await response.json()  # case-insensitive


async def sse_events(http: aiohttp.ClientSession, url: str, payload: Any) -> tuple[bytes, list[Any]]:
    async with http.post(f"{url}?alt=sse", json=payload, headers={"x-goog-api-key": KEY}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = [json.loads(block.removeprefix(b"data: ")) for block in raw.split(b"\r\n\r\n") if block]
    return raw, events


# --- replies --------------------------------------------------------------------------------------


async def test_generate_content_answers_in_camel_case(emulator: GeminiEmulator, http: Any) -> None:
    status, _, reply = await post(http, generate_url(emulator), body("hello there"))

    assert status == 200
    [candidate] = reply["candidates"]
    assert candidate["content"] == {"parts": [{"text": "emulator reply: hello there"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    assert reply["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 4, "totalTokenCount": 6}
    assert reply["modelVersion"] == MODEL


async def test_stream_sends_one_token_per_sse_event_with_finish_and_usage_last(
    emulator: GeminiEmulator, http: Any
) -> None:
    raw, events = await sse_events(http, generate_url(emulator, "streamGenerateContent"), body("a b"))

    assert raw.startswith(b"data: {")
    assert raw.endswith(b"}\r\n\r\n")
    texts = [e["candidates"][0]["content"]["parts"][0]["text"] for e in events]
    assert texts == ["emulator ", "reply: ", "a ", "b"]
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"] == {
        "promptTokenCount": 2,
        "candidatesTokenCount": 4,
        "totalTokenCount": 6,
    }


async def test_stream_needs_alt_sse(emulator: GeminiEmulator, http: Any) -> None:
    status, _, _ = await post(http, generate_url(emulator, "streamGenerateContent"), body())

    assert status == 400


@pytest.mark.parametrize(
    ("directive", "config", "finish"),
    [
        ("finish=length", {}, "MAX_TOKENS"),
        ("finish=content_filter", {}, "SAFETY"),
        ("", {"maxOutputTokens": 1}, "MAX_TOKENS"),
    ],
)
async def test_finish_reasons_in_the_apis_own_words(
    emulator: GeminiEmulator, http: Any, directive: str, config: dict[str, Any], finish: str
) -> None:
    _, _, reply = await post(http, generate_url(emulator), body(f"hi [[emulate: {directive}]]", **config))

    assert reply["candidates"][0]["finishReason"] == finish


async def test_blocked_prompt_has_prompt_feedback_and_no_candidates(
    emulator: GeminiEmulator, http: Any
) -> None:
    _, _, reply = await post(http, generate_url(emulator), body("hi [[emulate: finish=prompt_blocked]]"))

    assert reply["promptFeedback"] == {"blockReason": "SAFETY"}
    assert "candidates" not in reply


async def test_requests_are_recorded_with_their_headers(emulator: GeminiEmulator, http: Any) -> None:
    await post(http, generate_url(emulator), body(), **{"X-Trace-ID": "trace-9"})

    [recorded] = emulator.requests
    assert recorded.headers["x-trace-id"] == "trace-9"
    assert recorded.body == body()


async def test_models_lists_real_shaped_models_a_page_at_a_time(emulator: GeminiEmulator, http: Any) -> None:
    url = f"{emulator.base_url}/v1beta/models"
    async with http.get(url, params={"pageSize": "1"}, headers={"x-goog-api-key": KEY}) as response:
        page = await response.json()

    [model] = page["models"]
    assert model["name"] == f"models/{MODEL}"
    assert "generateContent" in model["supportedGenerationMethods"]
    assert {"inputTokenLimit", "outputTokenLimit", "displayName", "version"} <= model.keys()
    assert page["nextPageToken"]


# --- authentication -------------------------------------------------------------------------------


async def test_wrong_key_is_400_api_key_invalid(emulator: GeminiEmulator, http: Any) -> None:
    status, _, reply = await post(http, generate_url(emulator), body(), key="AIzaWrong")

    assert status == 400
    assert reply["error"]["status"] == "INVALID_ARGUMENT"
    assert reply["error"]["message"] == "API key not valid. Please pass a valid API key."
    [info] = reply["error"]["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "API_KEY_INVALID"


async def test_missing_key_is_403(emulator: GeminiEmulator, http: Any) -> None:
    status, _, reply = await post(http, generate_url(emulator), body(), key=None)

    assert (status, reply["error"]["status"]) == (403, "PERMISSION_DENIED")


async def test_key_may_come_as_a_query_parameter(emulator: GeminiEmulator, http: Any) -> None:
    status, _, _ = await post(http, f"{generate_url(emulator)}?key={KEY}", body(), key=None)

    assert status == 200


# --- refusals -------------------------------------------------------------------------------------


def _contents(*contents: Any) -> dict[str, Any]:
    return {"contents": list(contents)}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"contents": []}, "contents"),
        ({}, "contents"),
        (_contents({"role": "system", "parts": [{"text": "x"}]}), "contents[0].role"),
        (_contents({"role": "assistant", "parts": [{"text": "x"}]}), "contents[0].role"),
        (_contents({"role": "user", "parts": []}), "contents[0].parts"),
        (_contents({"role": "user"}), "contents[0].parts"),
        (_contents({"role": "user", "parts": [{"text": ""}]}), "contents[0].parts[0].text"),
        (_contents({"role": "user", "parts": [{}]}), "contents[0].parts[0].data"),
        (body(temperature=2.5), "generation_config.temperature"),
        (body(temperature=-0.1), "generation_config.temperature"),
        (body(topP=1.5), "generation_config.topP"),
        (body(maxOutputTokens=0), "generation_config.maxOutputTokens"),
        (body(candidateCount=9), "generation_config.candidateCount"),
        (body(stopSequences=["a", "b", "c", "d", "e", "f"]), "generation_config.stop_sequences"),
        (body(frequency=1), "generation_config"),
        ({**body(), "systemInstruction": {"parts": []}}, "system_instruction.parts"),
        ({**body(), "system": "be brief"}, "system"),
    ],
)
async def test_refuses_what_the_real_api_refuses(
    emulator: GeminiEmulator, http: Any, payload: dict[str, Any], field: str
) -> None:
    status, _, reply = await post(http, generate_url(emulator), payload)

    assert status == 400
    assert reply["error"]["code"] == 400
    assert reply["error"]["status"] == "INVALID_ARGUMENT"
    [bad_request] = reply["error"]["details"]
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert bad_request["fieldViolations"][0]["field"] == field


async def test_accepts_the_edges_of_each_range(emulator: GeminiEmulator, http: Any) -> None:
    payload = body(temperature=2, topP=0, maxOutputTokens=1, stopSequences=["a", "b", "c", "d", "e"])

    status, _, _ = await post(http, generate_url(emulator), payload)

    assert status == 200


async def test_unknown_model_is_404_not_found(emulator: GeminiEmulator, http: Any) -> None:
    status, _, reply = await post(http, generate_url(emulator, model="gpt-4o"), body())

    assert (status, reply["error"]["status"]) == (404, "NOT_FOUND")
    assert "models/gpt-4o is not found" in reply["error"]["message"]


# --- fault injection ------------------------------------------------------------------------------


async def test_429_carries_retry_info_and_retry_after(emulator: GeminiEmulator, http: Any) -> None:
    status, headers, reply = await post(
        http, generate_url(emulator), body("hi [[emulate: status=429 retry_after=2]]")
    )

    assert (status, reply["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert reply["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
    ]
    assert headers["retry-after"] == "2"


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
async def test_server_errors_in_googles_shape(
    emulator: GeminiEmulator, http: Any, status: int, name: str
) -> None:
    code, _, reply = await post(http, generate_url(emulator), body(f"hi [[emulate: status={status}]]"))

    assert code == status
    assert reply["error"]["code"] == status
    assert reply["error"]["status"] == name
    assert reply["error"]["message"]


async def test_times_fails_only_the_first_requests_of_a_trace(emulator: GeminiEmulator, http: Any) -> None:
    payload = body("hi [[emulate: status=503 times=1]]")

    first, _, _ = await post(http, generate_url(emulator), payload, **{"X-Trace-ID": "t-1"})
    second, _, _ = await post(http, generate_url(emulator), payload, **{"X-Trace-ID": "t-1"})

    assert (first, second) == (503, 200)


async def test_error_after_sends_an_error_event_inside_the_stream(
    emulator: GeminiEmulator, http: Any
) -> None:
    url = generate_url(emulator, "streamGenerateContent")

    _, events = await sse_events(http, url, body("a b c [[emulate: error_after=1]]"))

    assert "candidates" in events[0]
    assert events[-1] == {
        "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
    }
