"""`python -m tests.bench.ab --base REF`: one change's effect on the gateway's server CPU, A/B in one run.

Two gateways against the same emulators: one from the work tree (B), one from git REF (A, exported to a
temporary directory). Alternating rounds of unary calls and 20-token streams at concurrency 8; prints CPU
per call of each and B/A per round, with a bootstrap interval. What each optimisation commit's message
quotes; rerun it to re-measure a cut after it is re-applied elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import uvloop

from tests.bench import load, stats
from tests.bench.load import GrpcTarget, prompt
from tests.bench.run import (
    PYTHON,
    SHORT,
    Server,
    gateway_env,
    reserved_port,
    start_emulators,
    wait_serving,
)


def _export(ref: str, into: Path) -> None:
    archive = into / "ref.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", ref, "server", "llm_grpc"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def _start(cwd: Path, env: dict[str, str], port: int, log: Path) -> Server:
    command = [PYTHON, "-m", "server", "serve", "--port", str(port), "--metrics-port", "-1", "--reuse-port"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env | {"PYTHONPATH": str(cwd)}, stderr=out, stdout=out
        )
    return Server(str(cwd), process)


async def _ab(args: argparse.Namespace, workdir: Path) -> None:
    base_dir = workdir / "a"
    base_dir.mkdir()
    _export(args.base, base_dir)
    emulators, urls = start_emulators()
    env = gateway_env(urls, 0)
    servers: list[Server] = [emulators]
    try:
        with reserved_port() as pa, reserved_port() as pb:
            a = _start(base_dir, env, pa, workdir / "a.log")
            b = _start(Path.cwd(), env, pb, workdir / "b.log")
            servers += [a, b]
            await wait_serving(f"127.0.0.1:{pa}")
            await wait_serving(f"127.0.0.1:{pb}")
        targets = {"A": GrpcTarget(f"127.0.0.1:{pa}"), "B": GrpcTarget(f"127.0.0.1:{pb}")}
        server = {"A": a, "B": b}
        kinds = {"unary": False, "stream": True}
        cpu: dict[tuple[str, str], list[float]] = {}
        for target in targets.values():
            for stream in kinds.values():
                text = prompt(SHORT)
                await load.run(
                    target.stream(text) if stream else target.unary(text), concurrency=8, calls=200
                )
        for index in range(args.rounds):
            for side in ("A", "B") if index % 2 == 0 else ("B", "A"):
                for kind, stream in kinds.items():
                    target = targets[side]
                    call = target.stream(prompt(SHORT)) if stream else target.unary(prompt(SHORT))
                    before = server[side].cpu_seconds()
                    sample = await load.run(call, concurrency=8, calls=args.calls)
                    spent = server[side].cpu_seconds() - before
                    cpu.setdefault((side, kind), []).append(spent / sample.calls)
        for target in targets.values():
            await target.aclose()
    finally:
        for process in servers:
            process.stop()
    print(f"A = {args.base}, B = work tree; {args.rounds} rounds of {args.calls} calls at c=8")
    for kind in kinds:
        a_cpu, b_cpu = cpu[("A", kind)], cpu[("B", kind)]
        print(
            f"{kind:6}: A {stats.per_round(a_cpu).show()}  B {stats.per_round(b_cpu).show()}  "
            f"B/A {stats.ratio(b_cpu, a_cpu).show(1.0, 'x', 3)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="HEAD", help="git ref of A (default HEAD: the uncommitted change)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as workdir,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(_ab(args, Path(workdir)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
