"""`python -m server.emulators`: serve the three provider emulators on fixed ports (for manual tests and
benchmarks), until interrupted. `--port 0` gives each a free port; the printed URLs say which."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from server.emulators.anthropic import AnthropicEmulator
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator


async def _serve(host: str, port: int, api_key: str, token_delay_ms: float) -> None:
    emulators = [
        OpenAIEmulator(api_key=api_key, token_delay_ms=token_delay_ms),
        AnthropicEmulator(api_key=api_key, token_delay_ms=token_delay_ms),
        GeminiEmulator(api_key=api_key, token_delay_ms=token_delay_ms),
    ]
    for offset, (emulator, env) in enumerate(
        zip(emulators, ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL"), strict=True)
    ):
        url = await emulator.start(host, port + offset if port else 0)
        print(f"{env}={url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for emulator in emulators:
            await emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=8801,
        help="OpenAI on PORT, Anthropic on +1, Gemini on +2 (0: free ports, printed)",
    )
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.api_key, args.token_delay_ms))


if __name__ == "__main__":
    main()
