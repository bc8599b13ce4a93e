"""The real `llm-gateway serve` process: fail-fast starts, demo mode end to end with grpcurl, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    assert "gemini-1.5-pro" in result.stderr


def test_allowed_model_without_provider_stops_the_start() -> None:
    result = _serve(
        {
            "OPENAI_API_KEY": "sk-x",
            "ALLOWED_MODELS": "gpt-4.1-mini,llama-3",
            "LLM_DEFAULT_MODEL": "gpt-4.1-mini",
        }
    )

    assert result.returncode != 0
    assert "'llama-3' maps to no provider" in result.stderr


def test_default_model_outside_allowlist_stops_the_start() -> None:
    result = _serve(
        {"OPENAI_API_KEY": "sk-x", "ALLOWED_MODELS": "gpt-4.1", "LLM_DEFAULT_MODEL": "gpt-4.1-mini"}
    )

    assert result.returncode != 0
    assert "LLM_DEFAULT_MODEL 'gpt-4.1-mini' is not in ALLOWED_MODELS" in result.stderr


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
def demo_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--demo", "--port", str(port)],
        env=BASE_ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.stderr is not None
        line = process.stderr.readline()
        if '"serving"' in line:
            break
        assert process.poll() is None, "the demo server exited during start"
    yield process, address
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
    for model in ("gpt-4.1-mini", "claude-3-5-haiku-20241022", "gemini-2.0-flash-exp"):
        request = json.dumps({"model": model, "messages": [{"role": "ROLE_USER", "content": "hello"}]})
        events = _json_objects(_grpcurl("-d", request, address, "llm.v1.LLMService/Stream"))
        assert "".join(e.get("delta", "") for e in events) == "emulator reply: hello"
        assert events[-1]["done"]["usage"]["totalTokens"] > 0

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
