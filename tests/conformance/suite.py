"""`make conformance`: each agent feature through a real gateway (in-process, not demo mode) against every
provider whose key is in the environment, on its cheapest model with small `max_tokens`, for well under a
cent per provider; prints a table. Without any key it says so and exits 0. Not part of `make test` (its
files are not `test_*.py`); tests/integration/test_conformance.py runs it against the emulators (their
keys and base URLs in the same variables) to prove the suite itself works.

Run it when a model is added or changed in the catalogue, and when an SDK (openai, anthropic,
google-genai) is upgraded: the emulators are written from public sources, this is the real thing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import jsonschema

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import build_app
from server.config import Settings

PROVIDERS = {
    # provider: (the environment variables of its key, the cheapest current model)
    "openai": (("OPENAI_API_KEY",), "gpt-5.4-nano"),
    "anthropic": (("ANTHROPIC_API_KEY",), "claude-haiku-4-5"),
    "gemini": (("GOOGLE_API_KEY", "GEMINI_API_KEY"), "gemini-3.1-flash-lite"),
}
BASE_URLS = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL", "gemini": "GEMINI_BASE_URL"}
MAX_TOKENS = 200
"""Enough for a tool call, a short JSON object or a word; the reasoning check gives thinking room."""
REASONING_MAX_TOKENS = 1536
"""Above Claude's smallest thinking budget (1024), which a low effort becomes on budget-only models."""
TIMEOUT = 60.0
WEATHER = llm_pb2.Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
TIME = llm_pb2.Tool(
    name="get_time",
    description="The current local time in a city.",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PNG = base64.b64decode(  # a 1x1 red PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
PDF = (  # a one-page PDF whose text is "Hello"
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]/Contents 4 0 R"
    b"/Resources<</Font<</F1 5 0 R>>>>>>endobj\n"
    b"4 0 obj<</Length 41>>stream\nBT /F1 24 Tf 20 40 Td (Hello) Tj ET\nendstream endobj\n"
    b"5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
LONG = " ".join(f"Rule {i}: answer briefly." for i in range(800))
"""About 4,800 tokens: over every provider's smallest cacheable prompt (Claude Haiku 4.5: 4,096)."""
PARALLEL_HINT = " [[emulate: tool_calls=2]]"
"""Read by the project's emulators only (a real model reads a harmless bracket)."""


class Failed(Exception):
    """A feature did not behave as the contract says."""


class Warned(Exception):
    """Not a contract failure, but worth a look (e.g. a provider's best-effort cache missed)."""

    def __init__(self, detail: str, cost: float) -> None:
        super().__init__(detail)
        self.detail, self.cost = detail, cost


@dataclass
class Outcome:
    status: str  # ok | FAIL | warn
    detail: str = ""
    cost: float = 0.0


def user(text: str, *parts: llm_pb2.ContentPart) -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text, parts=list(parts))


class Checks:
    """Each agent feature on one model; a check returns its cost (USD) or raises Failed."""

    def __init__(self, stub: llm_pb2_grpc.LLMServiceAsyncStub, model: str) -> None:
        self.stub, self.model = stub, model

    async def complete(self, messages: list[llm_pb2.Message], **fields: Any) -> llm_pb2.CompleteResponse:
        fields.setdefault("max_tokens", MAX_TOKENS)
        request = llm_pb2.CompleteRequest(model=self.model, messages=messages, **fields)
        response: llm_pb2.CompleteResponse = await self.stub.Complete(request, timeout=TIMEOUT)
        return response

    async def stream(self, messages: list[llm_pb2.Message], **fields: Any) -> tuple[str, llm_pb2.StreamDone]:
        fields.setdefault("max_tokens", MAX_TOKENS)
        request = llm_pb2.StreamRequest(model=self.model, messages=messages, **fields)
        events = [e async for e in self.stub.Stream(request, timeout=TIMEOUT)]
        text = "".join(e.delta for e in events if e.WhichOneof("event") == "delta")
        if not events or events[-1].WhichOneof("event") != "done":
            raise Failed("the stream ended without its done event")
        return text, events[-1].done

    async def _round_trip(self, streamed: bool, **fields: Any) -> float:
        cost, _ = await self._tool_turn(streamed, **fields)
        return cost

    async def _tool_turn(self, streamed: bool, **fields: Any) -> tuple[float, bool]:
        """(cost, whether reasoning state came back to carry) of a tool call and its answer."""
        question = [user("What is the weather in Paris? Use the tool.")]
        call = self.stream if streamed else self._complete_text
        _, first = await call(question, tools=[WEATHER], **fields)
        if not first.tool_calls:
            raise Failed(f"no tool call (finish {llm_pb2.FinishReason.Name(first.finish_reason)})")
        answer = [
            llm_pb2.Message(
                role=llm_pb2.ROLE_ASSISTANT, tool_calls=first.tool_calls, reasoning=first.reasoning
            ),
            *(
                llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=c.id, content="sunny, 21 C")
                for c in first.tool_calls
            ),
        ]
        text, second = await call([*question, *answer], tools=[WEATHER], **fields)
        if not text.strip() or second.finish_reason != llm_pb2.FINISH_REASON_STOP:
            raise Failed("no answer after the tool result")
        carried = bool(first.reasoning) or any(c.signature for c in first.tool_calls)
        return first.cost_usd + second.cost_usd, carried

    async def _complete_text(self, messages: list[llm_pb2.Message], **fields: Any) -> tuple[str, Any]:
        response = await self.complete(messages, **fields)
        return response.content, response

    async def tool_round_trip_unary(self) -> float:
        return await self._round_trip(streamed=False)

    async def tool_round_trip_stream(self) -> float:
        return await self._round_trip(streamed=True)

    async def parallel_tools(self) -> float:
        response = await self.complete(
            [user("Call get_weather and get_time for Paris, both at once." + PARALLEL_HINT)],
            tools=[WEATHER, TIME],
            parallel_tool_calls=True,
        )
        ids = [c.id for c in response.tool_calls]
        if len(ids) < 2 or len(set(ids)) != len(ids):
            raise Failed(f"{len(ids)} tool call(s) with ids {ids}; expected two, each its own id")
        return response.cost_usd

    async def structured_output(self) -> float:
        fmt = llm_pb2.ResponseFormat(
            type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            name="person",
            schema_json=json.dumps(PERSON),
            strict=True,
        )
        response = await self.complete([user("Invent a person: a name and an age.")], response_format=fmt)
        try:
            jsonschema.validate(json.loads(response.content), PERSON)
        except (ValueError, jsonschema.ValidationError) as error:
            raise Failed(f"the answer does not match the schema: {error}") from None
        return response.cost_usd

    async def image(self) -> float:
        part = llm_pb2.ContentPart(image=llm_pb2.Image(data=PNG, mime_type="image/png"))
        response = await self.complete([user("What colour is this image? One word.", part)])
        if not response.content.strip():
            raise Failed("an empty answer")
        return response.cost_usd

    async def pdf(self) -> float:
        part = llm_pb2.ContentPart(document=llm_pb2.Document(data=PDF, mime_type="application/pdf"))
        response = await self.complete([user("Which word does this document say? One word.", part)])
        if not response.content.strip():
            raise Failed("an empty answer")
        return response.cost_usd

    async def reasoning_across_a_tool_turn(self) -> float:
        cost, carried = await self._tool_turn(
            streamed=False,
            reasoning=llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW),
            max_tokens=REASONING_MAX_TOKENS,
        )
        if not carried:  # the turn worked, but there was no reasoning state to send back
            raise Warned("no reasoning state (reasoning parts or call signatures) came back to carry", cost)
        return cost

    async def cached_tokens(self) -> float:
        system = llm_pb2.Message(role=llm_pb2.ROLE_SYSTEM, content=LONG, cache_breakpoint=True)
        first = await self.complete([system, user("Say hi.")], max_tokens=20)
        second = await self.complete([system, user("Say bye.")], max_tokens=20)
        if second.usage.cached_input_tokens == 0:
            raise Warned(
                "no cached tokens reported on the repeat (caching is best effort)",
                first.cost_usd + second.cost_usd,
            )
        return first.cost_usd + second.cost_usd


