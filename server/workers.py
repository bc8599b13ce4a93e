"""`llm-gateway serve --workers N`: N server processes on one port, kept alive.

The kernel spreads connections over the processes (SO_REUSEPORT). A worker that dies is started again in
its slot (same metrics port), with one log line saying which and why; a worker that keeps dying soon
after its start is restarted after a doubling delay, so a crash loop does not spin. SIGTERM and SIGINT
are passed on to every worker, and the supervisor exits once all have ended.

`--port 0` works too: the supervisor binds a free port with SO_REUSEPORT and holds it (bound, never
listening, so it takes no connections) for the workers to share.
"""

from __future__ import annotations

import os
import signal
import socket

# Only to start this same program as workers, with an argv built by the supervisor (no caller input).
import subprocess  # nosec B404
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

log = structlog.get_logger("llm_grpc.workers")


@dataclass(slots=True, frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    """Seconds before restarting a worker that died soon after its start."""
    max_delay: float = 30.0
    stable_after: float = 30.0
    """A worker that served this long before dying is restarted at once, its crash count reset."""

    def quick_deaths(self, before: int, lived: float) -> int:
        """Deaths in a row soon after start, counting this one (which came `lived` seconds after start)."""
        return before + 1 if lived < self.stable_after else 0

    def delay(self, quick_deaths: int) -> float:
        """Seconds to wait before the next start, after `quick_deaths` deaths in a row soon after start."""
        if quick_deaths <= 0:
            return 0.0
        return float(min(self.max_delay, self.first_delay * 2.0 ** (quick_deaths - 1)))


@dataclass(slots=True)
class _Slot:
    index: int
    process: subprocess.Popen[bytes]
    started_at: float
    quick_deaths: int = 0


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT (port 0: a free one), not listening: it keeps the
    port ours while the workers bind it too, and takes no connections itself."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        workers: int,
        policy: RestartPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`command(i)`: the argv of worker i."""
        self._command = command
        self._workers = workers
        self._policy = policy
        self._clock = clock
        self._slots: dict[int, _Slot] = {}
        self._stopping = threading.Event()

    def run(self) -> int:
        """Start the workers and keep them running until SIGTERM/SIGINT; 0 when every worker then
        exited cleanly."""
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for index in range(self._workers):
            self._start(index, quick_deaths=0)
        log.info("workers", pids=[slot.process.pid for slot in self._slots.values()])
        codes: list[int] = []
        while self._slots:
            pid, status = os.wait()
            slot = next((s for s in self._slots.values() if s.process.pid == pid), None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            slot.process.returncode = code
            del self._slots[slot.index]
            if self._stopping.is_set():
                codes.append(code)
                continue
            self._restart(slot, code)
        return 0 if all(code == 0 for code in codes) else 1

    def _restart(self, slot: _Slot, code: int) -> None:
        lived = self._clock() - slot.started_at
        quick_deaths = self._policy.quick_deaths(slot.quick_deaths, lived)
        delay = self._policy.delay(quick_deaths)
        log.error(
            "worker.died",
            worker=slot.index,
            pid=slot.process.pid,
            exit_code=code,
            lived_s=round(lived, 3),
            restart_in_s=delay,
        )
        # Woken early by SIGTERM: then the worker is not started again.
        if self._stopping.wait(delay):
            return
        self._start(slot.index, quick_deaths)
        log.info("worker.restarted", worker=slot.index, pid=self._slots[slot.index].process.pid)

    def _start(self, index: int, quick_deaths: int) -> None:
        # The argv is built by our own code from our own flags: no caller input reaches it.
        process = subprocess.Popen(list(self._command(index)))  # nosec B603
        self._slots[index] = _Slot(index, process, self._clock(), quick_deaths)
        if self._stopping.is_set():  # a signal came while it started: it missed the forwarded one
            process.terminate()

    def _forward(self, signum: int, _frame: object) -> None:
        self._stopping.set()
        for slot in self._slots.values():
            slot.process.send_signal(signum)
