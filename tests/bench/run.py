"""`make bench`: the gateway's own overhead, measured against the bare SDK in the same run.

Three processes: the provider emulators, the gateway, and a load generator (`tests/bench/load.py`) that
runs alternately against the emulator directly with the official SDK and against the gateway over gRPC.
Reports latency percentiles, stream time to first token and inter-token gaps, throughput, CPU per call
and resident memory at 1000 concurrent streams, each beside its target. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.processes import start_emulators, start_gateway_process

PYTHON = sys.executable
BIN = Path(sys.executable).parent
KEY = "bench-key"
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.2f}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Stack:
    """Emulators and gateway in their own processes, each on a port it picks itself (port 0) and
    reports (tests/processes.py)."""

    def __init__(self, token_delay_ms: float, workers: int = 1) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        self.emulators, urls = start_emulators(KEY, "--token-delay-ms", str(token_delay_ms), env=env)
        self.openai_url = urls["OPENAI_BASE_URL"]
        gateway_env = (
            env
            | urls
            | {
                "OPENAI_API_KEY": KEY,
                "ANTHROPIC_API_KEY": KEY,
                "GOOGLE_API_KEY": KEY,
                "LLM_LOG_LEVEL": "info",  # the `serving` line says where it listens
                "LLM_ALLOW_PLAINTEXT": "true",
                "LLM_AUTH_DISABLED": "true",
                # One load generator stands for many callers: its 1000 concurrent streams must not meet the
                # per-caller limit (a quarter of LLM_MAX_IN_FLIGHT by default).
                "LLM_MAX_IN_FLIGHT_PER_CALLER": "2000",
            }
        )
        args = ["--metrics-port", "-1", "--workers", str(workers)]
        self.gateway, self.log, self.address = start_gateway_process(args, gateway_env, serving=workers)

    def stop(self) -> None:
        for process in (self.gateway, self.emulators):
            process.terminate()
            process.wait(timeout=30)


def load(
    stack: Stack, side: str, *, stream: bool = False, concurrency: int = 64, requests: int = 640
) -> dict[str, Any]:
    target = stack.openai_url if side == "sdk" else stack.address
    command = [
        PYTHON,
        "-m",
        "tests.bench.load",
        "--side",
        side,
        "--target",
        target,
        "--key",
        KEY,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
    ]
    if stream:
        command.append("--stream")
    result: dict[str, Any] = json.loads(
        subprocess.run(command, capture_output=True, check=True, text=True).stdout
    )
    return result


def alternate(stack: Stack, rounds: int, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Run SDK and gateway sides alternately and pool each side's samples."""
    pooled: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for side in ("sdk", "gateway"):
            result = load(stack, side, **kwargs)
            into = pooled.setdefault(
                side, {"latency": [], "ttft": [], "gaps": [], "errors": 0, "throughput": []}
            )
            for key in ("latency", "ttft", "gaps"):
                into[key] += result[key]
            into["errors"] += result["errors"]
            into["throughput"].append(result["throughput"])
    return pooled


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    lines = [
        "# Benchmark run",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]

    stack = Stack(token_delay_ms=10)
    try:
        unary = alternate(stack, args.rounds, concurrency=64, requests=int(640 * scale))
        streams = alternate(stack, args.rounds, stream=True, concurrency=64, requests=int(640 * scale))
    finally:
        stack.stop()
    sdk, gw = unary["sdk"]["latency"], unary["gateway"]["latency"]
    lines += [
        "## Unary, emulator 10 ms/token, 20 tokens, 64 in flight",
        "",
        "| | SDK direct (ms) | through gateway (ms) | overhead (ms) | target |",
        "|---|---|---|---|---|",
    ]
    for q, target in ((50, 1.0), (95, None), (99, 3.0)):
        overhead = percentile(gw, q) - percentile(sdk, q)
        goal = f"≤ {target} ms: {verdict(overhead * 1000, target)}" if target else ""
        lines.append(
            f"| p{q} | {ms(percentile(sdk, q))} | {ms(percentile(gw, q))} | {ms(overhead)} | {goal} |"
        )
    s_ttft, g_ttft = streams["sdk"]["ttft"], streams["gateway"]["ttft"]
    s_gap, g_gap = streams["sdk"]["gaps"], streams["gateway"]["gaps"]
    ttft_over = percentile(g_ttft, 50) - percentile(s_ttft, 50)
    gap_over = percentile(g_gap, 99) - percentile(s_gap, 99)
    lines += [
        "",
        "## Stream, same emulator, 64 in flight",
        "",
        "| | SDK direct (ms) | through gateway (ms) | overhead (ms) | target |",
        "|---|---|---|---|---|",
        f"| time to first token p50 | {ms(percentile(s_ttft, 50))} | {ms(percentile(g_ttft, 50))} | "
        f"{ms(ttft_over)} | ≤ 1 ms: {verdict(ttft_over * 1000, 1.0)} |",
        f"| inter-token gap p50 | {ms(percentile(s_gap, 50))} | {ms(percentile(g_gap, 50))} | "
        f"{ms(percentile(g_gap, 50) - percentile(s_gap, 50))} | |",
        f"| inter-token gap p99 | {ms(percentile(s_gap, 99))} | {ms(percentile(g_gap, 99))} | "
        f"{ms(gap_over)} | ≤ 0.5 ms: {verdict(gap_over * 1000, 0.5)} |",
    ]

    stack = Stack(token_delay_ms=0)
    try:
        cpu_before = cpu_seconds(stack.gateway.pid)
        measured = load(stack, "gateway", concurrency=16, requests=int(3000 * scale))
        server_cpu = (cpu_seconds(stack.gateway.pid) - cpu_before) / measured["calls"]
        direct = load(stack, "sdk", concurrency=16, requests=int(3000 * scale))
        lines += [
            "",
            "## CPU per unary call, emulator 0 ms, 16 in flight",
            "",
            f"- Gateway server process: {server_cpu * 1000:.3f} ms per call (target ≤ 1 ms: "
            f"{verdict(server_cpu * 1000, 1.0)}).",
            f"- For scale, the SDK's own client CPU per direct call: "
            f"{direct['client_cpu'] / direct['calls'] * 1000:.3f} ms; the gateway's client CPU per call: "
            f"{measured['client_cpu'] / measured['calls'] * 1000:.3f} ms.",
        ]
        lines += [
            "",
            "## Throughput, emulator 0 ms (requests per second; one worker)",
            "",
            "| in flight | SDK direct | through gateway | errors (gateway) |",
            "|---|---|---|---|",
        ]
        for concurrency, requests in ((1, 300), (64, 3000), (1000, 5000)):
            n = int(requests * scale)
            direct, through = (
                load(stack, "sdk", concurrency=concurrency, requests=n),
                load(stack, "gateway", concurrency=concurrency, requests=n),
            )
            lines.append(
                f"| {concurrency} | {direct['throughput']:.0f} | {through['throughput']:.0f} | "
                f"{through['errors']} |"
            )
    finally:
        stack.stop()

    stack = Stack(token_delay_ms=0, workers=2)
    try:
        lines += [
            "",
            "## Throughput with 2 workers (SO_REUSEPORT), emulator 0 ms",
            "",
            "| in flight | through gateway (rps) | errors |",
            "|---|---|---|",
        ]
        for concurrency, requests in ((64, 3000), (1000, 5000)):
            through = load(stack, "gateway", concurrency=concurrency, requests=int(requests * scale))
            lines.append(f"| {concurrency} | {through['throughput']:.0f} | {through['errors']} |")
    finally:
        stack.stop()

    stack = Stack(token_delay_ms=20)
    try:
        peak = [rss_mb(stack.gateway.pid)]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak.append(rss_mb(stack.gateway.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        result = load(stack, "gateway", stream=True, concurrency=1000, requests=1000)
        done.set()
        watcher.join()
        lines += [
            "",
            "## 1000 concurrent streams, emulator 20 ms/token",
            "",
            f"- Completed: {result['calls']}, errors: {result['errors']} (target: all succeed: "
            f"{'met' if result['errors'] == 0 and result['calls'] == 1000 else 'MISSED'}).",
            f"- Gateway resident memory: {peak[0]:.0f} MB idle, {max(peak):.0f} MB peak (target ≤ 300 MB: "
            f"{verdict(max(peak), 300)}).",
            f"- Stream time to first token p50 {ms(percentile(result['ttft'], 50))} ms, "
            f"p99 {ms(percentile(result['ttft'], 99))} ms.",
        ]
    finally:
        stack.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