FEATURES: dict[str, Callable[[Checks], Awaitable[float]]] = {
    "tool round trip (unary)": Checks.tool_round_trip_unary,
    "tool round trip (stream)": Checks.tool_round_trip_stream,
    "parallel tools": Checks.parallel_tools,
    "structured output": Checks.structured_output,
    "image": Checks.image,
    "PDF": Checks.pdf,
    "reasoning across a tool turn": Checks.reasoning_across_a_tool_turn,
    "cached tokens (repeated long prompt)": Checks.cached_tokens,
}


def keyed(env: Mapping[str, str]) -> dict[str, str]:
    """provider → its key, for the providers whose key is set."""
    found: dict[str, str] = {}
    for provider, (names, _model) in PROVIDERS.items():
        key = next((env[n] for n in names if env.get(n, "").strip()), None)
        if key is not None:
            found[provider] = key
    return found


def settings_for(env: Mapping[str, str], keys: Mapping[str, str]) -> Settings:
    models = [PROVIDERS[p][1] for p in keys]
    values: dict[str, Any] = {
        "allowed_models": ",".join(models),
        "llm_default_model": models[0],
        "llm_auth_disabled": True,  # loopback only, this process's own calls
        "llm_allow_plaintext": True,
        "openai_api_key": keys.get("openai"),
        "anthropic_api_key": keys.get("anthropic"),
        "google_api_key": keys.get("gemini"),
    }
    for provider, name in BASE_URLS.items():
        if env.get(name):
            values[f"{provider}_base_url"] = env[name]
    return Settings(**values)


