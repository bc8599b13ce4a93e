"""`make dashboard`: docs/images/dashboard.png, the main panels of the Grafana dashboard
(docs/deploy/grafana/llm-grpc.json) drawn from real traffic, without Grafana or Prometheus.

The demo gateway (`llm-gateway serve --demo`, its own process, ports it picks) takes a minute or so of
mixed gRPC traffic from this harness: Complete and Stream over the three providers, callers refused
(a model outside the allowlist, invalid input, a deadline too short), provider faults injected with the
emulators' directives (docs/emulators.md), and an Anthropic incident (529 for a while) that opens its
circuit and moves `claude-haiku-4-5` calls to the configured fallback. Meanwhile /metrics is scraped every
couple of seconds; the panels' PromQL (rate, sums by label, ratios, histogram_quantile over the buckets)
is evaluated here over those scrapes and drawn as a grid of panels with matplotlib. Nothing here is a
test and nothing is faked: every number comes from the gateway's own metrics.

    python -m tests.bench.dashboard --out docs/images/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import random
import signal
import subprocess
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.processes import start_gateway_process

Labels = tuple[tuple[str, str], ...]
Group = tuple[str, ...]

WINDOW = 12.0
"""The range of every rate() and histogram_quantile(), in seconds: Grafana's `$__rate_interval` is at
least four scrape intervals; a few more keep quantiles of a few calls per second readable."""

MODELS = {  # model -> (weight in the mix, the emulator's delay per token in ms)
    "gpt-5.4-mini": (30, 12),
    "gpt-5.4": (8, 30),
    "claude-haiku-4-5": (20, 18),
    "claude-sonnet-4-6": (8, 35),
    "gemini-3.5-flash": (26, 8),
    "gemini-3.1-pro-preview": (8, 40),
}
FALLBACKS = '{"claude-haiku-4-5": ["gemini-3.5-flash"]}'
AGENTS = ("planner", "summarizer", "support-bot", "triage")
NOT_ALLOWED = ("gpt-4o", "llama-3.1-70b", "mistral-large")
INCIDENT = (0.42, 0.62)
"""The share of the run during which the Anthropic emulator answers 529 (overloaded) to every call."""


# --- traffic ---------------------------------------------------------------------------------------


def _rate(at: float, peak: float) -> float:
    """Calls per second at this share of the run: a quiet start, a ramp to the peak, a plateau, a fall."""
    if at < 0.15:
        return 0.35 * peak
    if at < 0.4:
        return peak * (0.35 + 0.65 * (at - 0.15) / 0.25)
    if at < 0.8:
        return peak
    return peak * 0.5


@dataclass
class Traffic:
    stub: llm_pb2_grpc.LLMServiceAsyncStub
    rng: random.Random
    duration: float
    outcomes: Counter[str] = field(default_factory=Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def one(self, at: float) -> tuple[str, str, str, float]:
        """method, model, last user text and deadline for a call made at this share of the run."""
        rng = self.rng
        method = "Stream" if rng.random() < 0.45 else "Complete"
        names = list(MODELS)
        model = rng.choices(names, weights=[MODELS[m][0] for m in names])[0]
        words = " ".join(f"w{i}" for i in range(rng.randint(6, 40)))
        delay = MODELS[model][1] * rng.uniform(0.6, 1.6)
        directives = [f"token_delay_ms={delay:.0f}"]
        deadline = 30.0
        roll = rng.random()
        if INCIDENT[0] <= at < INCIDENT[1] and model.startswith("claude"):
            directives.append("status=529 on=anthropic")
        elif roll < 0.04:
            model = rng.choice(NOT_ALLOWED)  # refused by the allowlist (a governance violation)
        elif roll < 0.06:
            words = ""  # refused as invalid: no message has content
        elif roll < 0.09:
            directives.append("status=503 times=1")  # one retry, then served
        elif roll < 0.11:
            directives.append("status=429 retry_after_ms=200 times=1")  # rate limited, retried
        elif roll < 0.12:
            directives.append("fail=quota")  # never retried
        elif roll < 0.13 and method == "Stream":
            directives.append("error_after=3")  # a mid-stream failure after three chunks
        elif roll < 0.145:
            directives = ["token_delay_ms=150"]  # the caller's deadline passes first
            deadline = 0.4
        text = f"[[emulate: {' '.join(directives)}]] {words}" if words else ""
        return method, model, text, deadline

    async def call(self, at: float) -> None:
        method, model, text, deadline = self.one(at)
        messages = [llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text)]
        metadata = (("a2a-source-agent", self.rng.choice(AGENTS)),)
        try:
            if method == "Complete":
                await self.stub.Complete(
                    llm_pb2.CompleteRequest(model=model, messages=messages),
                    metadata=metadata,
                    timeout=deadline,
                )
            else:
                request = llm_pb2.StreamRequest(model=model, messages=messages)
                async for _ in self.stub.Stream(request, metadata=metadata, timeout=deadline):
                    pass
            self.outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            self.outcomes[error.code().name] += 1

    async def run(self, peak: float) -> None:
        """Open-loop arrivals (Poisson, at `_rate`) for `duration` seconds; then waits for the last calls."""
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.duration:
            task = asyncio.create_task(self.call(elapsed / self.duration))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(self.rng.expovariate(_rate(elapsed / self.duration, peak)))
        if self.tasks:
            await asyncio.wait(self.tasks)


# --- scrapes and the panels' queries -----------------------------------------------------------------


@dataclass
class Scrape:
    at: float
    values: dict[tuple[str, Labels], float]


def scrape(url: str, at: float) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:  # a loopback URL of our own gateway
        text = response.read().decode()
    values: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(at, values)


async def scrape_every(
    url: str, interval: float, started: float, into: list[Scrape], done: asyncio.Event
) -> None:
    while not done.is_set():
        into.append(await asyncio.to_thread(scrape, url, time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), interval)


@dataclass
class Query:
    """PromQL's few parts the panels need, over a list of scrapes."""

    scrapes: Sequence[Scrape]

    @property
    def times(self) -> list[float]:
        return [s.at for s in self.scrapes]

    def sum_by(
        self, name: str, by: Sequence[str], where: Callable[[dict[str, str]], bool] | None = None
    ) -> dict[Group, list[float]]:
        """`sum by (BY) (NAME{WHERE})` at each scrape; a series not there yet counts as 0."""
        groups: dict[Group, list[float]] = defaultdict(lambda: [0.0] * len(self.scrapes))
        for i, s in enumerate(self.scrapes):
            for (sample, labels), value in s.values.items():
                if sample != name:
                    continue
                found = dict(labels)
                if where is None or where(found):
                    groups[tuple(found.get(key, "") for key in by)][i] += value
        return dict(groups)

    def _start(self, i: int) -> int:
        """The first scrape inside the window that ends at scrape i."""
        j = i
        while j > 0 and self.scrapes[j - 1].at >= self.scrapes[i].at - WINDOW - 1e-9:
            j -= 1
        return j

    def rate(self, series: Sequence[float]) -> list[float]:
        out = []
        for i in range(len(series)):
            j = self._start(i)
            span = self.scrapes[i].at - self.scrapes[j].at
            out.append((series[i] - series[j]) / span if span > 0 else math.nan)
        return out

    def rate_by(
        self, name: str, by: Sequence[str], where: Callable[[dict[str, str]], bool] | None = None
    ) -> dict[Group, list[float]]:
        return {group: self.rate(values) for group, values in self.sum_by(name, by, where).items()}

    def quantile_by(self, q: float, histogram: str, by: Sequence[str]) -> dict[Group, list[float]]:
        """`histogram_quantile(q, sum by (BY, le) (rate(HISTOGRAM_bucket[WINDOW])))`."""
        buckets = self.sum_by(f"{histogram}_bucket", [*by, "le"])
        groups: dict[Group, dict[float, list[float]]] = defaultdict(dict)
        for key, values in buckets.items():
            groups[key[:-1]][float(key[-1])] = values
        out: dict[Group, list[float]] = {}
        for group, by_le in groups.items():
            bounds = sorted(by_le)
            series = []
            for i in range(len(self.scrapes)):
                j = self._start(i)
                series.append(quantile(q, [(le, by_le[le][i] - by_le[le][j]) for le in bounds]))
            out[group] = series
        return out


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile on cumulative (upper bound, count) pairs, +Inf last: linear
    interpolation inside the bucket holding the rank; the highest finite bound if that is +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return math.nan


