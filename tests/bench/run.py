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
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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

OWN_CPU = "gateway's own CPU per unary call (ms)"
OWN_CPU_FEATURES = "gateway's own CPU per unary call, limits + tracing sampled out (ms)"
VS_BASE_UNARY = "unary overhead p50 at c=1, gateway minus base (ms)"
VS_BASE_TTFT = "TTFT overhead p50 at c=1, gateway minus base (ms)"
STREAMS_RSS = "5000 concurrent streams: 0 errors, peak RSS (MB)"
TARGETS = {  # issue #25; per extra wire API the first and fourth again, named after it
    OWN_CPU: 0.25,
    OWN_CPU_FEATURES: 0.4,
    "server CPU per unary call, gateway / floor": 3.5,
    "server CPU per streamed token, gateway / floor": 2.0,
    VS_BASE_UNARY: 0.0,
    VS_BASE_TTFT: 0.0,
    STREAMS_RSS: 450.0,
}
"""The gateway's own CPU per unary call is the server's CPU per call minus the floor's (the gRPC hop)
minus the SDK's request path (the load generator's CPU per call made straight at the emulator with the
SDK, the very call the adapter makes), all three at c=8 in the same rounds. "Minus base": the gateway's
latency overhead over the SDK against that of the gateway of BASE_REF, in the same rounds: met when
not above it."""

BASE_REF = "be8ffa1"
"""The gateway measured beside today's for the latency targets (main of 2026-11-24, issue #25)."""
BASE_MODEL = "gpt-4.1-mini"
"""The model an older gateway is called with when its catalogue lacks load.MODEL (be8ffa1's has no
gpt-5.4-mini): a Chat Completions model in both catalogues; the emulator's reply is the prompt's,
whatever the model."""

RESPONSES_MODEL = "gpt-5.4-mini"
"""A model the gateway serves on OpenAI's Responses API (its catalogue entry's `api`)."""
APIS = {"chat_completions": load.MODEL, "responses": RESPONSES_MODEL}
"""Wire API → the model the scenarios call through it (tests/bench/load.py APIS says how the SDK side
calls each). Chat Completions is the main one; every other API here gets its own unary and stream
scenarios on the SDK and gateway sides, and its own own-CPU and per-token verdicts. `--api NAME=MODEL`
adds one for a run."""


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    tokens: int
    concurrency: int
    calls: int
    token_delay_ms: float = 0.0
    """The emulator's wait before each token: the stream scenarios that measure time to first token use
    one, so that the first token is apart from the rest (with none, a 20-token reply arrives in one read,
    and the first token's time is the whole stream's)."""
    api: str = "chat_completions"
    """The wire API (APIS) its calls go through; a scenario of another API than Chat Completions is
    named `<api>:<scenario>`."""


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
    features: bool = True
    """Whether to run a gateway with limits and tracing on (FEATURES) beside the main one."""
    base: str | None = BASE_REF
    """The git ref whose gateway runs beside (latency targets), or None."""
    apis: dict[str, str] = field(default_factory=lambda: dict(APIS))

    def scenarios_of(self, side: str) -> tuple[str, ...]:
        """The scenarios a side runs each round."""
        chat = tuple(s.name for s in self.scenarios if s.api == "chat_completions")
        if side in ("gateway_asyncio", "gateway_2_workers"):
            return self.variant_scenarios
        if side == "gateway_features":
            return ("unary_c8", "stream_c8")
        if side in ("base", "sdk_base"):
            return ("unary_c1", "stream_c1", "unary_c8") if side == "base" else ("unary_c1", "stream_c1")
        if side == "floor":
            return chat
        return tuple(s.name for s in self.scenarios)


API_SCENARIOS = ("unary_c1", "unary_c8", "stream_c1", "stream_c8", "stream_long_c8")
"""What a wire API other than Chat Completions runs: latency at c=1, CPU per call and per token."""


