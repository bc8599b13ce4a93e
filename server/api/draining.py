"""The drain notice: between SIGTERM and the listener closing, the server keeps answering so that health
probes and gRPC clients that watch `grpc.health.v1` see NOT_SERVING instead of a refused connection.

grpc's own `server.stop(grace)` closes the listener and sends GOAWAY at once: from then on a health
probe, even over a connection that is already open, fails to connect. So `App.stop` first turns the
health service NOT_SERVING and starts this drain; during it every LLMService call is refused with
UNAVAILABLE (`SERVER_DRAINING`, retryable elsewhere: counted and logged by the call pipeline like any
refusal) and the calls already in flight run on. The notice ends when they have all finished, or after at
most a few seconds (a client pinned to this connection needs GOAWAY to move to another replica, and only
closing the listener sends it); then the grpc server stops with what is left of the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from server.core.errors import ServerDraining


class Drain:
    """Counts the LLMService calls in flight (the call pipeline enters and leaves it); once the notice
    starts, refuses new ones."""

    def __init__(self) -> None:
        self._draining = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Calls in flight."""
        return self._active

    async def notice(self, timeout: float) -> float:
        """Refuse new calls from now on and wait until no call is in flight, for at most `timeout`
        seconds; the seconds waited."""
        self._draining = True
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
        return time.monotonic() - started

    def enter(self) -> None:
        """A call begins; ServerDraining once the notice has started."""
        if self._draining:
            raise ServerDraining()
        self._active += 1
        self._idle.clear()

    def leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()
