"""`make profile`: a py-spy flame graph of the gateway's server process under load.

Starts the emulators and the gateway as `make bench` does, drives unary calls (or streams with
`--stream`) at concurrency 8 for `--seconds`, and records the gateway with `py-spy record` meanwhile
(`--idle` off, so the graph is the CPU it spends, not its waits). Writes an SVG.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from tests.bench import load
from tests.bench.load import GrpcTarget, prompt
from tests.bench.run import SHORT, gateway_env, reserved_port, start_emulators, start_gateway, wait_serving


async def _profile(args: argparse.Namespace, workdir: Path) -> None:
    out, seconds, stream = args.out, args.seconds, args.stream
    emulators, urls = start_emulators()
    log = (workdir / "gateway.log").open("wb")
    with reserved_port() as port:
        gateway, address = start_gateway("gateway", gateway_env(urls, 0), port, log)
        await wait_serving(address)
    target = GrpcTarget(address)
    try:
        text = prompt(args.tokens)
        call = target.stream(text) if stream else target.unary(text)
        await load.run(call, concurrency=8, calls=200)
        spy = subprocess.Popen(  # noqa: ASYNC220 - py-spy runs beside the load, never awaited on
            [
                str(Path(sys.executable).parent / "py-spy"),
                *("record", "--pid", str(gateway.process.pid), "--output", str(out)),
                *("--duration", str(int(seconds)), "--rate", str(args.rate), "--format", args.format),
                # Native frames need py-spy to pause the process while it samples.
                *(("--native",) if args.native else ("--nonblocking",)),
            ]
        )
        ends = time.monotonic() + seconds
        while time.monotonic() < ends and spy.poll() is None:
            await load.run(call, concurrency=8, calls=200)
        spy.wait()
    finally:
        await target.aclose()
        gateway.stop()
        emulators.stop()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/flame.svg"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tokens", type=int, default=SHORT, help="reply length in tokens")
    parser.add_argument("--native", action="store_true", help="C frames too (grpc core, uvloop)")
    parser.add_argument("--format", choices=("flamegraph", "raw", "speedscope"), default="flamegraph")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as workdir,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(_profile(args, Path(workdir)))


if __name__ == "__main__":
    main()
