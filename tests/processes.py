"""The emulators and the gateway as their own processes, on ports they pick themselves (port 0) and
report back: the emulators print `NAME_BASE_URL=...` lines, the gateway logs a JSON `serving` line with
its address. Nothing here guesses a free port or polls on a timer: readers block on the process's own
output and wake when the line arrives (or the process ends).

Used by the startup tests and the benchmark (tests/bench/run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from server.emulators.__main__ import ENV_NAMES

START_TIMEOUT = 60.0
"""An upper bound for a start on a loaded machine: a test waits on the line, never for this long."""


def start_emulators(
    api_key: str, *args: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`python -m server.emulators --port 0`; returns the process and its base URLs by env name."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server.emulators", "--port", "0", "--api-key", api_key, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < len(ENV_NAMES):
        line = process.stdout.readline()  # blocks until the next emulator listens, or EOF if it died
        if not line:
            process.wait()
            raise RuntimeError(f"the emulators exited during start (code {process.returncode})")
        name, _, url = line.strip().partition("=")
        if name in ENV_NAMES:
            urls[name] = url
    return process, urls


class LogWatcher:
    """Reads a process's JSON log lines as they come (on a thread, so the pipe never fills) and lets a
    test wait for a line it expects."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for text in stream:
            with self._changed:
                self.raw.append(text)
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    self.lines.append(parsed)
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for(
        self, matches: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = START_TIMEOUT
    ) -> list[dict[str, Any]]:
        """The first `count` lines that match, once they have been logged. Fails with the whole log if
        the process ends (or `timeout` passes) first."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.closed or sum(1 for line in self.lines if matches(line)) >= count, timeout
            )
            found = [line for line in self.lines if matches(line)]
            if len(found) < count:
                raise AssertionError(f"expected {count} matching log lines; the log:\n{''.join(self.raw)}")
            return found[:count]

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [line for line in self.lines if line.get("event") == name]


def event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A log line of this event whose fields have these values."""
    return lambda line: line.get("event") == name and all(line.get(k) == v for k, v in fields.items())


def start_gateway_process(
    args: Sequence[str], env: Mapping[str, str], serving: int = 1
) -> tuple[subprocess.Popen[str], LogWatcher, str]:
    """`llm-gateway serve --port 0 ARGS`; waits for `serving` workers to log their `serving` line and
    returns the process, its log and the address it serves on."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0", *args],
        env=dict(env),  # stderr is a pipe: the default log format (auto) is JSON lines
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    log = LogWatcher(process.stderr)
    lines = log.wait_for(event("serving"), count=serving)
    return process, log, str(lines[0]["address"])


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def write_env(path: Path, urls: Mapping[str, str]) -> None:
    path.write_text("".join(f"{name}={url}\n" for name, url in urls.items()))