def plan(
    scale: float,
    rounds: int,
    many_streams: int,
    variants: bool = True,
    *,
    features: bool = True,
    base: str | None = BASE_REF,
    apis: dict[str, str] | None = None,
) -> Plan:
    def n(calls: int) -> int:
        return max(8, int(calls * scale))

    chat = (
        Scenario("unary_c1", False, SHORT, 1, n(240)),
        Scenario("unary_c8", False, SHORT, 8, n(600)),
        Scenario("unary_c64", False, SHORT, 64, n(960)),
        Scenario("stream_c1", True, SHORT, 1, n(80), token_delay_ms=1.0),
        Scenario("stream_c8", True, SHORT, 8, n(360)),
        Scenario("stream_long_c8", True, LONG, 8, n(120)),
    )
    apis = dict(APIS if apis is None else apis)
    extra = tuple(
        replace(scenario, name=f"{api}:{scenario.name}", api=api)
        for api in apis
        if api != "chat_completions"
        for scenario in chat
        if scenario.name in API_SCENARIOS
    )
    return Plan(
        rounds=rounds,
        scenarios=chat + extra,
        variant_scenarios=("unary_c8", "unary_c64"),
        many_streams=many_streams,
        warmup=n(100),
        variants=variants,
        features=features,
        base=base,
        apis=apis,
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
        # The Chat Completions model, in every gateway's catalogue since be8ffa1 (the base side's too);
        # the gateways of this tree also allow every measured API's model (run()).
        "ALLOWED_MODELS": load.MODEL,
        "LLM_DEFAULT_MODEL": load.MODEL,
        "LLM_MAX_IN_FLIGHT": capacity,
        "LLM_MAX_IN_FLIGHT_PER_CALLER": capacity,
        "LLM_MAX_CONNECTIONS": capacity,
    }


LIMITS_POLICY = """\
# Every kind of caller limit, none of them reached by the benchmark: the work of checking, reserving
# and settling them is what is measured (docs/limits.md).
[default]
requests_per_minute = 100000000
tokens_per_minute = 100000000000
concurrent = 100000
usd_per_day = 1000000.0
usd_per_month = 10000000.0

[default.tiers.fast]
usd_per_day = 1000000.0
"""

FEATURES = ("limits", "tracing")
"""Gateway features off by default whose price the benchmark measures: `limits`, a limits file counted in
process (no Redis); `tracing`, OpenTelemetry traces on but every call sampled out (ratio 0), as a
production gateway samples most calls out."""


def feature_env(features: tuple[str, ...], workdir: Path, trace_port: int) -> dict[str, str]:
    """The settings that turn `features` on. `trace_port`: where traces would go (a port held bound and
    never listening: with every call sampled out nothing is ever exported to it)."""
    env: dict[str, str] = {}
    for feature in features:
        if feature == "limits":
            policy = workdir / "limits.toml"
            policy.write_text(LIMITS_POLICY)
            env["LLM_LIMITS_FILE"] = str(policy)
        elif feature == "tracing":
            env |= {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{trace_port}",
                # OpenTelemetry's sampler variables, read by its SDK (opentelemetry/sdk/trace/sampling.py).
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0",
            }
        else:
            raise ValueError(f"unknown feature {feature!r} (one of {', '.join(FEATURES)})")
    return env


def start_gateway(
    name: str,
    env: dict[str, str],
    port: int,
    log: IO[bytes],
    *,
    workers: int = 1,
    loop: str | None = "uvloop",
    cwd: Path | None = None,
) -> tuple[Server, str]:
    """A gateway process; `cwd`: the source tree it runs from (an exported older one), `loop` None for
    a gateway without `--loop` (older ones: uvloop when installed)."""
    command = [PYTHON, "-m", "server", "serve", "--port", str(port), "--metrics-port", "-1"]
    command += ["--loop", loop] if loop is not None else []
    command += ["--workers", str(workers)] if workers > 1 else ["--reuse-port"]
    if cwd is not None:
        env = env | {"PYTHONPATH": str(cwd)}
    process = subprocess.Popen(command, env=env, stderr=log, stdout=log, cwd=cwd)
    address = f"127.0.0.1:{port}"
    return Server(name, process), address


