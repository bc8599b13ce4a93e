"""`python -m tests.bench.ab`: one change's or one feature's effect on the gateway, A/B in one run.

Two gateways against the same emulators, in alternating rounds (the order flips each round):

- `--base REF` (default HEAD, i.e. the uncommitted change): A is the gateway of git REF (exported to a
  temporary directory), B the work tree's;
- `--feature NAME` (repeatable: `limits`, `tracing`, `tools`): A is the work tree's gateway in its
  default configuration, B the same with the feature on (`limits`, `tracing`: tests/bench/run.py
  FEATURES) or with requests that use it (`tools`: each request declares one function tool).

Each round measures, on each side, server CPU per call (unary calls and 20-token streams at
concurrency 8, from /proc of the server alone) and latency at concurrency 1: a unary call's p50, and a
stream's time to first token p50 (the emulator waits 1 ms before each token, so the first one stands
apart). The official SDK straight at the emulator is measured in the same rounds, so both overheads
(gateway minus SDK) are printed side by side. What each optimisation commit's message quotes; rerun it
on a quiet machine to re-measure (on a loaded one an A/A run spread ±20 % in CPU per call).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import uvloop

from tests.bench import load, stats
from tests.bench.load import MODEL, GrpcTarget, SdkTarget, Target, prompt
from tests.bench.run import (
    KEY,
    PYTHON,
    SHORT,
    Server,
    export_tree,
    feature_env,
    gateway_env,
    model_of,
    reserved_port,
    start_emulators,
    wait_serving,
)

TTFT_DELAY_MS = 1.0


def _start(cwd: Path, env: dict[str, str], port: int, log: Path) -> Server:
    command = [PYTHON, "-m", "server", "serve", "--port", str(port), "--metrics-port", "-1", "--reuse-port"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env | {"PYTHONPATH": str(cwd)}, stderr=out, stdout=out
        )
    return Server(str(cwd), process)


async def _latency(target: Target, calls: int) -> load.Sample:
    """A unary call's latencies and a stream's times to first token, one call at a time."""
    unary = await load.run(target.unary(prompt(SHORT)), concurrency=1, calls=calls)
    stream = await load.run(target.stream(prompt(SHORT, TTFT_DELAY_MS)), concurrency=1, calls=calls)
    if unary.errors or stream.errors:
        raise SystemExit(f"errors at c=1: {unary.error_kinds} {stream.error_kinds}")
    return load.Sample(latency=unary.latency, ttft=stream.ttft)


async def _ab(args: argparse.Namespace, workdir: Path) -> None:
    features = tuple(f for f in args.feature if f != "tools")
    emulators, urls = start_emulators()
    env = gateway_env(urls, 0)
    servers: list[Server] = [emulators]
    if args.feature:
        a_dir, b_dir, a_model = Path.cwd(), Path.cwd(), MODEL
        label = f"A = work tree, B = work tree with {' + '.join(args.feature)}"
    else:
        a_dir, b_dir, a_model = workdir / "a", Path.cwd(), model_of(args.base)
        a_dir.mkdir()
        export_tree(args.base, a_dir)
        label = f"A = {args.base} (model {a_model}), B = work tree (model {MODEL})"
    sdk_models = {a_model, MODEL}
    try:
        with contextlib.ExitStack() as held:
            pa, pb, trace_port = (held.enter_context(reserved_port()) for _ in range(3))
            a = _start(a_dir, env, pa, workdir / "a.log")
            b = _start(b_dir, env | feature_env(features, workdir, trace_port), pb, workdir / "b.log")
            servers += [a, b]
            await wait_serving(f"127.0.0.1:{pa}")
            await wait_serving(f"127.0.0.1:{pb}")
            targets: dict[str, Target] = {
                "A": GrpcTarget(f"127.0.0.1:{pa}", model=a_model),
                "B": GrpcTarget(f"127.0.0.1:{pb}", tools="tools" in args.feature),
            }
            sdk = {m: SdkTarget(urls["OPENAI_BASE_URL"], KEY, model=m) for m in sdk_models}
            await _rounds(args, targets, sdk, {"A": a, "B": b}, a_model, label)
            for target in [*targets.values(), *sdk.values()]:
                await target.aclose()
    finally:
        for process in servers:
            process.stop()


async def _rounds(
    args: argparse.Namespace,
    targets: dict[str, Target],
    sdk: Mapping[str, Target],
    server: dict[str, Server],
    a_model: str,
    label: str,
) -> None:
    kinds = {"unary": False, "stream": True}
    for target in [*targets.values(), *sdk.values()]:  # warm-up: connections, caches, lazy imports
        for stream in kinds.values():
            text = prompt(SHORT)
            await load.run(target.stream(text) if stream else target.unary(text), concurrency=8, calls=200)
    cpu: dict[tuple[str, str], list[float]] = {}
    latency: dict[str, list[load.Sample]] = {}
    model_for = {"A": a_model, "B": MODEL}
    for index in range(args.rounds):
        for side in ("A", "B") if index % 2 == 0 else ("B", "A"):
            target = targets[side]
            for kind, stream in kinds.items():
                call = target.stream(prompt(SHORT)) if stream else target.unary(prompt(SHORT))
                before = server[side].cpu_seconds()
                sample = await load.run(call, concurrency=8, calls=args.calls)
                spent = server[side].cpu_seconds() - before
                if sample.errors or not sample.calls:
                    raise SystemExit(f"side {side}: {sample.errors} errors {sample.error_kinds}")
                cpu.setdefault((side, kind), []).append(spent / sample.calls)
            # The SDK straight at the emulator with the side's model, measured right after the side.
            for who, direct in ((side, target), (f"sdk:{side}", sdk[model_for[side]])):
                latency.setdefault(who, []).append(await _latency(direct, args.latency_calls))
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(
        f"{label}; {args.rounds} rounds, each side: {args.calls} calls at c=8 per kind for CPU, "
        f"{args.latency_calls} at c=1 per kind for latency"
    )
    for kind in kinds:
        a_cpu, b_cpu = cpu[("A", kind)], cpu[("B", kind)]
        added = stats.per_round([b - a for a, b in zip(a_cpu, b_cpu, strict=True)])
        print(
            f"server CPU per {kind} call: A {stats.per_round(a_cpu).show()}  "
            f"B {stats.per_round(b_cpu).show()}  B/A {stats.ratio(b_cpu, a_cpu).show(1.0, 'x', 3)}  "
            f"B-A {added.show()}"
        )
    for what, attribute in (("unary overhead p50, c=1", "latency"), ("TTFT overhead p50, c=1", "ttft")):
        shown = []
        for side in ("A", "B"):
            own = [getattr(s, attribute) for s in latency[side]]
            bare = [getattr(s, attribute) for s in latency[f"sdk:{side}"]]
            shown.append(f"{side} {stats.difference(own, bare, 50).show()}")
        b_vs_a = stats.difference(
            [getattr(s, attribute) for s in latency["B"]], [getattr(s, attribute) for s in latency["A"]], 50
        )
        print(f"{what}: {'  '.join(shown)}  B-A {b_vs_a.show()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="git ref of A (default HEAD: the uncommitted change)")
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        choices=("limits", "tracing", "tools"),
        help="A and B both the work tree, B with this feature on (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--latency-calls", type=int, default=200)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as workdir,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(_ab(args, Path(workdir)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
