"""`make bench`: what the gateway costs, measured in one run against the bare SDK and the gRPC floor.

Processes: the provider emulators, the floor (a bare grpc.aio LLMService that only answers,
tests/bench/floor.py), the gateway in its non-demo configuration (plus two variants: asyncio's loop
instead of uvloop, and `--workers 2`), and this harness, which is the load generator. In each round every
side runs every scenario, in an order rotated from round to round:

- `sdk`: the official openai SDK straight at the emulator (the call the gateway's adapter makes);
- `floor`: the same gRPC calls to the floor;
- `gateway`: the same gRPC calls to the gateway, which calls the emulator with the SDK.

Latency overhead is gateway minus sdk; server CPU comes from /proc/<pid>/stat of the server process
alone (its workers included). Each figure carries a 95 % bootstrap interval and its per-round values;
one whose spread makes it meaningless prints as `noise` and why (tests/bench/stats.py). Results go to
bench/results/ as JSON, a PNG plot and the Markdown report printed at the end. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.bench import load, stats
from tests.bench.load import GrpcTarget, SdkTarget, Target, prompt
from tests.processes import start_emulators as start_emulator_process

PYTHON = sys.executable
KEY = "bench-key-not-secret"
TICKS = os.sysconf("SC_CLK_TCK")
TIMES = "\N{MULTIPLICATION SIGN}"
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULTS = Path("bench/results")

SHORT, LONG = 20, 200
"""Reply lengths in tokens: a short reply for latency and per-call CPU, a long one for the per-token
slope (CPU per streamed token = the difference of CPU per stream / the difference of tokens)."""

TARGETS = {
    "unary overhead p50 at c=1 (ms)": 0.4,
    "TTFT overhead p50 at c=1 (ms)": 0.5,
    "server CPU per unary call, gateway / floor": 2.0,
    "server CPU per streamed token, gateway / floor": 2.0,
    "RSS at 5000 concurrent streams (MB)": 600.0,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    tokens: int
    concurrency: int
    calls: int


@dataclass(frozen=True)
class Plan:
    rounds: int
    scenarios: tuple[Scenario, ...]
    variant_scenarios: tuple[str, ...]
    """What the gateway variants (asyncio loop, 2 workers) run each round."""
    many_streams: int
    warmup: int
    variants: bool = True
    """Whether to run the gateway variants (asyncio loop, 2 workers) beside the main one."""


def plan(scale: float, rounds: int, many_streams: int, variants: bool = True) -> Plan:
    def n(calls: int) -> int:
        return max(8, int(calls * scale))

    return Plan(
        rounds=rounds,
        scenarios=(
            Scenario("unary_c1", False, SHORT, 1, n(240)),
            Scenario("unary_c8", False, SHORT, 8, n(600)),
            Scenario("unary_c64", False, SHORT, 64, n(960)),
            Scenario("stream_c1", True, SHORT, 1, n(160)),
            Scenario("stream_c8", True, SHORT, 8, n(360)),
            Scenario("stream_long_c8", True, LONG, 8, n(120)),
        ),
        variant_scenarios=("unary_c8", "unary_c64"),
        many_streams=many_streams,
        warmup=n(100),
        variants=variants,
    )


# --- processes -------------------------------------------------------------------------------------


class Server:
    """A server subprocess, its CPU and memory read from /proc (children included, for --workers)."""

    def __init__(self, name: str, process: subprocess.Popen[Any]) -> None:
        self.name = name
        self.process = process
        self._cpu_at_stop: float | None = None

    def spent(self) -> float:
        """CPU seconds used since start, also once stopped."""
        return self._cpu_at_stop if self._cpu_at_stop is not None else self.cpu_seconds()

    def pids(self) -> list[int]:
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / TICKS

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return total * PAGE / 2**20

    def stop(self) -> None:
        if self._cpu_at_stop is None:
            self._cpu_at_stop = self.cpu_seconds()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A port held by a bound, non-listening SO_REUSEPORT socket for as long as the block runs: the
    gateway (which sets SO_REUSEPORT too) listens on it, with --workers N needing a fixed port, and no
    other program can take it meanwhile."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def _env() -> dict[str, str]:
    """The caller's environment without provider keys or LLM_* settings: the bench sets its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("LLM_") or k.endswith(("_API_KEY", "_BASE_URL")))
    }