async def run(env: Mapping[str, str], out: Callable[[str], None] = print) -> int:
    """Run every feature against every keyed provider; print the table; 1 if any feature failed."""
    keys = keyed(env)
    if not keys:
        names = ", ".join(n for names, _ in PROVIDERS.values() for n in names)
        out(f"conformance: no provider key in the environment ({names}): nothing to check.")
        return 0
    app = build_app(settings_for(env, keys), host="127.0.0.1", port=0)
    await app.start()
    results: dict[str, dict[str, Outcome]] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = llm_pb2_grpc.LLMServiceStub(channel)
            for provider in keys:
                checks = Checks(stub, PROVIDERS[provider][1])
                results[provider] = {
                    name: await _outcome(feature, checks) for name, feature in FEATURES.items()
                }
    finally:
        await app.stop(grace=None)
    out(_table(results))
    return 1 if any(o.status == "FAIL" for r in results.values() for o in r.values()) else 0


async def _outcome(feature: Callable[[Checks], Awaitable[float]], checks: Checks) -> Outcome:
    try:
        return Outcome("ok", cost=await feature(checks))
    except Warned as warned:
        return Outcome("warn", warned.detail, warned.cost)
    except Failed as failed:
        return Outcome("FAIL", str(failed))
    except grpc.aio.AioRpcError as error:
        return Outcome("FAIL", f"{error.code().name}: {error.details()}")


def _table(results: Mapping[str, Mapping[str, Outcome]]) -> str:
    providers = list(results)
    heads = [f"{p} ({PROVIDERS[p][1]})" for p in providers]
    width = max(len(f) for f in FEATURES) + 2
    column = max(24, *(len(h) + 2 for h in heads))
    lines = ["feature".ljust(width) + "".join(h.ljust(column) for h in heads)]
    notes: list[str] = []
    for feature in FEATURES:
        row = feature.ljust(width)
        for provider in providers:
            outcome = results[provider][feature]
            row += outcome.status.ljust(column)
            if outcome.detail:
                notes.append(f"  {provider} / {feature}: {outcome.status}: {outcome.detail}")
        lines.append(row)
    costs = "".join(f"{sum(o.cost for o in results[p].values()):.5f}".ljust(column) for p in providers)
    lines.append("cost (USD)".ljust(width) + costs)
    return "\n".join(lines + (["", *notes] if notes else []))


def main() -> int:
    import os  # the entry point reads the environment once and passes it down

    return asyncio.run(run(dict(os.environ)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
