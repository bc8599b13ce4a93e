"""The real `llm-gateway serve` process: fail-fast starts, demo mode end to end with grpcurl, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.helpers import user

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
    assert "llm_request_timeout" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`llm-gateway serve --demo` in its own process, logging to a file (a full pipe would block it)."""
    port = _free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--demo", "--port", str(port), "--metrics-port", "-1"],
            env=BASE_ENV,
            stderr=log_file,
            text=True,
        )
    deadline = time.monotonic() + 30
    while '"serving"' not in log_path.read_text():
        assert process.poll() is None, f"the demo server exited during start:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, "the demo server did not start within 30 s"
        time.sleep(0.05)
    yield process, f"127.0.0.1:{port}"
    if process.poll() is None:
        process.kill()
        process.wait()


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
    demo_server: tuple[subprocess.Popen[str], str],
) -> None:
    process, address = demo_server

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
    demo_server: tuple[subprocess.Popen[str], str],
) -> None:
    process, address = demo_server
    async with grpc.aio.insecure_channel(address) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        request = llm_pb2.StreamRequest(
            model="claude-haiku-4-5", messages=user("one two three [[emulate: token_delay_ms=150]]")
        )
        calls = [stub.Stream(request, timeout=30) for _ in range(50)]
        iterators = [aiter(call) for call in calls]
        firsts = [await anext(iterator) for iterator in iterators]  # every stream is live

        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with grpc.aio.insecure_channel(address) as fresh:
                await llm_pb2_grpc.LLMServiceStub(fresh).Complete(
                    llm_pb2.CompleteRequest(messages=user("hi")), timeout=5
                )
        rests = [[event async for event in iterator] for iterator in iterators]

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for first, rest in zip(firsts, rests, strict=True):
        text = first.delta + "".join(e.delta for e in rest if e.WhichOneof("event") == "delta")
        assert text == "emulator reply: one two three"
        assert rest[-1].WhichOneof("event") == "done"
    assert process.wait(timeout=30) == 0


def test_workers_share_one_port_and_each_serves_its_own_metrics(tmp_path: Path) -> None:
    port, metrics = _free_port(), _free_port()
    log_path = tmp_path / "workers.log"
    command = [sys.executable, "-m", "server", "serve", "--demo", "--port", str(port), "--workers", "2"]
    with log_path.open("w") as log_file:
        process = subprocess.Popen([*command, "--metrics-port", str(metrics)], env=BASE_ENV, stderr=log_file)
    try:
        deadline = time.monotonic() + 30
        while log_path.read_text().count('"event": "serving"') < 2:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(messages=user("hi")), timeout=10
            )
        scraped = [
            urllib.request.urlopen(f"http://127.0.0.1:{metrics + i}/metrics", timeout=5).read().decode()
            for i in range(2)
        ]
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    assert reply.content == "emulator reply: hi"
    assert all("llm_requests_total" in text for text in scraped)
    assert code == 0
