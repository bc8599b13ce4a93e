"""The real `llm-gateway serve` process: fail-fast starts, demo mode end to end with grpcurl, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.helpers import start_demo_server, user
from tests.processes import LogWatcher, event, start_gateway_process, stop

GRPCURL = str(Path(sys.executable).with_name("grpcurl"))
BASE_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "ALLOWED_"))
}


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0", *args],
        env=BASE_ENV | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_key_stops_the_start_naming_it() -> None:
    result = _serve({"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-x"})

    assert result.returncode != 0
    assert "GOOGLE_API_KEY" in result.stderr
    assert "gemini-3.5-flash" in result.stderr


def test_allowed_model_without_provider_stops_the_start() -> None:
    result = _serve(
        {
            "OPENAI_API_KEY": "sk-x",
            "ALLOWED_MODELS": "gpt-5.4-mini,llama-3",
            "LLM_DEFAULT_MODEL": "gpt-5.4-mini",
        }
    )

    assert result.returncode != 0
    assert "allowed model 'llama-3' is not in the model catalogue" in result.stderr


def test_default_model_outside_allowlist_stops_the_start() -> None:
    result = _serve(
        {"OPENAI_API_KEY": "sk-x", "ALLOWED_MODELS": "gpt-5.4", "LLM_DEFAULT_MODEL": "gpt-5.4-mini"}
    )

    assert result.returncode != 0
    assert "LLM_DEFAULT_MODEL 'gpt-5.4-mini' is not in ALLOWED_MODELS" in result.stderr


def test_invalid_setting_stops_the_start_naming_it() -> None:
    result = _serve({"OPENAI_API_KEY": "sk-x", "LLM_REQUEST_TIMEOUT": "soon"})

    assert result.returncode != 0
    assert "LLM_REQUEST_TIMEOUT" in result.stderr


@pytest.fixture
def demo_server() -> Iterator[tuple[subprocess.Popen[str], str, LogWatcher]]:
    """`llm-gateway serve --demo --port 0` in its own process; its address read from its `serving` line."""
    process, log, address = start_gateway_process(["--demo", "--metrics-port", "-1"], BASE_ENV)
    yield process, address, log
    stop(process)


def _grpcurl(*args: str) -> str:
    result = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _json_objects(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per streamed message, back to back."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        obj, end = decoder.raw_decode(text, index)
        objects.append(obj)
        index = end + len(text[end:]) - len(text[end:].lstrip())
    return objects


def test_demo_server_serves_grpcurl_and_stops_cleanly_on_sigterm(
    demo_server: tuple[subprocess.Popen[str], str, LogWatcher],
) -> None:
    process, address, _ = demo_server

    assert "llm.v1.LLMService" in _grpcurl(address, "list")
    assert "rpc Stream" in _grpcurl(address, "describe", "llm.v1.LLMService")
    assert '"SERVING"' in _grpcurl(address, "grpc.health.v1.Health/Check")
    unary = json.loads(
        _grpcurl(
            "-d",
            '{"model":"gpt-5.4-mini","messages":[{"role":"ROLE_USER","content":"hi"}]}',
            address,
            "llm.v1.LLMService/Complete",
        )
    )
    assert (unary["content"], unary["provider"]) == ("emulator reply: hi", "openai")
    for model in ("gpt-5.4-mini", "claude-haiku-4-5", "gemini-3.1-flash-lite"):
        request = json.dumps({"model": model, "messages": [{"role": "ROLE_USER", "content": "hello"}]})
        events = _json_objects(_grpcurl("-d", request, address, "llm.v1.LLMService/Stream"))
        assert "".join(e.get("delta", "") for e in events) == "emulator reply: hello"
        assert events[-1]["done"]["usage"]["total_tokens"] > 0  # grpcurl 1.8 prints proto field names

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


async def test_sigterm_drains_live_streams_refuses_new_calls_and_exits_zero(
    demo_server: tuple[subprocess.Popen[str], str, LogWatcher],
) -> None:
    process, address, log = demo_server
    async with grpc.aio.insecure_channel(address) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        request = llm_pb2.StreamRequest(
            model="claude-haiku-4-5", messages=user("one two three [[emulate: token_delay_ms=150]]")
        )
        calls = [stub.Stream(request, timeout=30) for _ in range(50)]
        iterators = [aiter(call) for call in calls]
        firsts = [await anext(iterator) for iterator in iterators]  # every stream is live

        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(log.wait_for, event("draining"))
        refused = await _first_refused_fresh_call(address)
        rests = [[event async for event in iterator] for iterator in iterators]

    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    for first, rest in zip(firsts, rests, strict=True):
        text = first.delta + "".join(e.delta for e in rest if e.WhichOneof("event") == "delta")
        assert text == "emulator reply: one two three"
        assert rest[-1].WhichOneof("event") == "done"
    assert process.wait(timeout=30) == 0


async def _first_refused_fresh_call(address: str, attempts: int = 100) -> grpc.aio.AioRpcError:
    """A new call on a new connection, repeated until the draining server refuses one: it logs
    `draining` just before it stops taking calls, so a call or two may still get through, or be
    cancelled if it arrived as the server began to stop (gRPC core's answer to that race)."""
    for _ in range(attempts):
        try:
            async with grpc.aio.insecure_channel(address) as fresh:
                await llm_pb2_grpc.LLMServiceStub(fresh).Complete(
                    llm_pb2.CompleteRequest(messages=user("hi")), timeout=5
                )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                return error
    raise AssertionError(f"{attempts} new calls were all served after SIGTERM")


def _complete(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        reply = llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(messages=user("hi")), timeout=10
        )
    return reply.content


def test_workers_share_one_port_serve_their_own_metrics_and_are_replaced_when_they_die() -> None:
    # One test for both (each start of a worker costs seconds): two workers, both killed, two new ones.
    process, log, address = start_gateway_process(
        ["--demo", "--workers", "2", "--metrics-port", "0"], BASE_ENV, serving=2
    )
    try:
        content_before = _complete(address)
        first = {line["pid"] for line in log.events("serving")}
        for pid in first:  # every worker dies: a call that is served now is served by a new one
            os.kill(pid, signal.SIGKILL)
        restarted = log.wait_for(event("worker.restarted"), count=2)
        log.wait_for(lambda line: line.get("event") == "serving" and line["pid"] not in first, count=2)
        content_after = _complete(address)
        serving, died = log.events("serving"), log.events("worker.died")
        scraped = [
            urllib.request.urlopen(f"http://127.0.0.1:{line['metrics_port']}/metrics", timeout=5)
            .read()
            .decode()
            for line in serving[2:]
        ]
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        stop(process)

    assert content_before == content_after == "emulator reply: hi"
    assert {line["address"] for line in serving} == {address}
    assert len({line["metrics_port"] for line in serving[2:]}) == 2
    assert all("llm_requests_total" in text for text in scraped)
    assert {line["pid"] for line in died} == first
    assert all(line["exit_code"] == -signal.SIGKILL for line in died)
    assert {line["worker"] for line in restarted} == {0, 1}
    assert code == 0


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process (this test) listens on, for as long as the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--port", "{port}", "--metrics-port", "-1"), "--port"),
        (("--port", "0", "--metrics-port", "{port}"), "--metrics-port"),
        (("--port", "0", "--workers", "2", "--metrics-port", "{port}"), "--metrics-port"),
    ],
    ids=["grpc", "metrics", "metrics-of-a-worker"],
)
def test_a_busy_port_stops_the_start_with_one_line_naming_the_flag(
    busy_port: int, args: tuple[str, ...], flag: str
) -> None:
    argv = [arg.format(port=busy_port) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--demo", *argv],
        env=BASE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )

    line = _last_line(result)
    assert result.returncode != 0
    assert line.startswith("llm-gateway: cannot ")
    assert f"127.0.0.1:{busy_port}" in line
    assert f"with {flag} " in line


