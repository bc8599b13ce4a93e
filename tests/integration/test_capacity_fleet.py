"""The proof of upstream capacity: three gateway replicas (processes of their own) on one real
redis-server, one model on two deployments (two emulator processes, one key each: two organisations)
whose providers allow a few requests a minute, and a burst of three times the combined limit.

Nothing here is timed: the emulators' own counters say how many requests reached each deployment, how
many a provider would have refused (429) and how much of the offered capacity went unused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.helpers import details_of, user
from tests.integration.test_limits import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.processes import start_emulators, start_gateway_process, stop

RPM = 30
"""Each deployment's provider limit: one request every two seconds once the first 30 are spent."""
COMBINED = 2 * RPM
MODEL = "gpt-5.4-mini"
KEYS = ("sk-fleet-org-a-0123456789abcdef", "sk-fleet-org-b-0123456789abcdef")
DEADLINE_S = 8.0
BASE_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith(("LLM_", "ALLOWED_"))
}


@pytest.fixture
def deployments() -> Iterator[list[str]]:
    """Two emulator processes enforcing RPM per key: the two deployments' OpenAI base URLs."""
    started = [start_emulators(key, "--rpm", str(RPM)) for key in KEYS]
    yield [urls["OPENAI_BASE_URL"] for _, urls in started]
    for process, _ in started:
        stop(process)


@pytest.fixture
def replicas(deployments: list[str], redis_server: RedisServer) -> Iterator[list[str]]:  # noqa: F811
    env = BASE_ENV | {
        "OPENAI_API_KEY": KEYS[0],
        "OPENAI_BASE_URL": deployments[0],
        "ORG_B_KEY": KEYS[1],
        "LLM_PROVIDERS": json.dumps(
            [{"name": "openai-b", "kind": "openai", "base_url": deployments[1], "api_key_env": "ORG_B_KEY"}]
        ),
        "LLM_DEPLOYMENTS": json.dumps(
            {
                MODEL: [
                    {"provider": "openai", "requests_per_minute": RPM},
                    {"provider": "openai-b", "requests_per_minute": RPM},
                ]
            }
        ),
        "LLM_REDIS_URL": redis_server.url,
        "ALLOWED_MODELS": MODEL,
        "LLM_DEFAULT_MODEL": MODEL,
        "LLM_ALLOW_PLAINTEXT": "true",
        "LLM_AUTH_DISABLED": "true",
        "LLM_CAPACITY_QUEUE_PER_CALLER": "200",
    }
    started: list[subprocess.Popen[str]] = []
    addresses = []
    try:
        for _ in range(3):
            process, _log, address = start_gateway_process(["--metrics-port", "-1"], env)
            started.append(process)
            addresses.append(address)
        yield addresses
    finally:
        for process in started:
            stop(process)


def _counts(base_url: str) -> dict[str, Any]:
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_emulator/ratelimits", timeout=10) as answer:
        counts: dict[str, Any] = json.loads(answer.read())
        return counts


async def _burst(addresses: list[str]) -> dict[str, list[Any]]:
    """Three times the combined limit from a heavy caller, then a light caller's few calls, spread over
    the replicas; every call with the same deadline. Results by caller."""
    channels = [grpc.aio.insecure_channel(address) for address in addresses]
    stubs = [llm_pb2_grpc.LLMServiceStub(channel) for channel in channels]

    async def call(index: int, agent: str) -> Any:
        request = llm_pb2.CompleteRequest(model=MODEL, messages=user(f"{agent} {index}"), max_tokens=20)
        try:
            return await stubs[index % 3].Complete(
                request, metadata=(("a2a-source-agent", agent),), timeout=DEADLINE_S
            )
        except grpc.aio.AioRpcError as error:
            return error

    try:
        heavy = [asyncio.create_task(call(i, "heavy")) for i in range(3 * COMBINED)]
        await asyncio.sleep(0)  # the heavy caller's calls go out first
        light = [asyncio.create_task(call(i, "light")) for i in range(6)]
        return {"heavy": await asyncio.gather(*heavy), "light": await asyncio.gather(*light)}
    finally:
        for channel in channels:
            await channel.close(None)


def test_a_burst_through_three_replicas_stays_within_the_providers_limits(
    replicas: list[str], deployments: list[str]
) -> None:
    results = asyncio.run(_burst(replicas))

    everything = results["heavy"] + results["light"]
    served = [r for r in everything if isinstance(r, llm_pb2.CompleteResponse)]
    refused = [details_of(r) for r in everything if isinstance(r, grpc.aio.AioRpcError)]
    counts = [_counts(url) for url in deployments]

    # No provider 429: the gateway sent nothing a provider would have refused.
    assert [c["refused"] for c in counts] == [0, 0]
    # What the callers were served is what reached the providers, on both deployments.
    assert len(served) == sum(c["served"] for c in counts)
    assert {r.provider for r in served} == {"openai", "openai-b"}
    # At least the combined limit, and each provider's bucket was (nearly) empty after the last request
    # it admitted: at least 90 % of what the providers offered in the burst was used.
    assert len(served) >= COMBINED
    assert sum(c["left_after_last"]["requests"] for c in counts) <= 0.1 * COMBINED
    # Every call was served within its deadline, or refused before sending with UPSTREAM_CAPACITY.
    assert {(r.code, r.reason) for r in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_CAPACITY")
    }
    assert all(r.retry_delay is not None and r.retry_delay > 0 for r in refused)
    # The light caller, arriving behind the heavy one's burst, is served first as capacity returns: each
    # replica's queue serves first the caller served least lately.
    light_served = [r for r in results["light"] if isinstance(r, llm_pb2.CompleteResponse)]
    assert len(light_served) >= 3
