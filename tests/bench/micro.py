"""`python -m tests.bench.micro`: micro-benchmarks of the call path's pieces, two forms side by side in
one process, alternating, so that a loaded machine slows both alike (docs/benchmarks.md, "What was cut").

- `metadata`: a unary grpc.aio call whose handler sends the trace id in its own initial-metadata batch
  (`await context.send_initial_metadata`) against one that sets it in the trailing metadata
  (`context.set_trailing_metadata`, sent with the response and the status in grpc's one final batch).
  Client and server share the process: the CPU per call of the whole round trip is compared.
- `own`: the gateway's own work per call, without the SDK or any network to a provider. The real
  gateway (build_app: pipeline, servicer, facade, accounting, the `llm.call` line at info, written to
  /dev/null) with a provider that answers at once (`Instant`, the core's Provider port), against the
  floor's servicer (tests/bench/floor.py) in the same process; same client, same messages, alternating
  rounds. The difference is the gateway's own CPU per call: the figure issue #25 bounds at 0.25 ms,
  here without the noise of other processes' sockets. `--limits`/`--tracing` turn those features on
  (FEATURES of tests/bench/run.py); `--stream` measures 20-token streams.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc
import uvloop

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.core.types import Completion, FinishReason, StreamEnd, StreamEvent, TextDelta, Usage
from server.observability.redact import Redactor
from tests.bench.run import SHORT

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


class Instant:
    """A provider (the core's Provider port) that answers at once: the emulator's reply to the prompt,
    split into its tokens, with usage. Stands for the SDK so that only the gateway's own work is left."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _tokens(self, request: Any) -> list[str]:
        return [f"{word} " for word in f"emulator reply: {request.messages[-1].content}".split()]

    async def complete(self, request: Any, options: Any) -> Any:
        tokens = self._tokens(request)
        return Completion(
            content="".join(tokens),
            usage=Usage(len(request.messages[-1].content.split()), len(tokens)),
            finish_reason=FinishReason.STOP,
            served_model=request.model,
            request_id="req_instant",
            response_id="chatcmpl-instant",
        )

    async def stream(self, request: Any, options: Any) -> AsyncGenerator[StreamEvent, None]:
        tokens = self._tokens(request)
        for token in tokens:
            yield TextDelta(token)
        usage = Usage(len(request.messages[-1].content.split()), len(tokens))
        yield StreamEnd(usage, FinishReason.STOP, request.model, "req_instant", response_id="chatcmpl-1")

    async def probe(self, timeout: float) -> None:
        return None

    async def list_models(self, timeout: float) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


async def _own(args: argparse.Namespace, devnull: Any) -> dict[str, list[float]]:
    import sys
    import tempfile
    from pathlib import Path

    from server.app import build_app
    from server.config import Settings
    from server.observability.logging import configure_logging
    from server.providers.registry import SPECS
    from tests.bench import load
    from tests.bench.floor import Floor
    from tests.bench.run import FEATURES, feature_env

    features = tuple(f for f in FEATURES if getattr(args, f))
    workdir = Path(tempfile.mkdtemp())
    environment = feature_env(features, workdir, 9) if features else {}
    os.environ.update(environment)  # the OTEL_* sampler variables are read by OpenTelemetry's SDK
    keys = {f"{spec.key_settings[0]}": f"sk-instant-not-a-key-{name}" for name, spec in SPECS.items()}
    os.environ.update(keys | environment | {"LLM_ALLOW_PLAINTEXT": "true", "LLM_AUTH_DISABLED": "true"})
    settings = Settings()
    sys.stderr = devnull  # the log lines are written, to nowhere
    configure_logging("info", "json", Redactor())
    app = build_app(settings, port=0, providers={name: Instant(name) for name in SPECS})
    await app.start()
    floor = grpc.aio.server()
    llm_pb2_grpc.add_LLMServiceServicer_to_server(Floor(writer=True), floor)  # type: ignore[abstract]
    floor_port = floor.add_insecure_port("127.0.0.1:0")
    await floor.start()
    targets = {
        "floor": load.GrpcTarget(f"127.0.0.1:{floor_port}"),
        "gateway": load.GrpcTarget(f"127.0.0.1:{app.port}", tools=args.tools),
    }
    text = load.prompt(SHORT)
    calls = {name: (t.stream(text) if args.stream else t.unary(text)) for name, t in targets.items()}
    for call in calls.values():
        await load.run(call, concurrency=args.concurrency, calls=200)
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(args.rounds):
        for name in sorted(calls, reverse=index % 2 == 1):
            started = time.process_time()
            sample = await load.run(calls[name], concurrency=args.concurrency, calls=args.calls)
            if sample.errors:
                raise SystemExit(f"{name}: {sample.error_kinds}")
            cpu[name].append((time.process_time() - started) / args.calls)
    for target in targets.values():
        await target.aclose()
    await floor.stop(None)
    await app.stop(0)
    cpu["gateway - floor"] = [g - f for g, f in zip(cpu["gateway"], cpu["floor"], strict=True)]
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("which", choices=("metadata", "own"))
    parser.add_argument("--limits", action="store_true")
    parser.add_argument("--tracing", action="store_true")
    parser.add_argument("--tools", action="store_true")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if args.which == "metadata":
            _show(runner.run(_metadata(args.rounds, args.calls, args.concurrency)), "initial", "trailing")
            return
        with open(os.devnull, "w") as devnull:
            cpu = runner.run(_own(args, devnull))
    for name, values in cpu.items():
        print(
            f"{name:16} CPU per call: median {statistics.median(values) * 1e6:7.1f} µs "
            f"(rounds {', '.join(f'{v * 1e6:.0f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