def export_tree(ref: str, into: Path) -> None:
    """The gateway's code (server/, llm_grpc/) of git `ref`, written under `into`."""
    archive = into / "ref.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", ref, "server", "llm_grpc"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def model_of(ref: str) -> str:
    """load.MODEL if the catalogue of git `ref` has it, else BASE_MODEL."""
    catalogue = subprocess.run(
        ["git", "show", f"{ref}:server/catalogue.toml"], capture_output=True, text=True, check=False
    ).stdout
    return load.MODEL if f'[models."{load.MODEL}"]' in catalogue else BASE_MODEL


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
    text = prompt(scenario.tokens, scenario.token_delay_ms)
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
    targets: dict[str, dict[str, Target]] = {}
    server_of: dict[str, Server] = {"floor": floor}
    base_model = model_of(the_plan.base) if the_plan.base is not None else load.MODEL
    try:
        gateways: dict[str, dict[str, Any]] = {"gateway": {}}
        if the_plan.variants:
            gateways |= {"gateway_asyncio": {"loop": "asyncio"}, "gateway_2_workers": {"workers": 2}}
        addresses: dict[str, str] = {}
        with contextlib.ExitStack() as ports:
            if the_plan.features:
                trace_port = ports.enter_context(reserved_port())
                gateways["gateway_features"] = {"env": feature_env(FEATURES, workdir, trace_port)}
            if the_plan.base is not None:
                (workdir / "base").mkdir()
                export_tree(the_plan.base, workdir / "base")
                gateways["base"] = {"cwd": workdir / "base", "loop": None}
            for name, options in gateways.items():
                port = ports.enter_context(reserved_port())
                extra_env = options.pop("env", {})
                if name != "base":  # this tree's gateways allow every measured API's model
                    allowed = ",".join(dict.fromkeys(the_plan.apis.values()))
                    extra_env = extra_env | {"ALLOWED_MODELS": allowed}
                server_of[name], addresses[name] = start_gateway(name, env | extra_env, port, log, **options)
                servers.append(server_of[name])
            for name, address in addresses.items():
                await wait_serving(address, workers=2 if name == "gateway_2_workers" else 1)
        sdk_url = urls["OPENAI_BASE_URL"]
        apis = the_plan.apis
        targets = {
            "sdk": {api: SdkTarget(sdk_url, KEY, model=model, api=api) for api, model in apis.items()},
            "floor": {"chat_completions": GrpcTarget(floor_address)},
        }
        for name, address in addresses.items():
            model = base_model if name == "base" else load.MODEL
            targets[name] = {"chat_completions": GrpcTarget(address, model=model)}
        for api, model in apis.items():
            if api != "chat_completions":
                targets["gateway"][api] = GrpcTarget(addresses["gateway"], model=model)
        if the_plan.base is not None and base_model != load.MODEL:
            targets["sdk_base"] = {"chat_completions": SdkTarget(sdk_url, KEY, model=base_model)}
        gateway = server_of["gateway"]
        by_name = {s.name: s for s in the_plan.scenarios}
        # Warm every side: connections, caches, the SDK's lazy imports.
        for by_api in targets.values():
            for target in by_api.values():
                for stream in (False, True):
                    text = prompt(SHORT)
                    call = target.stream(text) if stream else target.unary(text)
                    await load.run(call, concurrency=8, calls=the_plan.warmup)
        measured = Measured()
        sides = list(targets)
        for round_index in range(the_plan.rounds):
            order = sides[round_index % len(sides) :] + sides[: round_index % len(sides)]
            for side in order:
                for name in the_plan.scenarios_of(side):
                    scenario = by_name[name]
                    target = targets[side][scenario.api]
                    await measure(side, target, scenario, server_of.get(side), measured)
            print(f"round {round_index + 1}/{the_plan.rounds} done", file=sys.stderr, flush=True)
        rss = {name: server.rss_mb() for name, server in server_of.items()}
        for name in gateways:
            if name != "gateway":
                server_of[name].stop()
        streams = await many_streams(targets["gateway"]["chat_completions"], gateway, the_plan.many_streams)
        ours = sum(server.spent() for server in servers) + _own_cpu() - own_before
    finally:
        for by_api in targets.values():
            for target in by_api.values():
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
            "base": the_plan.base,
            "base_model": base_model,
            "apis": apis,
            "features": list(FEATURES) if the_plan.features else [],
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
    for side in ("floor", "gateway", "gateway_asyncio", "gateway_2_workers", "gateway_features", "base"):
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
    out["own_cpu"] = own_cpu_figures(m, raw["plan"]["apis"])
    for api in raw["plan"]["apis"]:
        if api == "chat_completions":
            continue
        gw = cpu["gateway"]
        per_token[api] = [
            (long - short) / (LONG - SHORT)
            for long, short in zip(gw[f"{api}:stream_long_c8"], gw[f"{api}:stream_c8"], strict=True)
        ]
        out["cpu"]["gateway"][f"{api}:per_streamed_token"] = stats.per_round(per_token[api])
        out.setdefault("api_ratios", {})[f"{api}:cpu_per_streamed_token"] = stats.ratio(
            per_token[api], per_token["floor"]
        )
        for scenario, attribute, key in (("unary_c1", "latency", "overhead"), ("stream_c1", "ttft", "ttft")):
            out[key][f"{api}:{scenario}_overhead_p50"] = stats.difference(
                getattr(m, attribute)["gateway"][f"{api}:{scenario}"],
                getattr(m, attribute)["sdk"][f"{api}:{scenario}"],
                50,
            )
    if "base" in m.latency:
        out["base"] = base_figures(m)
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


