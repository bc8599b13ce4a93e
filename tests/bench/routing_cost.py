"""`make bench-routing`: what routing by task complexity saves against sending everything to the premium
tier. Replays a labelled task mix through the real gateway (emulators behind it) twice — once with each
task's `complexity`, once with `tier: TIER_PREMIUM` — and sums the `cost_usd` of every response, which
the gateway computes from the provider's usage and the catalogue's prices."""

from __future__ import annotations

import asyncio

import grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import build_app
from server.emulators.anthropic import AnthropicEmulator
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator
from tests.conftest import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Emulators, make_settings

# (label, count, prompt words, reply words): a day of an agent platform, most of it simple work.
MIX = [
    ("classify a support ticket", llm_pb2.COMPLEXITY_SIMPLE, 60, 200, 5),
    ("extract fields from an email", llm_pb2.COMPLEXITY_SIMPLE, 30, 400, 60),
    ("summarise a document", llm_pb2.COMPLEXITY_MODERATE, 15, 1500, 250),
    ("draft a customer reply", llm_pb2.COMPLEXITY_MODERATE, 10, 600, 300),
    ("plan a multi-step refactor", llm_pb2.COMPLEXITY_COMPLEX, 5, 2500, 900),
]


async def replay(stub: llm_pb2_grpc.LLMServiceAsyncStub, premium: bool) -> dict[str, float]:
    costs: dict[str, float] = {}
    for label, complexity, count, prompt_words, reply_words in MIX:
        prompt = (
            " ".join(["word"] * prompt_words) + " [[emulate: reply=" + "_".join(["out"] * reply_words) + "]]"
        )
        request = llm_pb2.CompleteRequest(messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content=prompt)])
        if premium:
            request.tier = llm_pb2.TIER_PREMIUM
        else:
            request.complexity = complexity
        for _ in range(count):
            response = await stub.Complete(request, timeout=30)
            costs[label] = costs.get(label, 0.0) + response.cost_usd
            costs[f"served:{label}:{response.model}"] = 0.0  # which models served the task
    return costs


async def main() -> None:
    emulators = Emulators(
        OpenAIEmulator(OPENAI_KEY), AnthropicEmulator(ANTHROPIC_KEY), GeminiEmulator(GEMINI_KEY)
    )
    for emulator in (emulators.openai, emulators.anthropic, emulators.gemini):
        await emulator.start()
    app = build_app(make_settings(emulators), port=0)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = llm_pb2_grpc.LLMServiceStub(channel)
            routed = await replay(stub, premium=False)
            premium = await replay(stub, premium=True)
    finally:
        await app.stop(None)
        for emulator in (emulators.openai, emulators.anthropic, emulators.gemini):
            await emulator.stop()
    print("| task | calls | routed to | cost routed (USD) | cost all-premium (USD) |")
    print("|---|---|---|---|---|")
    for label, _, count, _, _ in MIX:
        served = ", ".join(k.rsplit(":", 1)[1] for k in routed if k.startswith(f"served:{label}:"))
        print(f"| {label} | {count} | {served} | {routed[label]:.4f} | {premium[label]:.4f} |")
    total_routed = sum(routed[label] for label, *_ in MIX)
    total_premium = sum(premium[label] for label, *_ in MIX)
    saving = 1 - total_routed / total_premium
    print(f"| **total** | {sum(c for _, _, c, _, _ in MIX)} | | {total_routed:.4f} | {total_premium:.4f} |")
    print(
        f"\nRouting by complexity costs {total_routed:.4f} USD against {total_premium:.4f} USD all-premium: "
        f"{saving:.0%} less."
    )


if __name__ == "__main__":
    asyncio.run(main())