# --- drawing -----------------------------------------------------------------------------------------


def _label(group: Group) -> str:
    return " ".join(part for part in group if part) or "(none)"


def _panel(
    ax: Axes,
    title: str,
    times: Sequence[float],
    lines: dict[Group, list[float]],
    unit: str,
    incident: tuple[float, float],
    scale: float = 1.0,
    dashed: dict[str, list[float]] | None = None,
) -> None:
    ax.axvspan(*incident, color="#d62728", alpha=0.08, lw=0)
    if len(lines) > 10:
        ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i) for i in range(20)])
    drawn: dict[str, Any] = {}  # label -> the line's colour, for its dashed p50
    for key, values in sorted(lines.items()):
        label = _label(key)
        if all(math.isnan(v) or v == 0 for v in values):
            continue
        (line,) = ax.plot(times, [v * scale for v in values], lw=1.4, label=label)
        drawn[label] = line.get_color()
    for label, values in (dashed or {}).items():
        if label in drawn:
            ax.plot(times, [v * scale for v in values], lw=1.0, ls="--", color=drawn[label])
    ax.set_title(title, fontsize=10.5, loc="left")
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.set_xlim(0, times[-1])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if drawn:
        many = len(drawn) > 5
        ax.legend(fontsize=6.3 if many else 7, loc="upper left", ncol=2 if many else 1, framealpha=0.7)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def _stat(ax: Axes, title: str, value: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("#f2f4f7")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.04, 0.78, title, fontsize=10, transform=ax.transAxes)
    ax.text(0.5, 0.3, value, fontsize=20, ha="center", va="center", weight="bold", transform=ax.transAxes)