def own_cpu_figures(m: Measured, apis: dict[str, str]) -> dict[str, dict[str, stats.Figure]]:
    """The three-part breakdown of a unary call's server CPU at c=8, round by round: the server's, the
    floor's (the gRPC hop and protobuf), the SDK's request path (the load generator's CPU per call made
    straight at the emulator with the SDK), and what is left: the gateway's own. For the default
    gateway, the one with limits and tracing on, and each extra wire API."""
    cpu, client = m.cpu_per_call, m.client_cpu_per_call
    configs = {"gateway": ("gateway", "unary_c8", "unary_c8")}
    if "gateway_features" in cpu:
        configs["gateway_features"] = ("gateway_features", "unary_c8", "unary_c8")
    for api in apis:
        if api != "chat_completions":
            configs[api] = ("gateway", f"{api}:unary_c8", f"{api}:unary_c8")
    out: dict[str, dict[str, stats.Figure]] = {}
    for config, (side, scenario, sdk_scenario) in configs.items():
        server = cpu[side][scenario]
        floor = cpu["floor"]["unary_c8"]
        sdk = client["sdk"][sdk_scenario]
        own = [s - f - d for s, f, d in zip(server, floor, sdk, strict=True)]
        out[config] = {
            "server": stats.per_round(server),
            "floor": stats.per_round(floor),
            "sdk": stats.per_round(sdk),
            "own": stats.per_round(own),
        }
    return out


