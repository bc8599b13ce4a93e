"""One load generator run, in its own process: N calls at a given concurrency, either straight to the
emulator with the official SDK (`--side sdk`) or through the gateway over gRPC (`--side gateway`).
Prints one JSON object: latencies, times to first token, inter-token gaps, throughput, client CPU."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable

import grpc
import httpx2
from openai import AsyncOpenAI, DefaultAioHttpClient

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc

MODEL = "gpt-5.4-mini"
# 18 words, so the emulator's reply ("emulator reply: " + these) is 20 tokens.
PROMPT = " ".join(f"w{i}" for i in range(18))


class Sample:
    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.gaps: list[float] = []
        self.errors = 0


async def _sdk_call(client: AsyncOpenAI, stream: bool, sample: Sample) -> None:
    started = time.perf_counter()
    if not stream:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
        sample.latency.append(time.perf_counter() - started)
        return
    last: float | None = None
    chunks = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            if last is None:
                sample.ttft.append(now - started)
            else:
                sample.gaps.append(now - last)
            last = now
    sample.latency.append(time.perf_counter() - started)


async def _gateway_call(stub: llm_pb2_grpc.LLMServiceAsyncStub, stream: bool, sample: Sample) -> None:
    messages = [llm_pb2.Message(role=llm_pb2.ROLE_USER, content=PROMPT)]
    started = time.perf_counter()
    if not stream:
        await stub.Complete(llm_pb2.CompleteRequest(model=MODEL, messages=messages), timeout=120)
        sample.latency.append(time.perf_counter() - started)
        return
    last: float | None = None
    async for event in stub.Stream(llm_pb2.StreamRequest(model=MODEL, messages=messages), timeout=120):
        if event.WhichOneof("event") == "delta":
            now = time.perf_counter()
            if last is None:
                sample.ttft.append(now - started)
            else:
                sample.gaps.append(now - last)
            last = now
    sample.latency.append(time.perf_counter() - started)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    sample = Sample()
    call: Callable[[], Awaitable[None]]
    if args.side == "sdk":
        http = DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=2000, max_keepalive_connections=2000)
        )
        client = AsyncOpenAI(api_key=args.key, base_url=args.target, max_retries=0, http_client=http)

        def call() -> Awaitable[None]:
            return _sdk_call(client, args.stream, sample)
    else:
        channel = grpc.aio.insecure_channel(args.target)
        stub = llm_pb2_grpc.LLMServiceStub(channel)

        def call() -> Awaitable[None]:
            return _gateway_call(stub, args.stream, sample)

    for _ in range(min(args.concurrency, 32)):  # warm connections and caches
        await call()
    sample.__init__()  # type: ignore[misc]
    remaining = args.requests
    cpu_before = os.times()
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception:
                sample.errors += 1

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after = os.times()
    return {
        "latency": sample.latency,
        "ttft": sample.ttft,
        "gaps": sample.gaps,
        "errors": sample.errors,
        "elapsed": elapsed,
        "throughput": len(sample.latency) / elapsed,
        "client_cpu": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
        "calls": len(sample.latency),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=("sdk", "gateway"), required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", default="bench-key")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=640)
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        print(json.dumps(runner.run(_run(args))))


if __name__ == "__main__":
    main()