def render(scrapes: Sequence[Scrape], traffic_end: float, calls: int, out: Path) -> None:
    query = Query(scrapes)
    times = query.times
    incident = (INCIDENT[0] * traffic_end, INCIDENT[1] * traffic_end)
    # The stat panels' `now`: the last scrape while the traffic still ran.
    now = max(i for i, s in enumerate(scrapes) if s.at <= traffic_end + 1e-9)

    def single(values: dict[Group, list[float]]) -> list[float]:
        return next(iter(values.values()), [0.0] * len(scrapes))

    calls_rate = single(query.rate_by("llm_calls_total", []))
    failing = single(
        query.rate_by("llm_calls_total", [], lambda x: x.get("origin") in ("gateway", "provider"))
    )
    spend = single(query.sum_by("llm_cost_usd_total", []))
    in_flight = single(query.sum_by("llm_active_requests", []))

    figure = plt.figure(figsize=(15, 15.5), dpi=90)
    grid = figure.add_gridspec(
        5, 1, height_ratios=[0.4, 1, 1, 1, 1], hspace=0.38, left=0.045, right=0.99, top=0.95, bottom=0.06
    )
    stats = [
        ("Calls per second", f"{calls_rate[now]:.1f}"),
        ("Failing calls", f"{100 * failing[now] / calls_rate[now]:.1f} %" if calls_rate[now] else "-"),
        ("Spend today", f"${spend[now]:.4f}"),
        ("Calls in flight", f"{in_flight[now]:.0f}"),
    ]
    top = grid[0].subgridspec(1, 4, wspace=0.08)
    for k, (title, value) in enumerate(stats):
        _stat(figure.add_subplot(top[0, k]), title, value)
    rows = [grid[1 + r].subgridspec(1, 3, wspace=0.2) for r in range(4)]
    panels = iter(figure.add_subplot(row[0, c]) for row in rows for c in range(3))

    def ratio(top: dict[Group, list[float]], bottom: dict[Group, list[float]]) -> dict[Group, list[float]]:
        return {
            g: [t / b if b > 0 else math.nan for t, b in zip(top[g], bottom[g], strict=True)]
            for g in bottom
            if g in top
        }

    provider_errors = ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
    by_provider = query.rate_by("llm_requests_total", ["provider"])
    errored = query.rate_by("llm_requests_total", ["provider"], lambda x: x.get("status") in provider_errors)
    retries = {
        ("retry", *g): v for g, v in query.rate_by("llm_retries_total", ["provider", "reason"]).items()
    }
    failovers = query.rate_by("llm_failovers_total", ["from_model", "to_model"])
    retries |= {("failover", f"{g[0]} → {g[1]}"): v for g, v in failovers.items()}
    overhead99 = query.quantile_by(0.99, "llm_gateway_overhead_seconds", ["method"])
    overhead50 = query.quantile_by(0.50, "llm_gateway_overhead_seconds", ["method"])
    ttft95 = query.quantile_by(0.95, "llm_time_to_first_token_seconds", ["model"])
    ttft50 = query.quantile_by(0.50, "llm_time_to_first_token_seconds", ["model"])

    def draw(
        title: str,
        lines: dict[Group, list[float]],
        unit: str,
        scale: float = 1.0,
        dashed: dict[str, list[float]] | None = None,
    ) -> None:
        _panel(next(panels), title, times, lines, unit, incident, scale, dashed)

    draw(
        "Calls per second by code and origin", query.rate_by("llm_calls_total", ["code", "origin"]), "calls/s"
    )
    draw("Refusals per second by reason", query.rate_by("llm_refusals_total", ["reason"]), "refusals/s")
    draw(
        "Provider calls per second by provider and status",
        query.rate_by("llm_requests_total", ["provider", "status"]),
        "calls/s",
    )
    draw("Error ratio by provider", ratio(errored, by_provider), "share of provider calls")
    draw(
        "p95 latency by model",
        query.quantile_by(0.95, "llm_request_duration_seconds", ["model"]),
        "seconds",
    )
    draw(
        "p95 time to first token by model (streams; p50 dashed)",
        ttft95,
        "seconds",
        dashed={_label(g): v for g, v in ttft50.items()},
    )
    draw(
        "Errors per second by type", query.rate_by("llm_errors_total", ["provider", "error_type"]), "errors/s"
    )
    draw("Retries and failovers per second", retries, "per second")
    draw("Tokens per second by model", query.rate_by("llm_tokens_total", ["model", "token_type"]), "tokens/s")
    draw(
        "Spend per hour by provider (at this rate)",
        query.rate_by("llm_cost_usd_total", ["provider"]),
        "USD/h",
        scale=3600.0,
    )
    draw(
        "p99 gateway overhead by method (p50 dashed)",
        overhead99,
        "milliseconds",
        scale=1000.0,
        dashed={_label(g): v for g, v in overhead50.items()},
    )
    draw(
        "Calls in flight by provider (max over pods)",
        query.sum_by("llm_active_requests", ["provider"]),
        "calls",
    )
    for ax in figure.axes[4:]:
        ax.set_xlabel("seconds since the traffic started", fontsize=7)

    figure.suptitle(
        "llm-grpc: the Grafana dashboard's main panels, from real traffic against the demo gateway",
        fontsize=14,
        x=0.01,
        ha="left",
        y=0.995,
    )
    figure.text(
        0.01,
        0.005,
        f"{calls} gRPC calls in {traffic_end:.0f} s, {len(scrapes)} scrapes of /metrics; each panel's "
        f"PromQL (docs/deploy/grafana/llm-grpc.json) evaluated over a {WINDOW:.0f} s window. Shaded: the "
        "Anthropic emulator answers 529 to every call.\nRendered by tests/bench/dashboard.py "
        "(make dashboard) with matplotlib from the demo gateway's own metrics: not a Grafana screenshot.",
        fontsize=8.5,
        color="#444444",
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)
    buffer.seek(0)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette: line plots lose nothing visible and the PNG shrinks to a fraction.
    Image.open(buffer).convert("RGB").quantize(colors=256).save(out, optimize=True)