def base_figures(m: Measured) -> dict[str, stats.Figure]:
    """The gateway of BASE_REF beside today's: each one's overhead over the SDK (the base's own model
    called straight when it differs), and today's minus the base's, round by round."""
    sdk_base = "sdk_base" if "sdk_base" in m.latency else "sdk"
    out: dict[str, stats.Figure] = {}
    for scenario, attribute, key in (("unary_c1", "latency", "unary"), ("stream_c1", "ttft", "ttft")):
        samples = getattr(m, attribute)
        ours = [
            stats.quantile(g, 50) - stats.quantile(d, 50)
            for g, d in zip(samples["gateway"][scenario], samples["sdk"][scenario], strict=True)
        ]
        theirs = [
            stats.quantile(g, 50) - stats.quantile(d, 50)
            for g, d in zip(samples["base"][scenario], samples[sdk_base][scenario], strict=True)
        ]
        out[f"{key}_overhead_p50_base"] = stats.difference(
            samples["base"][scenario], samples[sdk_base][scenario], 50
        )
        out[f"{key}_overhead_p50_gateway"] = stats.difference(
            samples["gateway"][scenario], samples["sdk"][scenario], 50
        )
        out[f"{key}_overhead_p50_minus_base"] = stats.per_round(
            [o - t for o, t in zip(ours, theirs, strict=True)]
        )
    out["cpu_per_unary_call_c8_base"] = stats.per_round(m.cpu_per_call["base"]["unary_c8"])
    out["cpu_per_unary_call_c8_gateway_over_base"] = stats.ratio(
        m.cpu_per_call["gateway"]["unary_c8"], m.cpu_per_call["base"]["unary_c8"]
    )
    return out


