"""`python -m server.emulators`: serve the three provider emulators until interrupted (for manual tests,
the Node and Go client tests, and benchmarks).

Prints one `NAME_BASE_URL=...` line per emulator once it listens, then the `NAME_API_KEY=...` lines of
the key they accept (`--api-key`, by default the one demo mode uses): together, the environment a
non-demo gateway needs to call them (docs/emulators.md).
`--port 0` lets each pick a free port (what tests and scripts use: nothing to collide with);
`--ports-file F` also writes the URLs as JSON, e.g. `{"OPENAI_BASE_URL": "http://127.0.0.1:41234"}`,
renamed into place once all three listen, so a reader that sees the file sees all of it.
`--rpm`, `--tpm`, `--itpm`, `--otpm` make every emulator enforce those limits per key, with the providers'
own rate-limit headers and 429s (server/emulators/ratelimits.py); counters at `GET /_emulator/ratelimits`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path

from server.emulators.anthropic import AnthropicEmulator
from server.emulators.base import DEMO_KEY
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator
from server.emulators.ratelimits import RateLimits

ENV_NAMES = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL")
KEY_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY")
"""The gateway's key settings of the three providers, in the order of ENV_NAMES."""


async def _serve(
    host: str,
    port: int,
    api_key: str,
    token_delay_ms: float,
    ports_file: Path | None,
    limits: dict[str, int | None] | None = None,
) -> None:
    def rate_limits() -> RateLimits | None:
        return RateLimits(**limits) if limits and any(limits.values()) else None  # type: ignore[arg-type]

    emulators = [
        OpenAIEmulator(api_key=api_key, token_delay_ms=token_delay_ms, rate_limits=rate_limits()),
        AnthropicEmulator(api_key=api_key, token_delay_ms=token_delay_ms, rate_limits=rate_limits()),
        GeminiEmulator(api_key=api_key, token_delay_ms=token_delay_ms, rate_limits=rate_limits()),
    ]
    urls: dict[str, str] = {}
    for offset, (emulator, env) in enumerate(zip(emulators, ENV_NAMES, strict=True)):
        try:
            urls[env] = await emulator.start(host, port + offset if port else 0)
        except OSError as error:
            for started in emulators:
                await started.stop()
            raise SystemExit(
                f"emulators: cannot listen on {host}:{port + offset}: {error.strerror or error}; choose "
                "other ports with --port (0: any free ports)"
            ) from None
        print(f"{env}={urls[env]}", flush=True)
    for name in KEY_NAMES:
        print(f"{name}={api_key}", flush=True)
    if ports_file is not None:
        partial = ports_file.with_name(ports_file.name + ".partial")
        partial.write_text(json.dumps(urls))
        os.replace(partial, ports_file)
    try:
        await asyncio.Event().wait()
    finally:
        for emulator in emulators:
            await emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=8801,
        help="OpenAI on PORT, Anthropic on +1, Gemini on +2 (default 8801); 0: each on a free port",
    )
    parser.add_argument(
        "--api-key", default=DEMO_KEY, help=f"the key the emulators accept (default {DEMO_KEY})"
    )
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--ports-file", type=Path, default=None, help="also write the URLs here as JSON")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute per key (429 past it)")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute per key")
    parser.add_argument("--itpm", type=int, default=None, help="input tokens per minute per key")
    parser.add_argument("--otpm", type=int, default=None, help="output tokens per minute per key")
    args = parser.parse_args()
    limits = {
        "requests": args.rpm,
        "tokens": args.tpm,
        "input_tokens": args.itpm,
        "output_tokens": args.otpm,
    }
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.api_key, args.token_delay_ms, args.ports_file, limits))


if __name__ == "__main__":
    main()
