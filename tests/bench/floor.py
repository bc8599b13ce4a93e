"""The floor: a bare grpc.aio server of llm.v1.LLMService that does no work but answer.

`Complete` and `Stream` answer with the messages the gateway sends for the same request (the emulator's
reply, `emulator reply: <prompt>`, split into the same tokens; the same response fields), so the bytes
on the wire match and what the gateway costs above this is its own work. Generated servicer, generator
handler for the stream, no interceptor, no metadata: one grpc.aio hop and protobuf, nothing else.

Run as its own process (`python -m tests.bench.floor`): it prints its port on stdout, then serves until
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc

_TOKEN = re.compile(r"\S+\s*")
ServicerContext = grpc.aio.ServicerContext[Any, Any]


def _reply_tokens(request: llm_pb2.CompleteRequest | llm_pb2.StreamRequest) -> list[str]:
    text = request.messages[-1].content if request.messages else ""
    text = re.sub(r"\[\[emulate:[^\]]*\]\]\s*", "", text)  # as the emulator strips its directives
    return _TOKEN.findall(f"emulator reply: {text}")


def _usage(prompt: str, tokens: int) -> llm_pb2.Usage:
    prompt_tokens = len(prompt.split())
    return llm_pb2.Usage(
        prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens
    )


class Floor(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self, writer: bool = False) -> None:
        self._writer = writer

    async def Complete(
        self, request: llm_pb2.CompleteRequest, context: ServicerContext
    ) -> llm_pb2.CompleteResponse:
        tokens = _reply_tokens(request)
        return llm_pb2.CompleteResponse(
            content="".join(tokens),
            usage=_usage(request.messages[-1].content, len(tokens)),
            latency_ms=1.25,
            provider="openai",
            model=request.model,
            trace_id=uuid.uuid4().hex,
            finish_reason=llm_pb2.FINISH_REASON_STOP,
            cost_usd=0.0000425,
            served_model=request.model,
        )

    async def Stream(
        self, request: llm_pb2.StreamRequest, context: ServicerContext
    ) -> AsyncIterator[llm_pb2.StreamResponse]:
        tokens = _reply_tokens(request)
        if self._writer:  # the gateway's way: context.write, awaited (see LLMServicer.Stream)
            for token in tokens:
                await context.write(llm_pb2.StreamResponse(delta=token))
        else:
            for token in tokens:
                yield llm_pb2.StreamResponse(delta=token)
        yield llm_pb2.StreamResponse(
            done=llm_pb2.StreamDone(
                usage=_usage(request.messages[-1].content, len(tokens)),
                finish_reason=llm_pb2.FINISH_REASON_STOP,
                latency_ms=1.25,
                time_to_first_token_ms=0.5,
                provider="openai",
                model=request.model,
                trace_id=uuid.uuid4().hex,
                cost_usd=0.0000425,
                served_model=request.model,
            )
        )


async def _serve(writer: bool) -> None:
    server = grpc.aio.server()
    # The other methods answer UNIMPLEMENTED (the generated base class); the stubs call them abstract.
    llm_pb2_grpc.add_LLMServiceServicer_to_server(Floor(writer), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--writer", action="store_true", help="stream deltas with context.write")
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(args.writer))


if __name__ == "__main__":
    main()