def start_emulators() -> tuple[Server, dict[str, str]]:
    """The provider emulators on ports of their own choosing; their base URLs by environment name
    (OPENAI_BASE_URL, ...). A request sets its own token delay with `[[emulate: token_delay_ms=N]]`."""
    process, urls = start_emulator_process(KEY, env=_env())
    return Server("emulators", process), urls


def start_floor() -> tuple[Server, str]:
    process = subprocess.Popen([PYTHON, "-m", "tests.bench.floor"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return Server("floor", process), f"127.0.0.1:{port}"


def gateway_env(urls: dict[str, str], streams: int) -> dict[str, str]:
    """The non-demo configuration: real settings, keys, the emulators' URLs as the providers' base URLs.
    Logging stays at its default (info: one JSON line per call). Authentication is off, as behind a mesh
    with mTLS; the in-flight and connection limits are sized for `streams` concurrent streams from one
    caller (the load generator stands for many)."""
    capacity = str(max(2000, streams + 500))
    return _env() | {
        "OPENAI_API_KEY": KEY,
        "ANTHROPIC_API_KEY": KEY,
        "GOOGLE_API_KEY": KEY,
        **urls,
        "LLM_ALLOW_PLAINTEXT": "true",
        "LLM_AUTH_DISABLED": "true",
        "LLM_MAX_IN_FLIGHT": capacity,
        "LLM_MAX_IN_FLIGHT_PER_CALLER": capacity,
        "LLM_MAX_CONNECTIONS": capacity,
    }


def start_gateway(
    name: str, env: dict[str, str], port: int, log: IO[bytes], *, workers: int = 1, loop: str = "uvloop"
) -> tuple[Server, str]:
    command = [PYTHON, "-m", "server", "serve", "--port", str(port), "--metrics-port", "-1"]
    command += ["--loop", loop]
    command += ["--workers", str(workers)] if workers > 1 else ["--reuse-port"]
    process = subprocess.Popen(command, env=env, stderr=log, stdout=log)
    address = f"127.0.0.1:{port}"
    return Server(name, process), address


async def wait_serving(address: str, workers: int = 1) -> None:
    """Until the gateway's health service answers SERVING (every worker's, over fresh connections)."""
    for _ in range(workers * 4):
        async with grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                raise SystemExit(f"gateway at {address} is not serving: {response.status}")


# --- the machine -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Measured:
    """Samples by side, scenario and round; server CPU seconds and calls by side, scenario and round."""

    latency: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    ttft: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    cpu_per_call: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    client_cpu_per_call: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """The load generator's own CPU per call: for `sdk`, what the SDK costs its caller."""
    throughput: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add(
        self, side: str, scenario: Scenario, sample: load.Sample, cpu: float | None, client_cpu: float
    ) -> None:
        self.latency.setdefault(side, {}).setdefault(scenario.name, []).append(sample.latency)
        self.ttft.setdefault(side, {}).setdefault(scenario.name, []).append(sample.ttft)
        self.throughput.setdefault(side, {}).setdefault(scenario.name, []).append(
            sample.calls / sample.elapsed if sample.elapsed else 0.0
        )
        if cpu is not None and sample.calls:
            self.cpu_per_call.setdefault(side, {}).setdefault(scenario.name, []).append(cpu / sample.calls)
        if sample.calls:
            self.client_cpu_per_call.setdefault(side, {}).setdefault(scenario.name, []).append(
                client_cpu / sample.calls
            )
        self.errors[side] = self.errors.get(side, 0) + sample.errors


async def measure(
    side: str, target: Target, scenario: Scenario, server: Server | None, measured: Measured
) -> None:
    text = prompt(scenario.tokens)
    call = target.stream(text) if scenario.stream else target.unary(text)
    before = server.cpu_seconds() if server is not None else 0.0
    client_before = _own_cpu()
    sample = await load.run(call, concurrency=scenario.concurrency, calls=scenario.calls)
    client_cpu = _own_cpu() - client_before
    cpu = server.cpu_seconds() - before if server is not None else None
    measured.add(side, scenario, sample, cpu, client_cpu)


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


MANY_TOKENS, MANY_DELAY_MS, MANY_RAMP_S = 8, 3000, 20.0
"""The many-streams test: each stream is 8 tokens, one every 3 s (24 s long), and they are opened over
20 s (250 a second for 5000), so that all of them are open at once while the rates of new calls and of
tokens stay within what two cores shared by the gateway, the emulator and the load generator carry.
Opened in one instant instead, the calls the server cannot take within 30 s are cancelled by grpc
(its limit for a call no handler has taken yet): that is a capacity test; this one is memory and
concurrency."""


async def many_streams(target: Target, server: Server, count: int) -> dict[str, Any]:
    """`count` streams open at once (see MANY_TOKENS), the server's RSS sampled meanwhile."""
    idle = server.rss_mb()
    peak = idle
    done = asyncio.Event()
    open_now = peak_open = 0
    sample = load.Sample()
    stream = target.stream(prompt(MANY_TOKENS, token_delay_ms=MANY_DELAY_MS))

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.rss_mb())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    async def one() -> None:
        nonlocal open_now, peak_open
        open_now += 1
        peak_open = max(peak_open, open_now)
        try:
            await stream(sample)
        except Exception as error:
            sample.failed(error)
        finally:
            open_now -= 1

    watcher = asyncio.create_task(watch())
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    tasks = []
    per_tick = max(1, count // 200)
    for index in range(0, count, per_tick):  # 200 steps over the ramp
        tasks += [asyncio.create_task(one()) for _ in range(min(per_tick, count - index))]
        await asyncio.sleep(MANY_RAMP_S / 200 if count > 200 else 0)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    done.set()
    await watcher
    return {
        "streams": count,
        "completed": sample.calls,
        "errors": sample.errors,
        "error_kinds": sample.error_kinds,
        "peak_open": peak_open,
        "rss_idle_mb": idle,
        "rss_peak_mb": peak,
        "seconds": elapsed,
        "server_cpu_seconds": server.cpu_seconds() - cpu_before,
        "ttft_p50_s": stats.quantile(sample.ttft, 50),
        "ttft_p99_s": stats.quantile(sample.ttft, 99),
    }


async def run(the_plan: Plan, workdir: Path) -> dict[str, Any]:
    started = time.time()
    busy_before, own_before, wall_before = busy_seconds(), _own_cpu(), time.monotonic()
    at_start = machine()
    emulators, urls = start_emulators()
    floor, floor_address = start_floor()
    servers: list[Server] = [emulators, floor]
    log = (workdir / "gateways.log").open("wb")
    env = gateway_env(urls, the_plan.many_streams)
    targets: dict[str, Target] = {}
    server_of: dict[str, Server] = {"floor": floor}
    try:
        variants: dict[str, dict[str, Any]] = (
            {"gateway_asyncio": {"loop": "asyncio"}, "gateway_2_workers": {"workers": 2}}
            if the_plan.variants
            else {}
        )
        addresses: dict[str, str] = {}
        with contextlib.ExitStack() as ports:
            for name, options in {"gateway": {}, **variants}.items():
                port = ports.enter_context(reserved_port())
                server_of[name], addresses[name] = start_gateway(name, env, port, log, **options)
                servers.append(server_of[name])
            for name, address in addresses.items():
                await wait_serving(address, workers=2 if name == "gateway_2_workers" else 1)
        targets = {"sdk": SdkTarget(urls["OPENAI_BASE_URL"], KEY), "floor": GrpcTarget(floor_address)}
        targets |= {name: GrpcTarget(address) for name, address in addresses.items()}
        gateway = server_of["gateway"]
        by_name = {s.name: s for s in the_plan.scenarios}
        # Warm every side: connections, caches, the SDK's lazy imports.
        for target in targets.values():
            for stream in (False, True):
                text = prompt(SHORT)
                call = target.stream(text) if stream else target.unary(text)
                await load.run(call, concurrency=8, calls=the_plan.warmup)
        measured = Measured()
        sides = list(targets)
        for round_index in range(the_plan.rounds):
            order = sides[round_index % len(sides) :] + sides[: round_index % len(sides)]
            for side in order:
                names = (
                    the_plan.variant_scenarios
                    if side in ("gateway_asyncio", "gateway_2_workers")
                    else [s.name for s in the_plan.scenarios]
                )
                for name in names:
                    await measure(side, targets[side], by_name[name], server_of.get(side), measured)
            print(f"round {round_index + 1}/{the_plan.rounds} done", file=sys.stderr, flush=True)
        rss = {name: server.rss_mb() for name, server in server_of.items()}
        for name in variants:
            server_of[name].stop()
        streams = await many_streams(targets["gateway"], gateway, the_plan.many_streams)
        ours = sum(server.spent() for server in servers) + _own_cpu() - own_before
    finally:
        for target in targets.values():
            await target.aclose()
        for server in servers:
            server.stop()
        log.close()
    wall = time.monotonic() - wall_before
    return {
        "machine": at_start | {"load_average_at_end": list(os.getloadavg())},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": wall,
        "machine_busy_cores": (busy_seconds() - busy_before) / wall,
        "other_processes_cores": max(0.0, busy_seconds() - busy_before - ours) / wall,
        "plan": {
            "rounds": the_plan.rounds,
            "scenarios": [s.__dict__ for s in the_plan.scenarios],
            "many_streams": the_plan.many_streams,
        },
        "measured": measured,
        "rss_after_rounds_mb": rss,
        "many_streams": streams,
    }


# --- the report ------------------------------------------------------------------------------------


def figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Every reported figure, with its interval, rounds and noise verdict."""
    m: Measured = raw["measured"]
    out: dict[str, Any] = {"latency": {}, "overhead": {}, "ttft": {}, "cpu": {}, "throughput": {}}
    for scenario in ("unary_c1", "unary_c8", "unary_c64", "stream_c1", "stream_c8"):
        for q in (50, 99):
            key = f"{scenario}_p{q}"
            out["overhead"][key] = stats.difference(
                m.latency["gateway"][scenario], m.latency["sdk"][scenario], q
            )
            for side in ("sdk", "floor", "gateway"):
                out["latency"].setdefault(side, {})[key] = stats.level(m.latency[side][scenario], q)
    for scenario in ("stream_c1", "stream_c8"):
        for q in (50, 99):
            out["ttft"][f"{scenario}_overhead_p{q}"] = stats.difference(
                m.ttft["gateway"][scenario], m.ttft["sdk"][scenario], q
            )
            for side in ("sdk", "floor", "gateway"):
                out["ttft"].setdefault(side, {})[f"{scenario}_p{q}"] = stats.level(m.ttft[side][scenario], q)
    cpu = m.cpu_per_call
    for side in ("floor", "gateway", "gateway_asyncio", "gateway_2_workers"):
        for scenario in cpu.get(side, {}):
            out["cpu"].setdefault(side, {})[f"{scenario}_per_call"] = stats.per_round(cpu[side][scenario])
    for side, by_scenario in m.client_cpu_per_call.items():
        for scenario in ("unary_c8", "stream_c8"):
            if scenario in by_scenario:
                out["cpu"].setdefault("client", {}).setdefault(side, {})[f"{scenario}_per_call"] = (
                    stats.per_round(by_scenario[scenario])
                )
    per_token: dict[str, list[float]] = {}
    for side in ("floor", "gateway"):
        per_token[side] = [
            (long - short) / (LONG - SHORT)
            for long, short in zip(cpu[side]["stream_long_c8"], cpu[side]["stream_c8"], strict=True)
        ]
        out["cpu"][side]["per_streamed_token"] = stats.per_round(per_token[side])
    out["ratios"] = {
        "cpu_per_unary_call_c8": stats.ratio(cpu["gateway"]["unary_c8"], cpu["floor"]["unary_c8"]),
        "cpu_per_unary_call_c64": stats.ratio(cpu["gateway"]["unary_c64"], cpu["floor"]["unary_c64"]),
        "cpu_per_stream_c8": stats.ratio(cpu["gateway"]["stream_c8"], cpu["floor"]["stream_c8"]),
        "cpu_per_streamed_token": stats.ratio(per_token["gateway"], per_token["floor"]),
    }
    if "gateway_asyncio" in cpu:
        out["ratios"]["cpu_per_unary_call_c8_asyncio_vs_uvloop"] = stats.ratio(
            cpu["gateway_asyncio"]["unary_c8"], cpu["gateway"]["unary_c8"]
        )
    for side, by_scenario in m.throughput.items():
        for scenario, values in by_scenario.items():
            out["throughput"].setdefault(side, {})[scenario] = stats.per_round(values)
    return out


def verdicts(fig: dict[str, Any], raw: dict[str, Any]) -> list[tuple[str, float, Any, str]]:
    """(target, limit, figure or value, met / MISSED / noise)."""

    def judge(figure: stats.Figure, limit: float, scale: float = 1.0) -> str:
        if figure.noise is not None:
            return "noise"
        if figure.value < 0:  # the direct baseline was the slower one: no overhead was measured
            return "not measured (negative: the SDK-direct side was slower)"
        return "met" if figure.value * scale <= limit else "MISSED"

    streams = raw["many_streams"]
    rows: list[tuple[str, float, Any, str]] = []
    items = (
        ("unary overhead p50 at c=1 (ms)", fig["overhead"]["unary_c1_p50"], 1000.0),
        ("TTFT overhead p50 at c=1 (ms)", fig["ttft"]["stream_c1_overhead_p50"], 1000.0),
        ("server CPU per unary call, gateway / floor", fig["ratios"]["cpu_per_unary_call_c8"], 1.0),
        ("server CPU per streamed token, gateway / floor", fig["ratios"]["cpu_per_streamed_token"], 1.0),
    )
    for name, figure, scale in items:
        rows.append((name, TARGETS[name], figure, judge(figure, TARGETS[name], scale)))
    ok = streams["errors"] == 0 and streams["completed"] == streams["peak_open"] == streams["streams"]
    rows.append(
        (
            "RSS at 5000 concurrent streams (MB)",
            TARGETS["RSS at 5000 concurrent streams (MB)"],
            streams["rss_peak_mb"],
            ("met" if streams["rss_peak_mb"] <= 600 else "MISSED") if ok else "MISSED (errors)",
        )
    )
    return rows


def report(raw: dict[str, Any], fig: dict[str, Any]) -> str:
    mach = raw["machine"]
    streams = raw["many_streams"]
    lines = [
        f"# Benchmark run {raw['started']}",
        "",
        f"Machine: {mach['cores']} cores, {mach['cpu_model']}, {mach['platform']}, Python {mach['python']}, "
        f"grpcio {mach['grpcio']}. Load average {mach['load_average_at_start'][0]:.2f} at start, "
        f"{mach['load_average_at_end'][0]:.2f} at end; the whole machine was busy "
        f"{raw['machine_busy_cores']:.2f} cores on average during the run "
        f"({raw['seconds']:.0f} s, {raw['plan']['rounds']} alternating rounds), "
        f"{raw['other_processes_cores']:.2f} of them processes other than this benchmark's"
        + (" (figures are contaminated by that load)." if raw["other_processes_cores"] > 0.2 else "."),
        "",
        "Figures: value [95% bootstrap interval]; `noise (why)` where the spread makes it meaningless.",
        "",
        "## Targets",
        "",
        "| target | limit | measured | verdict |",
        "|---|---|---|---|",
    ]
    for name, limit, figure, verdict in verdicts(fig, raw):
        if isinstance(figure, stats.Figure):
            shown = figure.show(1000.0, "ms") if "ms" in name else figure.show(1.0, TIMES, 2)
        else:
            shown = f"{figure:.0f} MB"
        lines.append(f"| {name} | {limit:g} | {shown} | {verdict} |")
    lines += [
        "",
        "## Latency (ms): gateway overhead over the bare SDK, and each side",
        "",
        "| scenario | overhead | SDK direct | floor (bare gRPC) | gateway |",
        "|---|---|---|---|---|",
    ]
    for scenario in ("unary_c1", "unary_c8", "unary_c64", "stream_c1", "stream_c8"):
        for q in (50, 99):
            key = f"{scenario}_p{q}"
            cells = [fig["latency"][side][key].show() for side in ("sdk", "floor", "gateway")]
            lines.append(f"| {scenario} p{q} | {fig['overhead'][key].show()} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Time to first token (ms)",
        "",
        "| scenario | overhead | SDK direct | floor | gateway |",
        "|---|---|---|---|---|",
    ]
    for scenario in ("stream_c1", "stream_c8"):
        for q in (50, 99):
            cells = [fig["ttft"][side][f"{scenario}_p{q}"].show() for side in ("sdk", "floor", "gateway")]
            overhead = fig["ttft"][f"{scenario}_overhead_p{q}"].show()
            lines.append(f"| {scenario} p{q} | {overhead} | " + " | ".join(cells) + " |")
    cpu = fig["cpu"]
    lines += [
        "",
        "## Server CPU (from /proc/<pid>/stat of the server alone)",
        "",
        "| | floor | gateway | gateway / floor |",
        "|---|---|---|---|",
        f"| per unary call, c=8 (ms) | {cpu['floor']['unary_c8_per_call'].show()} | "
        f"{cpu['gateway']['unary_c8_per_call'].show()} | "
        f"{fig['ratios']['cpu_per_unary_call_c8'].show(1.0, TIMES, 2)} |",
        f"| per unary call, c=64 (ms) | {cpu['floor']['unary_c64_per_call'].show()} | "
        f"{cpu['gateway']['unary_c64_per_call'].show()} | "
        f"{fig['ratios']['cpu_per_unary_call_c64'].show(1.0, TIMES, 2)} |",
        f"| per {SHORT}-token stream, c=8 (ms) | {cpu['floor']['stream_c8_per_call'].show()} | "
        f"{cpu['gateway']['stream_c8_per_call'].show()} | "
        f"{fig['ratios']['cpu_per_stream_c8'].show(1.0, TIMES, 2)} |",
        f"| per streamed token (µs; {SHORT} vs {LONG}-token streams) | "
        f"{cpu['floor']['per_streamed_token'].show(1e6, 'µs', 1)} | "
        f"{cpu['gateway']['per_streamed_token'].show(1e6, 'µs', 1)} | "
        f"{fig['ratios']['cpu_per_streamed_token'].show(1.0, TIMES, 2)} |",
        "",
        "The load generator's own CPU per call (c=8), for scale: what a caller spends on the SDK straight at "
        "the provider, against a gRPC client of the floor or the gateway:",
        "",
        "| | SDK direct | gRPC client (floor) | gRPC client (gateway) |",
        "|---|---|---|---|",
    ]
    client = cpu["client"]
    for scenario, label in (("unary_c8", "unary call (ms)"), ("stream_c8", f"{SHORT}-token stream (ms)")):
        cells = [client[side][f"{scenario}_per_call"].show() for side in ("sdk", "floor", "gateway")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Event loop and workers (gateway, unary)",
        "",
        "| gateway | CPU per call, c=8 (ms) | throughput at c=64 (calls/s) |",
        "|---|---|---|",
    ]
    for side, label in (
        ("gateway", "uvloop, 1 worker"),
        ("gateway_asyncio", "asyncio loop, 1 worker"),
        ("gateway_2_workers", "uvloop, 2 workers"),
    ):
        if side not in cpu:
            continue
        lines.append(
            f"| {label} | {cpu[side]['unary_c8_per_call'].show()} | "
            f"{fig['throughput'][side]['unary_c64'].show(1.0, '/s', 0)} |"
        )
    lines.append(
        f"| (SDK direct, for scale) | | {fig['throughput']['sdk']['unary_c64'].show(1.0, '/s', 0)} |"
    )
    lines.append(f"| (floor, for scale) | | {fig['throughput']['floor']['unary_c64'].show(1.0, '/s', 0)} |")
    rss = raw["rss_after_rounds_mb"]
    lines += [
        "",
        f"## {streams['streams']} concurrent streams ({MANY_TOKENS} tokens, one every {MANY_DELAY_MS} ms; "
        f"opened over {MANY_RAMP_S:g} s)",
        "",
        f"- Completed {streams['completed']} of {streams['streams']}, errors {streams['errors']}"
        + (f" ({streams['error_kinds']})" if streams["errors"] else "")
        + f", in {streams['seconds']:.1f} s; at most {streams['peak_open']} open at once.",
        f"- Gateway RSS: {streams['rss_idle_mb']:.0f} MB before, {streams['rss_peak_mb']:.0f} MB peak.",
        f"- Time to first token p50 {streams['ttft_p50_s'] * 1000:.0f} ms, "
        f"p99 {streams['ttft_p99_s'] * 1000:.0f} ms (the emulator waits {MANY_DELAY_MS} ms before each "
        "token; the load generator shares the cores).",
        f"- RSS after the rounds: gateway {rss['gateway']:.0f} MB, floor {rss['floor']:.0f} MB"
        + (
            f", 2 workers with their supervisor {rss['gateway_2_workers']:.0f} MB."
            if "gateway_2_workers" in rss
            else "."
        ),
        "",
        f"Errors during the rounds: {json.dumps(raw['measured'].errors)}.",
    ]
    return "\n".join(lines)


def to_json(raw: dict[str, Any], fig: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, stats.Figure):
            return value.as_json()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    m: Measured = raw["measured"]
    return {k: v for k, v in raw.items() if k != "measured"} | {
        "figures": convert(fig),
        "targets": [
            {"target": name, "limit": limit, "verdict": verdict}
            for name, limit, _, verdict in verdicts(fig, raw)
        ],
        "errors": m.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's call count")
    parser.add_argument("--streams", type=int, default=5000, help="concurrent streams of the memory test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--no-variants", action="store_true", help="skip the asyncio-loop and 2-worker gateways"
    )
    args = parser.parse_args()
    the_plan = plan(args.scale, args.rounds, args.streams, variants=not args.no_variants)
    with (
        tempfile.TemporaryDirectory() as workdir,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        raw = runner.run(run(the_plan, Path(workdir)))
    fig = figures(raw)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = raw["started"].replace(":", "").replace("-", "")
    data = to_json(raw, fig)
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(data, indent=1))
    text = report(raw, fig)
    (args.out / f"bench-{stamp}.md").write_text(text + "\n")
    if not args.no_plot:
        from tests.bench.plot import plot

        plot(data, args.out / f"bench-{stamp}.png")
    print(text)
    print(f"\nWritten: {args.out}/bench-{stamp}.{{json,md{'' if args.no_plot else ',png'}}}", file=sys.stderr)


if __name__ == "__main__":
    main()
