"""Provider health from a background probe, so a health check never waits on a provider and a user's
call never waits on a probe."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import structlog

from server.core.circuit import CircuitBreaker
from server.core.errors import GatewayError
from server.core.ports import Provider
from server.core.types import ProviderName

log = structlog.get_logger("llm_grpc.health")


class Health(enum.Enum):
    UNKNOWN = "unknown"
    SERVING = "serving"
    NOT_SERVING = "not_serving"


@dataclass(slots=True, frozen=True)
class ProviderState:
    status: Health = Health.UNKNOWN
    latency_ms: float = 0.0
    error: str = ""
    checked_at: float | None = None
    """Unix time of the last finished probe."""


class HealthMonitor:
    def __init__(
        self,
        providers: Mapping[ProviderName, Provider],
        circuit: CircuitBreaker,
        interval: float,
        probe_timeout: float = 5.0,
    ) -> None:
        self._providers = dict(providers)
        self._circuit = circuit
        self._interval = interval
        self._probe_timeout = min(probe_timeout, interval)
        self._states = {name: ProviderState() for name in self._providers}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="provider-health-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def snapshot(self) -> dict[ProviderName, ProviderState]:
        """The last probe of each provider; NOT_SERVING while its circuit is open or after it refused the
        gateway's key on a call, whatever the probe said."""
        states = dict(self._states)
        for name, state in states.items():
            if self._circuit.is_open(name):
                states[name] = replace(
                    state, status=Health.NOT_SERVING, error="circuit open after repeated failures"
                )
            elif self._circuit.key_refused(name):
                states[name] = replace(
                    state,
                    status=Health.NOT_SERVING,
                    error="the provider refused the gateway's API key on a call (an operator must fix it)",
                )
        return states

    def overall(self) -> Health:
        """SERVING when every provider serves, NOT_SERVING when any does not, else UNKNOWN."""
        statuses = {state.status for state in self.snapshot().values()}
        if Health.NOT_SERVING in statuses:
            return Health.NOT_SERVING
        if statuses == {Health.SERVING}:
            return Health.SERVING
        return Health.UNKNOWN

    async def probe_all(self) -> None:
        await asyncio.gather(*(self._probe(name, provider) for name, provider in self._providers.items()))

    async def _run(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._interval)

    async def _probe(self, name: ProviderName, provider: Provider) -> None:
        started = time.perf_counter()
        started_at = self._circuit.now()
        error = ""
        try:
            async with asyncio.timeout(self._probe_timeout):
                await provider.probe(self._probe_timeout)
        except GatewayError as exc:
            error = exc.message
        except TimeoutError:
            error = f"probe timed out after {self._probe_timeout:g}s"
        except Exception as exc:  # a probe must never kill the monitor
            error = f"probe failed: {type(exc).__name__}"
        latency_ms = (time.perf_counter() - started) * 1000
        status = Health.NOT_SERVING if error else Health.SERVING
        if not error:
            self._circuit.probe_passed(name, started_at)
        if status is not self._states[name].status:
            log.info("provider.health", provider=str(name), status=status.value, error=error or None)
        self._states[name] = ProviderState(status, latency_ms, error, time.time())
