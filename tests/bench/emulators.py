"""The three provider emulators in their own process, each on a port the kernel picks
(`python -m tests.bench.emulators`): prints one JSON line of their base URLs, then serves until SIGTERM.
Requests choose their own token delay with the `[[emulate: token_delay_ms=N]]` directive."""

from __future__ import annotations

import asyncio
import json
import signal

import uvloop

from server.emulators.anthropic import AnthropicEmulator
from server.emulators.base import Emulator
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator

KEY = "bench-key-not-secret"


async def _serve() -> None:
    emulators: list[Emulator] = [
        OpenAIEmulator(api_key=KEY),
        AnthropicEmulator(api_key=KEY),
        GeminiEmulator(api_key=KEY),
    ]
    urls = [await emulator.start("127.0.0.1", 0) for emulator in emulators]
    print(json.dumps(dict(zip(("openai", "anthropic", "gemini"), urls, strict=True))), flush=True)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    await stopping.wait()
    for emulator in emulators:
        await emulator.stop()


def main() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve())


if __name__ == "__main__":
    main()
