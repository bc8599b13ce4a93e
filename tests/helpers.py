"""Small helpers for tests that call the gateway over gRPC."""

from __future__ import annotations

import asyncio
import signal
import socketserver

# The demo server is this same program, started with a fixed argv.
import subprocess  # nosec B404
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from llm_grpc.v1 import llm_pb2
from server.app import App
from server.emulators.base import Emulator
from tests.processes import LogWatcher, start_gateway_process


def user(text: str, system: str | None = None) -> list[llm_pb2.Message]:
    messages = [llm_pb2.Message(role=llm_pb2.ROLE_SYSTEM, content=system)] if system else []
    messages.append(llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text))
    return messages


@dataclass
class Details:
    """The google.rpc rich details of a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    quota_violations: dict[str, str] = field(default_factory=dict)
    """QuotaFailure: subject → description."""


def details_of(error: grpc.aio.AioRpcError) -> Details:
    result = Details(code=error.code(), message=error.details() or "")
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the status carries no google.rpc details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason, result.metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            result.quota_violations = {v.subject: v.description for v in quota.violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    return result


async def calls_settled(app: App, timeout: float = 30) -> None:
    """Return once no call holds an admission slot in `app` (every call the test started has given its
    slot back), failing after `timeout` seconds: an upper bound for a stuck call, not a measure."""
    # The one place tests reach into the gateway's admission; a rename touches only this line.
    await asyncio.wait_for(app.gateway._admission.idle(), timeout)


async def open_streams_reach(emulator: Emulator, count: int, timeout: float = 30) -> None:
    """Return once the emulator has exactly `count` streams open (see `Emulator.wait_for_open_streams`)."""
    await asyncio.wait_for(emulator.wait_for_open_streams(count), timeout)


def active_requests(app: App, provider: str) -> float:
    """`llm_active_requests{provider}` as the gateway's metrics hold it now."""
    value: float = app.metrics.active.labels(provider)._value.get()
    return value


def start_demo_server(*args: str, env: Mapping[str, str]) -> DemoServer:
    """`llm-gateway serve --demo` in its own process on ports it picks itself (`--port 0`,
    `--metrics-port 0`); returns once its `serving` line says where it listens."""
    process, log, _ = start_gateway_process(["--demo", "--metrics-port", "0", *args], env)
    return DemoServer(process, log.events("serving")[0], log)


@dataclass
class DemoServer:
    process: subprocess.Popen[str]
    serving: dict[str, Any]
    """The `serving` log line: address, metrics, grpcurl, models, demo."""
    log: LogWatcher

    @property
    def address(self) -> str:
        return str(self.serving["address"])

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed if it does not stop within 60 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


class CountingListener:
    """A TCP listener on loopback, on its own thread, that counts the connections it accepts and answers
    each with an HTTP 200 JSON body (`body`): the place a caller would point a remote `$ref` at. Tests
    assert it stays at 0. Its own thread: a gateway that fetched on its event loop would still be
    answered (and counted) rather than deadlocked."""

    def __init__(self, body: bytes = b'{"const": "LEAKED-FROM-THE-LISTENER"}') -> None:
        self.body = body
        self.connections = 0
        listener = self

        class Answer(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                listener.connections += 1
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                self.request.sendall(head % len(listener.body) + listener.body)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Answer)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CountingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    async def __aenter__(self) -> CountingListener:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.__exit__)
