"""Figures with their spread, and the refusal to print one whose spread makes it meaningless.

A figure is estimated from samples pooled over alternating rounds, with a 95 % bootstrap interval
(resampling within each round, so drift between rounds stays in) and its value in each round. It is
`noise`, and printed only as that with the reason, when its interval straddles zero or when the rounds'
values spread (interquartile range) more than the figure itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP = 1000
_rng = np.random.default_rng(18)


@dataclass(frozen=True)
class Figure:
    value: float
    low: float
    high: float
    rounds: tuple[float, ...]
    noise: str | None = None
    """Why the figure means nothing: `straddles zero`, `rounds spread` or another reason; None if it means
    something."""

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci95": [self.low, self.high],
            "rounds": list(self.rounds),
            "noise": self.noise,
        }

    def show(self, scale: float = 1000.0, unit: str = "ms", digits: int = 3) -> str:
        """`1.234 ms [1.100, 1.400]`, or `noise (why)` with the numbers that make it so."""

        def f(x: float) -> str:
            return f"{x * scale:.{digits}f}"

        if self.noise is None:
            return f"{f(self.value)} {unit} [{f(self.low)}, {f(self.high)}]"
        if self.noise == "straddles zero":
            return f"noise (95% interval [{f(self.low)}, {f(self.high)}] {unit} straddles zero)"
        if self.noise == "rounds spread":
            q1, q3 = np.percentile(self.rounds, [25, 75])
            return f"noise (rounds' IQR {f(float(q3 - q1))} {unit} exceeds the value {f(self.value)} {unit})"
        return f"noise ({self.noise})"


def _judge(value: float, low: float, high: float, rounds: Sequence[float]) -> str | None:
    if low <= 0.0 <= high and not low == high == 0.0:
        return "straddles zero"
    if len(rounds) >= 3:
        q1, q3 = np.percentile(rounds, [25, 75])
        if q3 - q1 > abs(value):
            return "rounds spread"
    return None


def quantile(values: Sequence[float] | np.ndarray, q: float) -> float:
    return float(np.quantile(values, q / 100)) if len(values) else float("nan")


def difference(treated: Sequence[Sequence[float]], base: Sequence[Sequence[float]], q: float) -> Figure:
    """Quantile `q` of `treated` minus that of `base`; each holds one list of samples per round."""
    value = quantile(_pool(treated), q) - quantile(_pool(base), q)
    boots = [quantile(_resample(treated), q) - quantile(_resample(base), q) for _ in range(BOOTSTRAP)]
    low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    rounds = tuple(
        quantile(t, q) - quantile(b, q) for t, b in zip(treated, base, strict=True) if len(t) and len(b)
    )
    return Figure(value, low, high, rounds, _judge(value, low, high, rounds))


def level(samples: Sequence[Sequence[float]], q: float) -> Figure:
    """Quantile `q` of samples pooled over rounds (a latency: never near zero, judged by rounds only)."""
    value = quantile(_pool(samples), q)
    boots = [quantile(_resample(samples), q) for _ in range(BOOTSTRAP)]
    low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    rounds = tuple(quantile(r, q) for r in samples if len(r))
    return Figure(value, low, high, rounds, _judge(value, low, high, rounds))


def per_round(values: Sequence[float]) -> Figure:
    """A figure measured once per round (CPU per call, throughput): the mean, bootstrapped over rounds."""
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        return Figure(float("nan"), float("nan"), float("nan"), (), "not measured")
    value = float(arr.mean())
    if len(arr) < 2:
        return Figure(value, value, value, tuple(arr.tolist()), "one round only: no spread to judge by")
    boots = [float(_rng.choice(arr, len(arr)).mean()) for _ in range(BOOTSTRAP)]
    low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    rounds = tuple(arr.tolist())
    return Figure(value, low, high, rounds, _judge(value, low, high, rounds))


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Figure:
    """The ratio of two figures measured in the same rounds, round by round."""
    return per_round([n / d for n, d in zip(numerator, denominator, strict=True) if d > 0])


def _pool(rounds: Sequence[Sequence[float]]) -> np.ndarray:
    parts = [np.asarray(r, dtype=float) for r in rounds if len(r)]
    return np.concatenate(parts) if parts else np.asarray([], dtype=float)


def _resample(rounds: Sequence[Sequence[float]]) -> np.ndarray:
    parts = [np.asarray(r, dtype=float)[_rng.integers(0, len(r), len(r))] for r in rounds if len(r)]
    return np.concatenate(parts) if parts else np.asarray([], dtype=float)