# --- the run -----------------------------------------------------------------------------------------


def gateway_env() -> dict[str, str]:
    """The caller's environment without keys or gateway settings, plus the ones this run needs: a
    fallback for the incident, and a circuit cool-down short enough to see it close again."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.endswith("_API_KEY") or k.startswith(("LLM_", "ALLOWED_")))
    }
    return env | {"LLM_FALLBACKS": FALLBACKS, "LLM_CIRCUIT_COOLDOWN": "8"}


async def drive(address: str, metrics_url: str, args: argparse.Namespace) -> tuple[list[Scrape], float, int]:
    scrapes: list[Scrape] = []
    done = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        traffic = Traffic(stub, random.Random(args.seed), args.duration)
        started = time.monotonic()
        scraper = asyncio.create_task(scrape_every(metrics_url, args.scrape_interval, started, scrapes, done))
        await traffic.run(args.peak)
        traffic_end = time.monotonic() - started
        done.set()
        await scraper
        scrapes.append(await asyncio.to_thread(scrape, metrics_url, time.monotonic() - started))
    calls = sum(traffic.outcomes.values())
    print(f"{calls} calls:", ", ".join(f"{code} {n}" for code, n in traffic.outcomes.most_common()))
    return scrapes, min(traffic_end, args.duration), calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/images/dashboard.png"))
    parser.add_argument("--duration", type=float, default=75.0, help="seconds of traffic")
    parser.add_argument("--peak", type=float, default=24.0, help="calls per second at the peak")
    parser.add_argument("--scrape-interval", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)

    process, log, address = start_gateway_process(["--demo", "--metrics-port", "0"], gateway_env())
    try:
        serving = log.events("serving")[0]
        metrics_url = f"http://127.0.0.1:{serving['metrics_port']}/metrics"
        print(f"demo gateway on {address}, metrics on {metrics_url}; {args.duration:.0f} s of traffic")
        scrapes, traffic_end, calls = asyncio.run(drive(address, metrics_url, args))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    render(scrapes, traffic_end, calls, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
