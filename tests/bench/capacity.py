"""`make bench-capacity` (and the end of `make bench`): a burst through three gateway replicas on one
redis-server against one model on two rate-limited deployments (docs/reliability.md, upstream capacity).

Processes: a redis-server, two emulator processes enforcing `--rpm` per key (two organisations), three
gateways sharing the Redis. A heavy caller sends `--factor` times the combined limit at once, a light
caller a few calls right after; every call has the same deadline. Reported: served, refused
(UPSTREAM_CAPACITY), other errors, the providers' 429s (the emulators' own counters), what the providers
offered and left unused, how many calls waited in a queue and the queue wait p50/p99 (the gateways'
llm_upstream_queue_wait_seconds histograms, summed). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.processes import start_emulators, start_gateway_process, stop

MODEL = "gpt-5.4-mini"
KEYS = ("sk-bench-org-a-0123456789abcdef", "sk-bench-org-b-0123456789abcdef")


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("LLM_", "ALLOWED_")) or k.endswith(("_API_KEY", "_BASE_URL")))
    }


def _redis(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt package redis-server)")
    socket = workdir / "redis.sock"
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket), "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=workdir,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "ready to accept connections" in line.lower():
            return process, f"unix://{socket}"
    raise SystemExit("redis-server exited before it was ready")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def _quantile(buckets: dict[float, float], q: float) -> float:
    """A quantile of a cumulative histogram (upper bound of the bucket it falls in)."""
    total = max(buckets.values(), default=0.0)
    for bound in sorted(buckets):
        if total and buckets[bound] >= q * total:
            return bound
    return 0.0


async def _burst(addresses: list[str], calls: int, light: int, deadline: float) -> dict[str, list[Any]]:
    channels = [grpc.aio.insecure_channel(address) for address in addresses]
    stubs = [llm_pb2_grpc.LLMServiceStub(channel) for channel in channels]

    async def call(index: int, agent: str) -> Any:
        request = llm_pb2.CompleteRequest(
            model=MODEL,
            messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content=f"{agent} {index}")],
            max_tokens=20,
        )
        try:
            return await stubs[index % len(stubs)].Complete(
                request, metadata=(("a2a-source-agent", agent),), timeout=deadline
            )
        except grpc.aio.AioRpcError as error:
            return error

    try:
        heavy_calls = [asyncio.create_task(call(i, "heavy")) for i in range(calls)]
        await asyncio.sleep(0)
        light_calls = [asyncio.create_task(call(i, "light")) for i in range(light)]
        return {"heavy": await asyncio.gather(*heavy_calls), "light": await asyncio.gather(*light_calls)}
    finally:
        for channel in channels:
            await channel.close(None)


def _reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return error.code().name


def run(rpm: int, factor: float, deadline: float, replicas: int) -> dict[str, Any]:
    combined = 2 * rpm
    with tempfile.TemporaryDirectory() as workdir:
        redis_process, redis_url = _redis(Path(workdir))
        processes: list[subprocess.Popen[str]] = [redis_process]
        try:
            urls = []
            for key in KEYS:
                process, found = start_emulators(key, "--rpm", str(rpm), env=_env())
                processes.append(process)
                urls.append(found["OPENAI_BASE_URL"])
            env = _env() | {
                "OPENAI_API_KEY": KEYS[0],
                "OPENAI_BASE_URL": urls[0],
                "ORG_B_KEY": KEYS[1],
                "LLM_PROVIDERS": json.dumps(
                    [{"name": "openai-b", "kind": "openai", "base_url": urls[1], "api_key_env": "ORG_B_KEY"}]
                ),
                "LLM_DEPLOYMENTS": json.dumps(
                    {
                        MODEL: [
                            {"provider": "openai", "requests_per_minute": rpm},
                            {"provider": "openai-b", "requests_per_minute": rpm},
                        ]
                    }
                ),
                "LLM_REDIS_URL": redis_url,
                "ALLOWED_MODELS": MODEL,
                "LLM_DEFAULT_MODEL": MODEL,
                "LLM_ALLOW_PLAINTEXT": "true",
                "LLM_AUTH_DISABLED": "true",
                "LLM_CAPACITY_QUEUE_PER_CALLER": str(10 * combined),
            }
            addresses, metrics_ports = [], []
            for _ in range(replicas):
                process, log, address = start_gateway_process(["--metrics-port", "0"], env)
                processes.append(process)
                addresses.append(address)
                metrics_ports.append(int(log.events("serving")[0]["metrics_port"]))
            results = asyncio.run(_burst(addresses, int(factor * combined), 6, deadline))
            emulators = [json.loads(_get(url.removesuffix("/v1") + "/_emulator/ratelimits")) for url in urls]
            buckets: dict[float, float] = {}
            for port in metrics_ports:
                for family in text_string_to_metric_families(_get(f"http://127.0.0.1:{port}/metrics")):
                    for sample in family.samples:
                        if (
                            sample.name == "llm_upstream_queue_wait_seconds_bucket"
                            and sample.labels.get("outcome") == "served"
                        ):
                            bound = float(sample.labels["le"])
                            buckets[bound] = buckets.get(bound, 0.0) + sample.value
        finally:
            for process in processes:
                stop(process)
    everything = results["heavy"] + results["light"]
    served = [r for r in everything if isinstance(r, llm_pb2.CompleteResponse)]
    reasons = [_reason(r) for r in everything if isinstance(r, grpc.aio.AioRpcError)]
    at_once = buckets.get(0.01, 0.0)
    return {
        "rpm_per_deployment": rpm,
        "combined_limit": combined,
        "calls": len(everything),
        "served": len(served),
        "served_light": sum(isinstance(r, llm_pb2.CompleteResponse) for r in results["light"]),
        "refused_upstream_capacity": reasons.count("UPSTREAM_CAPACITY"),
        "other_errors": len(reasons) - reasons.count("UPSTREAM_CAPACITY"),
        "provider_429": sum(e["refused"] for e in emulators),
        "reached_providers": sum(e["served"] for e in emulators),
        "left_unused_after_last": sum(e["left_after_last"].get("requests", 0) for e in emulators),
        "queued_then_served": max(buckets.get(float("inf"), 0.0) - at_once, 0.0),
        "queue_wait_p50_s": _quantile(buckets, 0.5),
        "queue_wait_p99_s": _quantile(buckets, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rpm", type=int, default=60, help="each deployment's requests per minute")
    parser.add_argument("--factor", type=float, default=3.0, help="burst size, times the combined limit")
    parser.add_argument("--deadline", type=float, default=10.0, help="every call's deadline, seconds")
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    result = run(args.rpm, args.factor, args.deadline, args.replicas)
    lines = [
        "## Upstream capacity: a burst through the replicas",
        "",
        f"{args.replicas} replicas, 2 deployments at {args.rpm} RPM, {result['calls']} calls "
        f"({args.factor:g}x the combined limit) with {args.deadline:g} s deadlines.",
        "",
        "| served | of which light caller | refused UPSTREAM_CAPACITY | other errors | provider 429s "
        "| queued then served | queue wait p50 | queue wait p99 | left unused |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['served']} | {result['served_light']} | {result['refused_upstream_capacity']} "
        f"| {result['other_errors']} | {result['provider_429']} | {result['queued_then_served']:.0f} "
        f"| ≤ {result['queue_wait_p50_s']:g} s | ≤ {result['queue_wait_p99_s']:g} s "
        f"| {result['left_unused_after_last']} |",
    ]
    print("\n".join(lines))
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
