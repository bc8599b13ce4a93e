"""Shared fixtures: the three provider emulators on loopback and the real gateway in front of them."""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from llm_grpc.v1 import llm_pb2_grpc
from server.app import App, build_app
from server.config import DEFAULT_ALLOWED_MODELS, Settings
from server.core.limits import LimitStore
from server.emulators.anthropic import AnthropicEmulator
from server.emulators.base import Emulator, RecordedRequest
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator
from server.observability.logging import configure_logging
from server.observability.redact import Redactor

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
GEMINI_KEY = "AIzaTest0123456789abcdefghijklmn"

# One model per provider (its current small model): the integration tests run each behaviour against all
# three.
MODELS = {
    "openai": "gpt-5.4-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-3.1-flash-lite",
}
# For behaviours that need sampling parameters or stop sequences: a model of each provider that takes
# them (OpenAI's GPT-5.x reasoning models take neither; Claude takes stop sequences only).
SAMPLING_MODELS = MODELS | {"openai": "gpt-4.1-mini"}


@dataclass
class Emulators:
    openai: OpenAIEmulator
    anthropic: AnthropicEmulator
    gemini: GeminiEmulator

    def by_provider(self, provider: str) -> Emulator:
        emulator: Emulator = getattr(self, provider)
        return emulator

    def completions(self, provider: str) -> list[RecordedRequest]:
        """Generation requests the provider's emulator received (probes excluded)."""
        return [r for r in self.by_provider(provider).requests if r.method == "POST"]


@pytest.fixture
async def emulators() -> AsyncIterator[Emulators]:
    started = Emulators(
        OpenAIEmulator(api_key=OPENAI_KEY),
        AnthropicEmulator(api_key=ANTHROPIC_KEY),
        GeminiEmulator(api_key=GEMINI_KEY),
    )
    for emulator in (started.openai, started.anthropic, started.gemini):
        await emulator.start()
    yield started
    for emulator in (started.openai, started.anthropic, started.gemini):
        await emulator.stop()


def make_settings(emulators: Emulators, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": OPENAI_KEY,
        "anthropic_api_key": ANTHROPIC_KEY,
        "google_api_key": GEMINI_KEY,
        "openai_base_url": emulators.openai.base_url,
        "anthropic_base_url": emulators.anthropic.base_url,
        "gemini_base_url": emulators.gemini.base_url,
        "llm_retry_base_delay": 0.01,
        "llm_retry_max_delay": 0.05,
        "llm_allow_plaintext": True,
        "llm_auth_disabled": True,
        "allowed_models": ",".join((*DEFAULT_ALLOWED_MODELS, SAMPLING_MODELS["openai"])),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def start_gateway(emulators: Emulators) -> AsyncIterator[Callable[..., Any]]:
    """Start a gateway on 127.0.0.1:0 with settings overrides; stopped after the test."""
    apps: list[App] = []

    async def start(
        metrics_port: int | None = None,
        clock: Callable[[], float] = time.time,
        limit_store: LimitStore | None = None,
        tracer_provider: TracerProvider | None = None,
        circuit_clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> App:
        app = build_app(
            make_settings(emulators, **overrides),
            host="127.0.0.1",
            port=0,
            metrics_port=metrics_port,
            clock=clock,
            limit_store=limit_store,
            tracer_provider=tracer_provider,
            circuit_clock=circuit_clock,
        )
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(grace=None)


@pytest.fixture
async def gateway(start_gateway: Callable[..., Any]) -> App:
    app: App = await start_gateway()
    return app


@pytest.fixture
async def channel(gateway: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> llm_pb2_grpc.LLMServiceAsyncStub:
    return llm_pb2_grpc.LLMServiceStub(channel)


RenderedLogs = Callable[[], str]


@pytest.fixture
def rendered_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[Redactor], RenderedLogs]]:
    """Log through the real `configure_logging` chain (JSON renderer, redaction, contextvars) and read
    back what it wrote to stderr. Call it with the redactor; it returns a reader of the output so far."""
    showwarning = warnings.showwarning

    def configure(redactor: Redactor) -> RenderedLogs:
        configure_logging("debug", "json", redactor)
        # The production chain caches each logger on first use; a test must not leave loggers bound to
        # its captured stderr behind, so only that one setting is turned off.
        structlog.configure(cache_logger_on_first_use=False)
        capsys.readouterr()
        return lambda: capsys.readouterr().err

    yield configure
    structlog.reset_defaults()
    warnings.showwarning = showwarning


class FakeClock:
    """A clock that moves only when a test moves it (for cool-downs and windows)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """An http:// URL whose connections are refused, for as long as the test runs: a port bound but never
    listening (it stays ours, so no other process can start listening there meanwhile)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"