def test_a_busy_emulator_port_stops_the_emulators_with_one_line_naming_the_flag(busy_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.emulators", "--port", str(busy_port)],
        env=BASE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )

    line = _last_line(result)
    assert result.returncode != 0
    assert line.startswith(f"emulators: cannot listen on 127.0.0.1:{busy_port}")
    assert "with --port " in line


EMULATORS_DOC = Path(__file__).resolve().parents[2] / "docs" / "emulators.md"


def _documented_exports() -> dict[str, str]:
    """The `export NAME=value` lines docs/emulators.md tells a reader to paste."""
    text = EMULATORS_DOC.read_text()
    section = text[text.index("## A gateway of your own") : text.index("## Replies")]
    exports = [line.removeprefix("export ") for line in section.splitlines() if line.startswith("export ")]
    return dict(pair.split("=", 1) for line in exports for pair in line.split())


def test_a_gateway_started_with_the_lines_the_emulators_print_calls_them() -> None:
    emulators = subprocess.Popen(
        [sys.executable, "-m", "server.emulators", "--port", "0"],
        env=BASE_ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert emulators.stdout is not None
    printed = dict(emulators.stdout.readline().strip().split("=", 1) for _ in range(6))
    documented = _documented_exports()
    gateway = None
    try:
        gateway, _, address = start_gateway_process(
            ["--metrics-port", "-1"],
            BASE_ENV | printed | {k: v for k, v in documented.items() if k.startswith("LLM_")},
        )
        reply = _complete(address)
    finally:
        for process in (gateway, emulators):
            if process is not None:
                stop(process)

    assert reply == "emulator reply: hi"
    assert set(printed) == {name for name in documented if not name.startswith("LLM_")}
    assert {k: v for k, v in printed.items() if k.endswith("_API_KEY")} == {
        k: v for k, v in documented.items() if k.endswith("_API_KEY")
    }
    assert {k: urllib.parse.urlsplit(v).path for k, v in printed.items() if k.endswith("_URL")} == {
        k: urllib.parse.urlsplit(v).path for k, v in documented.items() if k.endswith("_URL")
    }


def test_demo_mode_and_the_standalone_emulators_accept_the_same_key() -> None:
    server = start_demo_server(env=BASE_ENV)
    try:
        demo = [line for line in server.log.lines if str(line.get("event")).startswith("DEMO MODE")]
    finally:
        server.stop()

    assert demo[0]["key"] == _documented_exports()["OPENAI_API_KEY"] == "demo-key-not-secret"