def verdicts(fig: dict[str, Any], raw: dict[str, Any]) -> list[tuple[str, float, Any, str]]:
    """(target, limit, figure or value, met / MISSED / noise)."""

    def judge(figure: stats.Figure, limit: float, scale: float = 1.0) -> str:
        """By the value; a figure whose spread makes it doubtful says so beside its verdict."""
        if figure.value != figure.value:  # NaN
            return "not measured"
        if figure.value < 0:  # the direct baseline was the slower one: no overhead was measured
            return "not measured (negative: the SDK-direct side was slower)"
        verdict = "met" if figure.value * scale <= limit else "MISSED"
        return verdict if figure.noise is None else f"{verdict} (by its value; {figure.noise})"

    def not_above(figure: stats.Figure) -> str:
        """Today's minus the base's: met when not above zero (below, or too close to tell)."""
        if figure.high <= 0:
            return "met (below the base)"
        if figure.low <= 0:
            return "met (no difference measured)"
        return "MISSED" if figure.noise is None else f"MISSED (by its value; {figure.noise})"

    streams = raw["many_streams"]
    own = fig["own_cpu"]
    rows: list[tuple[str, float, Any, str]] = [
        (
            OWN_CPU,
            TARGETS[OWN_CPU],
            own["gateway"]["own"],
            judge(own["gateway"]["own"], TARGETS[OWN_CPU], 1e3),
        )
    ]
    if "gateway_features" in own:
        figure = own["gateway_features"]["own"]
        rows.append((OWN_CPU_FEATURES, TARGETS[OWN_CPU_FEATURES], figure, judge(figure, 0.4, 1e3)))
    for name, figure in (
        ("server CPU per unary call, gateway / floor", fig["ratios"]["cpu_per_unary_call_c8"]),
        ("server CPU per streamed token, gateway / floor", fig["ratios"]["cpu_per_streamed_token"]),
    ):
        rows.append((name, TARGETS[name], figure, judge(figure, TARGETS[name])))
    if "base" in fig:
        for name, key in ((VS_BASE_UNARY, "unary"), (VS_BASE_TTFT, "ttft")):
            figure = fig["base"][f"{key}_overhead_p50_minus_base"]
            rows.append((name, TARGETS[name], figure, not_above(figure)))
    for api in raw["plan"]["apis"]:
        if api == "chat_completions":
            continue
        figure = own[api]["own"]
        rows.append((f"{api}: {OWN_CPU}", TARGETS[OWN_CPU], figure, judge(figure, TARGETS[OWN_CPU], 1e3)))
        name = "server CPU per streamed token, gateway / floor"
        figure = fig["api_ratios"][f"{api}:cpu_per_streamed_token"]
        rows.append((f"{api}: {name}", TARGETS[name], figure, judge(figure, TARGETS[name])))
    ok = streams["errors"] == 0 and streams["completed"] == streams["peak_open"] == streams["streams"]
    limit = TARGETS[STREAMS_RSS]
    rows.append(
        (
            STREAMS_RSS,
            limit,
            streams["rss_peak_mb"],
            ("met" if streams["rss_peak_mb"] <= limit else "MISSED") if ok else "MISSED (errors)",
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
            shown = figure.show(1000.0, "ms") if name.endswith("(ms)") else figure.show(1.0, TIMES, 2)
        else:
            shown = f"{figure:.0f} MB"
        lines.append(f"| {name} | {limit:g} | {shown} | {verdict} |")
    lines += own_cpu_report(fig, raw)
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
        "stream_c1: the emulator waits 1 ms before each token (the floor answers at once); "
        "stream_c8: no wait, so the first token arrives with the rest of a 20-token reply.",
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


def own_cpu_report(fig: dict[str, Any], raw: dict[str, Any]) -> list[str]:
    """The three-part breakdown of server CPU per unary call, and the gateway of the base beside."""
    labels = {
        "gateway": "defaults (limits and tracing off)",
        "gateway_features": "limits file (in process) + tracing on, sampled out",
    }
    lines = [
        "",
        "## The gateway's own CPU per unary call (c=8)",
        "",
        "Server CPU per call, minus the floor's (the gRPC hop and protobuf), minus the SDK's request path "
        "(the load generator's own CPU per call made straight at the emulator with the SDK: the call the "
        "adapter makes), all in the same rounds; what is left is the gateway's own work.",
        "",
        "| gateway | server CPU | minus floor | minus SDK request path | = gateway's own |",
        "|---|---|---|---|---|",
    ]
    for config, parts in fig["own_cpu"].items():
        label = labels.get(config, f"{config} API, model {raw['plan']['apis'].get(config, '')}")
        cells = [parts[k].show() for k in ("server", "floor", "sdk", "own")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "base" in fig:
        base = fig["base"]
        plan = raw["plan"]
        lines += [
            "",
            f"## Beside the gateway of {plan['base']} (model {plan['base_model']}), in the same rounds",
            "",
            "| | base | today | today minus base (per round) |",
            "|---|---|---|---|",
            f"| unary overhead p50, c=1 (ms) | {base['unary_overhead_p50_base'].show()} | "
            f"{base['unary_overhead_p50_gateway'].show()} | {base['unary_overhead_p50_minus_base'].show()} |",
            f"| TTFT overhead p50, c=1 (ms) | {base['ttft_overhead_p50_base'].show()} | "
            f"{base['ttft_overhead_p50_gateway'].show()} | {base['ttft_overhead_p50_minus_base'].show()} |",
            f"| server CPU per unary call, c=8 (ms) | {base['cpu_per_unary_call_c8_base'].show()} | "
            f"{fig['cpu']['gateway']['unary_c8_per_call'].show()} | "
            f"{base['cpu_per_unary_call_c8_gateway_over_base'].show(1.0, TIMES, 2)} (today / base) |",
        ]
    return lines


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


def _has_commit(ref: str) -> bool:
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, check=False
    )
    return found.returncode == 0


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
    parser.add_argument(
        "--no-features", action="store_true", help="skip the gateway with limits and tracing on"
    )
    parser.add_argument(
        "--base",
        default=BASE_REF,
        help=f"git ref of the gateway run beside for the latency targets (default {BASE_REF}; '' for none)",
    )
    parser.add_argument(
        "--api",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="also measure wire API NAME (tests/bench/load.py APIS) through MODEL, e.g. responses=gpt-5.5",
    )
    args = parser.parse_args()
    if args.base and not _has_commit(args.base):
        print(
            f"base {args.base!r} is not a commit of this clone (a shallow one?): the gateway of the base is "
            "not run and the targets against it are not judged; fetch it, or pass --base ''",
            file=sys.stderr,
        )
        args.base = ""
    apis = dict(APIS) | dict(item.split("=", 1) for item in args.api)
    the_plan = plan(
        args.scale,
        args.rounds,
        args.streams,
        variants=not args.no_variants,
        features=not args.no_features,
        base=args.base or None,
        apis=apis,
    )
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
