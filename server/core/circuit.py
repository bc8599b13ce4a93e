"""Circuit breaking per provider: after `failure_threshold` consecutive failures the provider is marked
unhealthy for `cooldown` seconds and calls fail fast with UNAVAILABLE; then one trial call is let
through, and its outcome closes the circuit or opens it for another cool-down.

Only failures that say the provider is unwell count (5xx, 529, connection failures, timeouts); a
refused request, a rate limit, an exhausted quota, a retired model or a too-long prompt is the provider
working as designed. A refused key is different: it does not open the circuit (each call still says
what is wrong), but it marks the provider unhealthy (CheckHealth NOT_SERVING) until a call succeeds or
a probe that started after it passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from server.core.errors import CircuitOpen, ProviderAuthError, ProviderTimeout, ProviderUnavailable
from server.core.types import ProviderName


@dataclass(slots=True)
class _State:
    failures: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False
    key_refused_at: float | None = None
    """Clock time of the last refusal of the gateway's key, until a success clears it."""


class CircuitBreaker:
    def __init__(
        self,
        providers: list[ProviderName],
        failure_threshold: int,
        cooldown: float,
        min_trial_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._states = {name: _State() for name in providers}
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._min_trial_seconds = min_trial_seconds
        self._clock = clock

    def before_call(self, provider: ProviderName, seconds_left: float) -> bool:
        """Raise CircuitOpen while the provider cools down; after it, let exactly one trial call through.
        Returns whether this call is that trial (pass it back to `record`).

        The trial goes only to a call with at least `min_trial_seconds` left: a caller flooding calls with
        tiny deadlines would otherwise win the trials, end them itself, and keep the circuit from closing
        for everyone."""
        state = self._states[provider]
        if state.failures < self._threshold:
            return False
        now = self._clock()
        if now < state.open_until or state.trial_in_flight or seconds_left < self._min_trial_seconds:
            raise CircuitOpen(provider, max(0.0, state.open_until - now))
        state.trial_in_flight = True
        return True

    def record(
        self,
        provider: ProviderName,
        error: BaseException | None,
        *,
        trial: bool,
        caller_deadline: bool = False,
    ) -> None:
        """The outcome of a call that `before_call` let through (error None: success).

        Only the provider's own failures count: 5xx, a broken connection, and a timeout, unless the
        caller's own deadline (shorter than the gateway's request timeout: `caller_deadline`) set it. A
        refusal, a rate limit, the caller's cancellation or a gateway error does not count, and such an
        end of the trial call neither closes nor re-opens the circuit: the next call is the trial.
        """
        state = self._states[provider]
        if trial:
            state.trial_in_flight = False
        if error is None:
            state.failures = 0
            state.key_refused_at = None
        elif isinstance(error, ProviderAuthError):
            state.key_refused_at = self._clock()
        elif isinstance(error, ProviderUnavailable) or (
            isinstance(error, ProviderTimeout) and not caller_deadline
        ):
            state.failures += 1
            if state.failures >= self._threshold:
                state.open_until = self._clock() + self._cooldown

    def is_open(self, provider: ProviderName) -> bool:
        return self._states[provider].failures >= self._threshold

    def now(self) -> float:
        return self._clock()

    def key_refused(self, provider: ProviderName) -> bool:
        """Whether the provider refused the gateway's key on the last call that reached it."""
        return self._states[provider].key_refused_at is not None

    def probe_passed(self, provider: ProviderName, started_at: float) -> None:
        """A health probe that started at `started_at` (see `now`) passed: a key refusal before then
        is over (a probe already in flight when the refusal came proves nothing)."""
        state = self._states[provider]
        if state.key_refused_at is not None and state.key_refused_at <= started_at:
            state.key_refused_at = None
