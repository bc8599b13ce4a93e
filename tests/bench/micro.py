"""`python -m tests.bench.micro`: micro-benchmarks of the call path's pieces, two forms side by side in
one process, alternating, so that a loaded machine slows both alike (docs/benchmarks.md, "What was cut").

- `metadata`: a unary grpc.aio call whose handler sends the trace id in its own initial-metadata batch
  (`await context.send_initial_metadata`) against one that sets it in the trailing metadata
  (`context.set_trailing_metadata`, sent with the response and the status in grpc's one final batch).
  Client and server share the process: the CPU per call of the whole round trip is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvloop

from llm_grpc.v1 import llm_pb2

TRACE = (("a2a-trace-id", "0123456789abcdef0123456789abcdef"),)
RESPONSE = llm_pb2.CompleteResponse(
    content="emulator reply: w0 w1 w2", provider="openai", trace_id=TRACE[0][1]
)


async def _initial(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> llm_pb2.CompleteResponse:
    await context.send_initial_metadata(TRACE)
    return RESPONSE


async def _trailing(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> llm_pb2.CompleteResponse:
    context.set_trailing_metadata(TRACE)
    return RESPONSE


async def _metadata(rounds: int, calls: int, concurrency: int) -> dict[str, list[float]]:
    server = grpc.aio.server()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            handler, response_serializer=llm_pb2.CompleteResponse.SerializeToString
        )
        for name, handler in (("initial", _initial), ("trailing", _trailing))
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Micro", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cpu: dict[str, list[float]] = {name: [] for name in handlers}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        callables = {
            name: channel.unary_unary(
                f"/bench.Micro/{name}",
                request_serializer=bytes,
                response_deserializer=llm_pb2.CompleteResponse.FromString,
            )
            for name in handlers
        }
        for call in callables.values():  # warm-up
            await _drive(functools.partial(call, b""), 200, concurrency)
        for index in range(rounds):
            for name in sorted(callables, reverse=index % 2 == 1):
                call = callables[name]
                started = time.process_time()
                await _drive(functools.partial(call, b""), calls, concurrency)
                cpu[name].append((time.process_time() - started) / calls)
    await server.stop(None)
    return cpu


async def _drive(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> None:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _show(cpu: dict[str, list[float]], old: str, new: str) -> None:
    for name, values in cpu.items():
        print(
            f"{name:10} CPU per call: median {statistics.median(values) * 1e6:7.1f} µs "
            f"(rounds {', '.join(f'{v * 1e6:.0f}' for v in values)})"
        )
    ratios = sorted(n / o for n, o in zip(cpu[new], cpu[old], strict=True))
    print(
        f"{new} / {old}: median {statistics.median(ratios):.3f} "
        f"(per round {ratios[0]:.3f} .. {ratios[-1]:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("which", choices=("metadata",))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        cpu = runner.run(_metadata(args.rounds, args.calls, args.concurrency))
    _show(cpu, "initial", "trailing")


if __name__ == "__main__":
    main()
